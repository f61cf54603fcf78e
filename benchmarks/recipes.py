"""Compare inversion recipes on a small fixed set of models and layers; the winner is ``recipes.default()``.

Criterion (fixed before the run): the recipe that reaches the lowest relative input distance ||x_g - x|| / ||x||
in the least time. Per case (model + layer) every candidate gets the same wall-clock budget T and runs the number
of steps that fits in it. Costs per step are measured per cost class (candidates with the same optimizer and
regularizers do the same work per step) as the lowest of seven interleaved short timing runs and of the class
members' own per-step times: other work on a shared machine only ever adds time, and must not penalise whichever
candidate it happened to overlap. T is the median over candidates of cost per step x step budget; candidates
within 25% of it keep their equal-step result, the others are rerun with the steps that fit (schedules rescaled).
The score is the geometric mean over cases of the relative input distance of the returned input (per sample the
lowest-loss iterate, as ``invert`` returns it) at T, each value floored at 0.01 (a 1% error is invisible and
differences below it are numerical). The lowest score wins among the candidates that run on every case and carry
no image-only regularizer (the default must work on signals and flat vectors too). Also reported: the result at
an equal step budget, m_g / m_r, cost per step, and the steps (and cost per step x steps) until the returned input
is within the reference scale ||x' - x|| / ||x|| (x' = x + N(0, (1/25)^2), "a perturbation a person would call
the same image").

Cases (all models untrained and seeded, see ``benchmarks/_models.py``):
    cnn-shallow  small CNN (conv-BN-ReLU x4), first ReLU          3 photos 32x32
    cnn-middle   the same CNN, third ReLU (64 x 16 x 16)         3 photos 32x32
    resnet-middle small ResNet, second residual block            3 photos 32x32
    mlp-wide     MLP 768 -> 2048 -> 2048, second hidden ReLU     3 photos 16x16, flattened to (B, 768)
    conv1d-middle 1-D conv net, third ReLU (32 x 128)             3 seeded signals (B, 2, 256) in [-1, 1]

Usage:
    python benchmarks/recipes.py            # full run (29 candidates x 5 cases, 300 steps)
    python benchmarks/recipes.py --native   # plus the published recipes at their own step budgets
    python benchmarks/recipes.py --quick    # 13 candidates, 100 steps
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _models

import reprinvert as ri
from reprinvert import recipes
from reprinvert.recipes import Recipe
from reprinvert.regularizers import TotalVariation

SIGMA = 1.0 / 25.0


@dataclass
class Case:
    name: str
    model: torch.nn.Module
    layer: str
    x: torch.Tensor
    description: str

    @property
    def kind(self) -> str:
        return {2: "flat", 3: "signal", 4: "image"}[self.x.dim()]


def make_cases() -> list[Case]:
    photos, _ = _models.images(32)
    small, _ = _models.images(16)
    cnn = _models.small_cnn(seed=0)
    return [
        Case("cnn-shallow", cnn, "2", photos, "small CNN, first ReLU (32x32x32)"),
        Case("cnn-middle", cnn, "8", photos, "small CNN, third ReLU (64x16x16)"),
        Case("resnet-middle", _models.residual_cnn(seed=0), "layer2", photos, "small ResNet, block 2 (64x16x16)"),
        Case("mlp-wide", _models.mlp(seed=0), "3", small.flatten(1), "MLP 768-2048-2048, 2nd hidden ReLU"),
        Case("conv1d-middle", _models.conv1d_net(seed=0), "5", _models.signals(), "1-D conv net, third ReLU (32x128)"),
    ]


def candidates(steps: int, quick: bool) -> dict[str, Recipe]:
    """Name -> recipe (with ``steps``). Badger's cnn preset and M&V are adapted per case in ``recipe_for``."""
    out: dict[str, Recipe] = {}
    schedules = (("const", None), ("decay", 0.0))
    grid = [(lr, loss) for lr in (0.03, 0.1, 0.3) for loss in ("nmse",)] + [(0.1, "l1")]
    if not quick:
        grid = [(0.01, loss) for loss in ("l1", "nmse")]
        grid += [(lr, loss) for lr in (0.03, 0.1) for loss in ("mse", "l1", "nmse")]
        grid += [(0.3, loss) for loss in ("l1", "nmse")]  # (Adam is invariant to a per-sample loss scale: mse ~ nmse)
        grid += [(1.0, "l1")]
    for lr, loss in grid:
        for sched, lr_end in schedules:
            if (quick or lr == 1.0) and loss == "l1" and sched == "const":
                continue
            name = f"adam lr={lr:g} {sched} {loss}"
            out[name] = Recipe(name=name, steps=steps, optimizer="adam", lr=lr, lr_end=lr_end, loss=loss)
    name = "adam lr=0.05 decay mse"  # the provisional default before this benchmark
    out[name] = Recipe(name=name, steps=steps, optimizer="adam", lr=0.05, lr_end=0.0, loss="mse")
    out["lbfgs lr=1 mse"] = Recipe(name="lbfgs lr=1 mse", steps=steps, optimizer="lbfgs", lr=1.0, loss="mse")
    for lr in (10.0,) if quick else (1.0, 10.0, 100.0):
        name = f"gd lr={lr:g} decay nmse"
        out[name] = Recipe(name=name, steps=steps, optimizer="gd", lr=lr, lr_end=0.0, loss="nmse")
    out["badger cnn"] = recipes.badger("cnn", steps=steps)
    out["badger mlp"] = recipes.badger("mlp", steps=steps)
    out["mahendran-vedaldi"] = recipes.mahendran_vedaldi(steps=steps)
    return out


def natives() -> dict[str, Recipe]:
    """The published recipes at their own step budgets (reported separately, not in the equal comparisons)."""
    return {
        "badger cnn (220 steps)": recipes.badger("cnn"),
        "badger mlp (220 steps)": recipes.badger("mlp"),
        "mahendran-vedaldi (2100 steps)": recipes.mahendran_vedaldi(),
    }


def image_only(recipe: Recipe) -> bool:
    """True if the recipe carries a regularizer that needs spatial dimensions (blur, TV)."""
    return any(r.name in ("blur", "tv") for r in recipe.regularizers)


def recipe_for(recipe: Recipe, case: Case) -> tuple[Recipe | None, str | None]:
    """The recipe as run on ``case`` (None if not applicable) and a note on any adaptation."""
    if case.kind != "flat" or not image_only(recipe):
        return recipe, None
    if recipe.name.startswith("badger-cnn"):
        return None, "blur needs spatial dimensions; the flat input has none"
    kept = tuple(r for r in recipe.regularizers if not isinstance(r, TotalVariation))
    return recipe.replace(regularizers=kept), "TV dropped (flat input has no neighbours); alpha-norm kept"


def initial_input(case: Case) -> torch.Tensor:
    """The starting point every candidate uses: init="seed", N(0.7, 0.05^2) from a generator seeded 0."""
    g = torch.Generator().manual_seed(0)
    return 0.7 + 0.05 * torch.randn(case.x.shape, generator=g)


def relative_distance(z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-sample ||z - x|| / ||x||."""
    return (z - x).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)


@dataclass
class Trace:
    """Per step i: seconds since the call at the end of step i, and the loss and relative input distance of the
    iterate that step i scored (the one before its update; iterate 0 is the initial input)."""

    seconds: list[float]
    loss: list[torch.Tensor]
    distance: list[torch.Tensor]

    def returned(self, n: int) -> float:
        """Mean relative input distance of what ``invert`` (``track_best=True``) returns after ``n`` steps: per
        sample the lowest-loss iterate among the ``n + 1`` iterates scored so far (the last one is scored by the
        next step's forward pass, so this needs ``n < len(self.seconds)``)."""
        n = min(n, len(self.loss) - 1)
        losses = torch.stack(self.loss[: n + 1])
        dists = torch.stack(self.distance[: n + 1])
        losses = torch.where(torch.isfinite(losses), losses, torch.full_like(losses, float("inf")))
        best = losses.argmin(0)
        return float(dists.gather(0, best.view(1, -1)).mean())

    def step_cost(self) -> float:
        """Robust seconds per step: the mean of the middle half of the per-step durations (ignores load spikes
        and the one-off setup before step 0)."""
        d = sorted(b - a for a, b in zip(self.seconds, self.seconds[1:]))
        if not d:
            return self.seconds[0] if self.seconds else float("nan")
        k = len(d) // 4
        mid = d[k : len(d) - k] or d
        return sum(mid) / len(mid)

    def first_below(self, threshold: float) -> tuple[float | None, int | None]:
        """Wall-clock seconds and steps until the returned input is within ``threshold`` (None if never)."""
        for n in range(1, len(self.seconds)):
            if self.returned(n) <= threshold:
                return self.seconds[n - 1], n
        return None, None


def run_one(case: Case, recipe: Recipe) -> tuple[ri.Inversion, Trace, float]:
    """Invert ``case`` with ``recipe`` (seed 0), tracing every step; returns the result, trace and wall time."""
    x = case.x
    trace = Trace([], [], [])
    previous = [relative_distance(initial_input(case), x)]

    def callback(info: ri.StepInfo) -> None:
        trace.seconds.append(time.perf_counter() - t0)
        trace.loss.append(info.loss.detach().double().cpu())
        trace.distance.append(previous[0])
        previous[0] = relative_distance(info.input, x).double()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ri.NonFiniteWarning)
        t0 = time.perf_counter()
        res = ri.invert(case.model, case.layer, x, recipe=recipe, seed=0, callback=callback, sigma=SIGMA)
        seconds = time.perf_counter() - t0
    return res, trace, seconds


def cost_class(recipe: Recipe) -> str:
    """Recipes in one class do the same work per step (one forward and backward to the layer, the same update and
    the same regularizers); the loss, learning rate and schedule change nothing measurable."""
    regs = "+".join(sorted(r.name for r in recipe.regularizers))
    return f"{recipe.optimizer}" + (f"+{regs}" if regs else "") + (f"x{recipe.restarts}" if recipe.restarts > 1 else "")


def measure_costs(case: Case, recipes_: dict[str, Recipe], rounds: int = 7, steps: int = 10) -> dict[str, float]:
    """Seconds per step of each recipe: short runs interleaved over the recipes, ``rounds`` times, keeping the
    fastest round's median step duration. Interleaving and the minimum make the comparison fair on a machine
    shared with other work (a long run can be slowed several-fold for its whole duration by another process)."""
    best = {k: float("inf") for k in recipes_}
    for _ in range(rounds):
        for name, recipe in recipes_.items():
            _, trace, _ = run_one(case, recipe.replace(steps=steps, drops=()))
            d = sorted(b - a for a, b in zip(trace.seconds, trace.seconds[1:]))
            if d:
                best[name] = min(best[name], d[len(d) // 2])
    return best


def start_distance(case: Case) -> float:
    """Mean relative input distance of the common starting point."""
    return float(relative_distance(initial_input(case), case.x).mean())


TOLERANCE = 0.25  # per-step costs within 25% count as equal (run-to-run timing noise on a shared 2-core machine)
FLOOR = 0.01  # relative input distances below 1% count as 1% in the scores (invisible; differences are noise)


def _cpu_model() -> str:
    """The CPU's model name (Linux), else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def geomean(values: list[float], floor: float = FLOOR) -> float:
    """Geometric mean with every value raised to at least ``floor``."""
    return math.exp(sum(math.log(max(v, floor)) for v in values) / len(values))


def fmt(v: float | None, spec: str = ".3g") -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer candidates, 100 steps (about 1-2 minutes)")
    parser.add_argument("--steps", type=int, default=None, help="equal step budget (default 300, quick 100)")
    parser.add_argument("--out", default="benchmarks/results/recipes.json", help="JSON output path")
    parser.add_argument(
        "--native",
        action="store_true",
        help="also run the published recipes at their own step budgets (badger 220, Mahendran-Vedaldi 2100; +2 min)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args(argv)
    steps = args.steps or (100 if args.quick else 300)
    if args.threads:
        torch.set_num_threads(args.threads)
    wall_start = time.perf_counter()
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None

    cases = make_cases()
    cands = candidates(steps, args.quick)
    print(
        f"# reprinvert recipe benchmark: {len(cands)} candidates x {len(cases)} cases, {steps} steps, "
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads, "
        f"images: {_models.image_source()}",
        flush=True,
    )

    rows: list[dict[str, Any]] = []
    native_rows: list[dict[str, Any]] = []
    case_info: list[dict[str, Any]] = []
    for case in cases:
        run_one(case, Recipe(steps=5))  # warm-up (first-call overheads)
        start = start_distance(case)
        threshold: float | None = None
        results: dict[str, dict[str, Any]] = {}
        traces: dict[str, Trace] = {}
        for cname, base in cands.items():
            recipe, note = recipe_for(base, case)
            if recipe is None:
                results[cname] = dict(case=case.name, candidate=cname, applicable=False, note=note)
                continue
            res, trace, seconds = run_one(case, recipe)
            m = res.metrics
            if threshold is None:
                threshold = float((m.perturbation_distance / case.x.flatten(1).double().norm(dim=1)).mean())
            ratio = (m.embedding_distance / m.reference_distance).mean()
            t_thr, s_thr = trace.first_below(threshold)
            results[cname] = dict(
                case=case.name,
                candidate=cname,
                applicable=True,
                note=note,
                recipe=recipe.to_dict(),
                equal_steps=dict(
                    steps=steps,
                    steps_run=res.steps_run,
                    stopped=res.stopped,
                    seconds=seconds,
                    relative_input_distance=float(m.relative_input_distance.mean()),
                    embedding_distance=float(m.embedding_distance.mean()),
                    reference_distance=float(m.reference_distance.mean()),
                    mg_over_mr=float(ratio),
                    represents=float(m.represents.double().mean()),
                    psnr=float(m.psnr.mean()),
                    seconds_to_threshold=t_thr,
                    steps_to_threshold=s_thr,
                ),
            )
            traces[cname] = trace
            print(
                f"  {case.name:14s} {cname:26s} rel={results[cname]['equal_steps']['relative_input_distance']:.4f}"
                f" mg/mr={float(ratio):.3g} {seconds:6.2f}s ({1000 * trace.step_cost():.1f} ms/step)"
                f" t_thr={fmt(t_thr, '.2f')}",
                flush=True,
            )
        # Equal wall-clock. The cost per step of each cost class (same optimizer and regularizers, so the same
        # work per step) is the lowest of (a) the fastest of seven interleaved short timing runs of one member and
        # (b) its members' robust per-step times in their full runs (other load only ever adds). The budget is the
        # median over candidates of cost x steps, and each candidate gets the steps that fit in it: the
        # equal-step result stands when that is within TOLERANCE of the step budget, otherwise the candidate is
        # rerun with that many steps (schedules rescaled; at most 4x the step budget).
        ran = {k: v for k, v in results.items() if v["applicable"]}
        adapted = {k: recipe_for(cands[k], case)[0] for k in ran}
        classes: dict[str, list[str]] = {}
        for k in ran:
            classes.setdefault(cost_class(adapted[k]), []).append(k)  # type: ignore[arg-type]
        timed = measure_costs(case, {c: adapted[ks[0]] for c, ks in classes.items()})  # type: ignore[misc]
        class_cost = {c: min([timed[c]] + [traces[k].step_cost() for k in ks]) for c, ks in classes.items()}
        costs = {k: class_cost[c] for c, ks in classes.items() for k in ks}
        budget = statistics.median(costs[k] * steps for k in ran)
        for cname, r in ran.items():
            e = r["equal_steps"]
            e["seconds_per_step"] = costs[cname]
            e["cost_class"] = cost_class(adapted[cname])  # type: ignore[arg-type]
            e["own_run_seconds_per_step"] = traces[cname].step_cost()
            e["estimated_seconds_to_threshold"] = (
                None if e["steps_to_threshold"] is None else e["steps_to_threshold"] * costs[cname]
            )
            fit = max(1, int(budget / costs[cname]))
            planned = None
            if abs(fit - steps) <= TOLERANCE * steps:
                value = r["equal_steps"]["relative_input_distance"]
            else:
                planned = min(fit, 4 * steps)
                recipe, _ = recipe_for(cands[cname], case)
                assert recipe is not None
                drops = tuple(round(d * planned / steps) for d in recipe.drops)
                res2, _, _ = run_one(case, recipe.replace(steps=planned, drops=drops))
                value = float(res2.metrics.relative_input_distance.mean())
            r["equal_time"] = dict(
                budget_seconds=budget,
                seconds_per_step=costs[cname],
                steps_that_fit=fit,
                rerun=planned is not None,
                steps_run=planned if planned is not None else steps,
                relative_input_distance=value,
            )
        for r in results.values():
            rows.append(r)
        if args.native:
            for nname, base in natives().items():
                recipe, note = recipe_for(base, case)
                if recipe is None:
                    continue
                res, trace, seconds = run_one(case, recipe)
                m = res.metrics
                t_thr, s_thr = trace.first_below(threshold)
                native_rows.append(
                    dict(
                        case=case.name,
                        candidate=nname,
                        note=note,
                        recipe=recipe.to_dict(),
                        steps=recipe.steps,
                        steps_run=res.steps_run,
                        seconds=seconds,
                        relative_input_distance=float(m.relative_input_distance.mean()),
                        mg_over_mr=float((m.embedding_distance / m.reference_distance).mean()),
                        represents=float(m.represents.double().mean()),
                        seconds_to_threshold=t_thr,
                        steps_to_threshold=s_thr,
                    )
                )
                print(
                    f"  {case.name:14s} {nname:30s} rel={native_rows[-1]['relative_input_distance']:.4f} "
                    f"{seconds:6.2f}s",
                    flush=True,
                )
        case_info.append(
            dict(
                name=case.name,
                description=case.description,
                layer=case.layer,
                input_shape=list(case.x.shape),
                model=type(case.model).__name__,
                start_relative_distance=start,
                threshold=threshold,
                equal_time_budget_seconds=budget,
            )
        )
        print(f"  {case.name}: threshold {threshold:.4f}, equal wall-clock budget {budget:.2f}s", flush=True)

    summary = summarise(rows, cases, cands)
    eligible = [s for s in summary if s["eligible"]]
    winner = min(eligible, key=lambda s: (s["geomean_equal_time"], s["geomean_equal_steps"]))
    overall = min((s for s in summary if s["cases"] == len(cases)), key=lambda s: s["geomean_equal_time"])

    print_tables(summary, rows, cases, case_info, winner, native_rows)
    meta = dict(
        command="python benchmarks/recipes.py"
        + (" --quick" if args.quick else "")
        + (" --native" if args.native else "")
        + (f" --steps {args.steps}" if args.steps else "")
        + (f" --threads {args.threads}" if args.threads else ""),
        date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        torch=torch.__version__,
        reprinvert=ri.__version__,
        python=platform.python_version(),
        platform=platform.platform(),
        processor=_cpu_model(),
        device="cpu",
        cpu_count=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        loadavg_start=load_start,
        loadavg_end=os.getloadavg() if hasattr(os, "getloadavg") else None,
        image_source=_models.image_source(),
        steps=steps,
        quick=args.quick,
        sigma=SIGMA,
        total_seconds=time.perf_counter() - wall_start,
        criterion=(
            "geometric mean over cases (values floored at 0.01) of the relative input distance of the returned "
            "input within an equal wall-clock budget (per case: median over candidates of measured seconds per "
            "step of their cost class x step budget); among candidates that run on every case without "
            "image-only regularizers; ties broken by the geometric mean at the equal step budget"
        ),
    )
    out = dict(
        meta=meta,
        cases=case_info,
        summary=summary,
        winner=winner["candidate"],
        best_overall=overall["candidate"],
        results=rows,
        native=native_rows,
    )
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(f"\nwinner: {winner['candidate']}  (best of all candidates: {overall['candidate']})")
    print(f"wrote {path} in {meta['total_seconds']:.0f}s")
    return 0


def summarise(rows: list[dict[str, Any]], cases: list[Case], cands: dict[str, Recipe]) -> list[dict[str, Any]]:
    by_case: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        if r["applicable"]:
            by_case.setdefault(r["case"], {})[r["candidate"]] = r
    ranks: dict[str, list[int]] = {c: [] for c in cands}
    for cname_map in by_case.values():
        order = sorted(cname_map, key=lambda c: cname_map[c]["equal_time"]["relative_input_distance"])
        for i, c in enumerate(order):
            ranks[c].append(i + 1)
    out = []
    for cname, recipe in cands.items():
        mine = [by_case[c.name][cname] for c in cases if cname in by_case.get(c.name, {})]
        if not mine:
            continue
        ttt = [r["equal_steps"]["estimated_seconds_to_threshold"] for r in mine]
        reached = [t for t in ttt if t is not None]
        out.append(
            dict(
                candidate=cname,
                cases=len(mine),
                eligible=len(mine) == len(cases) and not image_only(recipe),
                geomean_equal_time=geomean([r["equal_time"]["relative_input_distance"] for r in mine]),
                geomean_equal_steps=geomean([r["equal_steps"]["relative_input_distance"] for r in mine]),
                median_rank_equal_time=statistics.median(ranks[cname]),
                geomean_mg_over_mr=geomean([r["equal_steps"]["mg_over_mr"] for r in mine], floor=1e-12),
                total_seconds_equal_steps=sum(r["equal_steps"]["seconds"] for r in mine),
                median_ms_per_step=1000 * statistics.median(r["equal_steps"]["seconds_per_step"] for r in mine),
                threshold_reached=len(reached),
                median_seconds_to_threshold=statistics.median(reached) if reached else None,
            )
        )
    out.sort(key=lambda s: (s["cases"] != len(cases), s["geomean_equal_time"]))
    return out


def print_tables(
    summary: list[dict[str, Any]],
    rows: list[dict[str, Any]],
    cases: list[Case],
    case_info: list[dict[str, Any]],
    winner: dict[str, Any],
    native_rows: list[dict[str, Any]],
) -> None:
    n = len(cases)
    print("\n## Summary (relative input distance ||x_g - x|| / ||x||, geometric mean over cases, floored at 0.01)\n")
    print(
        "| candidate | cases | at equal wall-clock | at equal steps | median rank | m_g/m_r | reached threshold "
        "| median s to threshold | median ms/step |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for s in summary:
        mark = " **(winner)**" if s is winner else ("" if s["eligible"] else " (not eligible)")
        print(
            f"| {s['candidate']}{mark} | {s['cases']}/{n} | {s['geomean_equal_time']:.4f} | "
            f"{s['geomean_equal_steps']:.4f} | {s['median_rank_equal_time']:g} | {s['geomean_mg_over_mr']:.3g} | "
            f"{s['threshold_reached']}/{s['cases']} | {fmt(s['median_seconds_to_threshold'], '.2f')} | "
            f"{s['median_ms_per_step']:.1f} |"
        )
    by = {(r["case"], r["candidate"]): r for r in rows}
    names = [c.name for c in cases]
    print("\n## Relative input distance per case: equal steps (equal wall-clock, steps run)\n")
    print("| candidate | " + " | ".join(names) + " |")
    print("|---|" + "---|" * n)
    for s in summary:
        cells = []
        for c in names:
            r = by.get((c, s["candidate"]))
            if r is None or not r["applicable"]:
                cells.append("n/a")
                continue
            e, t = r["equal_steps"], r["equal_time"]
            cells.append(f"{e['relative_input_distance']:.3f} ({t['relative_input_distance']:.3f}, {t['steps_run']})")
        print(f"| {s['candidate']} | " + " | ".join(cells) + " |")
    if native_rows:
        print("\n## Published recipes at their own step budgets: relative input distance, m_g/m_r, seconds\n")
        print("| recipe | " + " | ".join(names) + " |")
        print("|---|" + "---|" * n)
        nat = {(r["case"], r["candidate"]): r for r in native_rows}
        for nname in dict.fromkeys(r["candidate"] for r in native_rows):
            cells = []
            for c in names:
                r = nat.get((c, nname))
                cells.append(
                    "n/a"
                    if r is None
                    else f"{r['relative_input_distance']:.3f}, {r['mg_over_mr']:.3g}, {r['seconds']:.1f}s"
                )
            print(f"| {nname} | " + " | ".join(cells) + " |")
    print(
        "\n## Per case: relative input distance at equal steps / at equal wall-clock; m_g/m_r; seconds; "
        "seconds to threshold\n"
    )
    for info in case_info:
        print(
            f"### {info['name']}: {info['description']}, input {tuple(info['input_shape'])}; start "
            f"{info['start_relative_distance']:.3f}, threshold {info['threshold']:.4f}, wall-clock budget "
            f"{info['equal_time_budget_seconds']:.2f}s\n"
        )
        print("| candidate | equal steps | equal wall-clock | m_g/m_r | ms/step | wall s | steps (s) to threshold |")
        print("|---|---|---|---|---|---|---|")
        for s in summary:
            r = by.get((info["name"], s["candidate"]))
            if r is None or not r["applicable"]:
                continue
            e, t = r["equal_steps"], r["equal_time"]
            print(
                f"| {s['candidate']} | {e['relative_input_distance']:.4f} | {t['relative_input_distance']:.4f} | "
                f"{e['mg_over_mr']:.3g} | {1000 * e['seconds_per_step']:.1f} | {e['seconds']:.2f} | "
                f"{fmt(e['steps_to_threshold'], 'd')} ({fmt(e['estimated_seconds_to_threshold'], '.2f')}) |"
            )
        print()


if __name__ == "__main__":
    raise SystemExit(main())
