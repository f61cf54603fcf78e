"""The input domain: normalisation as an option, baselines that scale with the data, the chance baseline."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

import reprinvert as ri
from reprinvert._domain import NORMALIZATIONS, chance_input, resolve_normalize

from untouched import State
from zoo import Normalized, SmallCNN

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture()
def cnn_and_x() -> tuple[SmallCNN, torch.Tensor]:
    torch.manual_seed(0)
    return SmallCNN().eval(), torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))


def test_normalize_equals_a_wrapper_module(cnn_and_x) -> None:
    cnn, x = cnn_and_x
    wrapped = Normalized(cnn)
    for spec in ("imagenet", (MEAN, STD)):
        ours = ri.invert(cnn, "conv2", x, steps=25, normalize=spec)
        theirs = ri.invert(wrapped, "net.conv2", x, steps=25)
        torch.testing.assert_close(ours.input, theirs.input, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ours.metrics.psnr, theirs.metrics.psnr, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(
        ri.represent(cnn, "conv2", x, normalize="imagenet"), ri.represent(wrapped, "net.conv2", x), rtol=0, atol=0
    )
    x_g = x.flip(-1)
    a = ri.evaluate(cnn, "conv2", x, x_g, normalize="imagenet", seed=3)
    b = ri.evaluate(wrapped, "net.conv2", x, x_g, seed=3)
    torch.testing.assert_close(a.embedding_distance, b.embedding_distance, rtol=1e-6, atol=0)
    torch.testing.assert_close(a.reference_distance, b.reference_distance, rtol=1e-6, atol=0)
    torch.testing.assert_close(
        ri.metrics.reference_distance(cnn, "conv2", x, seed=3, normalize="imagenet"),
        ri.metrics.reference_distance(wrapped, "net.conv2", x, seed=3),
        rtol=1e-6, atol=0,
    )
    desc = ri.describe(cnn, x, normalize="imagenet")
    assert desc["conv2"].shape == ri.describe(wrapped, x)["net.conv2"].shape


def test_normalize_keeps_everything_in_pixel_space(cnn_and_x) -> None:
    """Search, clamp, metrics and the returned input are in pixel space; x is untouched."""
    cnn, x = cnn_and_x
    kept = State.of(cnn, x)
    res = ri.invert(cnn, "conv1", x, steps=40, normalize="imagenet")
    assert res.recipe.clamp == (0.0, 1.0)  # "auto": x is in [0, 1]
    assert float(res.input.min()) >= 0 and float(res.input.max()) <= 1
    assert torch.equal(res.original, x)
    assert float(res.metrics.perturbation_distance.mean()) == pytest.approx(math.sqrt(x[0].numel()) / 25, rel=0.15)
    kept.check(cnn)


@pytest.mark.parametrize(
    ("spec", "x", "error", "match"),
    [
        ("imagenette", torch.rand(1, 3, 4, 4), ValueError, r"normalize='imagenette' is unknown; expected one of"),
        ("imagenet", torch.rand(1, 4, 4, 4), ValueError, r"normalize has 3 values per statistic, but x has 4"),
        (((0.5,), (0.0,)), torch.rand(1, 1, 4, 4), ValueError, r"std must be positive and finite"),
        (((0.5, 0.5), (0.2,)), torch.rand(1, 2, 4, 4), ValueError, r"mean has 2 values and std 1"),
        (3, torch.rand(1, 3, 4, 4), TypeError, r"normalize must be None, a name"),
        ("imagenet", torch.zeros(1, 3, dtype=torch.long), TypeError, r"applies to floating inputs"),
    ],
)
def test_bad_normalize_names_the_value_and_the_fix(spec, x, error, match) -> None:
    with pytest.raises(error, match=match):
        resolve_normalize(spec, x)


def test_named_normalizations() -> None:
    assert NORMALIZATIONS["imagenet"] == (MEAN, STD)
    norm = resolve_normalize("inception")
    assert norm is not None
    torch.testing.assert_close(norm.apply(torch.tensor([[0.0, 0.5, 1.0]]).view(1, 3, 1)).flatten(),
                               torch.tensor([-1.0, 0.0, 1.0]))


def test_clamp_that_x_leaves_is_a_warning_with_the_fix(cnn_and_x) -> None:
    cnn, x = cnn_and_x
    normalized = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with pytest.warns(ri.ReprinvertWarning, match=r"outside clamp=\(0.0, 1.0\).*normalize="):
        ri.invert(cnn, "conv1", normalized, steps=2, clamp=(0.0, 1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = ri.invert(cnn, "conv1", normalized, steps=2)  # "auto": no clamp for data outside [0, 1]
    assert res.recipe.clamp is None


def test_sigma_scales_with_the_data_range(cnn_and_x) -> None:
    cnn, x = cnn_and_x
    default = ri.invert(cnn, "conv1", x, steps=3)
    explicit = ri.invert(cnn, "conv1", x, steps=3, sigma=1 / 25)
    torch.testing.assert_close(default.metrics.reference_distance, explicit.metrics.reference_distance, rtol=0, atol=0)
    scaled = ri.invert(cnn, "conv1", x * 255, steps=3, data_range=255.0, lr=0.03 * 255)
    n = math.sqrt(x[0].numel())
    assert float(scaled.metrics.perturbation_distance.mean()) == pytest.approx(255 * n / 25, rel=0.15)


def test_start_activation_baseline_is_relative_to_its_scale() -> None:
    """Word embeddings of std 0.02: the faint perturbation is 1/25 of their RMS, below the chance distance."""
    torch.manual_seed(0)
    emb = nn.Embedding(50, 16)
    lin = nn.Linear(16, 16)
    with torch.no_grad():
        emb.weight.mul_(0.02)
        lin.weight.copy_(torch.linalg.qr(torch.randn(16, 16))[0])  # well conditioned: the answer is known
    model = nn.Sequential(emb, lin, nn.Tanh())
    ids = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    res = ri.invert(model, "2", ids, start="0", steps=200)
    m = res.metrics
    rms = float(emb(ids).detach().pow(2).mean(dim=(1, 2)).sqrt().mean())
    assert float(m.perturbation_distance.mean()) == pytest.approx(rms / 25 * math.sqrt(4 * 16), rel=0.3)
    assert bool((m.perturbation_distance < m.chance_input_distance).all())
    assert bool(m.beats_chance.all()) and float(m.relative_input_distance.max()) < 0.05


def test_chance_baseline_known_answers() -> None:
    x = torch.arange(12.0).view(3, 4)
    torch.testing.assert_close(chance_input(x), x[[2, 0, 1]])
    one = torch.arange(6.0).view(1, 6)
    shuffled = chance_input(one)
    assert sorted(shuffled.flatten().tolist()) == one.flatten().tolist() and not torch.equal(shuffled, one)
    assert torch.equal(chance_input(one), shuffled)  # fixed: the same permutation every time
    model = nn.Sequential(nn.Identity())
    x = torch.rand(3, 5, dtype=torch.float64)
    m = ri.evaluate(model, "0", x, x + 0.01)
    expected = (x - x[[2, 0, 1]]).norm(dim=1)
    torch.testing.assert_close(m.chance_input_distance, expected)
    torch.testing.assert_close(m.chance_distance, expected)  # identity: the same in representation space
    assert bool(m.beats_chance.all())
    far = ri.evaluate(model, "0", x, x + 10.0)
    assert not bool(far.beats_chance.any())
    assert far.per_sample()[0]["beats_chance"] is False


def test_sweep_rows_carry_the_chance_baseline(cnn_and_x) -> None:
    cnn, x = cnn_and_x
    result = ri.sweep(cnn, x, layers=["relu1", "conv2"], steps=3, progress=False, normalize="imagenet")
    row = result.rows[0]
    assert row.chance_input_distance == pytest.approx(float((x - x[[1, 0]]).flatten(1).norm(dim=1).mean()), rel=1e-5)
    assert 0.0 <= row.beats_chance <= 1.0
    assert result.provenance.options["normalize"] == {"name": "imagenet", "mean": list(MEAN), "std": list(STD)}
    assert "chance" in str(result)


def test_an_image_in_0_255_is_caught_before_the_run(cnn_and_x) -> None:
    """The commonest mistake: pixel values in 0-255 where the domain is [0, 1]. Without normalize= the span is far
    beyond data_range (PSNR and m_r are on that scale); with normalize= the values leave [0, 1]. Each warns with
    the fix, at the user's call, once, for invert and sweep alike (batched or not)."""
    cnn, x = cnn_and_x
    raw = x * 255
    with pytest.warns(ri.ReprinvertWarning, match=r"more than 10 times data_range=1.*divide it by 255") as seen:
        ri.invert(cnn, "conv1", raw, steps=2)
    assert len(seen) == 1 and seen[0].filename == __file__
    with pytest.warns(ri.ReprinvertWarning, match=r"outside \[0, data_range=1\].*divide it by 255"):
        ri.invert(cnn, "conv1", raw, steps=2, normalize="imagenet")
    with pytest.warns(ri.ReprinvertWarning, match="divide it by 255") as seen:
        ri.sweep(cnn, raw, layers=["conv1", "relu1"], steps=2, progress=False)
    assert len([w for w in seen if "255" in str(w.message)]) == 1
    with warnings.catch_warnings():  # the fix the message gives
        warnings.simplefilter("error")
        ri.invert(cnn, "conv1", raw, steps=2, data_range=255.0)
        ri.invert(cnn, "conv1", raw / 255, steps=2, normalize="imagenet")


def test_a_normalised_image_passed_with_normalize_is_caught(cnn_and_x) -> None:
    cnn, x = cnn_and_x
    normalized = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with pytest.warns(ri.ReprinvertWarning, match=r"negative values: it looks normalised already"):
        ri.invert(cnn, "conv1", normalized, steps=2, normalize="imagenet")
    with pytest.warns(ri.ReprinvertWarning, match=r"negative values: it looks normalised already"):
        ri.invert(cnn, "conv1", normalized, steps=2, normalize="imagenet", clamp="auto")
    with warnings.catch_warnings():  # a start= activation has no pixel range
        warnings.simplefilter("error")
        ri.invert(nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 4)), "1", torch.tensor([[1, 2]]), steps=2,
                  start="0", normalize=None)


def test_signals_and_embeddings_in_their_own_units_are_not_flagged() -> None:
    torch.manual_seed(0)
    signal = torch.sin(torch.linspace(0, 20, 64)).view(1, 1, 64)  # [-1, 1]: span 2, within 10 x data_range
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ri.invert(nn.Conv1d(1, 4, 3), "", signal, steps=2)
