"""Training throughput of ``reprinvert.train.train`` against a minimal hand-written loop on the same model.

Each figure is a ratio of two things timed side by side in one run (interleaved A, B, A, B, ..., median over
repeats of the per-round ratio; see ``benchmarks/_timing.py``). On the CPU the clock is the calling thread's CPU
time (with one torch thread all compute runs there; a shared machine's other processes are not counted), on a GPU
synchronised wall time; the table's ms/step and samples/s use the same clock.

ratio       ``reprinvert.train.train(..., progress=False)`` seconds per optimiser step / the hand loop's seconds per
            step, both end to end over a whole call of ``epochs x steps_per_epoch`` steps (the library call's fixed
            costs, argument checks, generator, ``fork_rng``, are amortised over those steps and included).
min ratio   the fastest library call / the fastest hand-loop call (load from other users of a shared machine only
            ever adds time, so the minimums are a second, load-robust estimate; reported next to the median).
ratio+bar   the same as ratio with ``progress=True`` (the library's default: a tqdm bar updated every step, output
            discarded) against the same hand loop.

The hand loop is what one would write by hand::

    model.train(); opt = torch.optim.Adam(model.parameters(), lr=lr)
    for epoch: order = torch.randperm(n, generator=g)
        for k: x = data[order[k*B:(k+1)*B]]; loss = F.mse_loss(model(x), x)
               opt.zero_grad(set_to_none=True); loss.backward(); opt.step(); running += loss.detach()

Both loops do the same work: same model (each timed call trains its own deep copy of one seeded model, made before
the timing starts), same data already on the device, same batches in the same order (a CPU ``randperm`` per epoch
from a generator seeded like the library's), Adam with the same lr, MSE of the reconstruction against the clean
input, the same number of optimiser steps, no corruption and no validation pass (both off in the library call).
What the library does on top is its bookkeeping: a finiteness check of every batch loss, the per-epoch mean loss as
a Python float, its history, training flags restored, torch's global RNG forked. The hand loop keeps the epoch's
mean loss too (summed on the device, read once at the end) so the final losses of the two can be compared: they
must agree within a relative tolerance (1e-4 on CPU, 1e-3 on CUDA), which checks that both did equal work.

Models (``reprinvert.models``, seeded, untrained) on ``reprinvert.data.bundled_patches`` (real photo patches):
    mlp-quick   MLPAutoencoder.preset("quick"): 768 -> 1024 x4 (GELU, BatchNorm) -> 768, 16x16 RGB, batch 64
    mlp-tiny    MLPAutoencoder.preset("tiny"): 192 -> 256 x3 -> 192, 8x8 RGB, batch 64 (per-step overhead shows most)
    conv-ae     ConvAutoencoder(channels=(32, 64)), 32x32 RGB, batch 64
    unet-quick  UNet.preset("quick"): base 16, depth 3, no skips, 32x32 RGB, batch 16
``--quick`` uses tiny versions of these with a few steps and 2 repeats (a smoke run of a few seconds).

Usage:
    python benchmarks/training.py                 # full run (a few minutes on 1 CPU thread)
    python benchmarks/training.py --quick         # smoke run
    python benchmarks/training.py --device cuda   # on a GPU
Writes benchmarks/results/training.json (or --out).
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _timing

from reprinvert.data import bundled_patches
from reprinvert.models import ConvAutoencoder, MLPAutoencoder, UNet, count_parameters
from reprinvert.train import train

LR = 1e-3
SEED = 0


@dataclass(frozen=True)
class Case:
    name: str
    description: str
    build: Callable[[], nn.Module]
    size: int  # image height and width
    batch_size: int
    steps_per_epoch: int
    epochs: int


def cases(quick: bool) -> list[Case]:
    if quick:
        return [
            Case("mlp-tiny", "MLPAutoencoder(in_features=48, hidden=(32, 32))",
                 lambda: MLPAutoencoder(in_features=48, hidden=(32, 32), seed=SEED), 4, 8, 3, 2),
            Case("conv-ae-tiny", "ConvAutoencoder(channels=(4, 8))",
                 lambda: ConvAutoencoder(channels=(4, 8), seed=SEED), 8, 8, 3, 2),
            Case("unet-tiny", 'UNet.preset("tiny") (base 4, depth 2, no skips)',
                 lambda: UNet.preset("tiny", seed=SEED), 8, 4, 3, 2),
        ]
    return [
        Case("mlp-quick", 'MLPAutoencoder.preset("quick") (768 -> 1024x4 -> 768, GELU, BatchNorm)',
             lambda: MLPAutoencoder.preset("quick", seed=SEED), 16, 64, 15, 2),
        Case("mlp-tiny", 'MLPAutoencoder.preset("tiny") (192 -> 256x3 -> 192, GELU, BatchNorm)',
             lambda: MLPAutoencoder.preset("tiny", seed=SEED), 8, 64, 100, 2),
        Case("conv-ae", "ConvAutoencoder(channels=(32, 64))",
             lambda: ConvAutoencoder(channels=(32, 64), seed=SEED), 32, 64, 15, 2),
        Case("unet-quick", 'UNet.preset("quick") (base 16, depth 3, no skips)',
             lambda: UNet.preset("quick", seed=SEED), 32, 16, 10, 2),
    ]


# -- the two loops --------------------------------------------------------------------------------------------------
def hand_loop(model: nn.Module, data: torch.Tensor, *, epochs: int, batch_size: int, lr: float, seed: int) -> float:
    """The minimal loop; returns the last epoch's mean loss (one host read, at the end)."""
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)  # the library's batch-order generator: CPU, seeded with ``seed``
    n = data.shape[0]
    per_epoch = math.ceil(n / batch_size)
    running = torch.zeros((), device=data.device)
    for _ in range(epochs):
        order = torch.randperm(n, generator=g)
        running = torch.zeros((), device=data.device)
        for k in range(per_epoch):
            x = data[order[k * batch_size : (k + 1) * batch_size]]
            loss = F.mse_loss(model(x), x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            running += loss.detach()
    return float(running) / per_epoch


def library_loop(
    model: nn.Module, data: torch.Tensor, *, epochs: int, batch_size: int, lr: float, seed: int, progress: bool
) -> float:
    sink = io.StringIO()
    with contextlib.redirect_stderr(sink):  # tqdm writes to stderr; keep the benchmark's output clean
        result = train(model, data, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, progress=progress)
    return result.final_loss


def measure(case: Case, args: Any, device: torch.device, repeats: int, warmup: int = 1) -> dict[str, Any]:
    n = case.batch_size * case.steps_per_epoch
    data = bundled_patches(size=case.size, count=n, seed=SEED).to(device)
    base = case.build().to(device)
    steps = case.epochs * case.steps_per_epoch
    kw: dict[str, Any] = dict(epochs=case.epochs, batch_size=case.batch_size, lr=LR, seed=SEED)
    losses: dict[str, list[float]] = {}

    def variant(name: str, run: Callable[[nn.Module], float]) -> Callable[[], None]:
        # one fresh copy of the same initial weights per call, made before any timing
        copies = [copy.deepcopy(base) for _ in range(warmup + repeats)]
        losses[name] = []

        def fn() -> None:
            losses[name].append(run(copies.pop()))

        return fn

    variants = {
        "library": variant("library", lambda m: library_loop(m, data, progress=False, **kw)),
        "hand": variant("hand", lambda m: hand_loop(m, data, **kw)),
    }
    if not args.no_bar:
        variants["library+bar"] = variant("library+bar", lambda m: library_loop(m, data, progress=True, **kw))
    clock = _timing.clock_for(device)
    times = _timing.interleaved(variants, repeats=repeats, warmup=warmup, device=device, clock=clock)

    rtol = 1e-3 if device.type == "cuda" else 1e-4
    final = {name: _timing.median(v) for name, v in losses.items()}
    for name, v in losses.items():  # every call, of every variant, must have ended at the same loss
        for value in v:
            if not math.isclose(value, final["hand"], rel_tol=rtol) or not math.isfinite(value):
                raise RuntimeError(
                    f"{case.name}: {name} ended at loss {value!r}, the hand loop at {final['hand']!r}: "
                    f"the two loops did not do the same work"
                )
    row: dict[str, Any] = {
        "model": case.name,
        "description": case.description,
        "parameters": count_parameters(base),
        "input_shape": list(data.shape[1:]),
        "batch_size": case.batch_size,
        "samples": n,
        "epochs": case.epochs,
        "steps": steps,
        "device": str(device),
        "lr": LR,
        "repeats": repeats,
        "clock": clock,
        "library_s_per_step": _timing.median(times["library"]) / steps,
        "hand_s_per_step": _timing.median(times["hand"]) / steps,
        "ratio": _timing.paired_ratio(times, "library", "hand"),
        "ratio_of_minimums": min(times["library"]) / min(times["hand"]),
        "library_samples_per_s": steps * case.batch_size / _timing.median(times["library"]),
        "hand_samples_per_s": steps * case.batch_size / _timing.median(times["hand"]),
        "library_final_loss": final["library"],
        "hand_final_loss": final["hand"],
        "final_loss_rel_diff": abs(final["library"] - final["hand"]) / abs(final["hand"]),
        "loss_rel_tol": rtol,
        "seconds": {name: list(v) for name, v in times.items()},
    }
    if "library+bar" in times:
        row["ratio_bar"] = _timing.paired_ratio(times, "library+bar", "hand")
        row["library_bar_samples_per_s"] = steps * case.batch_size / _timing.median(times["library+bar"])
    return row


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = _timing.parser(__doc__.split("\n")[0])
    p.add_argument("--no-bar", action="store_true", help="skip the progress=True variant")
    args = p.parse_args(argv)
    device = _timing.setup(args)
    repeats = args.repeats or (2 if args.quick else 7)
    info = _timing.machine(device)
    print(f"machine: {info}", flush=True)
    rows = []
    for case in cases(args.quick):
        rows.append(measure(case, args, device, repeats))
        r = rows[-1]
        print(f"  {case.name}: ratio {r['ratio']:.3f}, final losses {r['library_final_loss']:.6g} (library) "
              f"{r['hand_final_loss']:.6g} (hand)", flush=True)
    headers = ["model", "params", "input", "batch", "steps", "lib ms/step", "hand ms/step", "ratio", "min ratio"]
    if not args.no_bar:
        headers.append("ratio+bar")
    headers += ["lib samples/s", "hand samples/s", "final loss", "loss rel diff"]
    table_rows = []
    for r in rows:
        cells: list[Any] = [
            r["model"], r["parameters"], "x".join(map(str, r["input_shape"])), r["batch_size"], r["steps"],
            1e3 * r["library_s_per_step"], 1e3 * r["hand_s_per_step"], r["ratio"], r["ratio_of_minimums"],
        ]
        if not args.no_bar:
            cells.append(r["ratio_bar"])
        cells += [r["library_samples_per_s"], r["hand_samples_per_s"], r["hand_final_loss"],
                  f"{r['final_loss_rel_diff']:.1e}"]
        table_rows.append(cells)
    print(f"\ndevice {device} ({info['device_name']}), {info['torch_threads']} torch thread(s), Adam lr {LR}, MSE; "
          f"ratio = library s/step / hand-loop s/step (median of {repeats} paired rounds)")
    text = _timing.print_table(headers, table_rows)
    payload: dict[str, Any] = {
        "machine": info,
        "quick": args.quick,
        "what": "reprinvert.train.train vs a minimal hand-written Adam/MSE loop: same model copy, data, batches, "
        "steps; ratio = library seconds per step / hand seconds per step",
        "results": rows,
        "table": text,
    }
    _timing.write_json("training", payload, args.out)
    return payload


if __name__ == "__main__":
    main()
