"""Each experiment at a tiny size: what the mathematics guarantees is asserted; the rest is only reported."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from reprinvert import experiments as E
from reprinvert import invert
from reprinvert.cli import main
from reprinvert.models import FCNet

from untouched import State


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_copy_identity_copies_exactly(tmp_path: Path) -> None:
    r = E.copy(size="tiny", out=tmp_path, progress=False)
    ident = r.models["identity"]
    assert ident.copy_tendency == pytest.approx(1.0, abs=1e-12)
    assert ident.jacobian_trace == pytest.approx(1.0, abs=1e-6)
    assert ident.output_to_input == 0.0
    assert ident.denoising_gain == pytest.approx(1.0, abs=1e-12)
    assert ident.output_to_clean == pytest.approx(ident.corrupted_to_clean, rel=1e-6)
    assert set(r.models) == {"identity", "mlp", "unet_skip"}
    for stats in r.models.values():
        assert all(math.isfinite(v) for v in (stats.copy_tendency, stats.jacobian_trace, stats.denoising_gain))
    assert all(Path(f).is_file() for f in r.figures)
    assert _json(tmp_path / "copy" / "result.json")["result"]["models"]["identity"]["copy_tendency"] == 1.0
    with pytest.raises(ValueError, match="size='huge'"):
        E.copy(size="huge", progress=False)


def test_corruption_distance_is_a_perfect_copiers_loss(tmp_path: Path) -> None:
    r = E.corruption_distance_check(size="tiny", out=tmp_path, progress=False)
    assert r.max_abs_difference <= 1e-12
    assert r.copier_loss == pytest.approx(r.corruption_distance, rel=1e-13)
    assert all(g == pytest.approx(1.0, abs=1e-12) for g in r.copier_gain)
    assert (tmp_path / "corruption-distance" / "grid.png").is_file()


def test_denoise_and_unet_representation_tiny(tmp_path: Path) -> None:
    cfg = E.DENOISE_SIZES["tiny"]
    from reprinvert.experiments._common import Reporter
    from reprinvert.experiments._denoise import _train_unets

    trained = _train_unets(cfg, 0, False, Reporter("t", False))
    kept = State.of(trained["none"][0])
    d = E.denoise(size="tiny", out=tmp_path, progress=False, trained=trained)
    u = E.unet_representation(size="tiny", out=tmp_path, progress=False, trained=trained)
    kept.check(trained["none"][0])  # evaluation and inversion leave the trained model as it was
    # alpha = 1 is the clean input: no corruption, so the corruption distance and the gain are 0
    assert d.levels[0] == "alpha=1" and d.corruption_distance[0] == 0.0 and d.gain_no_skip[0] == 0.0
    assert len(d.gain_skip) == len(d.levels) == len(cfg.alphas) + 1
    # the noise mix's corruption distance grows as alpha falls
    assert list(d.corruption_distance[:4]) == sorted(d.corruption_distance[:4])
    # with x~ = x (alpha = 1) every mode's error is its clean copy error, exactly
    assert set(d.errors) == set(d.gains) == set(d.copy_error) == set(E.DENOISE_MODES)
    for mode in E.DENOISE_MODES:
        assert d.errors[mode][0] == d.copy_error[mode]
    # the oracles: the brightness/contrast-corrected blur can always choose the corrupted input itself (s = 0,
    # a = 1, b = 0), so it is never worse than it, and it reproduces a clean input exactly
    assert d.oracle_blur[0] == pytest.approx(0.0, abs=1e-20)
    assert all(o <= c * (1 + 1e-12) for o, c in zip(d.oracle_blur, d.corruption_distance))
    from reprinvert.experiments._common import eval_images

    x = eval_images(size=cfg.image, count=cfg.test_count, seed=0).double()
    by_hand = float(((x - x.mean(dim=(2, 3), keepdim=True)) ** 2).sum(dim=(1, 2, 3)).mean())
    assert d.oracle_mean == pytest.approx(by_hand, rel=1e-12)
    assert set(u.input_distance) == {"trained", "untrained", "untrained, calibrated"}
    assert all(math.isfinite(v) for v in u.embedding_distance.values())
    for name in ("denoise", "unet-representation"):
        assert (tmp_path / name / "grid.png").is_file() and (tmp_path / name / "result.json").is_file()


def test_unet_representation_grid_and_metrics_describe_the_same_tensor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a recipe that does not clamp (the seed's badger), the inversion is still kept in [0, 1], so the grid
    shows exactly the tensor whose m_i is reported (issue 14, item 5)."""
    import dataclasses
    import importlib

    auto = importlib.import_module("reprinvert.experiments._unet_representation")
    from reprinvert.experiments._common import Reporter
    from reprinvert.experiments._denoise import _train_unets

    cfg = dataclasses.replace(E.DENOISE_SIZES["tiny"], recipe="badger")
    trained = _train_unets(cfg, 0, False, Reporter("t", False))
    # the seed's recipe from a N(0, 1) start: unclamped, its iterates would lie far outside [0, 1]
    recipes_module = importlib.import_module("reprinvert.recipes")
    real_badger = recipes_module.badger
    monkeypatch.setattr(recipes_module, "badger", lambda preset: real_badger(preset, init="normal"))
    shown: list[list[torch.Tensor]] = []
    real = auto.save_grid
    monkeypatch.setattr(auto, "save_grid", lambda columns, *a, **k: (shown.append(columns), real(columns, *a, **k))[1])
    u = E.unet_representation(size=cfg, out=tmp_path, progress=False, trained=trained)
    x, *inversions = shown[0]
    for name, x_g in zip(("trained", "untrained"), inversions):
        assert float(x_g.min()) >= 0.0 and float(x_g.max()) <= 1.0
        assert u.input_distance[name] == pytest.approx(float((x_g - x).double().flatten(1).norm(dim=1).mean()))


def test_depth_tiny(tmp_path: Path) -> None:
    r = E.depth(size="tiny", out=tmp_path, progress=False)
    assert r.layers == ("stages.0", "stages.1")
    assert all(len(v) == 2 for v in r.input_distance.values())
    assert 0.0 <= r.accuracy <= 1.0
    assert (tmp_path / "depth" / "grid.png").is_file()


def test_width_tiny_orthogonal_net_amplifies_nothing(tmp_path: Path) -> None:
    r = E.width(size="tiny", out=tmp_path, progress=False)
    assert r.orthogonal_amplification == pytest.approx(1.0, abs=1e-9)
    assert r.linear_condition >= 1.0
    assert len(r.nets) == 7 and all(len(n.steps) == len(n.input_distance) for n in r.nets)
    assert (tmp_path / "width" / "grid.png").is_file()
    # The spectrum beside each net, known answers: a linear layer from 48 inputs through width 24 cannot see exactly
    # 48 - 24 directions, a ReLU one at least as many; a wider linear net sees every direction.
    by = {(n.activation, n.width): n for n in r.nets}
    assert by["linear", 24].blind == 24 and by["relu", 24].blind >= 24
    assert by["linear", 24].condition == by["relu", 24].condition == float("inf")
    assert by["linear", 60].blind == 0 and 1 <= by["linear", 60].condition < float("inf")


def test_orthogonal_linear_net_inverts() -> None:
    """W^T W = I: the representation W x determines x, and gradient descent recovers it."""
    net = FCNet(in_features=48, widths=(64, 64), activation="linear", init="orthogonal", seed=1)
    x = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    kept = State.of(net)
    res = invert(net, "layers.1", x, steps=300, seed=0)
    kept.check(net)
    assert float(res.metrics.input_distance[0]) < 1e-2 * float(x.norm())


def test_cli_experiment(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["experiment", "corruption-distance", "--out", str(tmp_path), "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    assert _json(tmp_path / "corruption-distance" / "result.json")["result"]["max_abs_difference"] <= 1e-12
    assert main(["experiment", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown; available: copy" in capsys.readouterr().err
    assert main(["experiment", "copy", "--quick", "--full"]) == 2
    assert main(["experiment", "copy", "--size", "medium", "--full"]) == 2
    assert main(["experiment", "copy", "--size", "huge"]) == 2
    assert main(["experiment", "copy", "--cache", str(tmp_path), "--no-cache"]) == 2
    assert "invalid choice: 'huge'" in capsys.readouterr().err
    assert main(["experiment", "corruption-distance", "--size", "medium", "--no-cache", "--out", str(tmp_path / "m"),
                 "--quiet"]) == 0
    assert _json(tmp_path / "m" / "corruption-distance" / "result.json")["result"]["size"] == "medium"
    with pytest.raises(ValueError, match="'nope' is unknown"):
        E.run("nope")


def _numbers(result: object) -> dict:
    """A result's fields as JSON values, without its wall time and file paths."""
    from reprinvert.experiments._common import jsonable

    d = jsonable(result)
    d.pop("seconds")
    d.pop("figures")
    return d


def test_explicit_cpu_device_is_the_default(tmp_path: Path) -> None:
    default = E.corruption_distance_check(size="tiny", progress=False)
    explicit = E.corruption_distance_check(size="tiny", out=tmp_path, progress=False, device="cpu")
    assert _numbers(explicit) == _numbers(default)
    assert _json(tmp_path / "corruption-distance" / "result.json")["device"] == "cpu"
    # a trained model: weights, training batches, noise and the Jacobian probes all come out the same
    copy_default = E.copy(size="tiny", progress=False)
    copy_cpu = E.run("copy", size="tiny", out=tmp_path, progress=False, device=torch.device("cpu"))
    assert _numbers(copy_cpu) == _numbers(copy_default)
    j = _json(tmp_path / "copy" / "result.json")
    assert j["device"] == "cpu" and j["seed"] == 0 and "gpu" not in j["machine"]


def test_bad_device_fails_before_any_work(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"device='tpu9': not a device name \(expected e.g. cpu, cuda"):
        E.copy(size="tiny", out=out, progress=False, device="tpu9")
    with pytest.raises(ValueError, match="device='tpu9': not a device name"):
        E.run("width", size="tiny", out=out, progress=False, device="tpu9")
    with pytest.raises(ValueError, match="device='tpu9'"):
        E.run_all(size="tiny", out=out, progress=False, device="tpu9")
    with pytest.raises(TypeError, match=r"device must be a str, a torch\.device or None"):
        E.depth(size="tiny", out=out, progress=False, device=0)  # type: ignore[arg-type]
    if not torch.cuda.is_available():
        for call in (
            lambda: E.denoise(size="tiny", out=out, progress=False, device="cuda"),
            lambda: E.run("corruption-distance", size="tiny", out=out, progress=False, device="cuda"),
            lambda: E.run_all(size="tiny", out=out, progress=False, device="cuda:0"),
        ):
            with pytest.raises(ValueError, match=r"CUDA is not available on this machine \(use device='cpu'\)"):
                call()
    assert not out.exists()  # nothing was written: the device is checked first


def test_cli_experiment_device(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["experiment", "--help"]) == 0
    help_text = capsys.readouterr().out
    assert "--device DEV" in help_text and "(default: cpu)" in help_text
    out = tmp_path / "out"
    cases = [(["experiment", "copy", "--device", "tpu9", "--out", str(out)], "--device 'tpu9': not a device name")]
    if not torch.cuda.is_available():
        cases.append((["experiment", "all", "--device", "cuda", "--out", str(out)],
                      "--device 'cuda': CUDA is not available on this machine (use --device cpu)"))
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("reprinvert: error: ") and err.count("\n") == 1 and message in err, err
    assert not out.exists()
    assert main(["experiment", "corruption-distance", "--device", "cpu", "--out", str(out), "--quiet"]) == 0
    assert _json(out / "corruption-distance" / "result.json")["device"] == "cpu"


@pytest.mark.slow
def test_run_all_tiny(tmp_path: Path) -> None:
    results = E.run_all(size="tiny", out=tmp_path, progress=False)
    assert set(E.EXPERIMENTS) <= set(results)
    for name in E.EXPERIMENTS:
        assert (tmp_path / name / "result.json").is_file()


def test_a_second_run_reuses_the_cached_weights_without_a_training_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Trained weights are checkpointed in out/cache (issue 14: a second run does not retrain); the rerun gives
    the same numbers without a single optimiser step."""
    first = E.denoise(size="tiny", out=tmp_path, progress=False)
    cached = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(cached) == 2 and all(p.startswith("unet-") and p.endswith(".npz") for p in cached)
    depth_first = E.depth(size="tiny", out=tmp_path, progress=False)

    def no_step(*args: object, **kwargs: object) -> None:
        raise AssertionError("trained again")

    monkeypatch.setattr(torch.optim.Adam, "step", no_step)
    again = E.denoise(size="tiny", out=tmp_path, progress=False)
    assert again.errors == first.errors and again.val_loss_no_skip == first.val_loss_no_skip
    assert E.depth(size="tiny", out=tmp_path, progress=False).accuracy == depth_first.accuracy
    # another seed is another model: it must train (and so reaches the patched step)
    with pytest.raises(AssertionError, match="trained again"):
        E.denoise(size="tiny", out=tmp_path, seed=1, progress=False)


def test_medium_trains_through_the_cache_on_richer_data() -> None:
    """The medium size exists for every experiment; its autoencoders train on scikit-image's photos and faces,
    and run_all passes one cache folder to each experiment that trains."""
    for sizes in (E.COPY_SIZES, E.DENOISE_SIZES, E.DEPTH_SIZES, E.WIDTH_SIZES):
        assert "medium" in sizes
    assert E.COPY_SIZES["medium"].data == E.DENOISE_SIZES["medium"].data == "skimage"
    assert E.WIDTH_SIZES["medium"].steps == 5000
    assert E.DEPTH_SIZES["medium"].effnet_layers == E.EFFNET_LAYERS and E.DEPTH_SIZES["medium"].spectrum
    with pytest.raises(ValueError, match="medium"):
        E.run("copy", size="large")
