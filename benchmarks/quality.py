"""Time to quality: the wall time each inversion recipe needs to bring the input within a fixed distance.

What is measured
    On layers known to be invertible (the library default gets there; the run checks it and says so), each recipe
    inverts the same three 32x32 photos from its own starting point. After every optimisation step a callback
    computes the relative input distance ||x_g - x|| / ||x|| of every sample's current iterate and stops the run
    once all samples are within the target. Time to target is wall time from just before the ``reprinvert.invert``
    call (which includes capturing the target representation) until that stop; ``Inversion.seconds`` covers the
    whole call, including the metrics computed after the stop, and is recorded too. The callback costs every
    recipe the same: one flatten, subtraction and norm of the batch per step (plus one affine map for the
    normalised-input variant below).

    Target (fixed before any recipe runs, printed and stored): the reference scale of the library's metrics, the
    relative distance of x' = x + N(0, (1/25)^2) from x, averaged over the case's samples (noise drawn from a
    generator seeded 0): "a perturbation a person would call the same image".

    Recipes (all with seed 0):
      * ``default``: ``reprinvert.recipes.default()`` (Adam, lr 0.3 -> 0 linear, L1, 300 steps), untouched;
      * ``badger-cnn``: ``reprinvert.recipes.badger("cnn")`` (plain gradient descent, blur schedule, 220 steps);
      * ``mahendran-vedaldi``: ``reprinvert.recipes.mahendran_vedaldi()`` (2100 steps);
      * ``pytorch-cnn-visualizations``: the recipe of ``src/inverted_representation.py`` in
        utkuozbulak/pytorch-cnn-visualizations (read at commits 4e29879fa16e and 83d02d08feab; the inversion code is
        the same in both), applied to the benchmark model's input (images in [0, 1]), see below;
      * ``pytorch-cnn-visualizations (normalised input)``: the same constants where the script applies them, on
        the ImageNet-normalised input its models take: the optimised tensor is z = (x - mean) / std and the model
        is fed z * std + mean (per channel, mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225), the values of
        the script's ``misc_functions.preprocess_image``). The distance is measured on z * std + mean in [0, 1]
        pixels, like every other recipe's. This is a change of units, not a retuning.

    Protocol: each recipe first runs as published (its own step count and schedule: a schedule is part of a
    recipe, and the default's learning rate reaches 0 at its last step). A recipe that misses the target there is
    run once more with a generous cap, ``--stretch`` (3) times its steps with its schedule stretched to the same
    fractions of the longer run (as ``invert(steps=...)`` does), and the setting that reached is timed. Every run
    is also capped at ``--max-seconds`` of wall time. Runs are seeded, so the steps to target are the same in
    every repeat; only the time varies. The timed runs are repeated (``--repeats``, default 5) in interleaved
    rounds (recipe order reversed every other round, as in ``_timing.interleaved``) after a warm-up, and the
    median is reported, with the ratio of medians to the default and the median of the per-round ratios. A
    recipe that reaches the target in neither setting is reported as "not reached" with the best distance its
    iterates got to (the smallest, over steps, of the largest distance over samples), and diverged runs
    (non-finite loss) are reported as such.

pytorch-cnn-visualizations recipe (``src/inverted_representation.py``, ``generate_inverted_image_specific_layer``)
    constant in the script                              -> here
    ``opt_img = 1e-1 * torch.randn(1, 3, S, S)``        -> ``invert(init=0.1 * N(0, 1))``, a tensor from a
                                                           generator seeded 0, per sample of the batch
    ``SGD([opt_img], lr=1e4, momentum=0.9)``            -> ``optimizer="sgd", lr=1e4, momentum=0.9``
    ``for i in range(201)``                             -> ``steps=201``
    ``if i % 40 == 0: lr *= 1/10`` after ``step()``     -> ``drops=(1, 41, 81, 121, 161), drop_factor=0.1``: the
                                                           first cut comes after step 0 (0 % 40 == 0), so step 0
                                                           runs at 1e4, steps 1-40 at 1e3, ..., 161-200 at 0.1
    ``euc_loss = 1e-1 * ||out - t||^2 / ||t||^2``       -> ``loss="nmse", loss_scale=0.1`` (the script inverts one
                                                           image, ``x[0]``; the library's terms are per sample)
    ``alpha_reg_lambda * sum(x.view(-1) ** 6)``,        -> ``AlphaNorm(alpha=6, center=0, scale=1,
    lambda 1e-7, alpha 6                                   weight=1e-7 * C * H * W)``: AlphaNorm divides by the
                                                           elements per sample and uses |x|^6 (= x^6, alpha even)
    ``tv_reg_lambda * sum(((x[:, :-1, :-1] -            -> ``TotalVariation(beta=2, scale=1, weight=1e-8 * H * W)``:
    x[:, 1:, :-1])**2 + (x[:, :-1, :-1] -                  TotalVariation divides by H * W and sums the same
    x[:, :-1, 1:])**2) ** (beta / 2))``, lambda 1e-8,      (dx^2 + dy^2)^(beta/2) terms over channels and the
    beta 2                                                 (H-1) x (W-1) corner region
    (no clamp, no restarts, the final iterate)           -> ``clamp=None``, ``restarts=1``

    Adaptations (things ``Recipe`` cannot express exactly, left as they are rather than tuned):
      * the script's slicing ``[:, :-1, :-1]`` is written for a (C, H, W) image, but it is called on the 4-D
        ``opt_img`` of shape (1, 3, S, S), where it slices the channel and height axes: its TV term actually adds
        differences between neighbouring *channels* and rows over the first S - 1 rows. We use the intended
        (paper's) height/width total variation. The term is tiny either way (lambda 1e-8).
      * torch's SGD keeps its momentum buffer (in gradient units) across a learning-rate cut, so after a cut the
        carried velocity shrinks with the rate, to a tenth; the library's ``"sgd"`` resets the velocity to 0 at
        each drop (its Mahendran-Vedaldi semantics). The update is identical between cuts.
      * ``invert`` returns the lowest-loss iterate rather than the script's last one; time to target looks at the
        iterate after every step, so this does not change the measurement.
      * the script's model takes ImageNet-normalised input, where the constants were set; a copy of the script
        applies them to whatever its model takes. Both readings are run (see the recipe list above).

How to run
    python benchmarks/quality.py                       # 3 cases x 5 recipes, 5 repeats (a few minutes on 1 CPU)
    python benchmarks/quality.py --quick               # smoke run: cnn-shallow, 16x16, 1 repeat, 0.5 s caps
    python benchmarks/quality.py --cases cnn-shallow cnn-middle --repeats 3
    python benchmarks/quality.py --device cuda         # on a GPU (every tensor follows the model's device)
Writes ``benchmarks/results/quality.json`` (or ``--out``).
"""

from __future__ import annotations

import itertools
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _models
import _timing

import reprinvert as ri
from reprinvert import recipes
from reprinvert.recipes import Recipe
from reprinvert.regularizers import AlphaNorm, TotalVariation

SIGMA = 1.0 / 25.0
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PCV = "pytorch-cnn-visualizations"
PCV_NORM = "pytorch-cnn-visualizations (normalised input)"

# The script's constants (src/inverted_representation.py, generate_inverted_image_specific_layer).
PCV_CONSTANTS: dict[str, Any] = dict(
    source="utkuozbulak/pytorch-cnn-visualizations src/inverted_representation.py (commits 4e29879fa16e, 83d02d08feab)",
    init="1e-1 * torch.randn(1, 3, img_size, img_size)",
    optimizer="torch.optim.SGD(lr=1e4, momentum=0.9)",
    iterations=201,
    lr_decay="after step(): if i % 40 == 0: lr *= 1/10 (first cut after iteration 0)",
    data_term="1e-1 * sum((out - target)**2) / sum(target**2)",
    alpha_norm="1e-7 * sum(x.view(-1) ** 6)",
    total_variation="1e-8 * sum(((x[:, :-1, :-1] - x[:, 1:, :-1])**2 + (x[:, :-1, :-1] - x[:, :-1, 1:])**2) ** (2/2))",
)


def pcv_recipe(shape: tuple[int, ...]) -> Recipe:
    """The pytorch-cnn-visualizations recipe for inputs of ``shape`` ``(B, C, H, W)`` (see the module docstring).

    The start ``0.1 * N(0, 1)`` is passed to ``invert(init=...)`` by :func:`pcv_init`; the recipe's own ``init``
    field is not used.
    """
    _, c, h, w = shape
    return Recipe(
        name=PCV,
        steps=201,
        optimizer="sgd",
        lr=1e4,
        momentum=0.9,
        drops=(1, 41, 81, 121, 161),
        drop_factor=0.1,
        loss="nmse",
        loss_scale=0.1,
        init="zeros",
        regularizers=(
            AlphaNorm(weight=1e-7 * c * h * w, alpha=6.0, center=0.0, scale=1.0),
            TotalVariation(weight=1e-8 * h * w, beta=2.0, scale=1.0),
        ),
        clamp=None,
        restarts=1,
    )


def pcv_init(shape: tuple[int, ...], device: torch.device, seed: int = 0) -> torch.Tensor:
    """The script's start ``1e-1 * torch.randn(...)``, from a CPU generator seeded ``seed`` (same on any device)."""
    g = torch.Generator().manual_seed(seed)
    return (0.1 * torch.randn(shape, generator=g)).to(device)


class FromNormalised(nn.Module):
    """``net(z * std + mean)``: the model as the script's models see input, ImageNet-normalised."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.net = net

    def pixels(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.std + self.mean

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.pixels(z))


@dataclass
class Case:
    name: str
    description: str
    model: nn.Module
    layer: str
    x: torch.Tensor


def make_cases(names: list[str], size: int, device: torch.device) -> list[Case]:
    photos, _ = _models.images(size)
    photos = photos.to(device)
    cnn = _models.small_cnn(seed=0).to(device)
    table: dict[str, Callable[[], Case]] = {
        "cnn-shallow": lambda: Case("cnn-shallow", "small CNN, first conv-BN-ReLU (32 x S x S)", cnn, "2", photos),
        "cnn-middle": lambda: Case("cnn-middle", "small CNN, third ReLU (64 x S/2 x S/2)", cnn, "8", photos),
        "resnet-middle": lambda: Case(
            "resnet-middle", "small ResNet, block 2 (64 x S/2 x S/2)", _models.residual_cnn(seed=0).to(device),
            "layer2", photos,
        ),
    }
    unknown = [n for n in names if n not in table]
    if unknown:
        raise SystemExit(f"unknown case(s) {unknown}; available: {sorted(table)}")
    return [table[n]() for n in names]


@dataclass
class Entry:
    """One recipe as run on one case: the model and layer it inverts, its input, start and pixel map."""

    name: str
    recipe: Recipe
    model: nn.Module
    layer: str
    x: torch.Tensor
    init: torch.Tensor | None
    to_pixels: Callable[[torch.Tensor], torch.Tensor] | None


def entries(case: Case) -> list[Entry]:
    shape = tuple(case.x.shape)
    device = case.x.device
    wrapped = FromNormalised(case.model).to(device)
    return [
        Entry("default", recipes.default(), case.model, case.layer, case.x, None, None),
        Entry("badger-cnn", recipes.badger("cnn"), case.model, case.layer, case.x, None, None),
        Entry("mahendran-vedaldi", recipes.mahendran_vedaldi(), case.model, case.layer, case.x, None, None),
        Entry(PCV, pcv_recipe(shape), case.model, case.layer, case.x, pcv_init(shape, device), None),
        Entry(
            PCV_NORM, pcv_recipe(shape).replace(name=PCV_NORM), wrapped, f"net.{case.layer}",
            wrapped.normalise(case.x), pcv_init(shape, device), wrapped.pixels,
        ),
    ]


def stretched(recipe: Recipe, factor: int) -> Recipe:
    """``recipe`` over ``factor`` times its steps, its schedule at the same fractions of the run."""
    n = recipe.steps * factor
    return recipe.replace(steps=n, drops=tuple(round(d * n / recipe.steps) for d in recipe.drops))


def relative_distance(z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-sample ||z - x|| / ||x||."""
    return (z - x).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)


def target_threshold(x: torch.Tensor, sigma: float = SIGMA, seed: int = 0) -> float:
    """Mean over samples of ||x' - x|| / ||x||, x' = x + N(0, sigma^2) (CPU generator seeded ``seed``)."""
    g = torch.Generator().manual_seed(seed)
    noise = sigma * torch.randn(x.shape, generator=g, dtype=torch.float64)
    xd = x.detach().double().cpu()
    return float(relative_distance(xd + noise, xd).mean())


@dataclass
class Run:
    reached: bool
    steps: int  # steps to target, or steps run
    seconds: float  # to target (or to the end of the loop when not reached)
    call_seconds: float  # Inversion.seconds
    seconds_per_step: float  # median step duration
    best: float  # min over steps of the max over samples
    final_mean: float  # mean over samples at the last step looked at
    stopped: str | None
    diverged: bool


def run_once(entry: Entry, recipe: Recipe, threshold: float, x_pixels: torch.Tensor, max_seconds: float) -> Run:
    """One seeded inversion, stopped by the callback at the target or at ``max_seconds``."""
    device = x_pixels.device
    stamps: list[float] = []
    best = [math.inf]
    final_mean = [math.nan]
    hit: list[int] = []

    def callback(info: ri.StepInfo) -> bool:
        z = info.input if entry.to_pixels is None else entry.to_pixels(info.input)
        d = relative_distance(z, x_pixels)
        worst = float(d.max())  # one device -> host transfer per step (a sync on a GPU), for every recipe alike
        stamps.append(time.perf_counter() - t0)
        best[0] = min(best[0], worst)
        final_mean[0] = float(d.mean())
        if worst <= threshold:
            hit.append(info.step + 1)
            return True
        return stamps[-1] > max_seconds

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ri.NonFiniteWarning)
        _timing.sync(device)
        t0 = time.perf_counter()
        res = ri.invert(
            entry.model, entry.layer, entry.x, recipe=recipe, init=entry.init, seed=0, callback=callback, sigma=SIGMA
        )
    durations = [b - a for a, b in itertools.pairwise(stamps)]
    diverged = res.stopped is not None and res.stopped.startswith("non-finite")
    return Run(
        reached=bool(hit),
        steps=hit[0] if hit else res.steps_run,
        seconds=stamps[-1] if stamps else res.seconds,
        call_seconds=res.seconds,
        seconds_per_step=statistics.median(durations) if durations else (stamps[0] if stamps else math.nan),
        best=best[0],
        final_mean=final_mean[0],
        stopped=res.stopped,
        diverged=diverged,
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = _timing.parser(__doc__.split("\n")[0])
    p.add_argument("--cases", nargs="+", default=None,
                   help="cnn-shallow, cnn-middle, resnet-middle (default: all three; --quick: cnn-shallow)")
    p.add_argument("--size", type=int, default=None, help="image side (default 32; --quick 16)")
    p.add_argument("--stretch", type=int, default=3,
                   help="step cap, as a multiple of a recipe's own steps, for recipes that miss at their own length")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="wall-time cap of one run (default 120; --quick 0.5)")
    args = p.parse_args(argv)
    device = _timing.setup(args)
    repeats = args.repeats or (1 if args.quick else 5)
    size = args.size or (16 if args.quick else 32)
    max_seconds = args.max_seconds or (0.5 if args.quick else 120.0)
    names = args.cases or (["cnn-shallow"] if args.quick else ["cnn-shallow", "cnn-middle", "resnet-middle"])
    wall0 = time.perf_counter()

    cases = make_cases(names, size, device)
    print(
        f"# time to quality: {len(cases)} cases, {repeats} repeats, images {size}x{size} "
        f"({_models.image_source()}), device {device}, {torch.get_num_threads()} threads",
        flush=True,
    )
    out_cases: list[dict[str, Any]] = []
    table: list[list[Any]] = []
    verdicts: dict[str, bool] = {}
    for case in cases:
        threshold = target_threshold(case.x)
        ents = entries(case)
        print(f"\n## {case.name}: {case.description}; target ||x_g - x|| / ||x|| <= {threshold:.4f} "
              f"(sigma = 1/25 reference scale, mean over {case.x.shape[0]} samples)", flush=True)
        for e in ents:  # warm-up: first-call overheads (allocator, kernels) out of the timings
            run_once(e, e.recipe.replace(steps=5, drops=()), -1.0, case.x, max_seconds)

        # Pilot: own length, then the stretched cap for recipes that miss.
        chosen: dict[str, tuple[str, Recipe] | None] = {}
        pilots: dict[str, dict[str, Run]] = {}
        for e in ents:
            pilots[e.name] = {}
            settings = [(f"own {e.recipe.steps} steps", e.recipe)]
            if args.stretch > 1:
                settings.append((f"{args.stretch}x = {e.recipe.steps * args.stretch} steps",
                                 stretched(e.recipe, args.stretch)))
            chosen[e.name] = None
            for label, rcp in settings:
                r = run_once(e, rcp, threshold, case.x, max_seconds)
                pilots[e.name][label] = r
                print(f"  pilot {e.name:46s} {label:22s} reached={r.reached!s:5s} steps={r.steps:5d} "
                      f"best={r.best:.4f} {r.seconds:7.2f}s {1000 * r.seconds_per_step:.2f} ms/step"
                      + (f"  [{r.stopped}]" if r.diverged else ""), flush=True)
                if r.reached:
                    chosen[e.name] = (label, rcp)
                    break

        # Timed, interleaved rounds over the recipes that reached the target.
        timed = [e for e in ents if chosen[e.name] is not None]
        runs: dict[str, list[Run]] = {e.name: [] for e in timed}
        for k in range(repeats):
            order = timed if k % 2 == 0 else list(reversed(timed))
            for e in order:
                label, rcp = chosen[e.name]  # type: ignore[misc]
                runs[e.name].append(run_once(e, rcp, threshold, case.x, max_seconds))

        default_runs = runs.get("default")
        default_med = statistics.median(r.seconds for r in default_runs) if default_runs else None
        rows: list[dict[str, Any]] = []
        for e in ents:
            ch = chosen[e.name]
            if ch is not None:
                rs = runs[e.name]
                reached_all = all(r.reached for r in rs)
                med = statistics.median(r.seconds for r in rs)
                row = dict(
                    recipe=e.name,
                    setting=ch[0],
                    recipe_fields=ch[1].to_dict(),
                    reached=reached_all,
                    # a time to the target only when every repeat reached it (a repeat can miss it under load)
                    steps_to_target=statistics.median(r.steps for r in rs) if reached_all else None,
                    steps_each_repeat=[r.steps for r in rs],
                    seconds_to_target=med if reached_all else None,
                    seconds_each_repeat=[r.seconds for r in rs],
                    call_seconds=statistics.median(r.call_seconds for r in rs),
                    seconds_per_step=statistics.median(r.seconds_per_step for r in rs),
                    best_relative_distance=min(r.best for r in rs),
                    ratio_to_default=None if default_med is None or not reached_all else med / default_med,
                    paired_ratio_to_default=None if not default_runs else statistics.median(
                        a.seconds / b.seconds for a, b in zip(rs, default_runs)),
                    note=None,
                )
            else:
                ps = list(pilots[e.name].values())
                last_label, last = list(pilots[e.name].items())[-1]
                notes = [f"{lab}: " + ("diverged, " + r.stopped if r.diverged else
                                       "time cap" if r.seconds > max_seconds else "ran to the end")
                         for lab, r in pilots[e.name].items()]
                finite = [r.best for r in ps if math.isfinite(r.best)]
                row = dict(
                    recipe=e.name,
                    setting=last_label,
                    recipe_fields=(stretched(e.recipe, args.stretch) if args.stretch > 1 else e.recipe).to_dict(),
                    reached=False,
                    steps_to_target=None,
                    steps_run=last.steps,
                    seconds_to_target=None,
                    seconds_run=last.seconds,
                    call_seconds=last.call_seconds,
                    seconds_per_step=statistics.median(r.seconds_per_step for r in ps),
                    best_relative_distance=min(finite) if finite else None,
                    ratio_to_default=None,
                    paired_ratio_to_default=None,
                    note="; ".join(notes),
                )
            rows.append(row)
            table.append([
                case.name, e.name, row["setting"],
                "yes" if row["reached"] else "not reached",
                "-" if row["steps_to_target"] is None else row["steps_to_target"],
                "-" if row["seconds_to_target"] is None else float(row["seconds_to_target"]),
                1000 * float(row["seconds_per_step"]),
                "-" if row["best_relative_distance"] is None else float(row["best_relative_distance"]),
                "-" if row["ratio_to_default"] is None else float(row["ratio_to_default"]),
            ])
        d = next(r for r in rows if r["recipe"] == "default")
        others = [r for r in rows if r["recipe"] != "default"]
        holds = bool(d["reached"]) and all(
            not r["reached"] or r["seconds_to_target"] > d["seconds_to_target"] for r in others
        )
        verdicts[case.name] = holds
        out_cases.append(dict(
            name=case.name,
            description=case.description,
            layer=case.layer,
            input_shape=list(case.x.shape),
            threshold=threshold,
            invertible_default_reached=bool(d["reached"]),
            default_fastest=holds,
            results=rows,
        ))

    headers = ["case", "recipe", "setting", "reached", "steps", "s to target", "ms/step", "best rel dist",
               "x default"]
    print(f"\n## Time to target (median of {repeats}; 'best rel dist' = smallest over steps of the largest "
          "over samples)\n")
    text = _timing.print_table(headers, table)
    print()
    for c in out_cases:
        print(f"{c['name']}: target {c['threshold']:.4f}; the default reaches the target in less wall time than "
              f"every other recipe: {'holds' if c['default_fastest'] else 'does NOT hold'}")
    payload: dict[str, Any] = dict(
        machine=_timing.machine(device),
        command="python benchmarks/quality.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        settings=dict(
            repeats=repeats, quick=args.quick, size=size, stretch=args.stretch, max_seconds=max_seconds,
            cases=names, sigma=SIGMA, image_source=_models.image_source(),
        ),
        target=("per case: mean over samples of ||x' - x|| / ||x||, x' = x + N(0, (1/25)^2) (generator seeded 0); "
                "a run stops when every sample's current iterate is within it"),
        timing=("seconds_to_target: wall time from just before invert() to the callback's stop (median over "
                "interleaved repeats); call_seconds: Inversion.seconds; the callback costs every recipe one "
                "per-sample norm per step"),
        pytorch_cnn_visualizations=PCV_CONSTANTS,
        cases=out_cases,
        default_fastest=verdicts,
        table=text,
        total_seconds=time.perf_counter() - wall0,
    )
    _timing.write_json("quality", payload, args.out)
    return payload


if __name__ == "__main__":
    main()
