"""Print the numbers docs/experiments.md quotes from the result.json files of one experiment run.

Usage:
    reprinvert experiment all --size medium --out DIR
    python benchmarks/experiments_summary.py DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _r(v: Any, n: int = 3) -> Any:
    if isinstance(v, float):
        return float(f"{v:.{n}g}")
    if isinstance(v, (list, tuple)):
        return [_r(x, n) for x in v]
    if isinstance(v, dict):
        return {k: _r(x, n) for k, x in v.items()}
    return v


def main(folder: str) -> None:
    root = Path(folder)
    for name in ("copy", "denoise", "unet-representation", "depth", "width", "corruption-distance"):
        path = root / name / "result.json"
        if not path.is_file():
            print(f"## {name}: no result.json")
            continue
        doc = json.loads(path.read_text())
        r = doc["result"]
        print(f"## {name} ({r['size']}, {r['seconds']:.0f} s, written {doc.get('written')})")
        if name == "copy":
            for model, m in r["models"].items():
                print(f"  {model:10s}", _r(m))
        elif name == "denoise":
            print("  levels            ", r["levels"])
            print("  corrupted ||x~-x||^2", _r(r["corruption_distance"]))
            for mode, errs in r["errors"].items():
                print(f"  {mode:18s}", _r(errs), "clean copy", _r(r["copy_error"][mode]), "gain", _r(r["gains"][mode]))
            print("  oracle mean", _r(r["oracle_mean"]), " oracle blur", _r(r["oracle_blur"]))
            print("  held-out copy MSE no-skip / skip", _r(r["val_loss_no_skip"]), _r(r["val_loss_skip"]))
            print("  data:", r["data"])
        elif name == "unet-representation":
            for rec, fields in r["by_recipe"].items():
                print(f"  {rec}: m_i", _r(fields["input_distance"]), "psnr", _r(fields["psnr"]),
                      "m_g/m_r", _r(fields["ratio"]))
            print("  ||x'-x||", _r(r["perturbation_distance"]))
        elif name == "depth":
            print("  accuracy", r["accuracy"], "||x'-x||", _r(r["perturbation_distance"]))
            for k in ("input_distance", "represents"):
                print(f"  {k}", _r(r[k]))
            if r.get("blind"):
                print("  blind", r["blind"], "condition", _r(r["condition"]))
            e = r.get("effnet")
            if e:
                print(f"  EfficientNet-Lite0 {e['image']}px {e['photos']} {e['steps']} steps {e['recipe']}, "
                      f"start distance {_r(e['start_distance'])}")
                print("  layers", e["layers"])
                for k in ("psnr", "input_distance", "represents"):
                    print(f"  {k}", _r(e[k]))
                ratio = {m: [g / rr if rr else None for g, rr in zip(e["embedding_distance"][m],
                                                                      e["reference_distance"][m])]
                         for m in e["embedding_distance"]}
                print("  m_g/m_r", _r(ratio))
        elif name == "width":
            for n in r["nets"]:
                curve = n["input_distance"]
                low = min(curve)
                print(f"  {n['label']:24s} final {_r(n['final_input_distance'])} min {_r(low)} at step "
                      f"{n['steps'][curve.index(low)]} blind {n['blind']} condition {_r(n['condition'])}")
            print("  linear: ||d||", _r(r["linear_output_perturbation"]), "||dx||", _r(r["linear_input_error"]),
                  "max", _r(r["linear_input_error_max"]), "amplification", _r(r["linear_amplification"]),
                  "condition", _r(r["linear_condition"]), "orthogonal", r["orthogonal_amplification"])
        else:
            print("  max |difference|", r["max_abs_difference"])


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
