"""Why the default's input distance climbs back on some layers: the budget, or the layer? The default recipe at its
own 500 steps and at ten times as many, on the benchmark cases where m_i climbs back most.

    OMP_NUM_THREADS=1 python benchmarks/drift.py            # about 12 minutes on one core
    python benchmarks/drift.py --quick                      # the width net only, 50 and 150 steps (a smoke run)
    python benchmarks/drift.py --table                      # print the committed results
    OMP_NUM_THREADS=1 python benchmarks/drift.py --bound    # the Gauss-Newton bound (about 11 minutes)
    OMP_NUM_THREADS=1 python benchmarks/drift.py --rule --jobs 2   # a per-layer prior rule (25-30 minutes)

Cases (those of ``benchmarks/inversion_quality.py``): the untrained EfficientNet-Lite0's ``_blocks.7`` (m_i climbs
back 3.7% there in 500 steps), the trained one's ``_blocks.2`` (1.0%) and the width study's ReLU net half as wide
as its input (0.4%). Each is inverted by ``recipes.default(steps=N)`` for N = 500 and 5000 (the schedule stretched
over N), seed 0.

For each run, from its history (every step's loss and m_i, per photo): at 0, 5, 10, 25, 50, 75 and 100% of the
steps, the reported iterate's m_i and loss (the iterate with the lowest loss so far: what a run stopped there would
return), as the mean over the photos; the lowest of these m_i and where; how far the last one is above it.
If ten times the steps lower the loss further and raise m_i further, the climb is the layer's (lower loss lies
farther from x along the search's path), not a search stopped short.

``--candidates`` measures, instead, a candidate for a drift-free default against the default at 500 steps: jitter
of up to 2 pixels whose largest shift falls to 0 at half or three quarters of the run
(``Jitter(max_shift=2, until=...)``), on the known answers (identity on random images, an orthogonal colour
mixing of photos: relative m_i of the worst sample), the trained EfficientNet-Lite0's ``_bn0``, ``_blocks.0`` and
``_blocks.2``, the untrained one's ``_blocks.7`` and the ViT's ``layers.1`` (PSNR per photo, and the climb). Results:
``benchmarks/results/drift.json`` (``candidates``); ``docs/benchmarks.md`` quotes them.

``--bound`` asks whether any search that sees only the representation could keep m_i from rising: it runs a
minimum-norm Gauss-Newton search (``gauss_newton`` below, the benchmark's own) from the constant grey image 0.5.
Each step solves the linearised problem ``J d = rep(x) - rep(x_g)`` for its smallest-norm solution by CGLS (10
iterations: one Jacobian-vector product by forward-mode differentiation and one vector-Jacobian product by
backpropagation each), so the step lies in the span of the layer's Jacobian rows: it never moves the iterate along
a direction the layer (linearised) does not see; a backtracking line search (halving, up to 8 times) accepts it
only if the squared error falls, and the result is clamped to [0, 1]. On a linear layer this search provably never
moves away from any input with the same representation (the component of the error the layer sees shrinks, the
rest stays as it is), so m_i cannot rise; any climb it shows on a nonlinear layer comes from the layer. Run at 20
and 200 steps on the three drift cases, the linear 0.5x width net and the identity. Results: ``bound`` in
``benchmarks/results/drift.json``.

``--rule`` measures a per-layer choice: the prior only where the layer's output has fewer numbers than its input
(where information must be lost), none elsewhere (so the identity and the layers that keep everything stay
exact). On the other layers of ``inversion_quality.py``'s cases it runs the default alone (what the rule keeps
there); on every one whose layer is smaller than its image input, it runs
the default, the default with weight decay 0.1 toward the start, the default with the annealed jitter (to
three quarters of the run), both together, and the Fourier parametrisation, side by side: PSNR per photo, the
climb of the reported iterate from the grey start, CPU seconds. Results: ``rule`` in the results file.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))

import inversion_quality as iq

import reprinvert as ri
from reprinvert import recipes
from reprinvert.parametrizations import Fourier
from reprinvert.regularizers import Jitter

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
    if lowest["input_distance"] == 0:  # an exact inversion (the identity under Gauss-Newton)
        return (0.0 if rows[-1]["input_distance"] == 0 else float("inf")), int(lowest["step"])
    return rows[-1]["input_distance"] / lowest["input_distance"] - 1, int(lowest["step"])


def entry_for(case: str, name: str) -> dict[str, Any]:
    if case == "width":  # inversion_quality's width-relu-0.5x net, built alone
        from reprinvert.models import FCNet

        net = FCNet(in_features=2523, widths=(round(0.5 * 2523),) * 2, activation="relu", seed=0).eval()
        return dict(name=name, model=net, x=iq.photos(29), layers=["layers.1"], normalize=None)
    return iq.cases(False)[case]()[0]


def gauss_newton(model: torch.nn.Module, layer: str, x: torch.Tensor, *, steps: int, normalize: Any = None,
                 cg: int = 10) -> tuple[torch.Tensor, list[tuple[float, float]]]:
    """Minimum-norm Gauss-Newton inversion of ``x`` at ``layer`` from the grey image 0.5 (see ``--bound``).

    Returns the last iterate (the search only accepts steps that lower the squared error, so it is also the best)
    and, per step from 0, the mean over samples of (squared error, m_i)."""
    from reprinvert._feed import Feed
    from reprinvert._hooks import Hooks

    feed = Feed.of(model, normalize=normalize)
    hooks = Hooks(model, layer, grad=True, stop=True, clone_last=False)  # the inversion loop's own capture
    name = hooks.targets[0].name

    def rep(z: torch.Tensor) -> torch.Tensor:
        return hooks.run(feed, feed.normalized(z))[name]

    with hooks:  # the hooks come off when the search ends, whatever happened
        return _gauss_newton_steps(rep, x, steps=steps, cg=cg)


def _gauss_newton_steps(rep: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *, steps: int,
                        cg: int) -> tuple[torch.Tensor, list[tuple[float, float]]]:
    """:func:`gauss_newton`'s search, given ``rep``, the layer's representation of a batch."""
    import torch.autograd.forward_ad as fwad

    def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a * b).flatten(1).sum(1)

    def per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return v.view(-1, *([1] * (like.dim() - 1)))

    def ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:  # 0 where the denominator is 0 (converged)
        return torch.where(den > 0, num / den.clamp_min(torch.finfo(den.dtype).tiny), torch.zeros_like(den))

    with torch.no_grad():
        target = rep(x).detach()

    def error(z: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return (rep(z) - target).flatten(1).pow(2).sum(1)

    def distance(z: torch.Tensor) -> float:
        return float((z.double() - x.double()).flatten(1).norm(dim=1).mean())

    xg = torch.full_like(x, 0.5)
    loss = error(xg)
    curve = [(float(loss.mean()), distance(xg))]

    def jt(y: torch.Tensor, leaf: torch.Tensor, v: torch.Tensor) -> torch.Tensor:  # J^T v at leaf
        return torch.autograd.grad(y, leaf, v, retain_graph=True)[0]

    def j(point: torch.Tensor, v: torch.Tensor) -> torch.Tensor:  # J v at point
        with fwad.dual_level():
            return fwad.unpack_dual(rep(fwad.make_dual(point, v))).tangent

    for _ in range(steps):
        leaf = xg.detach().requires_grad_(True)
        y = rep(leaf)
        # CGLS for min ||J d - r||, from d = 0: every iterate is in the span of J's rows
        r = (target - y).detach()
        d = torch.zeros_like(xg)
        s = jt(y, leaf, r)
        p, gamma = s.clone(), dot(s, s)
        for _ in range(cg):
            q = j(xg, p)
            alpha = ratio(gamma, dot(q, q))
            d, r = d + per_sample(alpha, d) * p, r - per_sample(alpha, r) * q
            s = jt(y, leaf, r)
            gamma, beta = dot(s, s), ratio(dot(s, s), gamma)
            p = s + per_sample(beta, p) * p
        t, accepted = torch.ones_like(loss), torch.zeros_like(loss, dtype=torch.bool)
        new_x, new_loss = xg.clone(), loss.clone()
        for _ in range(8):
            candidate = (xg + per_sample(t, d) * d).clamp(0, 1)
            trial = error(candidate)
            ok = (trial < loss) & ~accepted
            new_x[ok], new_loss[ok] = candidate[ok], trial[ok]
            accepted |= ok
            if bool(accepted.all()):
                break
            t = torch.where(accepted, t, t / 2)
        xg, loss = new_x.detach(), new_loss
        curve.append((float(loss.mean()), distance(xg)))
    return xg, curve


BOUND_STEPS = (20, 200)


def bound(quick: bool = False) -> dict[str, Any]:
    """The Gauss-Newton search on the drift cases, the linear 0.5x width net and the identity (see ``--bound``)."""
    from reprinvert.models import FCNet

    linear = FCNet(in_features=2523, widths=(round(0.5 * 2523),) * 2, activation="linear", seed=0).eval()
    entries = [(f"{e['name']} {e['layers'][0] if c == 'width' else n}", e, e["layers"][0] if c == "width" else n)
               for c, n in (CASES[2:] if quick else CASES) for e in [entry_for(c, n)]]
    if not quick:
        identity = iq.cases(False)["identity"]()[0]
        entries = [("identity-random 0", identity, "0"),
                   ("width-linear-0.5x layers.1", dict(model=linear, x=iq.photos(29), normalize=None), "layers.1"),
                   *entries]
    out: dict[str, Any] = {}
    for label, entry, layer in entries:
        out[label] = {}
        for steps in (2, 6) if quick else BOUND_STEPS:
            t0 = time.process_time()
            xg, curve = gauss_newton(entry["model"], layer, entry["x"], steps=steps, normalize=entry["normalize"])
            cpu = time.process_time() - t0
            rows = [{"step": k, "input_distance": curve[k][1], "loss": curve[k][0]}
                    for k in (round(f * steps) for f in FRACTIONS)]
            rise, at = climb(rows)
            mse = (xg - entry["x"]).flatten(1).pow(2).mean(1).tolist()
            psnr = [10 * math.log10(1 / e) if e > 0 else None for e in mse]  # None: exact
            relative = ((xg - entry["x"]).flatten(1).norm(dim=1) / entry["x"].flatten(1).norm(dim=1)).tolist()
            rises = [b[1] > a[1] * (1 + 1e-6) for a, b in itertools.pairwise(curve)]  # m_i of the mean, step to step
            out[label][str(steps)] = {"rows": rows, "climb": rise, "lowest_at": at, "psnr": psnr,
                                      "relative_input_distance": relative, "cpu_seconds": cpu,
                                      "steps_where_m_i_rose": int(sum(rises))}
            print(f"gauss-newton {label:32s} {steps:4d} steps: m_i {rows[0]['input_distance']:.3f} -> "
                  f"{rows[-1]['input_distance']:.3f} (lowest at step {at}, last {100 * rise:+.2f}%), PSNR "
                  f"{' / '.join('exact' if v is None else f'{v:.1f}' for v in psnr)} dB, {cpu:.0f} s", flush=True)
    return out


RULE_CASES = ("effnet-trained", "effnet-untrained", "width", "small", "vit", "identity")
RULE: dict[str, dict[str, Any]] = {  # label: changes to recipes.default()
    "default": {},
    "default+decay": {"weight_decay": 0.1},
    "annealed jitter to 0.75": {"regularizers": (Jitter(max_shift=2, until=0.75),)},
    "decay+annealed jitter": {"weight_decay": 0.1, "regularizers": (Jitter(max_shift=2, until=0.75),)},
    "fourier": {"parametrization": Fourier()},
}


def _rule_case(name: str) -> dict[str, Any]:
    """The rule's measurements on one case of ``inversion_quality.py``: every recipe of :data:`RULE` on the layers
    smaller than their image input, the default alone on the others (where the rule keeps the default)."""
    torch.set_num_threads(1)
    out: dict[str, Any] = {}
    for entry in iq.cases(False)[name]():
        x = entry["x"]
        for layer in entry["layers"]:
            size = ri.represent(entry["model"], layer, x, normalize=entry["normalize"])[0].numel()
            smaller = x.dim() == 4 and size < x[0].numel()
            row: dict[str, Any] = {"output_over_input": size / x[0].numel()}
            for label, changes in RULE.items() if smaller else [("default", {})]:
                recipe = recipes.default(**changes)
                t0 = time.process_time()
                res = ri.invert(entry["model"], layer, x, recipe=recipe, seed=0, normalize=entry["normalize"],
                                progress=False)
                rise, at = climb(reported_curve(res.history, recipe.steps))
                row[label] = {"psnr": res.metrics.psnr.tolist(), "climb": rise, "lowest_at": at,
                              "cpu_seconds": time.process_time() - t0}
                print(f"{label:24s} {entry['name'] + ' ' + layer:34s} PSNR "
                      f"{' / '.join(f'{v:.1f}' for v in res.metrics.psnr)} dB, climb {100 * rise:.2f}%", flush=True)
            out[f"{entry['name']} {layer}"] = row
    return out


def rule(jobs: int = 1) -> dict[str, Any]:
    """The per-layer rule on every benchmark case smaller than its input (see ``--rule``), in ``jobs`` processes."""
    import multiprocessing as mp

    if jobs > 1:
        with mp.get_context("spawn").Pool(jobs) as pool:
            parts = pool.map(_rule_case, RULE_CASES)
    else:
        parts = [_rule_case(n) for n in RULE_CASES]
    return {k: v for part in parts for k, v in part.items()}


CANDIDATES = {"default": (), "annealed jitter to 0.5": (Jitter(max_shift=2, until=0.5),),
              "annealed jitter to 0.75": (Jitter(max_shift=2, until=0.75),)}


def candidates() -> dict[str, Any]:
    """Each candidate against the default at 500 steps, on known answers and the real networks."""
    import weight_decay as wd

    known = {k: v for k, v in wd.known_answers().items() if not k.startswith("fft")}  # flat input: no jitter
    builders = iq.cases(False)
    nets = {"effnet-trained": builders["effnet-trained"]()[0], "effnet-untrained": builders["effnet-untrained"]()[0],
            "vit": builders["vit"]()[0]}
    layers = [("effnet-trained", "_bn0"), ("effnet-trained", "_blocks.0"), ("effnet-trained", "_blocks.2"),
              ("effnet-untrained", "_blocks.7"), ("vit", "layers.1")]
    out: dict[str, Any] = {}
    for label, regs in CANDIDATES.items():
        recipe = recipes.default(regularizers=regs)
        row: dict[str, Any] = {}
        for name, (model, layer, x) in known.items():
            res = ri.invert(model, layer, x, recipe=recipe, seed=0)
            row[name] = {"relative_input_distance": float(res.metrics.relative_input_distance.max())}
            print(f"{label:24s} {name:34s} relative m_i {row[name]['relative_input_distance']:.2e}", flush=True)
        for case, layer in layers:
            entry = nets[case]
            res = ri.invert(entry["model"], layer, entry["x"], recipe=recipe, seed=0, normalize=entry["normalize"],
                            progress=False)
            rise, at = climb(reported_curve(res.history, recipe.steps))
            row[f"{case} {layer}"] = {"psnr": res.metrics.psnr.tolist(), "climb": rise, "lowest_at": at}
            print(f"{label:24s} {case + ' ' + layer:34s} PSNR {' / '.join(f'{v:.1f}' for v in res.metrics.psnr)} "
                  f"dB, climb {100 * rise:.1f}%", flush=True)
        out[label] = row
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the width net only, 50 and 150 steps")
    parser.add_argument("--table", action="store_true", help="print the committed (or --out) results and stop")
    parser.add_argument("--candidates", action="store_true",
                        help="measure the candidate recipes against the default instead (kept beside the budgets)")
    parser.add_argument("--bound", action="store_true",
                        help="run the minimum-norm Gauss-Newton search instead (kept beside the budgets)")
    parser.add_argument("--rule", action="store_true",
                        help="measure the per-layer prior rule instead (kept beside the budgets)")
    parser.add_argument("--jobs", type=int, default=1, help="--rule: cases in this many processes")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results file (default {RESULTS})")
    args = parser.parse_args(argv)
    if args.table:
        text = table(json.loads(args.out.read_text()))
        print(text)
        return {}
    torch.set_num_threads(1)
    if args.candidates or args.bound or args.rule:
        key = "candidates" if args.candidates else "bound" if args.bound else "rule"
        payload = json.loads(args.out.read_text()) if args.out.exists() else {}
        payload[key] = candidates() if args.candidates else bound(args.quick) if args.bound else rule(args.jobs)
        payload[key + "_command"] = " ".join(["python", "benchmarks/drift.py", *(sys.argv[1:] if argv is None
                                                                                  else argv)])
        payload[key + "_finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(payload, indent=1) + "\n")
        print(table(payload))
        return payload
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
    if args.out.exists():  # a rerun of the budgets keeps the candidates' results
        kept = json.loads(args.out.read_text())
        out.update({k: v for k, v in kept.items() if k.startswith(("candidates", "bound", "rule"))})
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
    lines = [f"results of: {payload.get('command')} ({payload.get('finished')})", "",
             "m_i of the reported iterate (loss below it), mean over the photos", "", head,
             "|---" * (len(FRACTIONS) + 6) + "|"]
    for label, budgets in payload.get("cases", {}).items():
        for steps, run in budgets.items():
            cells = [f"{r['input_distance']:.2f}<br>({r['loss']:.3g})" for r in run["rows"]]
            lines.append(f"| {label} | {steps} | " + " | ".join(cells) + f" | {run['lowest_at']} | "
                         f"{100 * run['climb']:+.1f}% | {run['psnr']:.1f} | {run['mg_over_mr']:.2f} |")
    if "candidates" in payload:
        found = payload["candidates"]
        cases = list(next(iter(found.values())))
        lines += ["", f"candidates: {payload['candidates_command']} ({payload['candidates_finished']}); relative m_i "
                  "(worst sample) on the known answers, PSNR per photo (dB) and climb elsewhere", "",
                  "| case | " + " | ".join(found) + " |", "|---" * (len(found) + 1) + "|"]
        for case in cases:
            cells = []
            for row in found.values():
                r = row[case]
                cells.append(f"{r['relative_input_distance']:.1e}" if "relative_input_distance" in r else
                             " / ".join(f"{v:.1f}" for v in r["psnr"]) + f" ({100 * r['climb']:.1f}%)")
            lines.append(f"| {case} | " + " | ".join(cells) + " |")
    if "bound" in payload:
        lines += ["", f"minimum-norm Gauss-Newton: {payload['bound_command']} ({payload['bound_finished']}); m_i of "
                  "the iterate (mean over the samples) along the run", "",
                  "| case | steps | " + " | ".join(f"{round(100 * f)}%" for f in FRACTIONS)
                  + " | lowest at step | last above lowest | steps where m_i rose | PSNR (dB) | relative m_i (worst) "
                  "| CPU s |", "|---" * (len(FRACTIONS) + 8) + "|"]
        for label, runs in payload["bound"].items():
            for steps, run in runs.items():
                cells = [f"{r['input_distance']:.2f}" for r in run["rows"]]
                lines.append(f"| {label} | {steps} | " + " | ".join(cells) + f" | {run['lowest_at']} | "
                             f"{100 * run['climb']:+.2f}% | {run['steps_where_m_i_rose']} | "
                             + " / ".join("exact" if v is None else f"{v:.1f}" for v in run["psnr"])
                             + f" | {max(run['relative_input_distance']):.1e} | {run['cpu_seconds']:.0f} |")
    if "rule" in payload:
        lines += ["", f"the prior only where the layer is smaller than its input: {payload['rule_command']} "
                  f"({payload['rule_finished']}); PSNR per photo (dB), climb from the grey start", "",
                  "| case | output / input | " + " | ".join(RULE) + " |", "|---" * (len(RULE) + 2) + "|"]
        for case, row in payload["rule"].items():
            cells = [" / ".join(f"{v:.1f}" for v in row[k]["psnr"]) + f" ({100 * row[k]['climb']:.1f}%)"
                     if k in row else "-" for k in RULE]
            lines.append(f"| {case} | {row['output_over_input']:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
