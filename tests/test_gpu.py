"""GPU checks: the same inversions, sweeps and training on CUDA as on the CPU, and no host syncs per step.

Skipped on machines without CUDA (the CI machine has none); run them with ``python -m pytest tests/test_gpu.py``
on a GPU machine.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

import reprinvert as ri
from reprinvert.models import ConvAutoencoder
from reprinvert.train import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1, stride=2),
        nn.ReLU(), nn.Flatten(), nn.Linear(32 * 8 * 8, 10),
    ).double().eval()


def _x() -> torch.Tensor:
    return torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def test_invert_on_cuda_matches_cpu() -> None:
    """float64 on both devices, the same starting tensor: the inversions agree to round-off."""
    model, x = _cnn(), _x()
    init = torch.full_like(x, 0.5)
    cpu = ri.invert(model, "3", x, steps=60, loss="mse", init=init)
    gpu_model = copy.deepcopy(model).cuda()
    gpu = ri.invert(gpu_model, "3", x.cuda(), steps=60, loss="mse", init=init.cuda())
    assert gpu.input.device.type == "cuda" and gpu.target.device.type == "cuda"
    torch.testing.assert_close(gpu.input.cpu(), cpu.input, rtol=1e-6, atol=1e-6)
    # (the reference perturbation x' is drawn from each device's own generator, so m_r differs by design)
    for key in ("input_distance", "embedding_distance", "normalized_feature_error", "psnr"):
        assert gpu.metrics.summary()[key] == pytest.approx(cpu.metrics.summary()[key], rel=1e-4, abs=1e-8), key


def test_sweep_on_cuda_matches_cpu() -> None:
    model, x = _cnn(), _x()
    init = torch.full_like(x, 0.5)
    cpu = ri.sweep(model, x, layers=["0", "3"], steps=30, loss="mse", init=init, progress=False)
    gpu = ri.sweep(copy.deepcopy(model).cuda(), x.cuda(), layers=["0", "3"], steps=30, loss="mse", init=init.cuda(),
                   progress=False)
    assert gpu.provenance.device.startswith("cuda")
    for a, b in zip(cpu.rows, gpu.rows):
        assert b.input_distance == pytest.approx(a.input_distance, rel=1e-4, abs=1e-8)


@pytest.mark.parametrize(
    ("progress", "recipe"),
    [(False, "default"), (True, "default"), (False, "badger"),
     (False, ri.recipes.default(regularizers=(ri.regularizers.Jitter(max_shift=2),)))],
    ids=["default", "default-progress", "badger-blur", "jitter"],
)
def test_no_host_sync_per_inversion_step(progress: bool, recipe: object) -> None:
    """The loop synchronises with the GPU only every few steps, whatever the recipe (the seed's blur and jitter
    included): the count of synchronising calls does not grow with the number of steps
    (torch.cuda.set_sync_debug_mode reports each one)."""
    model = _cnn().float().cuda()
    x = _x().float().cuda()

    def syncs(steps: int) -> int:
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                ri.invert(model, "3", x, steps=steps, progress=progress, recipe=recipe)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in caught)

    # 64 more steps add at most the periodic checks (and progress-bar loss readings) that fall in them
    assert syncs(96) - syncs(32) <= (4 if progress else 2)


def test_train_on_cuda() -> None:
    ae = ConvAutoencoder(channels=(4, 8))
    data = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    result = train(ae, data, epochs=2, batch_size=8, progress=False, device="cuda")
    assert next(ae.parameters()).device.type == "cuda" and result.steps == 4


def test_cpu_training_leaves_the_cuda_rng_alone() -> None:
    torch.cuda.init()
    before = torch.cuda.get_rng_state_all()
    data = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    train(ConvAutoencoder(channels=(4, 8)), data, epochs=1, batch_size=8, progress=False, device="cpu", seed=3)
    assert all(torch.equal(a, b) for a, b in zip(before, torch.cuda.get_rng_state_all()))


def test_input_on_another_device_than_the_model_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"x is on cpu, but the model's parameters are on cuda:0; move one of them"):
        ri.invert(_cnn().cuda(), "0", _x())


def test_a_resumed_cuda_study_joins_parts_loaded_on_the_cpu(tmp_path) -> None:
    """Results loaded from disk come back on the CPU: a CUDA sweep that resumes some layers, and chunks joined
    with a part loaded from disk (the command line's resumed studies), still join."""
    model, x = _cnn(), _x()
    gpu_model = copy.deepcopy(model).cuda()
    first = ri.sweep(gpu_model, x.cuda(), layers=["0", "3"], steps=5, progress=False, batched=False,
                     resume=tmp_path / "layers")
    resumed = ri.sweep(gpu_model, x.cuda(), layers=["0", "3"], steps=5, progress=False, batched=False,
                       resume=tmp_path / "layers")
    assert resumed.provenance.options["resumed"] == ["0", "3"]
    first.save(tmp_path / "part")
    joined = ri.Sweep.concat([first, ri.load(tmp_path / "part")])
    assert joined.original.shape[0] == 2 * x.shape[0] and joined.inversions[0].input.device.type == "cuda"
