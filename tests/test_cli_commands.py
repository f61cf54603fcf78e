"""The `layers`, `invert` and `sweep` commands: help, outputs, weights, and one-line errors for user mistakes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from torch import nn

import reprinvert as ri
from reprinvert._modelspec import ModelSpecError, load_model
from reprinvert.cli import main

MODEL_SOURCE = textwrap.dedent(
    """
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(0)
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.act = nn.ReLU()
            self.down = nn.Conv2d(4, 4, 3, stride=2, padding=1)
            with torch.no_grad():
                for p in self.parameters():
                    p.copy_(torch.randn(p.shape, generator=g) * 0.3)

        def forward(self, x):
            return self.down(self.act(self.conv(x)))

    def build():
        return Net()

    def broken():
        raise RuntimeError("factory exploded")

    def not_a_model():
        return 42
    """
)


def _one_error_line(err: str) -> str:
    assert err.startswith("reprinvert: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


@pytest.fixture
def spec(tmp_path: Path) -> str:
    path = tmp_path / "net_model.py"
    path.write_text(MODEL_SOURCE)
    return f"{path}:build"


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "imgs"
    for name in ("rocket", "coffee"):
        ri.data.save_image(ri.data.sample_image(name, size=8), folder / f"{name}.png")
    return folder


@pytest.mark.parametrize("command", ["layers", "invert", "sweep"])
def test_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    top = capsys.readouterr().out
    assert all(name in top for name in ("demo", "layers", "invert", "sweep"))
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: reprinvert {command}") and "MODEL_SPEC" in out and "--weights" in out
    if command != "layers":
        for option in ("--out", "--steps", "--recipe", "--seed", "--device", "--quiet", "--size", "IMAGES"):
            assert option in out, option
        assert "badger, default, mahendran-vedaldi" in out
    else:
        assert "--input-shape" in out and "--tokens" in out


def test_layers_table(spec: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["layers", spec, "--input-shape", "2,3,8,8"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Net on input [2, 3, 8, 8]")
    assert "conv" in out and "Tensor[2, 4, 4, 4]" in out and "down" in out


def test_layers_module_spec_from_current_folder(tmp_path: Path, monkeypatch, capsys) -> None:
    name = f"cwd_model_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(MODEL_SOURCE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    assert main(["layers", f"{name}:Net", "--input-shape", "1,3,4,4"]) == 0
    assert "Net on input [1, 3, 4, 4]" in capsys.readouterr().out
    assert str(tmp_path) not in sys.path  # the current folder was only added for the import
    sys.modules.pop(name, None)


def test_sweep_writes_report(spec: str, image_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    argv = ["sweep", spec, str(image_dir), "--steps", "2", "--seed", "3", "--out", str(out), "--recipe", "badger"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "m_g" in printed and str(out.resolve()) in printed
    for name in ("grid.png", "metrics.csv", "samples.csv", "metrics.json", "report.html"):
        assert (out / name).is_file(), name
    data = json.loads((out / "metrics.json").read_text())
    assert [r["layer"] for r in data["layers"]] == ["conv", "act", "down"]
    prov = data["provenance"]
    assert (prov["seed"], prov["steps"], prov["recipe"]["name"]) == (3, 2, "badger-cnn")
    assert prov["input_shape"] == [2, 3, 8, 8]
    assert prov["options"]["clamp"] == [0.0, 1.0]
    with Image.open(out / "grid.png") as grid:
        assert grid.size[0] > 4 * 8
    saved = ri.load(out / "result")  # the whole result, next to the report
    assert isinstance(saved, ri.Sweep) and saved.layers == ("conv", "act", "down")
    assert [r.as_dict() for r in saved.rows] == data["layers"]
    assert "reprinvert.load(" in printed
    assert main([*argv, "--one-by-one", "--quiet", "--recipe", "default"]) == 2  # another study in the same --out
    assert "holds results of another study (different --one-by-one, --recipe)" in capsys.readouterr().err
    assert main([*argv, "--one-by-one", "--quiet", "--recipe", "default", "--fresh"]) == 0
    assert json.loads((out / "metrics.json").read_text())["provenance"]["options"]["batched"] is False
    assert main([*argv, "--quiet", "--recipe", "default", "--fresh", "--spectrum", "3"]) == 0
    data = json.loads((out / "metrics.json").read_text())
    assert data["provenance"]["options"]["spectrum"] == 3
    probe = data["provenance"]["options"]["batched_probe"]  # the automatic mode measured before choosing
    assert probe is not None and len(probe["alone_ms"]) == 3
    assert all(row["blind"] is not None for row in data["layers"])  # (an infinite condition number is null in JSON)


def test_sweep_layer_options_and_quiet(spec: str, image_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "q"
    argv = ["sweep", spec, str(image_dir / "rocket.png"), "--layers", "down, conv", "--steps", "1", "--quiet",
            "--out", str(out), "--no-clamp"]
    assert main(argv) == 0
    assert capsys.readouterr() == ("", "")
    data = json.loads((out / "metrics.json").read_text())
    assert [r["layer"] for r in data["layers"]] == ["down", "conv"] and data["provenance"]["options"]["clamp"] is None
    assert main(["sweep", spec, str(image_dir), "--layers", "all", "--every", "2", "--steps", "1", "--quiet",
                 "--out", str(out), "--size", "4", "--fresh"]) == 0
    data = json.loads((out / "metrics.json").read_text())
    assert [r["layer"] for r in data["layers"]] == ["act"] and data["provenance"]["input_shape"] == [2, 3, 4, 4]


def test_invert_one_layer(spec: str, image_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "inv"
    assert main(["invert", spec, str(image_dir), "--layer", "act", "--steps", "2", "--out", str(out), "--quiet"]) == 0
    data = json.loads((out / "metrics.json").read_text())
    assert [r["layer"] for r in data["layers"]] == ["act"] and len(data["per_sample"]) == 2


def test_threads_option_sets_torch_threads_for_the_run_only(
    spec: str, image_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    sweep_module = importlib.import_module("reprinvert.study")  # a study's chunks are swept with ri.sweep
    seen: list[int] = []
    real = sweep_module.sweep

    def recording(*args: Any, **kwargs: Any) -> Any:
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(sweep_module, "sweep", recording)
    before = torch.get_num_threads()
    assert main(["sweep", spec, str(image_dir), "--steps", "1", "--layers", "conv", "--threads", "1", "--quiet",
                 "--out", str(tmp_path / "o")]) == 0
    assert seen == [1] and torch.get_num_threads() == before
    assert main(["sweep", spec, str(image_dir), "--threads", "0", "--out", str(tmp_path / "o")]) == 2


def test_weights_state_dict(spec: str, tmp_path: Path) -> None:
    model = load_model(spec)
    trained = {k: torch.full_like(v, 0.5) for k, v in model.state_dict().items()}
    path = tmp_path / "w.pt"
    torch.save(trained, path)
    loaded = load_model(spec, weights=path)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in trained.items())
    assert not loaded.training
    torch.save({"state_dict": trained, "epoch": 3}, tmp_path / "ckpt.pt")
    assert torch.equal(load_model(spec, weights=tmp_path / "ckpt.pt").conv.weight, trained["conv.weight"])


def test_safetensors(spec: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"not really")
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    with pytest.raises(ModelSpecError, match=r"needs the safetensors package \(pip install safetensors\)"):
        load_model(spec, weights=path)
    monkeypatch.undo()
    st = pytest.importorskip("safetensors.torch")
    model = load_model(spec)
    st.save_file({k: torch.ones_like(v) for k, v in model.state_dict().items()}, str(path))
    assert torch.equal(load_model(spec, weights=path).down.bias, torch.ones(4))


def _bad_weights(tmp_path: Path) -> dict[str, Path]:
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "shapes.pt")
    torch.save({"conv.weight": torch.zeros(4, 3, 3, 3)}, tmp_path / "partial.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    (tmp_path / "garbage.pt").write_bytes(b"\x00garbage")
    return {n: tmp_path / f"{n}.pt" for n in ("shapes", "partial", "list", "garbage")}


def test_user_mistakes_one_line(spec: str, image_dir: Path, tmp_path: Path, capsys) -> None:
    path = spec.rsplit(":", 1)[0]
    img = str(image_dir / "rocket.png")
    bad_image = tmp_path / "bad.png"
    bad_image.write_text("not an image")
    empty = tmp_path / "empty"
    empty.mkdir()
    weights = _bad_weights(tmp_path)
    out = ["--out", str(tmp_path / "o"), "--steps", "1", "--quiet"]
    cases = [
        (["sweep", spec, str(tmp_path / "missing.png"), *out], "no image file at"),
        (["sweep", spec, str(empty), *out], "no image files in folder"),
        (["sweep", spec, str(bad_image), *out], f"cannot read image '{bad_image}'"),
        (["sweep", "no_colon_here", img, *out], "MODEL_SPEC 'no_colon_here': expected module:factory"),
        (["sweep", "no_such_pkg_xyz.models:build", img, *out], "cannot import module 'no_such_pkg_xyz.models'"),
        (["sweep", f"{path}:nothing", img, *out], "has no attribute 'nothing'; callables in it: Net, broken, build"),
        (["sweep", f"{path}:broken", img, *out], "calling broken() raised RuntimeError: factory exploded"),
        (["sweep", f"{path}:not_a_model", img, *out], "not_a_model() returned a int, not a torch.nn.Module"),
        (["sweep", str(tmp_path / "nope.py") + ":build", img, *out], "no Python file at"),
        (["invert", spec, img, "--layer", "dwn", *out], "layer 'dwn' is not a layer of Net; closest: down"),
        (["sweep", spec, img, "--layers", "conv,zzz", *out], "layer 'zzz' is not a layer of Net"),
        (["sweep", spec, img, "--every", "9", *out], "every=9 is larger than the number of layers"),
        (["sweep", spec, img, "--weights", str(tmp_path / "w.pt"), *out], "--weights: no file at"),
        (["sweep", spec, img, "--weights", str(weights["partial"]), *out], "does not fit Net: keys 3 missing"),
        (["sweep", spec, img, "--weights", str(weights["shapes"]), *out], "does not fit Net: size mismatch for conv"),
        (["sweep", spec, img, "--weights", str(weights["list"]), *out], "does not hold a state dict"),
        (["sweep", spec, img, "--weights", str(weights["garbage"]), *out], "cannot read a state dict"),
        (["sweep", spec, img, "--grey", *out], "the model failed on the images"),
        (["sweep", spec, img, "--device", "tpu9", *out], "--device 'tpu9'"),
        (["sweep", spec, img, "--recipe", "fancy", *out], "unknown recipe 'fancy'; available: badger"),
        (["invert", spec, img, *out], "the following arguments are required: --layer"),
        (["sweep", spec, *out], "give image files or folders (IMAGES), or --tokens with --start"),
        (["layers", spec, "--input-shape", "1,x"], "expected positive integers separated by commas"),
        (["layers", spec, "--input-shape", "1,5,8,8"], "the model failed on an input of shape [1, 5, 8, 8]"),
    ]
    if not torch.cuda.is_available():
        cases.append((["sweep", spec, img, "--device", "cuda", *out], "CUDA is not available on this machine"))
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = _one_error_line(capsys.readouterr().err)
        assert message in err, (argv, err)


def test_no_traceback_in_a_real_process(spec: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "reprinvert", "sweep", spec, str(tmp_path / "nothing.png")],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert "no image file at" in _one_error_line(done.stderr)


def test_model_instance_spec(tmp_path: Path) -> None:
    (tmp_path / "inst.py").write_text("from torch import nn\nmodel = nn.Linear(2, 2).train()\n")
    model = load_model(f"{tmp_path / 'inst.py'}:model")
    assert isinstance(model, nn.Linear) and not model.training


@pytest.mark.parametrize("error", ["ValueError('odd width')", "KeyError('width')", "AssertionError('width')"])
def test_any_error_the_model_raises_keeps_the_prefix(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     error: str) -> None:
    """Whatever type of exception a model raises, the CLI prints one line that says the model failed and on what
    (not the bare message, and not a traceback)."""
    path = tmp_path / "picky.py"
    path.write_text(
        "import torch.nn as nn\n"
        "class Picky(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.conv = nn.Conv2d(3, 4, 3)\n"
        "    def forward(self, x):\n"
        "        if x.shape[-1] != 7:\n"
        f"            raise {error}\n"
        "        return self.conv(x)\n"
        "def build():\n"
        "    return Picky()\n"
    )
    spec = f"{path}:build"
    img = tmp_path / "a.png"
    Image.new("RGB", (8, 8), (120, 30, 200)).save(img)
    for argv, what in (
        (["layers", spec, "--input-shape", "1,3,8,8"], "the model failed on an input of shape [1, 3, 8, 8]"),
        (["sweep", spec, str(img), "--size", "8", "--out", str(tmp_path / "o"), "--quiet"],
         "the model failed on the images"),
    ):
        assert main(argv) == 2, argv
        err = _one_error_line(capsys.readouterr().err)
        assert what in err and error.split("(")[0] in err and "width" in err, err


def test_ctrl_c_inside_a_chunk_keeps_its_finished_layers(
    spec: str, image_dir: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One layer at a time (--one-by-one): Ctrl-C during the second layer keeps the first; the same command then
    inverts only the second, and the result equals an uninterrupted run's."""
    import importlib

    sweep_module = importlib.import_module("reprinvert._sweep")  # where a sweep inverts each layer
    argv = ["sweep", spec, str(image_dir), "--steps", "3", "--seed", "1", "--layers", "conv,down", "--one-by-one",
            "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "whole")]) == 0
    real = sweep_module.run_inversion
    calls: list[str] = []
    interrupt = [True]

    def invert(feed: Any, layer: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(layer)
        if layer == "down" and interrupt:
            interrupt.clear()
            raise KeyboardInterrupt
        return real(feed, layer, *args, **kwargs)

    monkeypatch.setattr(sweep_module, "run_inversion", invert)
    out = tmp_path / "study"
    assert main([*argv, "--out", str(out)]) == 130
    assert "1 finished layer(s) of an unfinished chunk are kept" in capsys.readouterr().err
    calls.clear()
    assert main([*argv[:-1], "--out", str(out)]) == 0  # (not quiet: it says what it loaded)
    assert calls == ["down"]
    assert "1 layer(s) already finished (an earlier run, another process), loaded" in capsys.readouterr().err
    whole, resumed = ri.load(tmp_path / "whole" / "result"), ri.load(out / "result")
    assert isinstance(whole, ri.Sweep) and isinstance(resumed, ri.Sweep)
    assert all(torch.equal(a.input, b.input) for a, b in zip(whole.inversions, resumed.inversions))
    # the per-layer files are the chunk's result: the finished chunk's folder is its saved sweep
    assert sorted(p.name for p in (out / "result" / "part-0000" / "layers").iterdir()) == ["conv.npz", "down.npz"]


def test_a_study_in_chunks_resumes_and_survives_ctrl_c(
    spec: str, image_dir: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--batch-size saves each finished chunk; Ctrl-C keeps the finished ones and reports them; the same command
    then does only what is left, and the joined result equals the one-chunk-at-a-time numbers."""
    import importlib

    sweep_module = importlib.import_module("reprinvert.study")  # a study's chunks are swept with ri.sweep

    out = tmp_path / "study"
    # --one-by-one: the automatic choice of batching depends on measured timing, so only a fixed mode is bit for bit
    argv = ["sweep", spec, str(image_dir), "--steps", "3", "--seed", "1", "--out", str(out), "--batch-size", "1",
            "--layers", "conv,down", "--one-by-one"]
    real = sweep_module.sweep
    calls: list[int] = []

    def interrupted_second(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(sweep_module, "sweep", interrupted_second)
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "interrupted after 1 of 2 chunks; the report covers those; rerun the same command to continue" in err
    first = ri.load(out / "result")
    assert isinstance(first, ri.Sweep) and first.original.shape[0] == 1 and (out / "report.html").is_file()

    counted: list[int] = []

    def counting(*args: object, **kwargs: object) -> object:
        counted.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(sweep_module, "sweep", counting)
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "chunk 1/2 (" in err and "done in an earlier run, skipped" in err and len(counted) == 1
    whole = ri.load(out / "result")
    assert isinstance(whole, ri.Sweep) and whole.original.shape[0] == 2 and whole.layers == ("conv", "down")
    assert whole.provenance.inputs == tuple(p.name for p in sorted(image_dir.iterdir()))
    # each chunk is exactly a sweep of its image alone
    alone = real(load_model(spec), whole.original[1:], layers=["conv", "down"], steps=3, seed=1, clamp=(0.0, 1.0),
                 progress=False, batched=False)
    assert torch.equal(whole.inversions[0].input[1:], alone.inversions[0].input)
    data = json.loads((out / "metrics.json").read_text())
    assert len(data["per_sample"]) == 4


def _torchrun_against_one_process(common: list[str], tmp_path: Path, port: int) -> tuple[Any, Any, str]:
    """``reprinvert sweep COMMON`` in this process (into tmp_path/one) and under ``torchrun --nproc_per_node 2``
    (gloo on CPU, into tmp_path/two); both loaded results, which must agree bit for bit, and torchrun's stderr."""
    import os
    import subprocess
    import sys

    assert main(["sweep", *common, "--quiet", "--out", str(tmp_path / "one")]) == 0
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
         "-m", "reprinvert", "sweep", *common, "--out", str(tmp_path / "two")],
        capture_output=True, text=True, timeout=300, check=False, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = ri.load(tmp_path / "one" / "result"), ri.load(tmp_path / "two" / "result")
    assert isinstance(one, ri.Sweep) and isinstance(two, ri.Sweep)
    for a, b in zip(one.inversions, two.inversions, strict=True):
        assert torch.equal(a.input, b.input) and torch.equal(a.metrics.input_distance, b.metrics.input_distance)
    assert (tmp_path / "two" / "report.html").is_file()
    return one, two, done.stderr


def test_torchrun_shares_a_study_out_and_gets_the_single_process_result(
    spec: str, image_dir: Path, tmp_path: Path
) -> None:
    """`torchrun --nproc_per_node 2 -m reprinvert sweep ...` (gloo on CPU) shards the chunks across the two ranks;
    rank 0 joins them into the same results and report as one process gives."""
    # a fixed mode (--one-by-one): the automatic one depends on measured timing
    common = [spec, str(image_dir), "--steps", "3", "--seed", "2", "--batch-size", "1", "--layers", "conv,down",
              "--one-by-one", "--quiet"]
    one, two, _ = _torchrun_against_one_process(common, tmp_path, 29517)
    assert one.provenance.inputs == two.provenance.inputs
    assert [r.as_dict()["input_distance"] for r in one.rows] == [r.as_dict()["input_distance"] for r in two.rows]
    assert sorted(p.name for p in (tmp_path / "two" / "result").glob("part-*")) == ["part-0000", "part-0001"]


def test_torchrun_with_fewer_chunks_than_processes_shares_out_the_layers(
    spec: str, image_dir: Path, tmp_path: Path
) -> None:
    """One chunk of images, two processes: each rank inverts one of the two layers (one at a time, into the
    chunk's layer folder) and rank 0 assembles the single-process result from them."""
    common = [spec, str(image_dir), "--steps", "3", "--seed", "2", "--layers", "conv,down", "--one-by-one"]
    _, two, stderr = _torchrun_against_one_process(common, tmp_path, 29518)
    assert two.layers == ("conv", "down")
    assert two.provenance.options["resumed"] == ["conv", "down"]  # rank 0 inverted nothing itself when assembling
    assert "2 layer(s) already finished (an earlier run, another process), loaded" in stderr


def test_sweep_runs_a_recipe_file_and_the_result_records_its_fields(
    spec: str, image_dir: Path, tmp_path: Path, capsys
) -> None:
    """--recipe FILE.json reaches fields no named recipe sets; the saved provenance records the recipe that ran;
    a bad file is a CLI error that names the option, the file and the field."""
    recipe = tmp_path / "my.json"
    recipe.write_text(json.dumps({"steps": 7, "weight_decay": 0.25, "lr": 0.02}))
    out = tmp_path / "out"
    assert main(["sweep", spec, str(image_dir), "--recipe", str(recipe), "--layers", "act", "--out", str(out),
                 "--quiet"]) == 0
    prov = json.loads((out / "metrics.json").read_text())["provenance"]
    assert (prov["steps"], prov["recipe"]["weight_decay"], prov["recipe"]["lr"]) == (7, 0.25, 0.02)
    saved = ri.load(out / "result")
    assert (saved.inversions[0].recipe.steps, saved.inversions[0].recipe.weight_decay) == (7, 0.25)
    assert len(saved.inversions[0].history["total"]) == 7
    recipe.write_text(json.dumps({"stepz": 7}))
    assert main(["sweep", spec, str(image_dir), "--recipe", str(recipe), "--out", str(tmp_path / "bad"),
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--recipe" in err and "my.json" in err and "stepz" in err
