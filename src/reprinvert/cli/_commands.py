"""Private: the commands: ``demo``, ``layers``, ``invert``, ``sweep`` and ``experiment``.

Each command is a pair: ``add_<name>(subparsers)`` builds its parser (from the option groups of ``_options``) and
sets ``run=`` to a function ``(argparse.Namespace) -> int``. ``invert`` and ``sweep`` run a
:class:`~reprinvert.Study` in ``OUT/result``.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._inputs import input_chunks, load_model, model_failed, model_source, raised_by_model
from ._options import (
    add_device,
    add_input_options,
    add_model_options,
    add_run_options,
    positive_int,
    shape_arg,
)

__all__ = ["COMMANDS"]

_Subparsers = Any  # argparse._SubParsersAction (private type)


def add_demo(sub: _Subparsers) -> None:
    from ..data import sample_names

    parser = sub.add_parser(
        "demo",
        help="invert each stage of a small built-in (untrained) CNN for a bundled photo",
        description="Invert the output of each stage of DemoCNN, a small built-in CNN with random (untrained) "
        "weights drawn from --seed, for a bundled public-domain photo. Writes grid.png (the photo, then each "
        "stage's inversion) and metrics.json (m_g, m_r, m_i, ||x'-x||, normalized feature error, PSNR, "
        "represents; recipe, seed and versions) into --out, and prints a table.",
    )
    parser.add_argument("--out", default="reprinvert-demo", metavar="DIR", help="output folder (default: %(default)s)")
    parser.add_argument(
        "--steps",
        type=positive_int,
        default=500,
        metavar="N",
        help="optimisation steps per layer (default: %(default)s, the default recipe's)",
    )
    parser.add_argument(
        "--size", type=positive_int, default=64, metavar="PX", help="image height and width (default: %(default)s)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, metavar="S", help="seed of the weights and the inversions (default: %(default)s)"
    )
    parser.add_argument(
        "--image",
        default="astronaut",
        metavar="NAME",
        help=f"bundled photo: {', '.join(sample_names())} (default: %(default)s)",
    )
    parser.add_argument("--quiet", action="store_true", help="print nothing")
    parser.set_defaults(run=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from .._demo import run_demo

    run_demo(args.out, steps=args.steps, size=args.size, seed=args.seed, image=args.image, quiet=args.quiet)
    return 0


def add_layers(sub: _Subparsers) -> None:
    parser = sub.add_parser(
        "layers",
        help="list the layers of a model with their output shapes (the names other commands accept)",
        description="Run the model once on a zero input of --input-shape and print every module: its dotted "
        "name (what --layer / --layers accept), type, output shape, elements per sample, how often it ran and "
        "its parameters.",
    )
    add_model_options(parser)
    parser.add_argument(
        "--input-shape",
        type=shape_arg,
        default=(1, 3, 32, 32),
        metavar="B,C,H,W",
        help="shape of the dry-run input, batch first (default: 1,3,32,32)",
    )
    parser.add_argument(
        "--tokens", action="store_true", help="feed integer token ids (zeros, dtype long) instead of floats"
    )
    add_device(parser)
    parser.set_defaults(run=_run_layers)


def _run_layers(args: argparse.Namespace) -> int:
    import torch

    from .._describe import describe

    model = load_model(args)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    dtype = torch.long if args.tokens else torch.float32
    x = torch.zeros(args.input_shape, dtype=dtype, device=device)
    try:
        desc = describe(model, x)
    except Exception as exc:  # the model's own error, of any type, gets the prefix; reprinvert's keep their text
        if not raised_by_model(exc):
            raise
        raise model_failed(
            exc, f"an input of shape {list(args.input_shape)} (set --input-shape, or --tokens)"
        ) from None
    print(desc)
    return 0


def add_invert(sub: _Subparsers) -> None:
    parser = sub.add_parser(
        "invert",
        help="invert one layer of a model for your images; write a grid, tables and an HTML report",
        description="Invert the representation of --layer for each image: search by gradient descent for an input "
        "the model maps to the same representation. Writes grid.png, metrics.csv, samples.csv, metrics.json, "
        "report.html (and plot.png with matplotlib) into --out and prints the metrics.",
    )
    add_model_options(parser)
    add_input_options(parser)
    parser.add_argument(
        "--layer", required=True, metavar="L", help="the layer to invert (a name from 'reprinvert layers')"
    )
    add_run_options(parser, out="reprinvert-invert")
    parser.set_defaults(run=_run_invert)


def add_sweep(sub: _Subparsers) -> None:
    parser = sub.add_parser(
        "sweep",
        help="invert many layers of a model for your images; write a grid, a plot, tables and an HTML report",
        description="Invert each chosen layer for the images with the same recipe and seed. Writes grid.png "
        "(rows: images; columns: the original, then each layer), metrics.csv, samples.csv, metrics.json, "
        "report.html (and plot.png, the metrics against depth, with matplotlib) into --out.",
    )
    add_model_options(parser)
    add_input_options(parser)
    parser.add_argument(
        "--layers",
        default="auto",
        metavar="SPEC",
        help="'auto' (the model's stages: its repeated blocks, with the stem and the final norm, at most 12 evenly "
        "spaced), 'top' (the model's top-level children), 'leaves' (modules without children), 'all', or "
        "comma-separated names from 'reprinvert layers' (default: %(default)s)",
    )
    parser.add_argument("--every", type=positive_int, default=None, metavar="K", help="keep every K-th layer")
    parser.add_argument(
        "--spectrum",
        type=positive_int,
        default=None,
        metavar="K",
        help="also measure each layer's Jacobian spectrum at the images (K largest and smallest singular values): "
        "the input directions the layer cannot see and its condition number, columns of the report",
    )
    parser.add_argument(
        "--one-by-one",
        action="store_true",
        help="invert the layers one after another instead of as one batch (less memory; by default they are "
        "batched when the model allows it and a few steps measured both ways show that it is faster)",
    )
    add_run_options(parser, out="reprinvert-sweep")
    parser.set_defaults(run=_run_sweep)


def _run_invert(args: argparse.Namespace) -> int:
    return _run_inversions(args, [args.layer], None)


def _run_sweep(args: argparse.Namespace) -> int:
    spec = args.layers.strip()
    layers = spec if spec in ("auto", "top", "leaves", "all") else [s.strip() for s in spec.split(",") if s.strip()]
    if not layers:
        raise ValueError(f"--layers {args.layers!r}: expected auto, top, leaves, all or comma-separated layer names")
    return _run_inversions(args, layers, args.every)


#: How the command line names the settings of a study's fingerprint, in its errors.
_OPTION_NAMES = {
    "batched": "--one-by-one", "recipe": "--recipe", "steps": "--steps", "seed": "--seed", "clamp": "--no-clamp",
    "start": "--start", "normalize": "--normalize", "layers": "--layers", "every": "--every",
    "spectrum": "--spectrum", "model": "MODEL_SPEC", "model_state": "the model's weights (--weights, --model-arg)",
    "model_source": "MODEL_SPEC / --weights / --model-arg", "inputs": "the inputs (IMAGES, --tokens, --size, --grey)",
    "chunks": "--batch-size",
}


def _run_inversions(args: argparse.Namespace, layers: Any, every: int | None) -> int:
    from .._archive import Mismatch
    from ..report import write_report
    from ..study import Study

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and str(args.device).startswith("cuda"):
        args.device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"  # under torchrun: each process on its GPU
    model = load_model(args)
    _check_layer_names(args, model, layers)
    out = Path(args.out)
    try:  # fail before the long work, not after it
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create the output folder '{out}': {exc.strerror or exc}") from None
    images = args.tokens is None and args.start is None
    shapes: list[list[int]] = []
    chunks = [(names, _recording(load, shapes)) for names, load in input_chunks(args, model)]
    study = Study(
        out / "result", model, chunks=chunks, fresh=args.fresh,
        inputs_key={"names": [n for names, _ in chunks for n in names], "tokens": args.tokens, "size": args.size,
                    "grey": args.grey},
        layers=layers, every=every, recipe=args.recipe, steps=args.steps, seed=args.seed,
        clamp=False if args.no_clamp or not images else (0.0, 1.0), progress=not args.quiet,
        batched=False if getattr(args, "one_by_one", False) else None, start=args.start, normalize=args.normalize,
        model_source=model_source(args), spectrum=getattr(args, "spectrum", None) or False,
    )
    interrupted = False
    try:
        result = study.run()
    except Mismatch as mismatch:
        differ = ", ".join(_OPTION_NAMES.get(k, k) for k in mismatch.differences)
        raise ValueError(
            f"'{out}' holds results of another study (different {differ}); give another --out, or pass --fresh to "
            "discard them and start over"
        ) from None
    except KeyboardInterrupt:
        result = study.finished()
        if result is None:
            kept = study.kept_layers()
            if not kept:
                raise
            print(f"reprinvert: interrupted; {kept} finished layer(s) of an unfinished chunk are kept in "
                  f"'{study.folder}'; rerun the same command to continue", file=sys.stderr)
            return 130
        interrupted = True
    except Exception as exc:
        if not raised_by_model(exc):
            raise
        what = "the token ids" if args.tokens is not None else "the images"
        shape = f"a batch of shape {shapes[-1]}; " if shapes else ""
        raise model_failed(exc, f"{what} ({shape}see --size and --grey)") from None
    if result is None:  # another torchrun process: process 0 writes the report
        return 0
    _report(args, result, write_report(result, out, title=f"reprinvert {args.command}: {args.model}"), study, layers)
    if interrupted:
        print(
            f"reprinvert: interrupted after {len(study.done())} of {len(chunks)} chunks; the report covers those; "
            "rerun the same command to continue",
            file=sys.stderr,
        )
        return 130
    return 0


def _recording(load: Callable[[], Any], shapes: list[list[int]]) -> Callable[[], Any]:
    def loaded() -> Any:
        x = load()
        shapes.append(list(x.shape))
        return x

    return loaded


def _check_layer_names(args: argparse.Namespace, model: Any, layers: Any) -> None:
    """Every layer named on the command line is one of the model's (the error lists the closest names)."""
    from .._layers import list_layers, resolve_layer
    from ..errors import LayerNotFoundError

    for layer in ([] if isinstance(layers, str) else layers) + ([args.start] if args.start else []):
        try:
            resolve_layer(model, layer)
        except LayerNotFoundError:
            close = difflib.get_close_matches(layer, list_layers(model), n=5, cutoff=0.5)
            hint = f"closest: {', '.join(close)}; " if close else ""
            raise LayerNotFoundError(
                f"layer {layer!r} is not a layer of {type(model).__name__}; {hint}"
                f"list every layer with: reprinvert layers {args.model}"
            ) from None


def _report(args: argparse.Namespace, result: Any, paths: dict[str, Path], study: Any, layers: Any) -> None:
    paths["result"] = study.folder  # every tensor and number: reprinvert.load(out / "result")
    if args.quiet:
        return
    if isinstance(layers, str):
        print(f"layers ({layers}): {', '.join(result.layers)}")
        for name, reason in result.provenance.skipped_layers:
            print(f"  skipped {name}: {reason}")
    print(result)
    print("m_g: ||rep(x) - rep(x_g)||, m_r: ||rep(x) - rep(x')|| for x' = x + N(0, (1/25)^2), m_i: ||x_g - x||; "
          "a layer represents x when m_g < m_r.")
    print(f"wrote {', '.join(p.name for p in paths.values())} to {Path(args.out).resolve()} "
          f"(load the whole result with reprinvert.load('{paths['result']}'))")


def add_experiment(sub: _Subparsers) -> None:
    parser = sub.add_parser(
        "experiment",
        help="reproduce one of the seed's experiments (or all) as numbers and figures",
        description="Run a seed experiment: copy, denoise, unet-representation, depth, width, "
        "corruption-distance, or all. Writes PNG figures and result.json into --out/<name>/ and prints the "
        "numbers. --size quick (default) runs in minutes on 2 CPU cores, --size medium in about 35 minutes; --size "
        "full uses the seed's sizes (hours, a GPU: pass --device cuda). Trained weights are cached in OUT/cache.",
    )
    parser.add_argument("name", metavar="NAME", help="experiment name, or 'all'")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--size", dest="size", choices=("quick", "medium", "full"),
                       help="quick: minutes on 2 CPU cores (default); medium: about 35 minutes on 2 CPU cores "
                       "(longer training, scikit-image data, the real EfficientNet-Lite0, 5000-step width study); "
                       "full: the seed's sizes (a GPU)")
    group.add_argument("--quick", dest="size", action="store_const", const="quick", help="same as --size quick")
    group.add_argument("--full", dest="size", action="store_const", const="full", help="same as --size full")
    parser.set_defaults(size="quick")
    caching = parser.add_mutually_exclusive_group()
    caching.add_argument(
        "--cache", default=None, metavar="DIR",
        help="folder of trained weights, checkpointed every epoch: a rerun loads them instead of training, an "
        "interrupted training resumes (default: OUT/cache)",
    )
    caching.add_argument("--no-cache", action="store_true", help="train from scratch and save nothing")
    parser.add_argument(
        "--out", default="reprinvert-experiments", metavar="DIR", help="output folder (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="seed of everything (default: 0)")
    parser.add_argument(
        "--device",
        default="cpu",
        metavar="DEV",
        help="where to train, invert and measure: cpu, cuda, cuda:1 (default: %(default)s); recorded in "
        "result.json",
    )
    parser.add_argument("--quiet", action="store_true", help="print nothing")
    parser.set_defaults(run=_run_experiment)


def _run_experiment(args: argparse.Namespace) -> int:
    from .._modelspec import parse_device
    from ..experiments import EXPERIMENTS, run, run_all
    from ..experiments._common import resolve_device

    name = args.name.replace("_", "-").lower()
    if name != "all" and name not in EXPERIMENTS:
        raise ValueError(f"experiment {args.name!r} is unknown; available: {', '.join(EXPERIMENTS)}, all")
    device = parse_device(args.device)  # worded for the command line: "--device 'x': ..."
    resolve_device(device)  # what the experiments add (no MPS: they compute in float64)
    progress = not args.quiet
    cache = False if args.no_cache else args.cache
    if name == "all":
        results = run_all(size=args.size, out=args.out, seed=args.seed, progress=progress, device=device,
                          cache=cache)
        if progress:
            for key, sec in results["seconds"].items():
                print(f"{key:22s} {sec:8.1f} s")
            print(f"{'total':22s} {results['total_seconds']:8.1f} s; wrote {args.out}/<name>/")
    else:
        run(name, size=args.size, out=args.out, seed=args.seed, progress=progress, device=device, cache=cache)
        if progress:
            print(f"wrote {args.out}/{name}/")
    return 0




COMMANDS: tuple[Callable[[_Subparsers], None], ...] = (add_demo, add_layers, add_invert, add_sweep, add_experiment)
