"""benchmarks/quality.py: a tiny smoke run (JSON keys and sane values, nothing about speed) and the mapping of the
pytorch-cnn-visualizations constants onto the library's regularizers and schedule."""

from __future__ import annotations

import json
import math

import pytest
import torch

from reprinvert.regularizers import AlphaNorm, TotalVariation

from conftest import benchmark_script


@pytest.fixture(scope="module")
def quality():
    with benchmark_script("quality") as module:
        yield module


# The script's formulas, transcribed from utkuozbulak/pytorch-cnn-visualizations src/inverted_representation.py.
def script_alpha_norm(input_matrix: torch.Tensor, alpha: float) -> torch.Tensor:
    return ((input_matrix.view(-1)) ** alpha).sum()


def script_total_variation_norm(input_matrix: torch.Tensor, beta: float) -> torch.Tensor:
    to_check = input_matrix[:, :-1, :-1]
    one_bottom = input_matrix[:, 1:, :-1]
    one_right = input_matrix[:, :-1, 1:]
    return (((to_check - one_bottom) ** 2 + (to_check - one_right) ** 2) ** (beta / 2)).sum()


def script_learning_rates(iterations: int = 201) -> list[float]:
    """The rate each iteration's optimizer.step() uses: lr *= 1/10 after the step whenever i % 40 == 0."""
    lr, out = 1e4, []
    for i in range(iterations):
        out.append(lr)
        if i % 40 == 0:
            lr *= 1 / 10
    return out


def test_pcv_regularizers_equal_the_script_formulas(quality):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 3, 5, 4, generator=g, dtype=torch.float64) * 1.5
    recipe = quality.pcv_recipe(tuple(x.shape))
    alpha = next(r for r in recipe.regularizers if isinstance(r, AlphaNorm))
    tv = next(r for r in recipe.regularizers if isinstance(r, TotalVariation))
    expected_alpha = 1e-7 * script_alpha_norm(x, 6)
    # The script's slicing is written for one (C, H, W) image: that is the intended total variation.
    expected_tv = 1e-8 * script_total_variation_norm(x[0], 2)
    torch.testing.assert_close(alpha.penalty(x, 0.0), expected_alpha.view(1), rtol=1e-12, atol=0)
    torch.testing.assert_close(tv.penalty(x, 0.0), expected_tv.view(1), rtol=1e-12, atol=0)
    # On the 4-D tensor the script actually passes, its slices mix channel and row differences (documented).
    assert not torch.isclose(script_total_variation_norm(x, 2), script_total_variation_norm(x[0], 2))


def test_pcv_schedule_and_data_term_match_the_script(quality):
    recipe = quality.pcv_recipe((2, 3, 8, 8))
    assert recipe.steps == 201 and recipe.optimizer == "sgd" and recipe.momentum == 0.9
    ours = [recipe.learning_rate(i) for i in range(recipe.steps)]
    for a, b in zip(ours, script_learning_rates()):
        assert math.isclose(a, b, rel_tol=1e-9)
    assert recipe.loss == "nmse" and recipe.loss_scale == 0.1
    init = quality.pcv_init((2, 3, 8, 8), torch.device("cpu"))
    assert init.shape == (2, 3, 8, 8) and 0.05 < float(init.std()) < 0.15


def test_quick_run_writes_expected_json(quality, tmp_path):
    out = tmp_path / "quality.json"
    payload = quality.main(
        ["--quick", "--cases", "cnn-shallow", "--size", "16", "--stretch", "1", "--max-seconds", "0.2",
         "--repeats", "1", "--out", str(out)]
    )
    data = json.loads(out.read_text())
    assert data["cases"][0]["name"] == payload["cases"][0]["name"] == "cnn-shallow"
    for key in ("machine", "command", "settings", "target", "timing", "pytorch_cnn_visualizations", "cases",
                "default_fastest", "table"):
        assert key in data
    case = data["cases"][0]
    assert 0.0 < case["threshold"] < 1.0
    assert isinstance(case["default_fastest"], bool)
    names = [r["recipe"] for r in case["results"]]
    assert names[0] == "default" and len(names) == 5 and len(set(names)) == 5
    for r in case["results"]:
        assert r["seconds_per_step"] > 0
        if r["reached"]:
            assert r["steps_to_target"] >= 1 and r["seconds_to_target"] > 0
            assert r["best_relative_distance"] <= case["threshold"]
            assert r["ratio_to_default"] is None or r["ratio_to_default"] > 0
        else:
            assert r["seconds_to_target"] is None and r["steps_to_target"] is None
