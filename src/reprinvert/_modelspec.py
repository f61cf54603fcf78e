"""Private: load a user's model from a ``package.module:factory`` specification (the command line's MODEL_SPEC).

Every failure is a :class:`ModelSpecError` (a ``ValueError``) whose one-line message names the problem: a
malformed spec, a module that cannot be imported, a missing factory, a factory that raises or returns something
other than an ``nn.Module``, a missing or unreadable weights file, or weights that do not fit the model.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.util
import os
import sys
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["ModelSpecError", "load_model", "load_weights", "parse_device", "parse_model_args", "sha256"]

_EXAMPLE = "e.g. mypackage.models:build or path/to/model.py:Net"


class ModelSpecError(ValueError):
    """A model specification, weights file or device the command line cannot use."""


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _import_module(target: str, spec: str) -> Any:
    """Import ``target``: a dotted module name (the current folder is searched first) or a ``.py`` file."""
    if target.endswith(".py") or os.sep in target or "/" in target:
        path = Path(target)
        if not path.is_file():
            raise ModelSpecError(f"MODEL_SPEC {spec!r}: no Python file at '{path}'")
        name = f"_reprinvert_user_{path.stem}_{uuid.uuid4().hex[:8]}"
        loader_spec = importlib.util.spec_from_file_location(name, path)
        if loader_spec is None or loader_spec.loader is None:
            raise ModelSpecError(f"MODEL_SPEC {spec!r}: cannot load '{path}' as a Python module")
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[name] = module
        try:
            loader_spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(name, None)
            raise ModelSpecError(f"MODEL_SPEC {spec!r}: running '{path}' raised {_short(exc)}") from None
        return module
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:  # like `python -m`: modules in the current folder are importable
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        raise ModelSpecError(
            f"MODEL_SPEC {spec!r}: cannot import module {target!r} ({exc}); check the name, install the package, "
            "or run from the folder that holds it"
        ) from None
    except Exception as exc:
        raise ModelSpecError(f"MODEL_SPEC {spec!r}: importing {target!r} raised {_short(exc)}") from None
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def parse_model_args(items: Sequence[str] | None) -> dict[str, Any]:
    """``["pretrained=true", "num_classes=10"]`` -> ``{"pretrained": True, "num_classes": 10}``.

    Values are Python literals (``ast.literal_eval``; ``true``/``false``/``none`` in any case too); anything else
    is kept as a string.
    """
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ModelSpecError(f"--model-arg {item!r}: expected NAME=VALUE, e.g. --model-arg num_classes=10")
        text = text.strip()
        lowered = {"true": "True", "false": "False", "none": "None"}.get(text.lower(), text)
        try:
            out[key] = ast.literal_eval(lowered)
        except (ValueError, SyntaxError):
            out[key] = text
    return out


def sha256(path: str | Path) -> str:
    """The SHA-256 of a file, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _load_hf(spec: str, args: Mapping[str, Any]) -> nn.Module:
    """``hf:path``: a Hugging Face model from a local config file or a local model folder (offline)."""
    path = Path(spec[3:])
    try:
        import transformers
    except ImportError:
        raise ModelSpecError(
            f"MODEL_SPEC {spec!r}: Hugging Face models need transformers (pip install transformers)"
        ) from None
    if not path.exists():
        raise ModelSpecError(f"MODEL_SPEC {spec!r}: no config file or model folder at '{path}'")
    try:
        if path.is_dir():
            has_weights = any((path / n).exists() for n in ("model.safetensors", "pytorch_model.bin"))
            if has_weights:
                return transformers.AutoModel.from_pretrained(str(path), local_files_only=True, **args)
            config = transformers.AutoConfig.from_pretrained(str(path), local_files_only=True)
        else:
            config = transformers.AutoConfig.from_pretrained(str(path), local_files_only=True)
        return transformers.AutoModel.from_config(config, **args)
    except Exception as exc:
        raise ModelSpecError(f"MODEL_SPEC {spec!r}: transformers could not build the model ({_short(exc)})") from None


def load_model(
    spec: str, *, weights: str | Path | None = None, args: Mapping[str, Any] | None = None
) -> nn.Module:
    """Build the model named by ``spec`` and load ``weights`` into it.

    ``spec`` is ``module:factory`` or ``hf:PATH``. ``module`` is a dotted module name (the current folder is
    importable) or a path to a ``.py`` file; ``factory`` is a callable in it (a class or a function, dotted for
    nested attributes) called with ``args`` as keyword arguments, which must return an ``nn.Module``. ``hf:PATH``
    builds a Hugging Face model (``transformers.AutoModel``) from a local ``config.json`` (random weights) or a
    local model folder (its weights). The model is put in eval mode.

    Raises:
        ModelSpecError: with a one-line message naming the problem.
    """
    args = dict(args or {})
    if isinstance(spec, str) and spec.startswith("hf:"):
        model = _load_hf(spec, args)
        if weights is not None:
            load_weights(model, weights)
        return model.eval()
    if not isinstance(spec, str) or spec.count(":") < 1:
        raise ModelSpecError(f"MODEL_SPEC {spec!r}: expected module:factory ({_EXAMPLE})")
    target, _, attr = spec.rpartition(":")
    if not target or not attr or not all(part.isidentifier() for part in attr.split(".")):
        raise ModelSpecError(f"MODEL_SPEC {spec!r}: expected module:factory ({_EXAMPLE})")
    module = _import_module(target, spec)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = sorted(n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n, None)))
            raise ModelSpecError(
                f"MODEL_SPEC {spec!r}: {target!r} has no attribute {attr!r}; callables in it: "
                f"{', '.join(names[:15]) or '(none)'}"
            )
        obj = getattr(obj, part)
    if isinstance(obj, nn.Module):
        if args:
            raise ModelSpecError(f"MODEL_SPEC {spec!r}: {attr!r} is a module instance, so --model-arg cannot apply")
        model = obj
    else:
        if not callable(obj):
            raise ModelSpecError(f"MODEL_SPEC {spec!r}: {attr!r} is a {type(obj).__name__}, not a callable factory")
        try:
            model = obj(**args)
        except Exception as exc:
            called = f"{attr}({', '.join(f'{k}={v!r}' for k, v in args.items())})"
            hint = "pass its arguments with --model-arg NAME=VALUE" if not args else "check the --model-arg values"
            raise ModelSpecError(f"MODEL_SPEC {spec!r}: calling {called} raised {_short(exc)} ({hint})") from None
    if not isinstance(model, nn.Module):
        raise ModelSpecError(f"MODEL_SPEC {spec!r}: {attr}() returned a {type(model).__name__}, not a torch.nn.Module")
    if weights is not None:
        load_weights(model, weights)
    return model.eval()


def _read_state(path: Path) -> Any:
    if path.suffix.lower() == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ModelSpecError(
                f"--weights '{path}': reading .safetensors files needs the safetensors package "
                "(pip install safetensors), or save the state dict with torch.save"
            ) from None
        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:
            raise ModelSpecError(f"--weights '{path}': cannot read it as safetensors ({_short(exc)})") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelSpecError(
            f"--weights '{path}': cannot read a state dict with torch.load(weights_only=True) ({_short(exc)}); "
            "save one with torch.save(model.state_dict(), path)"
        ) from None


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a state dict (``torch.save`` file, or ``.safetensors``) into ``model``, strictly.

    A checkpoint dict holding the state dict under ``"state_dict"`` or ``"model"`` is accepted too.
    """
    p = Path(path)
    if not p.exists():
        raise ModelSpecError(f"--weights: no file at '{p}'")
    if p.is_dir():
        raise ModelSpecError(f"--weights '{p}' is a folder; pass the weights file")
    state = _read_state(p)
    if isinstance(state, Mapping):
        for key in ("state_dict", "model"):
            inner = state.get(key)
            if isinstance(inner, Mapping) and not all(isinstance(v, torch.Tensor) for v in state.values()):
                state = inner
                break
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelSpecError(
            f"--weights '{p}' does not hold a state dict (a mapping of names to tensors), got "
            f"{type(state).__name__}; save one with torch.save(model.state_dict(), path)"
        )
    try:
        result = model.load_state_dict(dict(state), strict=False)
    except RuntimeError as exc:  # shape mismatches
        lines = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
        detail = "; ".join(lines[:2]) + (f"; and {len(lines) - 2} more" if len(lines) > 2 else "")
        raise ModelSpecError(f"--weights '{p}' does not fit {type(model).__name__}: {detail}") from None
    problems = []
    if result.missing_keys:
        problems.append(f"{len(result.missing_keys)} missing (e.g. {', '.join(result.missing_keys[:3])})")
    if result.unexpected_keys:
        problems.append(f"{len(result.unexpected_keys)} unexpected (e.g. {', '.join(result.unexpected_keys[:3])})")
    if problems:
        raise ModelSpecError(
            f"--weights '{p}' does not fit {type(model).__name__}: keys {'; '.join(problems)}"
        )


def parse_device(text: str) -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` -> a device that exists on this machine."""
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise ModelSpecError(f"--device {text!r}: not a device name (expected e.g. cpu, cuda, cuda:1, mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelSpecError(f"--device {text!r}: CUDA is not available on this machine (use --device cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ModelSpecError(
                f"--device {text!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    elif device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ModelSpecError(f"--device {text!r}: MPS is not available on this machine (use --device cpu)")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ModelSpecError(f"--device {text!r}: unsupported device type (expected cpu, cuda or mps)")
    return device
