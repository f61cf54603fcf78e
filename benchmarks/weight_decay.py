"""What the default's optional weight decay buys and costs: drift on layers that discard most of the input against
precision on layers that keep everything, side by side for a few decays.

    OMP_NUM_THREADS=1 python benchmarks/weight_decay.py            # about 10 minutes on one core
    python benchmarks/weight_decay.py --table                      # print the committed results

Cases, each inverted with ``recipes.default(weight_decay=wd)`` for wd in 0, 0.02 and 0.1:

* known answers (relative input distance of the returned input, worst sample): an identity layer on three random
  32x32 images; an orthogonal 1x1 colour mixing on the four bundled photos; ``fft(Linear(8, 8)(x))``, an
  invertible layer whose Jacobian has condition number 28 (the model of ``tests/reliability/test_unusual_forwards.py``);
* the untrained EfficientNet-Lite0's ``_blocks.7`` and the trained one's ``_blocks.2`` (the cases of
  ``benchmarks/inversion_quality.py``): mean PSNR and how far the returned input's m_i climbs back above its lowest
  earlier point (%), from the same checkpoints as that benchmark.

Results: ``benchmarks/results/weight_decay.json``; ``docs/benchmarks.md`` quotes them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))

import inversion_quality as iq

import reprinvert as ri
from reprinvert import recipes

DECAYS = (0.0, 0.02, 0.1)
RESULTS = Path(__file__).parent / "results" / "weight_decay.json"


class _Spectrum(nn.Module):
    """fft(lin(x)): complex output, invertible, condition number 28 (seeded as in the reliability test)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(8, 8)
        self.fft = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fft(torch.fft.fft(self.lin(x)))


def known_answers() -> dict[str, tuple[nn.Module, str, torch.Tensor]]:
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64))
    conv = nn.Conv2d(3, 3, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(q.view(3, 3, 1, 1))
    torch.manual_seed(1)
    fft_x = torch.rand(2, 8)
    return {
        "identity, random images": (nn.Sequential(nn.Identity(), nn.Conv2d(3, 2, 3)), "0",
                                    torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))),
        "orthogonal colour mixing, photos": (nn.Sequential(conv), "0", ri.data.sample_images(size=32)),
        "fft of a linear layer (condition 28)": (_Spectrum().eval(), "fft", fft_x),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--table", action="store_true", help="print the committed results and stop")
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(RESULTS.read_text())))
        return
    torch.set_num_threads(1)
    started = time.time()
    out: dict[str, Any] = {"known_answers": {}, "drift": {}}
    for name, (model, layer, x) in known_answers().items():
        out["known_answers"][name] = {}
        for wd in DECAYS:
            res = ri.invert(model, layer, x, recipe=recipes.default(weight_decay=wd), seed=0)
            out["known_answers"][name][str(wd)] = float(res.metrics.relative_input_distance.max())
            print(f"{name:40s} wd={wd:<5} relative m_i {out['known_answers'][name][str(wd)]:.2e}", flush=True)
    builders = iq.cases(False)
    for case, layer in (("effnet-untrained", "_blocks.7"), ("effnet-trained", "_blocks.2")):
        entry = builders[case]()[0]
        out["drift"][f"{case} {layer}"] = {}
        for wd in DECAYS:
            row = iq.run_one(entry, layer, recipes.default(weight_decay=wd), iq.STEPS)
            curve = list(row["curve_reported"].values())
            climb = max([0.0, *(b / min(curve[: i + 1]) - 1 for i, b in enumerate(curve[1:]))])
            out["drift"][f"{case} {layer}"][str(wd)] = {"psnr": sum(row["psnr"]) / len(row["psnr"]), "climb": climb}
            print(f"{case} {layer:10s} wd={wd:<5} PSNR {out['drift'][f'{case} {layer}'][str(wd)]['psnr']:.1f} dB, "
                  f"m_i climbs back {100 * climb:.1f}%", flush=True)
    out["command"] = " ".join(sys.argv)
    out["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    out["wall_seconds"] = time.time() - started
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1))
    print(table(out))
    print(f"wrote {RESULTS}")


def table(payload: dict[str, Any]) -> str:
    head = "| case | " + " | ".join(f"weight_decay={wd}" for wd in DECAYS) + " |"
    rule = "|---" * (len(DECAYS) + 1) + "|"
    lines = [f"results of: {payload['command']} ({payload['finished']})", "",
             "relative input distance of the returned input (worst sample)", "", head, rule]
    for name, row in payload["known_answers"].items():
        lines.append(f"| {name} | " + " | ".join(f"{row[str(wd)]:.1e}" for wd in DECAYS) + " |")
    lines += ["", "mean PSNR (dB) / how far m_i climbs back (%)", "", head, rule]
    for name, row in payload["drift"].items():
        lines.append(f"| {name} | " + " | ".join(
            f"{row[str(wd)]['psnr']:.1f} / {100 * row[str(wd)]['climb']:.1f}" for wd in DECAYS) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
