"""Private: what the command line runs on: the model from its spec, and the inputs (images or token ids)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["input_chunks", "load_model", "model_failed", "model_source", "raised_by_model"]


def load_model(args: argparse.Namespace) -> Any:
    from .._modelspec import load_model as build
    from .._modelspec import parse_device, parse_model_args

    device = parse_device(args.device) if hasattr(args, "device") else None
    model = build(args.model, weights=args.weights, args=parse_model_args(getattr(args, "model_arg", None)))
    return model.to(device) if device is not None else model


def model_source(args: argparse.Namespace) -> dict[str, Any]:
    from .._modelspec import parse_model_args, sha256

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


def input_chunks(args: argparse.Namespace, model: Any) -> list[tuple[list[str], Callable[[], Any]]]:
    """The inputs as chunks of ``--batch-size``: each a name per sample and a function that loads the batch (so
    only one chunk of images is in memory at a time)."""
    from ..data import image_paths, load_images

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


def _load_inputs(args: argparse.Namespace, model: Any) -> tuple[Any, list[str]]:
    """The batch the command inverts and a name per sample."""
    from ..data import image_paths, load_images

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


def raised_by_model(exc: BaseException) -> bool:
    """Whether ``exc`` was raised outside reprinvert (the model's code or torch), judged by its innermost frame."""
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    package = str(Path(__file__).resolve().parent.parent)
    return bool(frames) and not str(Path(frames[-1].filename).resolve()).startswith(package)


def model_failed(exc: BaseException, what: str) -> ValueError:
    text = " ".join(str(exc).split())
    if len(text) > 300:
        text = text[:297] + "..."
    return ValueError(f"the model failed on {what}: {type(exc).__name__}: {text}")
