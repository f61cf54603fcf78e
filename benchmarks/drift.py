"""Why the default's input distance climbs back on some layers: the budget, or the layer? The default recipe at its
own 500 steps and at ten times as many, on the benchmark cases where m_i climbs back most.

    OMP_NUM_THREADS=1 python benchmarks/drift.py            # about 12 minutes on one core
    python benchmarks/drift.py --quick                      # the width net only, 50 and 150 steps (a smoke run)
    python benchmarks/drift.py --table                      # print the committed results

Cases (those of ``benchmarks/inversion_quality.py``): the untrained EfficientNet-Lite0's ``_blocks.7`` (m_i climbs
back 3.7% there in 500 steps), the trained one's ``_blocks.2`` (1.0%) and the width study's ReLU net half as wide
as its input (0.4%). Each is inverted by ``recipes.default(steps=N)`` for N = 500 and 5000 (the schedule stretched
over N), seed 0.

For each run, from its history (every step's loss and m_i, per photo): at 0, 5, 10, 25, 50, 75 and 100% of the
steps, the reported iterate's m_i and loss (the iterate with the lowest loss so far: what a run stopped there would
return), as the mean over the photos; the lowest of these m_i and where; how far the last one is above it.
If ten times the steps lower the loss further and raise m_i further, the climb is the layer's (lower loss lies
farther from x along the search's path), not a search stopped short. Results: ``benchmarks/results/drift.json``;
``docs/recipes.md`` quotes them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))

import inversion_quality as iq

import reprinvert as ri
from reprinvert import recipes

RESULTS = Path(__file__).parent / "results" / "drift.json"
FRACTIONS = (0.0, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0)
CASES = (("effnet-untrained", "_blocks.7"), ("effnet-trained", "_blocks.2"), ("width", "width-relu-0.5x"))


def reported_curve(history: ri.History, steps: int) -> list[dict[str, float]]:
    """m_i and loss of the iterate a run stopped at each fraction of ``steps`` would return (mean over samples)."""
    total, distance = history.total, history.input_distance  # (steps, B) each
    samples = torch.arange(total.shape[1])
    rows = []
    for fraction in FRACTIONS:
        k = max(1, round(fraction * steps))
        best = total[:k].argmin(0)  # per sample: the lowest loss among the first k iterates
        rows.append({"step": k - 1 if fraction == 0 else k, "input_distance": float(distance[best, samples].mean()),
                     "loss": float(total[best, samples].mean())})
    return rows


def climb(rows: list[dict[str, float]]) -> tuple[float, int]:
    """How far the last reported m_i is above the lowest one (fraction), and the step of the lowest."""
    lowest = min(rows, key=lambda r: r["input_distance"])
    return rows[-1]["input_distance"] / lowest["input_distance"] - 1, int(lowest["step"])


def entry_for(case: str, name: str) -> dict[str, Any]:
    if case == "width":  # inversion_quality's width-relu-0.5x net, built alone
        from reprinvert.models import FCNet

        net = FCNet(in_features=2523, widths=(round(0.5 * 2523),) * 2, activation="relu", seed=0).eval()
        return dict(name=name, model=net, x=iq.photos(29), layers=["layers.1"], normalize=None)
    return iq.cases(False)[case]()[0]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the width net only, 50 and 150 steps")
    parser.add_argument("--table", action="store_true", help="print the committed (or --out) results and stop")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results file (default {RESULTS})")
    args = parser.parse_args(argv)
    if args.table:
        text = table(json.loads(args.out.read_text()))
        print(text)
        return {}
    torch.set_num_threads(1)
    budgets = (50, 150) if args.quick else (recipes.default().steps, 10 * recipes.default().steps)
    started = time.time()
    out: dict[str, Any] = {"budgets": list(budgets), "cases": {}}
    for case, name in CASES[2:] if args.quick else CASES:
        entry = entry_for(case, name)
        layer = entry["layers"][0] if case == "width" else name
        label = f"{entry['name']} {layer}"
        out["cases"][label] = {}
        for steps in budgets:
            t0 = time.process_time()
            res = ri.invert(entry["model"], layer, entry["x"], recipe=recipes.default(steps=steps), seed=0,
                            normalize=entry["normalize"], progress=False)
            rows = reported_curve(res.history, steps)
            rise, at = climb(rows)
            out["cases"][label][str(steps)] = {
                "rows": rows, "climb": rise, "lowest_at": at, "psnr": float(res.metrics.psnr.mean()),
                "mg_over_mr": float((res.metrics.embedding_distance / res.metrics.reference_distance).mean()),
                "cpu_seconds": time.process_time() - t0,
            }
            print(f"{label:32s} {steps:5d} steps: m_i {rows[0]['input_distance']:.3f} at the start, lowest at step "
                  f"{at}, last {rows[-1]['input_distance']:.3f} ({100 * rise:+.1f}%); loss {rows[0]['loss']:.4g} -> "
                  f"{rows[-1]['loss']:.4g}", flush=True)
    out["command"] = " ".join(["python", "benchmarks/drift.py", *(sys.argv[1:] if argv is None else argv)])
    out["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    out["wall_seconds"] = time.time() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(table(out))
    print(f"wrote {args.out}")
    return out


def table(payload: dict[str, Any]) -> str:
    """The docs' table: per case and budget, the reported iterate's m_i (and loss) along the run."""
    head = ("| case | steps | " + " | ".join(f"{round(100 * f)}%" for f in FRACTIONS)
            + " | lowest at step | last above lowest | PSNR (dB) | m_g / m_r |")
    lines = [f"results of: {payload['command']} ({payload['finished']})", "",
             "m_i of the reported iterate (loss below it), mean over the photos", "", head,
             "|---" * (len(FRACTIONS) + 6) + "|"]
    for label, budgets in payload["cases"].items():
        for steps, run in budgets.items():
            cells = [f"{r['input_distance']:.2f}<br>({r['loss']:.3g})" for r in run["rows"]]
            lines.append(f"| {label} | {steps} | " + " | ".join(cells) + f" | {run['lowest_at']} | "
                         f"{100 * run['climb']:+.1f}% | {run['psnr']:.1f} | {run['mg_over_mr']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
