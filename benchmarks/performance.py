"""How much an inversion costs next to the model itself: overhead, truncation, sweeps, layout, memory.

Every figure is a ratio of two things timed side by side in one run: the variants run in interleaved rounds (A, B,
A, B, ..., the order reversed every other round, after one warm-up round) and each ratio is the median over rounds
of the ratio within a round. On the CPU the clock is the thread's CPU time (``time.thread_time``: with one torch
thread all compute runs in the calling thread, and time the shared machine gives to other processes is not
counted); the wall-time ratio is reported next to it. On a GPU the clock is wall time with synchronisation.

overhead    ``reprinvert.invert`` (``PIXEL_RECIPE``: Adam, L1, linear lr decay) against the floor: a minimal
            hand-written loop on a truncated copy of the model (``nn.Sequential`` of the modules up to the target
            layer) with the same optimizer, loss and schedule, parameters frozen, no hooks, no bookkeeping.
            Per-step cost is read between step 10 and step 40 of a 40-step run (clock readings at those two step
            boundaries; for invert from a callback, which also makes the loop check for NaN every step, so its
            figure is if anything an overestimate); the ratio of whole calls is reported too.
truncation  ``reprinvert.invert`` against the usual user loop: a forward hook on the target layer, the whole model
            run every step, ``loss.backward()``. Two user loops: parameters frozen (the fair comparison of
            truncation alone) and parameters left trainable (how such loops are usually written; the backward then
            also computes every parameter's gradient). Reported next to the ideal speed-up: FLOPs of one user-loop
            step / FLOPs of one truncated step (convolutions and matrix products, counted by
            ``torch.utils.flop_counter``), and the measured floor (user loop / hand-written truncated loop).
sweep       ``reprinvert.sweep`` over L layers (which batches them when it can, see its ``batched=``) against L
            separate ``invert`` calls (whole calls), and two batched loops written here: all L inversions as one
            batch of L x B inputs with one forward per step to the deepest layer ("batched"), and the same with
            each copy taken out of the batch at its own layer ("progressive", what ``sweep`` does); with the FLOP
            ratio of "batched".
batching    the sweep's automatic choice against both modes it chooses from, at 32, 64 and 128 px (the ResNet-18
            layout at width 16, batch 4, its 5 stages): whole ``sweep`` calls with ``batched=True``,
            ``batched=False`` and the default (which measures a few steps both ways, and the memory each layer's
            backward pass keeps, before choosing); the speed-up of batching, what the automatic mode chose, and its
            time against the better of the two.
threads     wall time of one ``invert`` (the residual CNN's layer2.1, 30 steps) with 1 torch thread against torch's
            default (one per core) and every count in between, at 32 and 128 px, interleaved, on the machine as it
            is and with another process keeping one core busy (as other users' jobs do on a shared machine): what
            the guidance for shared CPUs in docs/performance.md rests on.
layout      channels-last and ``torch.compile``: the floor loop in each form and ``invert`` on a channels-last model,
            with the compile time and the steps after which compiling would pay.
cold start  the first 5-step inversion in a fresh process, reprinvert against the floor (which builds a
            ``torch.optim.Adam`` as hand-written loops do).
memory      peak memory of an inversion against one forward and backward of the truncated model, each in a fresh
            subprocess after the same warm-up. CPU: the peak of the live C-heap bytes (glibc ``mallinfo2``) read
            after every torch operation by a dispatch mode, and the peak resident set (``VmHWM`` after resetting
            it), which also counts memory the allocator keeps after frees; CUDA: ``torch.cuda.max_memory_allocated``.
            And the growth of live memory between step 100 and step 1000 of one inversion.

Models (untrained, seeded; eval mode): a residual CNN (ResNet-18 layout at width 16: stem, 4 stages of 2 basic
blocks, 32x32 inputs, batch 4) with targets layer1.0 (shallow), layer2.1 (middle) and layer4.1 (deep); a small
vision transformer (4x4 patches of 32x32 images = 64 tokens, width 128, 8 pre-norm encoder blocks, batch 4) with
targets blocks.1, blocks.3 and blocks.7; and, for the overhead only, a tiny residual CNN (width 8, 2 blocks, 16x16,
batch 2) whose step takes about a millisecond, where per-step bookkeeping would show.

Usage:
    python benchmarks/performance.py                 # everything (about 30 minutes on 1 CPU thread)
    python benchmarks/performance.py --only overhead truncation
    python benchmarks/performance.py --quick         # smoke run: tiny models, 1 repeat
    python benchmarks/performance.py --device cuda   # on a GPU
Writes benchmarks/results/performance.json (or --out).
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import gc
import json
import os
import subprocess
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _timing

import reprinvert as ri

SECTIONS = ("overhead", "truncation", "sweep", "batching", "threads", "memory", "layout")

#: The recipe the hand-written loops mirror: Adam on pixels, L1, lr 0.3 decaying linearly to 0, no clamp (the
#: default recipe of reprinvert 0.1). The loop's cost per step does not depend on the recipe's numbers; the
#: current default adds a pyramid parametrisation, whose cost is measured in benchmarks/inversion_quality.py.
PIXEL_RECIPE = ri.recipes.default(lr=0.3, init="seed", parametrization="pixel", clamp=None)


# -- models -------------------------------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return self.relu(out)


def resnet(width: int = 32, blocks: tuple[int, ...] = (2, 2, 2, 2), seed: int = 0) -> nn.Sequential:
    """ResNet-18 layout (basic blocks) for small images, as one nested ``nn.Sequential``."""
    torch.manual_seed(seed)
    layers: OrderedDict[str, nn.Module] = OrderedDict(
        stem=nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
    )
    cin = width
    for k, n in enumerate(blocks):
        cout = width * 2**k
        layers[f"layer{k + 1}"] = nn.Sequential(*(BasicBlock(cin if j == 0 else cout, cout, 2 if (k and j == 0) else 1)
                                                  for j in range(n)))
        cin = cout
    layers["head"] = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 10))
    model = nn.Sequential(layers)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so eval mode is not the identity
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


class Tokens(nn.Module):
    """(B, D, H, W) patch embeddings -> (B, H*W, D) tokens plus a learned position embedding."""

    def __init__(self, tokens: int, dim: int) -> None:
        super().__init__()
        self.pos = nn.Parameter(0.02 * torch.randn(1, tokens, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).transpose(1, 2) + self.pos


class MeanPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(1)


def vit(image: int = 64, patch: int = 8, dim: int = 128, depth: int = 8, seed: int = 0) -> nn.Sequential:
    """A small vision transformer as one nested ``nn.Sequential``."""
    torch.manual_seed(seed)
    tokens = (image // patch) ** 2
    block = nn.TransformerEncoderLayer(dim, nhead=4, dim_feedforward=4 * dim, dropout=0.0, batch_first=True,
                                       norm_first=True)
    return nn.Sequential(OrderedDict(
        patch=nn.Conv2d(3, dim, patch, patch),
        tokens=Tokens(tokens, dim),
        blocks=nn.Sequential(*(copy.deepcopy(block) for _ in range(depth))),
        head=nn.Sequential(nn.LayerNorm(dim), MeanPool(), nn.Linear(dim, 10)),
    )).eval()


def truncated(model: nn.Sequential, layer: str) -> nn.Sequential:
    """The modules of a nested ``nn.Sequential`` that run up to and including ``layer``, as a new Sequential."""
    head, _, rest = layer.partition(".")
    kept: list[nn.Module] = []
    for name, child in model.named_children():
        if name != head:
            kept.append(child)
            continue
        kept.append(truncated(child, rest) if rest else child)  # type: ignore[arg-type]
        return nn.Sequential(*kept)
    raise KeyError(layer)


def images(batch: int, size: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    """Bundled photos (resized), repeated to the batch size."""
    photos = ri.data.sample_images(size=size)
    return photos[torch.arange(batch) % photos.shape[0]].to(device)


# -- the loops compared ---------------------------------------------------------------------------------------------
def _lr(i: int, steps: int, lr: float = 0.3) -> float:
    return lr * (1.0 - i / steps)  # the default recipe's linear schedule


def _initial(x: torch.Tensor) -> torch.Tensor:
    g = torch.Generator(device=x.device).manual_seed(0)
    z = 0.7 + 0.05 * torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        z = z.contiguous(memory_format=torch.channels_last)
    return z


class Marks:
    """Clock readings at two step boundaries of one run (after step ``first`` and after the last step), so the
    per-step cost excludes everything before and after the loop. Wall time, and on the CPU also the thread's CPU
    time (with one torch thread all compute runs in the calling thread; time the machine gives to other users'
    processes is not counted, so it is the steadier figure on a shared machine)."""

    def __init__(self, first: int, last: int, device: torch.device) -> None:
        self.first, self.last, self.device = first, last, device
        self.readings: dict[int, tuple[float, float]] = {}

    def at(self, boundary: int) -> None:
        if boundary == self.first or boundary == self.last:
            _timing.sync(self.device)
            self.readings[boundary] = (time.perf_counter(), time.thread_time())

    def callback(self, info: ri.StepInfo) -> None:
        self.at(info.step + 1)

    def per_step(self) -> tuple[float, float]:
        (w0, c0), (w1, c1) = self.readings[self.first], self.readings[self.last]
        n = self.last - self.first
        return (w1 - w0) / n, (c1 - c0) / n


def floor_loop(trunc: nn.Module, x: torch.Tensor, steps: int, marks: Marks | None = None) -> torch.Tensor:
    """The floor: Adam on the input of the truncated model, L1 loss, no hooks, no bookkeeping."""
    with torch.no_grad():
        target = trunc(x.clone())
    z = _initial(x).requires_grad_(True)
    opt = torch.optim.Adam([z], lr=0.3)
    for i in range(steps):
        opt.param_groups[0]["lr"] = _lr(i, steps)
        loss = (trunc(z) - target).abs().sum()
        (z.grad,) = torch.autograd.grad(loss, z)
        opt.step()
        if marks is not None:
            marks.at(i + 1)
    return z.detach()


def user_loop(model: nn.Module, layer: nn.Module, x: torch.Tensor, steps: int, marks: Marks | None = None
              ) -> torch.Tensor:
    """The usual hand-written inversion: a forward hook on the layer, the whole model every step, backward()."""
    store: dict[str, torch.Tensor] = {}
    handle = layer.register_forward_hook(lambda m, i, o: store.__setitem__("out", o))
    try:
        with torch.no_grad():
            model(x.clone())
            target = store["out"].clone()
        z = _initial(x).requires_grad_(True)
        opt = torch.optim.Adam([z], lr=0.3)
        for i in range(steps):
            opt.param_groups[0]["lr"] = _lr(i, steps)
            opt.zero_grad()
            model(z)
            loss = (store["out"] - target).abs().sum()
            loss.backward()
            opt.step()
            if marks is not None:
                marks.at(i + 1)
    finally:
        handle.remove()
    return z.detach()


def library(model: nn.Module, layer: str, x: torch.Tensor, steps: int, marks: Marks | None = None) -> torch.Tensor:
    """reprinvert.invert with ``PIXEL_RECIPE``. With ``marks`` a callback reads the clocks; a callback also makes
    the loop check for non-finite losses every step, so the figure is if anything an overestimate."""
    callback = None if marks is None else marks.callback
    return ri.invert(model, layer, x, recipe=PIXEL_RECIPE, steps=steps, callback=callback).input


def measure_steps(
    variants: dict[str, Callable[..., Any]], *, steps: int, first: int, repeats: int, device: torch.device
) -> dict[str, dict[str, list[float]]]:
    """Interleaved rounds (order reversed every other round, one warm-up round): per call, the wall and CPU seconds
    per step between boundary ``first`` and the last step, and the wall seconds of the whole call."""
    for fn in variants.values():
        fn(None)
    out: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": [], "call": []} for name in variants}
    for r in range(repeats):
        order = list(variants.items())
        if r % 2:
            order.reverse()
        for name, fn in order:
            marks = Marks(first, steps, device)
            _timing.sync(device)
            t0 = time.perf_counter()
            fn(marks)
            _timing.sync(device)
            out[name]["call"].append(time.perf_counter() - t0)
            wall, cpu = marks.per_step()
            out[name]["wall"].append(wall)
            out[name]["cpu"].append(cpu)
    return out


def measure_by_length(
    variants: dict[str, Callable[[int], Any]], *, steps: int, first: int, repeats: int, device: torch.device
) -> dict[str, list[float]]:
    """Per-step seconds as the difference of two whole calls, ``steps`` and ``first`` steps long, divided by
    ``steps - first``: no callback or clock inside the loop (a callback makes ``invert`` build a StepInfo with a copy
    of the input and check the loss every step, work the floor loop does not do). Interleaved rounds after a
    warm-up; the thread's CPU time on the CPU, wall time on a GPU."""
    clock = time.thread_time if device.type == "cpu" else time.perf_counter
    for fn in variants.values():
        fn(first)
    out: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(repeats):
        order = list(variants.items())
        if r % 2:
            order.reverse()
        for name, fn in order:
            spans = []
            for n in (first, steps):
                _timing.sync(device)
                t0 = clock()
                fn(n)
                _timing.sync(device)
                spans.append(clock() - t0)
            out[name].append((spans[1] - spans[0]) / (steps - first))
    return out


def paired(m: dict[str, dict[str, list[float]]], num: str, den: str, key: str) -> float:
    """Median over rounds of num / den (both measured in the same round)."""
    return _timing.median([a / b for a, b in zip(m[num][key], m[den][key])])


def frozen_copy(model: nn.Module) -> nn.Module:
    out = copy.deepcopy(model).eval()
    for p in out.parameters():
        p.requires_grad_(False)
    return out


def step_flops(fn: Callable[[], Any]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def _one_step_truncated(trunc: nn.Module, x: torch.Tensor) -> None:
    z = x.clone().requires_grad_(True)
    trunc(z).abs().sum().backward()  # (FlopCounterMode's backward hooks do not support autograd.grad)


def _one_step_full(model: nn.Module, layer: nn.Module, x: torch.Tensor) -> None:
    store: dict[str, torch.Tensor] = {}
    handle = layer.register_forward_hook(lambda m, i, o: store.__setitem__("out", o))
    try:
        z = x.clone().requires_grad_(True)
        model(z)
        store["out"].abs().sum().backward()
    finally:
        handle.remove()


# -- cases ----------------------------------------------------------------------------------------------------------
def tiny_case(device: torch.device) -> dict[str, Any]:
    """A model so small that a step costs about a millisecond: the per-step bookkeeping shows here."""
    return dict(model="resnet-tiny", net=resnet(width=8, blocks=(1, 1), seed=0).to(device), x=images(2, 16, device),
                targets=["layer2.0"], labels=["deep"])


def null_case(device: torch.device) -> dict[str, Any]:
    """A model that costs almost nothing (one 16 x 16 linear layer, batch 2): the loop's bookkeeping per step."""
    torch.manual_seed(0)
    return dict(model="null (linear 16)", net=nn.Sequential(nn.Linear(16, 16)).eval().to(device),
                x=torch.rand(2, 16, generator=torch.Generator().manual_seed(0)).to(device), targets=["0"],
                labels=["-"])


def cases(quick: bool, device: torch.device) -> list[dict[str, Any]]:
    if quick:
        net = resnet(width=8, blocks=(1, 1), seed=0).to(device)
        tiny_vit = vit(image=16, patch=4, dim=16, depth=2).to(device)
        return [
            dict(model="resnet", net=net, x=images(2, 16, device), targets=["layer1.0", "layer2.0"],
                 labels=["shallow", "deep"]),
            dict(model="vit", net=tiny_vit, x=images(2, 16, device), targets=["blocks.0", "blocks.1"],
                 labels=["shallow", "deep"]),
        ]
    return [
        dict(model="resnet18-w16", net=resnet(16).to(device), x=images(4, 32, device),
             targets=["layer1.0", "layer2.1", "layer4.1"], labels=["shallow", "middle", "deep"]),
        dict(model="vit-d128x8", net=vit(image=32, patch=4).to(device), x=images(4, 32, device),
             targets=["blocks.1", "blocks.3", "blocks.7"], labels=["shallow", "middle", "deep"]),
    ]


def describe_case(case: dict[str, Any]) -> str:
    n = sum(p.numel() for p in case["net"].parameters())
    return f"{case['model']} ({n / 1e6:.2f} M parameters), input {tuple(case['x'].shape)}"


# -- sections -------------------------------------------------------------------------------------------------------
def run_overhead_and_truncation(args: Any, device: torch.device, want: set[str]) -> dict[str, Any]:
    steps, first = (8, 2) if args.quick else (40, 10)
    repeats = args.repeats or (1 if args.quick else 5)
    key = _timing.clock_for(device)
    rows_o, rows_t, out = [], [], []
    all_cases = [*cases(args.quick, device), *([] if args.quick else [tiny_case(device)]), null_case(device)]
    for case in all_cases:
        net, x = case["net"], case["x"]
        trainable = copy.deepcopy(net).eval()  # parameters left requires_grad=True, as users usually leave them
        frozen = frozen_copy(net)
        modules = dict(net.named_modules())
        for layer, label in zip(case["targets"], case["labels"]):
            trunc = frozen_copy(truncated(net, layer))
            variants: dict[str, Callable[..., Any]] = {
                "floor": partial(floor_loop, trunc, x, steps),
                "reprinvert": partial(library, net, layer, x, steps),
            }
            truncating = "truncation" in want and not case["model"].startswith("null")
            if truncating:
                variants["hook"] = partial(user_loop, frozen, dict(frozen.named_modules())[layer], x, steps)
                variants["hook+params"] = partial(user_loop, trainable, dict(trainable.named_modules())[layer], x,
                                                  steps)
            print(f"timing {case['model']} {layer} ({len(variants)} loops x {repeats} rounds) ...", flush=True)
            m = measure_steps(variants, steps=steps, first=first, repeats=repeats, device=device)
            per = {name: _timing.median(v[key]) for name, v in m.items()}
            lengths = measure_by_length(
                {"floor": partial(floor_loop, trunc, x), "reprinvert": partial(library, net, layer, x)},
                steps=4 * steps, first=first, repeats=repeats, device=device,
            )
            flops_full = step_flops(partial(_one_step_full, frozen, dict(frozen.named_modules())[layer], x))
            flops_trunc = step_flops(partial(_one_step_truncated, trunc, x))
            row: dict[str, Any] = {
                "model": case["model"], "layer": layer, "depth": label, "module": type(modules[layer]).__name__,
                "clock": key, "seconds_per_step": per,
                "overhead": paired(m, "reprinvert", "floor", key),
                "overhead_wall": paired(m, "reprinvert", "floor", "wall"),
                "overhead_end_to_end": paired(m, "reprinvert", "floor", "call"),
                "overhead_no_callback": _timing.median(
                    [a / b for a, b in zip(lengths["reprinvert"], lengths["floor"])]),
                "seconds_per_step_no_callback": {k: _timing.median(v) for k, v in lengths.items()},
                "flops_full_step": flops_full, "flops_truncated_step": flops_trunc,
                "measurements": m,
            }
            row["extra_seconds_per_step"] = per["reprinvert"] - per["floor"]
            rows_o.append([case["model"], layer, label, per["floor"] * 1e3, per["reprinvert"] * 1e3,
                           row["extra_seconds_per_step"] * 1e6, row["overhead"], row["overhead_wall"],
                           row["overhead_no_callback"], row["overhead_end_to_end"]])
            if truncating:
                ideal_flops = flops_full / flops_trunc
                speedup = paired(m, "hook", "reprinvert", key)
                row.update(
                    ideal_flops=ideal_flops, ideal_measured=paired(m, "hook", "floor", key),
                    speedup_vs_hook=speedup, speedup_vs_hook_params=paired(m, "hook+params", "reprinvert", key),
                    speedup_over_ideal=speedup / ideal_flops,
                )
                rows_t.append([case["model"], layer, label, per["hook+params"] * 1e3, per["hook"] * 1e3,
                               per["reprinvert"] * 1e3, row["speedup_vs_hook_params"], speedup, ideal_flops,
                               row["ideal_measured"], speedup / ideal_flops])
            out.append(row)
    print(f"\n## overhead: reprinvert.invert vs the hand-written truncated loop (the floor); ms per step "
          f"({'thread CPU time' if key == 'cpu' else 'wall time'}), steps {first}-{steps} of {steps}, read by a "
          f"callback; 'no callback': the difference of whole calls of {4 * steps} and {first} steps")
    text_o = _timing.print_table(
        ["model", "layer", "depth", "floor ms", "reprinvert ms", "extra us", "overhead", "overhead (wall)",
         "overhead (no callback)", "whole call"], rows_o)
    text_t = ""
    if "truncation" in want:
        print("\n## truncation: the usual hook loop (whole model every step) vs reprinvert.invert; ms per step")
        text_t = _timing.print_table(
            ["model", "layer", "depth", "hook+params", "hook", "reprinvert", "speedup vs hook+params",
             "speedup vs hook", "ideal (FLOPs)", "ideal (floor)", "speedup / ideal"], rows_t)
    return {"steps": steps, "first": first, "repeats": repeats, "clock": key, "rows": out,
            "table_overhead": text_o, "table_truncation": text_t, "models": [describe_case(c) for c in all_cases]}


def separate_inversions(model: nn.Module, layers: list[str], x: torch.Tensor, steps: int) -> list[ri.Inversion]:
    return [ri.invert(model, name, x, recipe=PIXEL_RECIPE, steps=steps) for name in layers]


def batched_sweep(model: nn.Module, layers: list[str], x: torch.Tensor, steps: int) -> torch.Tensor:
    """All layers' inversions as one batch: copy k of x is matched at layers[k]; one forward per step, stopped at
    the deepest layer (the alternative a batched sweep would implement)."""
    L, B = len(layers), x.shape[0]
    with ri.capture(model, layers, stop=True) as reps:
        model(x.clone())
    targets = [reps[name] for name in layers]
    z = _initial(x).repeat(L, *([1] * (x.dim() - 1))).requires_grad_(True)
    opt = torch.optim.Adam([z], lr=0.3)
    for i in range(steps):
        opt.param_groups[0]["lr"] = _lr(i, steps)
        with ri.capture(model, layers, grad=True, stop=True) as reps:
            model(z)
        loss = sum((reps[name][k * B:(k + 1) * B] - targets[k]).abs().sum() for k, name in enumerate(layers))
        (z.grad,) = torch.autograd.grad(loss, z)
        opt.step()
    return z.detach()


class _Stop(Exception):
    pass


def progressive_sweep(model: nn.Module, layers: list[str], x: torch.Tensor, steps: int) -> torch.Tensor:
    """All layers' inversions in one forward per step without the wasted compute of ``batched_sweep``: copy k is
    taken out of the batch at layers[k] (a forward hook returns the remaining rows), so each copy runs only up to
    its own layer. Valid only when every later module sees nothing but its predecessor's output (no skip
    connections around a target), as for the top-level stages of these two models."""
    L, B = len(layers), x.shape[0]
    with ri.capture(model, layers, stop=True) as reps:
        model(x.clone())
    targets = [reps[name] for name in layers]
    modules = dict(model.named_modules())
    store: dict[int, torch.Tensor] = {}

    def hook_for(k: int) -> Callable[..., Any]:
        def hook(module: nn.Module, args: Any, out: torch.Tensor) -> Any:
            store[k] = out[:B]
            if k == L - 1:
                raise _Stop
            return out[B:].clone()  # a separate tensor: in-place ops downstream must not touch store[k]

        return hook

    handles = [modules[name].register_forward_hook(hook_for(k)) for k, name in enumerate(layers)]
    try:
        z = _initial(x).repeat(L, *([1] * (x.dim() - 1))).requires_grad_(True)
        opt = torch.optim.Adam([z], lr=0.3)
        for i in range(steps):
            opt.param_groups[0]["lr"] = _lr(i, steps)
            try:
                model(z)
            except _Stop:
                pass
            loss = sum((store[k] - targets[k]).abs().sum() for k in range(L))
            (z.grad,) = torch.autograd.grad(loss, z)
            opt.step()
    finally:
        for h in handles:
            h.remove()
    return z.detach()


def run_layout(args: Any, device: torch.device) -> dict[str, Any]:
    """Would channels-last or torch.compile pay? Measured on the residual CNN's middle target: the floor loop in
    each form, and reprinvert.invert given a channels-last model and input (it then optimises in that layout)."""
    steps, first = (8, 2) if args.quick else (40, 10)
    repeats = args.repeats or (1 if args.quick else 5)
    key = _timing.clock_for(device)
    case = cases(args.quick, device)[0]
    net, x = case["net"], case["x"]
    layer = case["targets"][len(case["targets"]) // 2]
    trunc = frozen_copy(truncated(net, layer))
    net_cl = copy.deepcopy(net).to(memory_format=torch.channels_last)
    trunc_cl = frozen_copy(trunc).to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    variants: dict[str, Callable[..., Any]] = {
        "floor": partial(floor_loop, trunc, x, steps),
        "floor channels-last": partial(floor_loop, trunc_cl, x_cl, steps),
        "reprinvert": partial(library, net, layer, x, steps),
        "reprinvert channels-last": partial(library, net_cl, layer, x_cl, steps),
    }
    compiled: dict[str, Any] = {}
    if not args.no_compile:
        t0 = time.perf_counter()
        comp = torch.compile(trunc)
        floor_loop(comp, x, 2)
        _timing.sync(device)
        compiled["compile_seconds"] = time.perf_counter() - t0
        variants["floor compiled"] = partial(floor_loop, comp, x, steps)
    print(f"timing layouts of {case['model']} {layer} ...", flush=True)
    m = measure_steps(variants, steps=steps, first=first, repeats=repeats, device=device)
    per = {name: _timing.median(v[key]) for name, v in m.items()}
    rows = [[name, per[name] * 1e3, paired(m, "floor", name, key)] for name in variants]
    print(f"\n## layout and compilation: {case['model']} {layer}, ms per step (speed-up = floor / variant)")
    text = _timing.print_table(["variant", "ms/step", "speed-up vs eager floor"], rows)
    out: dict[str, Any] = {"model": case["model"], "layer": layer, "clock": key, "seconds_per_step": per,
                           "table": text, "speedups": {r[0]: r[2] for r in rows}, "measurements": m}
    if compiled:
        saved = per["floor"] - per["floor compiled"]
        compiled["break_even_steps"] = compiled["compile_seconds"] / saved if saved > 0 else None
        print(f"torch.compile: {compiled['compile_seconds']:.1f} s to compile; it pays after "
              f"{compiled['break_even_steps'] or float('inf'):.0f} steps (the default recipe runs 300)")
        out["compile"] = compiled
    return out


_COLD = """
import sys, time
t0 = time.perf_counter()
import torch
sys.path.insert(0, {bench!r})
import performance as P
torch.set_num_threads(1)
case = P.tiny_case(torch.device({device!r}))
net, x, layer = case["net"], case["x"], case["targets"][0]
t1 = time.perf_counter()
if {which!r} == "reprinvert":
    P.library(net, layer, x, 5)
else:
    P.floor_loop(P.frozen_copy(P.truncated(net, layer)), x, 5)
P._timing.sync(torch.device({device!r}))
print(time.perf_counter() - t1)
"""


def run_cold_start(args: Any, device: torch.device) -> dict[str, Any]:
    """The first inversion in a fresh process (5 steps of the tiny model), reprinvert against the floor loop,
    which builds a ``torch.optim.Adam`` as hand-written loops do."""
    repeats = 1 if args.quick else 3
    times: dict[str, list[float]] = {"reprinvert": [], "floor": []}
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for _ in range(repeats):
        for which in times:
            code = _COLD.format(bench=str(Path(__file__).resolve().parent), device=str(device), which=which)
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
            times[which].append(float(proc.stdout.strip().splitlines()[-1]))
    ratio = _timing.median(times["floor"]) / _timing.median(times["reprinvert"])
    print("\n## cold start: the first 5-step inversion in a fresh process (model already built)")
    text = _timing.print_table(["variant", "seconds"], [[k, _timing.median(v)] for k, v in times.items()])
    print(f"floor / reprinvert: {ratio:.3g}")
    return {"times": times, "floor_over_reprinvert": ratio, "table": text, "repeats": repeats}


def measure_calls(
    variants: dict[str, Callable[[], Any]], *, repeats: int, device: torch.device
) -> dict[str, dict[str, list[float]]]:
    """Interleaved rounds after one warm-up round: wall and thread CPU seconds of each whole call."""
    for fn in variants.values():
        fn()
    out: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": []} for name in variants}
    for r in range(repeats):
        order = list(variants.items())
        if r % 2:
            order.reverse()
        for name, fn in order:
            _timing.sync(device)
            w0, c0 = time.perf_counter(), time.thread_time()
            fn()
            _timing.sync(device)
            out[name]["wall"].append(time.perf_counter() - w0)
            out[name]["cpu"].append(time.thread_time() - c0)
    return out


def run_sweep(args: Any, device: torch.device) -> dict[str, Any]:
    """Whole calls: a sweep does everything separate calls do (targets, metrics), so both are timed end to end."""
    steps = 4 if args.quick else 60
    repeats = args.repeats or (1 if args.quick else 3)
    key = _timing.clock_for(device)
    rows, out = [], []
    for case in cases(args.quick, device):
        net, x = case["net"], case["x"]
        frozen = frozen_copy(net)
        layers = [name for name, _ in net.named_children() if name != "head"]
        if case["model"].startswith("vit"):
            layers = [f"blocks.{k}" for k in range(len(net.blocks))]
        L = len(layers)
        variants: dict[str, Callable[[], Any]] = {
            "sweep": partial(ri.sweep, net, x, layers=layers, recipe=PIXEL_RECIPE, steps=steps, progress=False),
            "separate": partial(separate_inversions, net, layers, x, steps),
            "batched": partial(batched_sweep, frozen, layers, x, steps),
            "progressive": partial(progressive_sweep, frozen, layers, x, steps),
        }
        mode = ri.sweep(net, x, layers=layers, recipe=PIXEL_RECIPE, steps=1, progress=False).provenance.options
        print(f"timing sweep of {case['model']} over {L} layers, {steps} steps (sweep batched: {mode['batched']}"
              f"{'' if mode['batched'] else ', because ' + str(mode['not_batched_because'])}) ...", flush=True)
        m = measure_calls(variants, repeats=repeats, device=device)
        separate_flops = sum(step_flops(partial(_one_step_truncated, frozen_copy(truncated(net, name)), x))
                             for name in layers)
        big = x.repeat(L, *([1] * (x.dim() - 1)))
        batched_flops = step_flops(partial(_one_step_truncated, frozen_copy(truncated(net, layers[-1])), big))
        row = {
            "model": case["model"], "layers": layers, "clock": key, "sweep_batched": mode["batched"],
            "sweep_not_batched_because": mode["not_batched_because"],
            "seconds": {name: _timing.median(v[key]) for name, v in m.items()},
            "sweep_speedup": paired(m, "separate", "sweep", key),
            "sweep_speedup_wall": paired(m, "separate", "sweep", "wall"),
            "batched_speedup": paired(m, "separate", "batched", key),
            "progressive_speedup": paired(m, "separate", "progressive", key),
            "flops_separate_step": separate_flops, "flops_batched_step": batched_flops,
            "batched_flop_ratio": separate_flops / batched_flops, "measurements": m,
        }
        out.append(row)
        rows.append([case["model"], L, row["seconds"]["separate"], row["seconds"]["sweep"], row["sweep_speedup"],
                     row["sweep_speedup_wall"], row["batched_speedup"], row["batched_flop_ratio"],
                     row["progressive_speedup"]])
    print(f"\n## sweep: L layers, {steps} steps each: reprinvert.sweep vs L separate invert calls, and two batched "
          f"alternatives (seconds per whole call, {'thread CPU time' if key == 'cpu' else 'wall time'})")
    text = _timing.print_table(
        ["model", "L", "separate s", "sweep s", "sweep speedup", "(wall)", "batched speedup", "batched FLOP ratio",
         "progressive speedup"], rows)
    return {"steps": steps, "repeats": repeats, "clock": key, "rows": out, "table": text}


def run_batching(args: Any, device: torch.device) -> dict[str, Any]:
    """The automatic mode of ``sweep(batched=None)`` against ``batched=True`` and ``batched=False``, by input size."""
    steps = 3 if args.quick else 100
    repeats = args.repeats or (1 if args.quick else 3)
    key = _timing.clock_for(device)
    sizes = (16, 32) if args.quick else (32, 64, 128)
    net = (resnet(width=8, blocks=(1, 1), seed=0) if args.quick else resnet(16)).to(device)
    layers = [name for name, _ in net.named_children() if name != "head"]
    rows, out = [], []
    for size in sizes:
        x = images(2 if args.quick else 4, size, device)
        call = partial(ri.sweep, net, x, layers=layers, recipe=PIXEL_RECIPE, steps=steps, progress=False)
        variants: dict[str, Callable[[], Any]] = {
            "batched": partial(call, batched=True), "one by one": partial(call, batched=False), "automatic": call,
        }
        print(f"timing sweep of resnet over {len(layers)} layers at {size} px, {steps} steps ...", flush=True)
        chosen: list[bool] = []

        def automatic(call: Callable[[], ri.Sweep] = call, chosen: list[bool] = chosen) -> None:
            chosen.append(call().provenance.options["batched"])

        variants["automatic"] = automatic
        m = measure_calls(variants, repeats=repeats, device=device)
        probe = call().provenance.options.get("batched_probe") or {}
        seconds = {name: _timing.median(v[key]) for name, v in m.items()}
        best = min(seconds["batched"], seconds["one by one"])
        row = {
            "size": size, "seconds": seconds, "batching_speedup": paired(m, "one by one", "batched", key),
            "automatic_chose_batched": chosen, "automatic_over_best": seconds["automatic"] / best,
            "probe": probe, "measurements": m,
        }
        out.append(row)
        picks = sorted(set(chosen))
        rows.append([size, seconds["one by one"], seconds["batched"], row["batching_speedup"],
                     "/".join("batched" if c else "one by one" for c in picks), seconds["automatic"],
                     row["automatic_over_best"]])
    print(f"\n## batching: sweep over the {len(layers)} stages of the residual CNN (batch {x.shape[0]}), {steps} "
          f"steps, whole calls ({'thread CPU time' if key == 'cpu' else 'wall time'}); 'automatic over best': the "
          "default's time "
          "against the faster of the two modes (its probe included)")
    text = _timing.print_table(
        ["px", "one by one s", "batched s", "batching speedup", "automatic chose", "automatic s",
         "automatic over best"], rows)
    return {"steps": steps, "repeats": repeats, "clock": key, "rows": out, "table": text}


def run_threads(args: Any, device: torch.device) -> dict[str, Any]:
    """Wall seconds of one inversion per torch thread count, interleaved; ratios against 1 thread."""
    steps = 3 if args.quick else 30
    repeats = args.repeats or (1 if args.quick else 3)
    cores = os.cpu_count() or 1
    counts = sorted({1, cores, *range(2, cores + 1)})[:8]
    net = (resnet(width=8, blocks=(1, 1), seed=0) if args.quick else resnet(16)).to(device)
    layer = "layer2.0" if args.quick else "layer2.1"
    before = torch.get_num_threads()
    rows, out = [], []
    try:
        # "busy": another process keeps one core busy all along, as other users' jobs do on a shared machine
        for load in ("idle", "one core busy"):
            spinner = None if load == "idle" else subprocess.Popen([sys.executable, "-c", "while True: pass"])
            try:
                for size in ((16,) if args.quick else (32, 128)):
                    x = images(4, size, device)
                    seconds: dict[int, list[float]] = {n: [] for n in counts}
                    ri.invert(net, layer, x, recipe=PIXEL_RECIPE, steps=2)  # warm-up
                    for r in range(repeats):
                        for n in (counts if r % 2 == 0 else counts[::-1]):
                            torch.set_num_threads(n)
                            _timing.sync(device)
                            t0 = time.perf_counter()
                            ri.invert(net, layer, x, recipe=PIXEL_RECIPE, steps=steps)
                            _timing.sync(device)
                            seconds[n].append(time.perf_counter() - t0)
                    best = {n: _timing.median(v) for n, v in seconds.items()}
                    out.append({"load": load, "size": size, "seconds": seconds, "median": best,
                                "slowdown_against_1": {n: best[n] / best[1] for n in counts}})
                    rows += [[load, size, n, best[n], best[n] / best[1]] for n in counts]
            finally:
                if spinner is not None:
                    spinner.kill()
                    spinner.wait()
    finally:
        torch.set_num_threads(before)
    print(f"\n## threads: one invert of the residual CNN's {layer}, {steps} steps, batch 4, wall seconds by torch "
          f"thread count ({cores} cores here; torch's default is one thread per core)")
    text = _timing.print_table(["machine", "px", "threads", "wall s", "against 1 thread"], rows)
    return {"steps": steps, "repeats": repeats, "cores": cores, "rows": out, "table": text}


# -- memory ---------------------------------------------------------------------------------------------------------
def _status_bytes(key: str) -> int:
    """VmRSS / VmHWM of this process from /proc/self/status, in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def _reset_peak_rss() -> int:
    """Give freed heap back to the OS, reset the peak resident set size (Linux clear_refs 5); return VmRSS."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_bytes("VmRSS")


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _live_bytes() -> int:
    """Bytes the C heap has handed out and not got back (glibc ``mallinfo2``: in-use arena plus mmapped blocks)."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return int(info.uordblks + info.hblkhd)


class _PeakLive(TorchDispatchMode):
    """Reads the live heap bytes after every torch operation (forward and backward) and keeps the largest."""

    def __init__(self) -> None:
        super().__init__()
        self.peak = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        self.peak = max(self.peak, _live_bytes())
        return out


def memory_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run in a fresh process: build the case, then either one forward+backward of the truncated model or one
    inversion; report the peak memory above the state after set-up."""
    torch.set_num_threads(1)
    device = torch.device(spec["device"])
    case = next(c for c in cases(spec["quick"], device) if c["model"] == spec["model"])
    net, x, layer = case["net"], case["x"], spec["layer"]
    trunc = frozen_copy(truncated(net, layer))
    # The same warm-up in both kinds of child, so one-time library set-up (kernel caches, lazy imports, thread
    # pools) is not counted as memory of either.
    cpu = device.type == "cpu"
    with _PeakLive() if cpu else contextlib.nullcontext():
        _one_step_truncated(trunc, x)
        ri.invert(net, layer, x, recipe=PIXEL_RECIPE, steps=2)
    gc.collect()
    if cpu:
        base_rss = _reset_peak_rss()
        base = _live_bytes()
    else:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    marks: dict[int, int] = {}

    def mark(info: ri.StepInfo) -> None:
        if (info.step + 1) % 100 == 0:
            gc.collect()
            marks[info.step + 1] = _live_bytes() if cpu else torch.cuda.memory_allocated()

    with _PeakLive() if cpu else contextlib.nullcontext() as meter:
        if spec["what"] == "forward-backward":
            _one_step_truncated(trunc, x)
        else:
            callback = mark if spec.get("marks") else None
            ri.invert(net, layer, x, recipe=PIXEL_RECIPE, steps=spec["steps"], callback=callback)
    if cpu:
        return {"peak_bytes": meter.peak - base, "peak_rss_bytes": _status_bytes("VmHWM") - base_rss, "marks": marks}
    torch.cuda.synchronize()
    return {"peak_bytes": torch.cuda.max_memory_allocated() - base, "marks": marks}


def _child(spec: dict[str, Any]) -> dict[str, Any]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, __file__, "--memory-child", json.dumps(spec)], capture_output=True,
                          text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"memory child failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_memory(args: Any, device: torch.device) -> dict[str, Any]:
    repeats = 1 if args.quick else 3
    steps = 20 if args.quick else 50
    long_steps = 200 if args.quick else 1000
    rows, out = [], []
    for case in cases(args.quick, device):
        for layer, label in zip(case["targets"], case["labels"]):
            base = dict(model=case["model"], layer=layer, device=str(device), quick=args.quick)
            fb_runs = [_child({**base, "what": "forward-backward"}) for _ in range(repeats)]
            inv_runs = [_child({**base, "what": "invert", "steps": steps}) for _ in range(repeats)]
            fb = [r["peak_bytes"] for r in fb_runs]
            inv = [r["peak_bytes"] for r in inv_runs]
            ratio = _timing.median(inv) / max(_timing.median(fb), 1)
            row = {"model": case["model"], "layer": layer, "depth": label, "forward_backward_bytes": fb,
                   "invert_bytes": inv, "peak_ratio": ratio}
            cells = [case["model"], layer, label, _timing.median(fb) / 2**20, _timing.median(inv) / 2**20, ratio]
            if device.type == "cpu":
                fb_rss = [r["peak_rss_bytes"] for r in fb_runs]
                inv_rss = [r["peak_rss_bytes"] for r in inv_runs]
                row.update(forward_backward_rss_bytes=fb_rss, invert_rss_bytes=inv_rss,
                           peak_rss_ratio=_timing.median(inv_rss) / max(_timing.median(fb_rss), 1))
                cells.append(row["peak_rss_ratio"])
            out.append(row)
            rows.append(cells)
    what = "live heap bytes" if device.type == "cpu" else "CUDA allocated bytes"
    print(f"\n## memory: peak of an inversion vs one forward+backward of the truncated model (MiB above baseline, "
          f"{what})")
    text = _timing.print_table(["model", "layer", "depth", "fwd+bwd MiB", "invert MiB", "ratio"]
                               + (["ratio (resident set)"] if device.type == "cpu" else []), rows)
    # growth over a long run, on the middle (or last) target of the first model
    case = cases(args.quick, device)[0]
    layer = case["targets"][len(case["targets"]) // 2]
    marks = _child(dict(model=case["model"], layer=layer, device=str(device), quick=args.quick, what="invert",
                        steps=long_steps, marks=True))["marks"]
    marks = {int(k): v for k, v in marks.items()}
    first, last = min(marks), max(marks)
    growth = marks[last] - marks[first]
    print(f"\nmemory growth of {case['model']} {layer} between step {first} and step {last}: "
          f"{growth / 2**20:+.2f} MiB ({what})")
    return {"rows": out, "table": text, "steps": steps, "repeats": repeats,
            "growth": {"model": case["model"], "layer": layer, "marks": marks, "from_step": first, "to_step": last,
                       "growth_bytes": growth}}


# -- main -----------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = _timing.parser(__doc__.split("\n")[0])
    p.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="sections to run")
    p.add_argument("--no-compile", action="store_true", help="layout section: skip torch.compile (slow to compile)")
    p.add_argument("--memory-child", help=argparse_suppress(), default=None)
    args = p.parse_args(argv)
    if args.memory_child:
        print(json.dumps(memory_child(json.loads(args.memory_child))))
        return {}
    device = _timing.setup(args)
    want = set(args.only)
    info = _timing.machine(device)
    print(f"machine: {info['device_name']} ({info['device']}), torch {info['torch']}, {info['torch_threads']} "
          f"thread(s)", flush=True)
    run: dict[str, Any] = {"machine": info, "quick": args.quick, "argv": sys.argv[1:] if argv is None else argv}
    payload: dict[str, Any] = {}
    if want & {"overhead", "truncation"}:
        payload["overhead_truncation"] = run_overhead_and_truncation(args, device, want)
    if "overhead" in want:
        payload["cold_start"] = run_cold_start(args, device)
    if "sweep" in want:
        payload["sweep"] = run_sweep(args, device)
    if "batching" in want:
        payload["batching"] = run_batching(args, device)
    if "threads" in want:
        payload["threads"] = run_threads(args, device)
    if "memory" in want:
        payload["memory"] = run_memory(args, device)
    if "layout" in want:
        payload["layout"] = run_layout(args, device)
    for section in payload.values():
        section["run"] = run
    path = args.out or _timing.RESULTS / "performance.json"
    every = {"overhead_truncation", "cold_start", "sweep", "batching", "threads", "memory", "layout"}
    if path.exists() and set(payload) != every:
        # A run of some sections updates those and keeps the others (each section records its own run).
        try:
            payload = {**json.loads(path.read_text()), **payload}
        except ValueError:
            pass
    _timing.write_json("performance", payload, path)
    return payload


def argparse_suppress() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
