"""The command line on models nobody on the project wrote: normalisation, factory arguments, token models,
Hugging Face configs, and the provenance the outputs keep."""

from __future__ import annotations

import hashlib
import json
import textwrap
from pathlib import Path

import pytest
import torch

import reprinvert as ri
from reprinvert._modelspec import ModelSpecError, load_model, parse_model_args
from reprinvert.cli import main

FACTORY = textwrap.dedent(
    """
    import torch
    from torch import nn

    def build(width=4, scale=1.0, name="net"):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 2, 3, padding=1))
        with torch.no_grad():
            net[0].weight.mul_(scale)
        return net

    class Tokens(nn.Module):
        def __init__(self, vocab=20, dim=8):
            super().__init__()
            torch.manual_seed(0)
            self.embed = nn.Embedding(vocab, dim)
            self.proj = nn.Linear(dim, dim)
            self.act = nn.Tanh()

        def forward(self, ids):
            return self.act(self.proj(self.embed(ids)))
    """
)


@pytest.fixture
def factory(tmp_path: Path) -> Path:
    path = tmp_path / "factory_model.py"
    path.write_text(FACTORY)
    return path


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "cat.png"
    ri.data.save_image(ri.data.sample_image("chelsea", size=16)[0], path)
    return path


def test_model_args_are_python_literals() -> None:
    assert parse_model_args(["width=8", "scale=0.5", "pretrained=true", "name=resnet", "shape=(1, 2)", "x=None"]) == {
        "width": 8, "scale": 0.5, "pretrained": True, "name": "resnet", "shape": (1, 2), "x": None,
    }
    with pytest.raises(ModelSpecError, match=r"--model-arg 'oops': expected NAME=VALUE"):
        parse_model_args(["oops"])


def test_factory_arguments_reach_the_factory(factory: Path) -> None:
    model = load_model(f"{factory}:build", args={"width": 6})
    assert model[0].out_channels == 6
    with pytest.raises(ModelSpecError, match=r"calling build\(depth=3\) raised TypeError.*check the --model-arg"):
        load_model(f"{factory}:build", args={"depth": 3})


def test_sweep_with_normalize_model_args_and_provenance(
    factory: Path, photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = tmp_path / "w.pt"
    torch.save(load_model(f"{factory}:build", args={"width": 6}).state_dict(), weights)
    out = tmp_path / "out"
    argv = ["sweep", f"{factory}:build", str(photo), "--model-arg", "width=6", "--weights", str(weights),
            "--normalize", "imagenet", "--steps", "3", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "layers (auto): 0, 1, 2" in printed
    data = json.loads((out / "metrics.json").read_text())
    prov = data["provenance"]
    assert prov["inputs"] == ["cat.png"]
    assert prov["options"]["normalize"]["name"] == "imagenet"
    assert prov["model_source"]["model_args"] == {"width": 6}
    assert prov["model_source"]["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert "chance_input_distance" in data["layers"][0] and "beats_chance" in data["layers"][0]


@pytest.mark.parametrize(
    ("value", "ok"),
    [("imagenet", True), ("inception", True), ("0.5,0.5,0.5/0.25,0.25,0.25", True), ("0.5/0.2", True),
     ("imagenette", False), ("0.5,0.5", False), ("a,b,c/1,1,1", False)],
)
def test_normalize_values(factory: Path, photo: Path, tmp_path: Path, value: str, ok: bool,
                          capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["invert", f"{factory}:build", str(photo), "--layer", "0", "--normalize", value, "--steps", "1",
            "--quiet", "--out", str(tmp_path / "o")]
    assert main(argv) == (0 if ok else 2)
    if not ok:
        err = capsys.readouterr().err
        assert err.startswith("reprinvert: error: argument --normalize: expected imagenet, inception or") and \
            err.count("\n") == 1


def test_token_model_from_the_command_line(factory: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_text("1 2 3 4\n5,6,7,8\n")
    out = tmp_path / "tok"
    argv = ["sweep", f"{factory}:Tokens", "--tokens", str(ids), "--start", "embed", "--steps", "5", "--out", str(out),
            "--quiet"]
    assert main(argv) == 0
    data = json.loads((out / "metrics.json").read_text())
    assert [r["layer"] for r in data["layers"]] == ["proj", "act"]
    assert data["provenance"]["options"]["start"] == "embed"
    assert data["provenance"]["inputs"] == ["tokens[0]", "tokens[1]"]
    assert main(["invert", f"{factory}:Tokens", "--tokens", "3,4,5", "--start", "embed", "--layer", "act",
                 "--steps", "2", "--out", str(out), "--quiet", "--fresh"]) == 0
    for argv, message in [
        (["sweep", f"{factory}:Tokens", "--tokens", "1,2", "--out", str(out)], "--tokens needs --start LAYER"),
        (["sweep", f"{factory}:Tokens", "--tokens", "1,x", "--start", "embed", "--out", str(out)],
         "is not a list of non-negative integer ids"),
        (["sweep", f"{factory}:Tokens", "--start", "embed", "--out", str(out)], "give image files or folders"),
        (["sweep", f"{factory}:Tokens", "--tokens", "1,2", "--start", "embedd", "--out", str(out)],
         "layer 'embedd' is not a layer of Tokens; closest: embed"),
    ]:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_hugging_face_model_from_a_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=30, n_positions=8,
                                     bos_token_id=0, eos_token_id=0)
    config.save_pretrained(tmp_path / "gpt2-tiny")
    spec = f"hf:{tmp_path / 'gpt2-tiny' / 'config.json'}"
    assert main(["layers", spec, "--input-shape", "1,4", "--tokens"]) == 0
    table = capsys.readouterr().out
    assert "h.0" in table and "wte" in table
    out = tmp_path / "hf"
    assert main(["sweep", f"hf:{tmp_path / 'gpt2-tiny'}", "--tokens", "1,2,3,4", "--start", "wte", "--steps", "3",
                 "--out", str(out), "--quiet"]) == 0
    layers = [r["layer"] for r in json.loads((out / "metrics.json").read_text())["layers"]]
    assert layers == ["drop", "h.0", "h.1", "ln_f"]
    assert main(["layers", "hf:/no/such/config.json"]) == 2
    assert "no config file or model folder at" in capsys.readouterr().err
