"""The ``reprinvert`` command line.

    reprinvert --version
    reprinvert demo [--out DIR] [--steps N] [--size PX] [--seed S] [--image NAME] [--quiet]
    reprinvert layers MODEL_SPEC [--weights FILE] [--input-shape B,C,H,W] [--tokens]
    reprinvert invert MODEL_SPEC IMAGES... --layer L [--weights FILE] [--size PX] [COMMON]
    reprinvert sweep MODEL_SPEC IMAGES... [--layers top|leaves|all|A,B,...] [--every K] [--one-by-one] [COMMON]
    reprinvert experiment NAME|all [--size quick|medium|full] [--out DIR] [--cache DIR] [--seed S] [--device DEV]

COMMON = [--out DIR] [--steps N] [--recipe NAME] [--seed S] [--device DEV] [--quiet]. MODEL_SPEC is
``module:factory`` (a dotted module or a ``.py`` file, and a callable in it that takes no arguments).

Every command has ``--help``. A user mistake (a bad argument, a bad path, an unknown name) prints one line
``reprinvert: error: <message>`` to stderr and gives exit status 2, never a traceback.

Adding a command: write ``_add_<name>(subparsers)``, which builds its parser and sets ``run=`` to a function
``(argparse.Namespace) -> int``, and append it to ``_COMMANDS``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from ._version import __version__
from .errors import ReprinvertError

__all__ = ["main"]

_Subparsers = Any  # argparse._SubParsersAction (private type)


class _UsageError(Exception):
    """An argument argparse rejected; carries the one-line message."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors become :class:`_UsageError` (one line, no usage dump, no SystemExit)."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{message} (see '{self.prog} --help')")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


# ---------------------------------------------------------------------------------------------- demo
def _add_demo(sub: _Subparsers) -> None:
    from .data import sample_names

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
        type=_positive_int,
        default=500,
        metavar="N",
        help="optimisation steps per layer (default: %(default)s, the default recipe's)",
    )
    parser.add_argument(
        "--size", type=_positive_int, default=64, metavar="PX", help="image height and width (default: %(default)s)"
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
    from ._demo import run_demo

    run_demo(args.out, steps=args.steps, size=args.size, seed=args.seed, image=args.image, quiet=args.quiet)
    return 0


# ---------------------------------------------------------------------------------------------- models
def _add_common_options(parser: argparse.ArgumentParser, *, out: str) -> None:
    """The options every command that runs inversions shares: --out --steps --recipe --seed --device --quiet."""
    from .recipes import available

    parser.add_argument("--out", default=out, metavar="DIR", help="output folder (default: %(default)s)")
    parser.add_argument(
        "--steps",
        type=_positive_int,
        default=None,
        metavar="N",
        help="optimisation steps per layer (default: the recipe's; 500 for 'default')",
    )
    parser.add_argument(
        "--recipe",
        type=_recipe_name,
        default="default",
        metavar="NAME",
        help=f"{', '.join(available())}: the optimisation recipe (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="seed of every inversion (default: 0)")
    parser.add_argument(
        "--device", default="cpu", metavar="DEV", help="where to run: cpu, cuda, cuda:1, mps (default: %(default)s)"
    )
    parser.add_argument("--quiet", action="store_true", help="print nothing (no table, no progress)")
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        metavar="N",
        help="torch's intra-op CPU threads (default: torch's, one per core). On a shared or small machine 1 is often "
        "much faster; run more processes instead (torchrun). See docs/performance.md",
    )


def _recipe_name(text: str) -> str:
    from .recipes import available

    key = text.replace("_", "-").lower()
    if key not in available():
        raise argparse.ArgumentTypeError(f"unknown recipe {text!r}; available: {', '.join(available())}")
    return key


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        metavar="MODEL_SPEC",
        help="the model as module:factory, e.g. mypackage.models:build or path/to/model.py:Net (the factory is "
        "called with the --model-arg values and must return a torch.nn.Module; modules in the current folder are "
        "importable), or hf:PATH for a Hugging Face model from a local config.json (random weights) or a local "
        "model folder (needs transformers)",
    )
    parser.add_argument(
        "--weights",
        metavar="FILE",
        default=None,
        help="a state dict to load: a torch.save file (read with torch.load(weights_only=True)) or a "
        ".safetensors file (needs the safetensors package)",
    )
    parser.add_argument(
        "--model-arg",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a keyword argument of the factory, repeatable; VALUE is a Python literal (10, 0.5, true, 'text', "
        "(1, 2)), e.g. --model-arg pretrained=true --model-arg num_classes=10",
    )


def _add_image_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "images", nargs="*", metavar="IMAGES", help="image files and/or folders of images (PNG, JPEG, ...)"
    )
    parser.add_argument(
        "--tokens",
        default=None,
        metavar="IDS|FILE",
        help="token ids instead of images: comma-separated ids ('15496,995'), or a text file with one sequence of "
        "comma- or space-separated ids per line (all of one length); use with --start",
    )
    parser.add_argument(
        "--start",
        default=None,
        metavar="LAYER",
        help="optimise the output of this layer instead of the input (for token models: the embedding layer, e.g. "
        "wte or embeddings.word_embeddings)",
    )
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        metavar="N",
        help="invert the inputs N at a time (default: all at once); each finished chunk is saved in OUT/result "
        "at once, and rerunning the same command skips the chunks already done (Ctrl-C keeps them and reports "
        "them); only N images are in memory at a time",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="discard the results an earlier run left in OUT/result and start over (by default a rerun of the same "
        "command continues it, and a different one is refused)",
    )
    parser.add_argument(
        "--normalize",
        type=_normalize,
        default=None,
        metavar="NAME|MEANS/STDS",
        help="the model expects normalised input: imagenet, inception, or per-channel MEAN_R,MEAN_G,MEAN_B/"
        "STD_R,STD_G,STD_B; images stay in [0, 1] (search, clamp, figures), only what the model is fed is "
        "normalised",
    )
    parser.add_argument(
        "--size",
        type=_positive_int,
        default=None,
        metavar="PX",
        help="centre-crop and resize every image to PX x PX (default: keep the files' size, which must agree)",
    )
    parser.add_argument("--grey", action="store_true", help="read images as one grey channel instead of RGB")
    parser.add_argument(
        "--no-clamp", action="store_true", help="do not keep the reconstruction in [0, 1] after each step"
    )


def _normalize(text: str) -> Any:
    from ._domain import NORMALIZATIONS, resolve_normalize

    key = text.strip().lower()
    if key in NORMALIZATIONS:
        return resolve_normalize(key)
    means, sep, stds = text.partition("/")
    try:
        if not sep:
            raise ValueError
        return resolve_normalize(
            (tuple(float(v) for v in means.split(",")), tuple(float(v) for v in stds.split(",")))
        )
    except (ValueError, TypeError):
        raise argparse.ArgumentTypeError(
            f"expected {', '.join(NORMALIZATIONS)} or MEAN_R,MEAN_G,MEAN_B/STD_R,STD_G,STD_B "
            f"(e.g. 0.485,0.456,0.406/0.229,0.224,0.225), got {text!r}"
        ) from None


def _distributed(args: argparse.Namespace) -> tuple[int, int]:
    """``(rank, world size)``: under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) the process group is
    started (gloo, or nccl for a CUDA ``--device``, each rank on its ``LOCAL_RANK``'s GPU); else ``(0, 1)``."""
    import os

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    cuda = str(getattr(args, "device", "cpu")).startswith("cuda")
    if cuda:
        args.device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return dist.get_rank(), dist.get_world_size()


def _load_model(args: argparse.Namespace) -> Any:
    from ._modelspec import load_model, parse_device, parse_model_args

    device = parse_device(args.device) if hasattr(args, "device") else None
    model = load_model(args.model, weights=args.weights, args=parse_model_args(getattr(args, "model_arg", None)))
    return model.to(device) if device is not None else model


def _model_source(args: argparse.Namespace) -> dict[str, Any]:
    from ._modelspec import parse_model_args, sha256

    source: dict[str, Any] = {"spec": args.model, "model_args": parse_model_args(getattr(args, "model_arg", None))}
    if args.weights is not None:
        source["weights"] = str(args.weights)
        source["sha256"] = sha256(args.weights)
    return source


def _read_tokens(text: str) -> Any:
    """``"1,2,3"`` or a file of lines of ids -> a (B, T) long tensor."""

    import torch

    path = Path(text)
    lines = path.read_text().splitlines() if path.is_file() else [text]
    rows = []
    for number, line in enumerate(lines, 1):
        parts = line.replace(",", " ").split()
        if not parts:
            continue
        if not all(p.isdigit() for p in parts):
            where = f"line {number} of '{path}'" if path.is_file() else repr(text)
            raise ValueError(f"--tokens: {where} is not a list of non-negative integer ids")
        rows.append([int(p) for p in parts])
    if not rows:
        raise ValueError(f"--tokens {text!r}: no token ids found")
    if len({len(r) for r in rows}) != 1:
        raise ValueError(
            f"--tokens: the sequences have lengths {sorted({len(r) for r in rows})}; give sequences of one length"
        )
    return torch.tensor(rows, dtype=torch.long)


def _input_chunks(args: argparse.Namespace, model: Any) -> list[tuple[list[str], Callable[[], Any]]]:
    """The inputs as chunks of ``--batch-size``: each a name per sample and a function that loads the batch (so
    only one chunk of images is in memory at a time)."""
    from .data import image_paths, load_images

    device = next((p.device for p in model.parameters()), None)
    if args.tokens is not None or not args.images:
        x, names = _load_inputs(args, model)
        size = args.batch_size or x.shape[0]

        def rows(i: int) -> Callable[[], Any]:
            return lambda: x[i:i + size]

        return [(names[i:i + size], rows(i)) for i in range(0, x.shape[0], size)]
    files = image_paths(args.images)
    size = args.batch_size or len(files)

    def loader(chunk: list[Path]) -> Callable[[], Any]:
        def load() -> Any:
            x = load_images(chunk, size=args.size, mode="L" if args.grey else "RGB")
            return x if device is None else x.to(device)

        return load

    if args.batch_size is None:
        loader(files)()  # read every image now: a bad file fails before any work
    return [([p.name for p in files[i:i + size]], loader(files[i:i + size])) for i in range(0, len(files), size)]


def _study_plan(args: argparse.Namespace, layers: Any, every: int | None, names: list[str]) -> dict[str, Any]:
    """What makes two runs the same study (compared before resuming one)."""
    return {
        "model": args.model, "model_source": _model_source(args), "layers": layers, "every": every,
        "recipe": args.recipe, "steps": args.steps, "seed": args.seed, "no_clamp": args.no_clamp,
        "start": args.start, "normalize": None if args.normalize is None else str(args.normalize),
        "size": args.size, "grey": args.grey, "tokens": args.tokens, "batch_size": args.batch_size,
        "one_by_one": getattr(args, "one_by_one", False), "spectrum": getattr(args, "spectrum", None),
        "inputs": names,
    }


def _load_inputs(args: argparse.Namespace, model: Any) -> tuple[Any, list[str]]:
    """The batch the command inverts and a name per sample."""
    from .data import image_paths, load_images

    if args.tokens is not None:
        if args.images:
            raise ValueError("give either IMAGES or --tokens, not both")
        if args.start is None:
            raise ValueError(
                "--tokens needs --start LAYER (the embedding layer whose output is optimised; token ids cannot be "
                "optimised by gradient descent)"
            )
        x = _read_tokens(args.tokens)
        names = [f"tokens[{i}]" for i in range(x.shape[0])]
    else:
        if not args.images:
            raise ValueError("give image files or folders (IMAGES), or --tokens with --start for a token model")
        x = load_images(args.images, size=args.size, mode="L" if args.grey else "RGB")
        names = [p.name for p in image_paths(args.images)]
    return x.to(next((p.device for p in model.parameters()), x.device)), names


def _raised_by_model(exc: BaseException) -> bool:
    """Whether ``exc`` was raised outside reprinvert (the model's code or torch), judged by its innermost frame."""
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    package = str(Path(__file__).resolve().parent)
    return bool(frames) and not str(Path(frames[-1].filename).resolve()).startswith(package)


def _model_failed(exc: BaseException, what: str) -> ValueError:
    text = " ".join(str(exc).split())
    if len(text) > 300:
        text = text[:297] + "..."
    return ValueError(f"the model failed on {what}: {type(exc).__name__}: {text}")


def _add_layers(sub: _Subparsers) -> None:
    parser = sub.add_parser(
        "layers",
        help="list the layers of a model with their output shapes (the names other commands accept)",
        description="Run the model once on a zero input of --input-shape and print every module: its dotted "
        "name (what --layer / --layers accept), type, output shape, elements per sample, how often it ran and "
        "its parameters.",
    )
    _add_model_options(parser)
    parser.add_argument(
        "--input-shape",
        type=_shape,
        default=(1, 3, 32, 32),
        metavar="B,C,H,W",
        help="shape of the dry-run input, batch first (default: 1,3,32,32)",
    )
    parser.add_argument(
        "--tokens", action="store_true", help="feed integer token ids (zeros, dtype long) instead of floats"
    )
    parser.add_argument(
        "--device", default="cpu", metavar="DEV", help="where to run: cpu, cuda, cuda:1, mps (default: %(default)s)"
    )
    parser.set_defaults(run=_run_layers)


def _shape(text: str) -> tuple[int, ...]:
    parts = [v.strip() for v in text.replace("x", ",").split(",")]
    shape = tuple(int(v) for v in parts) if all(v.isdigit() for v in parts) else ()
    if not shape or any(v < 1 for v in shape):
        raise argparse.ArgumentTypeError(
            f"expected positive integers separated by commas, e.g. 1,3,32,32; got {text!r}"
        )
    return shape


def _run_layers(args: argparse.Namespace) -> int:
    import torch

    from .capture import describe

    model = _load_model(args)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    dtype = torch.long if args.tokens else torch.float32
    x = torch.zeros(args.input_shape, dtype=dtype, device=device)
    try:
        desc = describe(model, x)
    except Exception as exc:  # the model's own error, of any type, gets the prefix; reprinvert's keep their text
        if not _raised_by_model(exc):
            raise
        raise _model_failed(
            exc, f"an input of shape {list(args.input_shape)} (set --input-shape, or --tokens)"
        ) from None
    print(desc)
    return 0


def _add_invert(sub: _Subparsers) -> None:
    parser = sub.add_parser(
        "invert",
        help="invert one layer of a model for your images; write a grid, tables and an HTML report",
        description="Invert the representation of --layer for each image: search by gradient descent for an input "
        "the model maps to the same representation. Writes grid.png, metrics.csv, samples.csv, metrics.json, "
        "report.html (and plot.png with matplotlib) into --out and prints the metrics.",
    )
    _add_model_options(parser)
    _add_image_options(parser)
    parser.add_argument(
        "--layer", required=True, metavar="L", help="the layer to invert (a name from 'reprinvert layers')"
    )
    _add_common_options(parser, out="reprinvert-invert")
    parser.set_defaults(run=_run_invert)


def _add_sweep(sub: _Subparsers) -> None:
    parser = sub.add_parser(
        "sweep",
        help="invert many layers of a model for your images; write a grid, a plot, tables and an HTML report",
        description="Invert each chosen layer for the images with the same recipe and seed. Writes grid.png "
        "(rows: images; columns: the original, then each layer), metrics.csv, samples.csv, metrics.json, "
        "report.html (and plot.png, the metrics against depth, with matplotlib) into --out.",
    )
    _add_model_options(parser)
    _add_image_options(parser)
    parser.add_argument(
        "--layers",
        default="auto",
        metavar="SPEC",
        help="'auto' (the model's stages: its repeated blocks, with the stem and the final norm, at most 12 evenly "
        "spaced), 'top' (the model's top-level children), 'leaves' (modules without children), 'all', or "
        "comma-separated names from 'reprinvert layers' (default: %(default)s)",
    )
    parser.add_argument("--every", type=_positive_int, default=None, metavar="K", help="keep every K-th layer")
    parser.add_argument(
        "--spectrum",
        type=_positive_int,
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
    _add_common_options(parser, out="reprinvert-sweep")
    parser.set_defaults(run=_run_sweep)


def _run_invert(args: argparse.Namespace) -> int:
    return _run_inversions(args, [args.layer], None)


def _run_sweep(args: argparse.Namespace) -> int:
    spec = args.layers.strip()
    layers = spec if spec in ("auto", "top", "leaves", "all") else [s.strip() for s in spec.split(",") if s.strip()]
    if not layers:
        raise ValueError(f"--layers {args.layers!r}: expected auto, top, leaves, all or comma-separated layer names")
    return _run_inversions(args, layers, args.every)


def _run_inversions(args: argparse.Namespace, layers: Any, every: int | None) -> int:
    import difflib
    import shutil

    from .errors import LayerNotFoundError
    from .layers import list_layers, resolve_layer
    from .report import write_report
    from .sweep import Sweep, sweep

    rank, world = _distributed(args)
    model = _load_model(args)
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
    out = Path(args.out)
    try:  # fail before the long work, not after it
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create the output folder '{out}': {exc.strerror or exc}") from None
    images = args.tokens is None and args.start is None
    chunks = _input_chunks(args, model)
    study = out / "result"
    plan = _study_plan(args, layers, every, [n for names, _ in chunks for n in names])
    plan_file = study / "study.json"
    if args.fresh and study.is_dir() and rank == 0:
        shutil.rmtree(study)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()  # rank 0 has cleared the old results (--fresh) before anyone looks at them
        if len(chunks) < world and rank == 0:
            print(
                f"reprinvert: {len(chunks)} chunk(s) of inputs for {world} processes: some have nothing to do; pass "
                "--batch-size to share the inputs out",
                file=sys.stderr,
            )
    if plan_file.is_file():
        before = json.loads(plan_file.read_text())
        if before != plan:
            changed = sorted(k for k in set(before) | set(plan) if before.get(k) != plan.get(k))
            raise ValueError(
                f"'{out}' holds results of another study (different {', '.join(changed)}); give another --out, or "
                "pass --fresh to discard them and start over"
            )
    parts: list[Sweep] = []
    interrupted = False
    # Under torchrun with fewer chunks than processes, the (chunk, layer) pairs are shared out instead: each rank
    # inverts its layers into the chunks' layer folders, and rank 0 then assembles every chunk from them.
    by_layer = world > 1 and len(chunks) < world
    if by_layer:
        _invert_layer_shares(args, model, chunks, study, layers, every, images, rank, world)
    try:
        for k, (names, load_x) in enumerate(chunks):
            mine = rank == 0 if by_layer else k % world == rank
            if not mine:  # under torchrun: another rank's chunk (or, shared by layer, rank 0 assembles them all)
                continue
            folder = study / f"part-{k:04d}"
            where = f"chunk {k + 1}/{len(chunks)} ({names[0]}{' ... ' + names[-1] if len(names) > 1 else ''})"
            if (folder / "sweep.json").is_file():
                parts.append(_loaded_sweep(folder))
                if not args.quiet:
                    print(f"{where}: done in an earlier run, skipped", file=sys.stderr)
                continue
            if not args.quiet and len(chunks) > 1:
                print(f"{where} ...", file=sys.stderr, flush=True)
            x = load_x()
            # Each finished layer of the chunk is saved at once (resume=), so an interrupted chunk keeps its layers.
            layer_dir = study / f"part-{k:04d}.layers"
            try:
                part = sweep(
                    model, x, layers=layers, every=every, recipe=args.recipe, steps=args.steps, seed=args.seed,
                    clamp=False if args.no_clamp or not images else (0.0, 1.0), progress=not args.quiet,
                    batched=False if getattr(args, "one_by_one", False) else None, start=args.start,
                    normalize=args.normalize, input_names=names, model_source=_model_source(args),
                    spectrum=getattr(args, "spectrum", None) or False, resume=layer_dir,
                )
            except Exception as exc:
                if not _raised_by_model(exc):
                    raise
                what = "the token ids" if args.tokens is not None else "the images"
                raise _model_failed(
                    exc, f"{what} (a batch of shape {list(x.shape)}; see --size and --grey)"
                ) from None
            part.save(folder)
            if rank == 0 and not plan_file.is_file():  # with the first finished chunk: a failed run leaves nothing
                plan_file.write_text(json.dumps(plan, indent=1) + "\n")
            resumed = part.provenance.options.get("resumed") or []
            if resumed and not args.quiet:
                print(f"{where}: {len(resumed)} layer(s) already finished (an earlier run, another process), loaded",
                      file=sys.stderr)
            shutil.rmtree(layer_dir, ignore_errors=True)  # now inside the chunk's saved sweep
            parts.append(part)
    except KeyboardInterrupt:
        kept = sorted(study.glob("part-*.layers/layer-*.npz")) if study.is_dir() else []
        if kept and rank == 0 and not plan_file.is_file():
            plan_file.write_text(json.dumps(plan, indent=1) + "\n")
        if not parts:
            if kept:
                print(f"reprinvert: interrupted; {len(kept)} finished layer(s) of an unfinished chunk are kept in "
                      f"'{study}'; rerun the same command to continue", file=sys.stderr)
                return 130
            raise
        interrupted = True
    if world > 1:
        # Every rank has saved its chunks; rank 0 joins all of them, in order, and writes the one report.
        import torch.distributed as dist

        dist.barrier()
        if rank != 0:
            dist.destroy_process_group()
            return 0
        if not plan_file.is_file():
            plan_file.write_text(json.dumps(plan, indent=1) + "\n")
        parts = [_loaded_sweep(study / f"part-{k:04d}") for k in range(len(chunks))]
        dist.destroy_process_group()
    result = Sweep.concat(parts)
    paths = write_report(result, out, title=f"reprinvert {args.command}: {args.model}")
    paths["result"] = study  # every tensor and number: reprinvert.load(out / "result")
    if not args.quiet:
        if isinstance(layers, str):
            print(f"layers ({layers}): {', '.join(result.layers)}")
            for name, reason in result.provenance.skipped_layers:
                print(f"  skipped {name}: {reason}")
        print(result)
        print("m_g: ||rep(x) - rep(x_g)||, m_r: ||rep(x) - rep(x')|| for x' = x + N(0, (1/25)^2), m_i: ||x_g - x||; "
              "a layer represents x when m_g < m_r.")
        print(f"wrote {', '.join(p.name for p in paths.values())} to {out.resolve()} "
              f"(load the whole result with reprinvert.load('{paths['result']}'))")
    if interrupted:
        print(
            f"reprinvert: interrupted after {len(parts)} of {len(chunks)} chunks; the report covers those; rerun "
            "the same command to continue",
            file=sys.stderr,
        )
        return 130
    return 0


def _invert_layer_shares(
    args: argparse.Namespace, model: Any, chunks: list[tuple[list[str], Callable[[], Any]]], study: Path, layers: Any,
    every: int | None, images: bool, rank: int, world: int,
) -> None:
    """This rank's share of the (chunk, layer) pairs, saved one layer at a time in each chunk's layer folder (the
    resume folder of the chunk's sweep); every rank then waits for the others."""
    import torch.distributed as dist

    from .sweep import _layer_names, sweep

    pair = 0
    for k, (names, load_x) in enumerate(chunks):
        if (study / f"part-{k:04d}" / "sweep.json").is_file():
            continue
        x = load_x()
        every_layer = _layer_names(model, x, layers, every, args.start, args.normalize)
        mine = [name for j, name in enumerate(every_layer) if (pair + j) % world == rank]
        pair += len(every_layer)
        if mine:
            sweep(
                model, x, layers=mine, recipe=args.recipe, steps=args.steps, seed=args.seed,
                clamp=False if args.no_clamp or not images else (0.0, 1.0), progress=not args.quiet, batched=False,
                start=args.start, normalize=args.normalize, input_names=names, resume=study / f"part-{k:04d}.layers",
            )  # (the spectrum, if asked for, is measured when rank 0 assembles the chunk)
    dist.barrier()


def _loaded_sweep(folder: Path) -> Any:
    from .sweep import load

    return load(folder)


# ---------------------------------------------------------------------------------------------- experiment
def _add_experiment(sub: _Subparsers) -> None:
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
    from ._modelspec import parse_device
    from .experiments import EXPERIMENTS, run, run_all
    from .experiments._common import resolve_device

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


# ---------------------------------------------------------------------------------------------- main
_COMMANDS: tuple[Callable[[_Subparsers], None], ...] = (
    _add_demo, _add_layers, _add_invert, _add_sweep, _add_experiment
)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``reprinvert`` and all its commands."""
    parser = _Parser(
        prog="reprinvert",
        description="How much of the input survives at layer L? Capture, invert and measure any PyTorch layer.",
    )
    parser.add_argument("--version", action="version", version=f"reprinvert {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for add in _COMMANDS:
        add(sub)
    return parser


def _fail(message: str) -> int:
    print(f"reprinvert: error: {' '.join(str(message).split())}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: the arguments after the program name; ``None`` reads ``sys.argv[1:]``.

    Returns:
        The exit status: 0 on success (``--help`` and ``--version`` included), 2 for a user mistake (after
        printing one line ``reprinvert: error: ...`` to stderr), 130 when interrupted.

    Example:
        >>> from reprinvert.cli import main
        >>> main(["--version"])
        reprinvert 0.2.0.dev0
        0
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        return _fail(str(exc))
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else 0
    run: Callable[[argparse.Namespace], int] | None = getattr(args, "run", None)
    if run is None:
        parser.print_help()
        return 0
    import torch

    threads = torch.get_num_threads()
    try:
        if getattr(args, "threads", None):
            torch.set_num_threads(args.threads)
        return run(args)
    except (ReprinvertError, ValueError, TypeError, OSError) as exc:  # reprinvert's messages name the fix
        return _fail(str(exc))
    except KeyboardInterrupt:
        print("reprinvert: interrupted", file=sys.stderr)
        return 130
    finally:
        torch.set_num_threads(threads)  # main() may run inside a Python session
