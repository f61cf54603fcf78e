from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import reprinvert as ri
from reprinvert import recipes
from reprinvert.regularizers import AlphaNorm, GaussianBlur, TotalVariation


def blur3_reference(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """3x3 Gaussian blur written out: reflect padding, 9 weighted shifted copies."""
    w1 = torch.tensor([math.exp(-0.5 * (p / sigma) ** 2) for p in (-1, 0, 1)], dtype=x.dtype)
    w1 = w1 / w1.sum()
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    h, w = x.shape[-2:]
    out = torch.zeros_like(x)
    for i in range(3):
        for j in range(3):
            out = out + w1[i] * w1[j] * padded[..., i : i + h, j : j + w]
    return out


def test_badger_update_rule_matches_float64_reference_step_by_step() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.Flatten()).double()
    x = torch.rand(1, 3, 8, 8, dtype=torch.float64)
    steps = 12
    recipe = recipes.badger("cnn", steps=steps)
    seen: list[torch.Tensor] = []
    res = ri.invert(model, "2", x, recipe=recipe, seed=0, track_best=False,
                    callback=lambda s: seen.append(s.input.clone()) and None)

    # the reference: x0 ~ N(0.7, 0.05^2) from the same seeded generator, then x <- blur(x - lr_i * grad)
    g = torch.Generator().manual_seed(0)
    ref = 0.7 + 0.05 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    with torch.no_grad():
        target = model[:3](x)
    for i in range(steps):
        lr = 2.5 + (1.5 - 2.5) * i / steps
        sigma = 2.4 + (0.4 - 2.4) * i / steps
        xr = ref.clone().requires_grad_(True)
        loss = 0.01 * torch.sum(torch.abs(target - model[:3](xr)))
        (grad,) = torch.autograd.grad(loss, xr)
        ref = blur3_reference(ref - lr * grad, sigma)
        torch.testing.assert_close(seen[i], ref, rtol=1e-12, atol=1e-12, msg=f"step {i}")
        assert float(res.history["data"][i, 0]) == pytest.approx(float(loss.detach()), rel=1e-12)
    torch.testing.assert_close(res.input, ref, rtol=1e-12, atol=1e-12)


def test_badger_presets() -> None:
    cnn = recipes.badger()
    assert (cnn.optimizer, cnn.loss, cnn.init, cnn.loss_scale, cnn.steps, cnn.lr, cnn.lr_end) == (
        "gd", "l1", "seed", 0.01, 220, 2.5, 1.5)
    assert cnn.regularizers == (GaussianBlur(sigma_start=2.4, sigma_end=0.4, kernel_size=3),)
    r50 = recipes.badger("resnet50")
    assert (r50.loss_scale, r50.steps, r50.lr) == (0.15, 500, 0.1)
    assert recipes.badger("unet").regularizers == () and recipes.badger("unet").loss_scale == 0.005
    assert recipes.badger("mlp").loss_scale == 0.35 and recipes.badger("mlp").clamp is None
    assert recipes.badger(steps=10).steps == 10
    with pytest.raises(ValueError, match=r"preset='vgg': expected one of"):
        recipes.badger("vgg")  # type: ignore[arg-type]


def test_mahendran_vedaldi_recipe() -> None:
    mv = recipes.mahendran_vedaldi()
    assert (mv.optimizer, mv.momentum, mv.loss, mv.steps) == ("sgd", 0.9, "nmse", 2100)
    assert mv.drops == (700, 1400)
    kinds = {type(r) for r in mv.regularizers}
    assert kinds == {AlphaNorm, TotalVariation}
    alpha = next(r for r in mv.regularizers if isinstance(r, AlphaNorm))
    tv = next(r for r in mv.regularizers if isinstance(r, TotalVariation))
    assert alpha.alpha == 6 and tv.beta == 2
    assert mv.learning_rate(699) == pytest.approx(0.01) and mv.learning_rate(700) == pytest.approx(0.001)
    assert mv.learning_rate(1400) == pytest.approx(1e-4)


def test_momentum_is_reset_at_each_drop() -> None:
    """With the gradient of 0.5*||x||^2 (= x), one sgd step after a drop starts from zero velocity."""
    model = nn.Sequential(nn.Identity())
    rec = ri.Recipe(steps=4, optimizer="sgd", lr=0.1, momentum=0.9, drops=(2,), drop_factor=0.5,
                    loss="l1", init="zeros")
    x = torch.tensor([[1.0]], dtype=torch.float64)
    seen: list[float] = []
    ri.invert(model, "0", x, recipe=rec, track_best=False, callback=lambda s: seen.append(float(s.input)) and None)
    # loss |z - 1|, grad -1 while z < 1: v1 = 0.1, z1 = 0.1; v2 = 0.19, z2 = 0.29; drop (lr 0.05), reset:
    # v3 = 0.05, z3 = 0.34; v4 = 0.095, z4 = 0.435
    assert seen == pytest.approx([0.1, 0.29, 0.34, 0.435], rel=1e-12)


def test_weight_decay_pulls_back_toward_the_start_by_the_hand_computed_fraction() -> None:
    """Decoupled weight decay (AdamW's order): z <- z - lr_i * wd * (z - z0), then the optimizer's step."""
    model = nn.Sequential(nn.Identity())
    rec = ri.Recipe(steps=3, optimizer="adam", lr=0.1, loss="l1", init="zeros", weight_decay=2.0)
    x = torch.tensor([[1.0]], dtype=torch.float64)
    seen: list[float] = []
    ri.invert(model, "0", x, recipe=rec, track_best=False, callback=lambda s: seen.append(float(s.input)) and None)
    # loss |z - 1|: the gradient is -1 while z < 1, so each of Adam's first steps is exactly +lr; z0 = 0:
    # z1 = 0 - 0.2 * 0 + 0.1 = 0.1; z2 = 0.1 - 0.2 * 0.1 + 0.1 = 0.18; z3 = 0.18 - 0.2 * 0.18 + 0.1 = 0.244
    # (to Adam's eps: each step is lr * 1 / (1 + 1e-8))
    assert seen == pytest.approx([0.1, 0.18, 0.244], rel=1e-7)
    # the other optimizers ignore it: plain gradient descent walks 0.1, 0.2, 0.3
    seen.clear()
    ri.invert(model, "0", x, recipe=rec.replace(optimizer="gd"), track_best=False,
              callback=lambda s: seen.append(float(s.input)) and None)
    assert seen == pytest.approx([0.1, 0.2, 0.3], rel=1e-12)


def test_weight_decay_validation() -> None:
    for bad in (-0.1, float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match=r"Recipe weight_decay=.*expected a finite number >= 0"):
            ri.Recipe(weight_decay=bad)
    with pytest.raises(ValueError, match=r"weight_decay=20: expected weight_decay \* lr < 1"):
        ri.Recipe(lr=0.05, weight_decay=20)
    assert recipes.default().weight_decay == 0.0  # opt-in: it biases weakly seen directions (docs/recipes.md)
    assert recipes.from_dict(ri.Recipe(weight_decay=0.25).to_dict()).weight_decay == 0.25
    old = ri.Recipe().to_dict()
    del old["weight_decay"]  # results saved before the field existed load with no decay
    assert recipes.from_dict(old).weight_decay == 0.0


def test_steps_override_rescales_drops() -> None:
    res = ri.invert(nn.Sequential(nn.Identity()), "0", torch.rand(1, 3, 6, 6), recipe="mahendran-vedaldi", steps=30)
    assert res.recipe.drops == (10, 20) and res.recipe.steps == 30


def test_recipe_registry_and_validation() -> None:
    assert recipes.available() == ["badger", "default", "mahendran-vedaldi"]
    assert recipes.get("mahendran_vedaldi").name == "mahendran-vedaldi"
    custom = ri.Recipe(steps=3)
    assert recipes.get(custom) is custom
    with pytest.raises(ValueError, match=r"recipe='nope' is unknown; available recipes"):
        recipes.get("nope")
    with pytest.raises(ValueError, match=r"Recipe steps=0: expected a positive int"):
        ri.Recipe(steps=0)
    with pytest.raises(ValueError, match=r"Recipe optimizer='rmsprop': expected one of"):
        ri.Recipe(optimizer="rmsprop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Recipe clamp=\(1.0, 0.0\)"):
        ri.Recipe(clamp=(1.0, 0.0))
    with pytest.raises(TypeError, match=r"unknown Recipe field\(s\) \['step'\]"):
        ri.Recipe().replace(step=3)
    d = recipes.mahendran_vedaldi().to_dict()
    assert d["drops"] == [700, 1400] and "AlphaNorm" in d["regularizers"][0]


def test_linear_schedule() -> None:
    rec = ri.Recipe(steps=4, lr=2.0, lr_end=1.0)
    assert [rec.learning_rate(i) for i in range(4)] == [2.0, 1.75, 1.5, 1.25]


def test_recipe_files_set_any_field_over_a_base_and_refuse_what_they_cannot(tmp_path) -> None:
    """recipes.load: fields over "base" (default "default"); an unknown field, an unknown base, a bad value or a
    file that is not a JSON object is a ValueError naming the file and the fix."""
    import json

    import pytest

    from reprinvert import recipes

    path = tmp_path / "r.json"
    path.write_text(json.dumps({"steps": 7, "weight_decay": 0.25, "lr": 0.02}))
    r = recipes.load(path)
    assert (r.steps, r.weight_decay, r.lr) == (7, 0.25, 0.02)
    assert recipes.get(str(path)) == r and recipes.resolve(path, steps=9).steps == 9
    path.write_text(json.dumps({"base": "badger", "steps": 3}))
    assert recipes.load(path).steps == 3 and recipes.load(path).optimizer == recipes.get("badger").optimizer
    cases = [({"stepz": 1}, "stepz"), ({"base": "nope"}, "nope"), ({"steps": -1}, "steps"), ([1, 2], "object")]
    for bad, needle in cases:
        path.write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=needle) as info:
            recipes.load(path)
        assert "r.json" in str(info.value)
    path.write_text("{not json")
    with pytest.raises(ValueError, match=r"r\.json"):
        recipes.load(path)
