from __future__ import annotations

import copy
import math
import warnings
from typing import Any

import pytest
import torch
from torch import nn

import reprinvert as ri
from reprinvert import recipes
from reprinvert.regularizers import GaussianBlur, Jitter, TotalVariation

from zoo import OneSampleGoesNaN, SignalGoesNaN, SmallCNN


def orthogonal_linear(n: int, dtype: torch.dtype = torch.float32) -> nn.Sequential:
    """y = Q x with Q orthogonal (from a QR decomposition), followed by a head that is never reached."""
    g = torch.Generator().manual_seed(3)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    lin = nn.Linear(n, n, bias=False)
    with torch.no_grad():
        lin.weight.copy_(q)
    return nn.Sequential(lin, nn.Linear(n, 2)).to(dtype)


def relative(res: ri.Inversion) -> float:
    return float(res.metrics.relative_input_distance.max())


# The known answers hold with the default recipe itself (its 500 steps), and with the exact recipe of
# docs/recipes.md (a squared error on pixels).
RECIPES = {"default": {}, "exact": {"recipe": recipes.default(parametrization="pixel", loss="mse")}}


@pytest.mark.parametrize("options", RECIPES.values(), ids=RECIPES.keys())
def test_identity_layer_inverts_exactly(options: dict[str, Any]) -> None:
    model = nn.Sequential(nn.Identity(), nn.Linear(12, 3))
    x = torch.rand(3, 12)
    res = ri.invert(model, "0", x, **options)
    assert relative(res) < 1e-3
    assert bool(res.metrics.represents.all())


@pytest.mark.parametrize("size", [8, 32])
@pytest.mark.parametrize("options", RECIPES.values(), ids=RECIPES.keys())
def test_identity_on_images(options: dict[str, Any], size: int) -> None:
    """Random images: the worst case for the default's pyramid and colour basis, which its pixel phase fixes."""
    model = nn.Sequential(nn.Identity(), nn.Conv2d(3, 2, 3))
    x = torch.rand(2, 3, size, size)
    res = ri.invert(model, "0", x, **options)
    assert relative(res) < 1e-3


@pytest.mark.parametrize("options", RECIPES.values(), ids=RECIPES.keys())
def test_orthogonal_linear_inverts_exactly(options: dict[str, Any]) -> None:
    model = orthogonal_linear(16)
    x = torch.rand(4, 16)
    res = ri.invert(model, "0", x, **options)
    assert relative(res) < 1e-3
    assert res.input.shape == x.shape and res.input.dtype == x.dtype


def test_orthogonal_colour_mixing_on_photos() -> None:
    """A 1x1 convolution with an orthogonal 3x3 matrix on real photos: the default lands within 1e-2 relative
    (measured 6e-5 to 8e-5 on three photos, 7.2e-3 on the astronaut, whose black and white areas sit on the clamp),
    the exact recipe (squared error on pixels) within 1e-6 (measured 5-7e-8)."""
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64))
    conv = nn.Conv2d(3, 3, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(q.view(3, 3, 1, 1))
    x = ri.data.sample_images(size=32)
    assert relative(ri.invert(nn.Sequential(conv), "0", x)) < 1e-2
    exact = recipes.default(parametrization="pixel", loss="mse")
    assert relative(ri.invert(nn.Sequential(conv), "0", x, recipe=exact)) < 1e-6


def test_narrow_relu_cannot_invert() -> None:
    """ReLU(W x + b) with W: 32 -> 8 keeps at most 8 numbers of 32: m_g -> 0 while m_i stays large.

    The bias (+3) keeps every unit active for inputs in [0, 1], so no unit is dead and the search can match the
    representation; what it cannot do is find *the* input among the 24-dimensional set that maps there.
    """
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 8), nn.ReLU(), nn.Linear(8, 1))
    with torch.no_grad():
        model[0].bias.fill_(3.0)
    x = torch.rand(4, 32)
    res = ri.invert(model, "1", x, steps=400)
    m = res.metrics
    assert float(m.embedding_distance.max()) < 1e-2 * float(ri.represent(model, "1", x).norm(dim=1).min())
    assert bool(m.represents.all())  # the layer cannot tell x_g from x ...
    assert float(m.relative_input_distance.min()) > 0.1  # ... yet x_g is far from x
    assert bool((m.input_distance > 10 * m.perturbation_distance / 4).all())


def test_result_shapes_dtype_device_and_fields(cnn: SmallCNN) -> None:
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    res = ri.invert(cnn.double(), "conv2", x, steps=5)
    assert res.input.shape == x.shape and res.input.dtype == torch.float64 and res.input.device == x.device
    assert res.layer == "conv2" and res.start is None and res.steps_run == 5 and res.stopped is None
    assert res.target.shape == res.representation.shape == (2, 8, 4, 4)
    assert set(res.history.terms) == {"data", "total"}
    assert res.history.total.shape == (5, 2) and res.history.lr.shape == (5,)
    assert res.metrics.input_distance.shape == (2,)
    summary = res.metrics.summary()
    assert set(summary) >= {"embedding_distance", "reference_distance", "input_distance", "perturbation_distance",
                            "normalized_feature_error", "psnr", "represents"}
    assert "m_g=" in repr(res)


def test_history_records_each_regularizer_term(cnn: SmallCNN) -> None:
    x = torch.rand(1, 3, 8, 8)
    regs = [TotalVariation(weight=0.1), GaussianBlur(), Jitter(max_shift=1)]
    res = ri.invert(cnn, "conv2", x, steps=4, regularizers=regs)
    h = res.history
    assert set(h.terms) == {"data", "tv", "total"}  # blur and jitter add no loss term
    assert torch.allclose(h["data"] + h["tv"], h.total)
    assert h.as_dict()["tv"][0][0] == pytest.approx(float(h["tv"][0, 0]))


def test_batch_is_independent_inversions(cnn: SmallCNN) -> None:
    """Inverting a batch equals inverting each sample alone (same start)."""
    x = torch.rand(3, 3, 8, 8)
    init = torch.rand(3, 3, 8, 8)
    for optimizer in ("adam", "gd", "sgd"):
        full = ri.invert(cnn, "conv2", x, steps=10, init=init, optimizer=optimizer, lr=0.01)
        for i in range(3):
            one = ri.invert(cnn, "conv2", x[i : i + 1], steps=10, init=init[i : i + 1], optimizer=optimizer, lr=0.01)
            torch.testing.assert_close(one.input, full.input[i : i + 1], rtol=1e-5, atol=1e-6)


def test_seed_reproducible_and_generator(cnn: SmallCNN) -> None:
    x = torch.rand(1, 3, 8, 8)
    a = ri.invert(cnn, "conv2", x, steps=3, seed=1)
    b = ri.invert(cnn, "conv2", x, steps=3, seed=1)
    c = ri.invert(cnn, "conv2", x, steps=3, seed=2)
    d = ri.invert(cnn, "conv2", x, steps=3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a.input, b.input) and not torch.equal(a.input, c.input)
    assert torch.equal(a.input, d.input)
    assert a.seed == 1 and d.seed is None


@pytest.mark.parametrize("optimizer", ["gd", "sgd", "adam", "lbfgs"])
@pytest.mark.parametrize("loss", ["l1", "mse", "nmse", "cosine"])
def test_every_optimizer_and_loss_reduces_the_loss(cnn: SmallCNN, optimizer: str, loss: str) -> None:
    x = torch.rand(2, 3, 8, 8)
    lr = {"gd": 0.05, "sgd": 0.01, "adam": 0.05, "lbfgs": 0.5}[optimizer]
    if loss == "l1":
        lr /= 20
    res = ri.invert(cnn, "conv2", x, steps=15, optimizer=optimizer, loss=loss, lr=lr)  # type: ignore[arg-type]
    total = res.history.total
    assert bool(torch.isfinite(total).all())
    assert float(total[-1].sum()) < float(total[0].sum())


@pytest.mark.parametrize("init", ["seed", "zeros", "uniform", "normal"])
def test_init_options(init: str) -> None:
    model = nn.Sequential(nn.Identity())
    x = torch.rand(500, 4)
    res = ri.invert(model, "0", x, steps=1, init=init, lr=1e-9, track_best=False, clamp=False)  # type: ignore[arg-type]
    z = res.input
    if init == "seed":
        assert abs(float(z.mean()) - 0.7) < 0.01 and abs(float(z.std()) - 0.05) < 0.01
    elif init == "zeros":
        assert float(z.abs().max()) < 1e-6
    elif init == "uniform":
        assert float(z.min()) >= 0 and float(z.max()) <= 1 and abs(float(z.mean()) - 0.5) < 0.05
    else:
        assert abs(float(z.std()) - 1) < 0.05


def test_clamp_keeps_bounds(cnn: SmallCNN) -> None:
    res = ri.invert(cnn, "conv2", torch.rand(1, 3, 8, 8), steps=10, lr=1.0, clamp=(0.0, 1.0), track_best=False)
    assert float(res.input.min()) >= 0 and float(res.input.max()) <= 1


def test_callback_receives_steps_and_can_stop(cnn: SmallCNN) -> None:
    seen: list[ri.StepInfo] = []

    def cb(info: ri.StepInfo) -> bool:
        seen.append(info)
        return info.step == 3

    res = ri.invert(cnn, "conv2", torch.rand(1, 3, 8, 8), steps=50, callback=cb)
    assert [s.step for s in seen] == [0, 1, 2, 3] and seen[0].steps == 50
    assert res.steps_run == 4 and res.stopped == "callback asked to stop after step 3"
    assert res.history.total.shape == (4, 1)


def test_best_iterate_tracking() -> None:
    """With a far too large learning rate gd diverges; the best iterate is the start (step 0)."""
    model = nn.Sequential(nn.Linear(4, 4))
    x = torch.rand(1, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ri.NonFiniteWarning)
        kw: dict[str, Any] = dict(steps=5, optimizer="gd", lr=1e3, init="zeros", loss="mse", clamp=False)
        res = ri.invert(model, "0", x, **kw)
        last = ri.invert(model, "0", x, **kw, track_best=False)
    assert int(res.best_step[0]) == 0 and float(res.input.abs().max()) == 0.0
    assert float(last.input.abs().max()) > 1.0


def test_nan_mid_optimization_stops_and_keeps_best_finite() -> None:
    class Explodes(nn.Module):
        """y = x * 1, but NaN from the 4th forward pass on."""

        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 3)
            self.calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            y = self.lin(x)
            return y * float("nan") if self.calls > 4 else y

    model = Explodes()
    msg = r"non-finite loss at step 3 for sample\(s\) \[0, 1\]; kept the best finite iterate"
    with pytest.warns(ri.NonFiniteWarning, match=msg):
        res = ri.invert(model, "", torch.rand(2, 3), steps=20, track_best=False)
    assert res.steps_run == 3 and res.stopped is not None
    assert bool(torch.isfinite(res.input).all())
    assert int(res.best_step.max()) <= 2


def test_works_under_no_grad_and_inference_mode_input(cnn: SmallCNN) -> None:
    with torch.inference_mode():
        x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        res = ri.invert(cnn, "conv2", x, steps=3)
        assert not torch.is_grad_enabled()
    assert res.history.total.shape == (3, 1)


def test_restarts_keep_the_best_per_sample(cnn: SmallCNN) -> None:
    x = torch.rand(2, 3, 8, 8)
    one = ri.invert(cnn, "conv2", x, steps=5, seed=0)
    three = ri.invert(cnn, "conv2", x, recipe=ri.recipes.default(restarts=3), steps=5, seed=0)
    assert bool((three.metrics.embedding_distance <= one.metrics.embedding_distance + 1e-6).all())


def test_model_kwargs_and_tuple_inputs() -> None:
    class TwoIn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 3)

        def forward(self, x: torch.Tensor, *, scale: float = 1.0) -> torch.Tensor:
            return self.lin(x) * scale

    m = TwoIn()
    res = ri.invert(m, "", torch.rand(2, 3), steps=3, model_kwargs={"scale": 2.0})
    assert torch.allclose(res.target, m(res.original, scale=2.0).detach())


def test_lbfgs_makes_progress_when_gradients_are_tiny() -> None:
    """y = 1e-3 * Q x with Q orthogonal, MSE loss: gradients are ~1e-9, below torch L-BFGS's absolute curvature
    threshold (y.s <= 1e-10 skips the update), so the loss must be rescaled for L-BFGS to find a step size."""
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(256, 256, generator=g))
    lin = nn.Linear(256, 256, bias=False)
    with torch.no_grad():
        lin.weight.copy_(q * 1e-3)
    x = torch.rand(2, 256, generator=g)
    res = ri.invert(nn.Sequential(lin), "0", x, optimizer="lbfgs", lr=1.0, steps=20, loss="mse")
    assert relative(res) < 1e-3
    assert res.history["data"][0].sum() > res.history["data"][-1].sum()  # history stays in the loss's own units


@pytest.mark.parametrize("at", [3, 40, 70])
def test_deferred_nonfinite_check_equals_a_check_every_step(at: int) -> None:
    """Without a callback the loop looks for a non-finite loss only every few steps (no host sync per step); the
    result must be exactly that of checking every step (a callback forces that): same stop step, message, best
    iterate and history, and the other sample's best iterate frozen at the stop."""
    x = torch.rand(2, 4, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    deferred_model = OneSampleGoesNaN(at)
    every_model = OneSampleGoesNaN(at)
    every_model.load_state_dict(deferred_model.state_dict())
    # the probe forward counts as one call: the loss of step k comes from call k + 2 (after the target forward)
    with pytest.warns(ri.NonFiniteWarning, match=rf"non-finite loss at step {at - 2} for sample\(s\) \[0\]"):
        deferred = ri.invert(deferred_model, "", x, steps=100, loss="mse")
    with pytest.warns(ri.NonFiniteWarning, match=rf"non-finite loss at step {at - 2} for sample\(s\) \[0\]"):
        every = ri.invert(every_model, "", x, steps=100, loss="mse", callback=lambda info: None)
    assert deferred.steps_run == every.steps_run == at - 2
    assert deferred.stopped == every.stopped
    assert torch.equal(deferred.input, every.input)
    assert torch.equal(deferred.best_step, every.best_step) and int(deferred.best_step.max()) <= at - 2
    for term in deferred.history.terms:
        assert torch.equal(deferred.history[term], every.history[term])
    assert bool(torch.isfinite(deferred.input).all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_adam_update_equals_torch_adam_bit_for_bit(dtype: torch.dtype) -> None:
    """The loop's own Adam (no torch optimizer object, whose first construction imports torch._dynamo) gives
    exactly torch.optim.Adam's numbers, with a learning rate that changes every step."""
    from reprinvert._search import adam as _adam

    g = torch.Generator().manual_seed(0)
    ours = torch.randn(3, 5, generator=g, dtype=dtype)
    ref = ours.clone().requires_grad_(True)
    opt = torch.optim.Adam([ref], lr=0.3)
    state: dict[str, torch.Tensor] = {}
    for i in range(60):
        grad = torch.randn(3, 5, generator=g, dtype=dtype) * 10.0 ** (i % 5 - 2)
        lr = 0.3 * (1 - i / 60)
        _adam(ours, grad, lr, i + 1, state)
        opt.param_groups[0]["lr"] = lr
        ref.grad = grad.clone()
        opt.step()
        assert torch.equal(ours, ref.detach()), f"differs at step {i}"


def test_channels_last_input_is_optimised_in_that_layout() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2)).eval()
    x = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    plain = ri.invert(model, "2", x, steps=20, loss="mse")
    seen: list[bool] = []
    cl_model = copy.deepcopy(model).to(memory_format=torch.channels_last)
    cl = ri.invert(cl_model, "2", x.contiguous(memory_format=torch.channels_last), steps=20, loss="mse",
                   callback=lambda info: seen.append(info.input.is_contiguous(memory_format=torch.channels_last)))
    assert all(seen) and len(seen) == 20
    assert cl.input.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(cl.input, plain.input, rtol=1e-4, atol=1e-5)


def test_progress_bar_reads_the_loss_only_every_few_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading the loss for the bar synchronises with a GPU, so it happens every 32 steps and at the end."""
    tqdm_auto = pytest.importorskip("tqdm.auto")
    calls: list[int] = []
    original = tqdm_auto.tqdm.set_postfix

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(self.n)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(tqdm_auto.tqdm, "set_postfix", counting)
    from reprinvert import _progress

    monkeypatch.setattr(_progress, "use_bars", lambda: True)  # a bar, as on a terminal
    ri.invert(nn.Linear(4, 4), "", torch.rand(2, 4), steps=100, progress=True)
    assert calls == [32, 64, 96, 100]


@pytest.mark.parametrize("at", [5, 45])
def test_deferred_check_leaves_the_generator_as_a_per_step_check_would(at: int) -> None:
    """With a random transform (jitter) and restarts, everything drawn after a non-finite loss (the second restart's
    start, the reference perturbation of m_r) is the same whether the loop checked every step or later."""
    x = torch.rand(2, 1, 16, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    a, b = SignalGoesNaN(at), SignalGoesNaN(at)
    b.load_state_dict(a.state_dict())
    options = dict(steps=80, loss="mse", regularizers=[Jitter(max_shift=2)], init="normal")
    recipe = ri.recipes.default().replace(restarts=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ri.NonFiniteWarning)
        deferred = ri.invert(a, "", x, recipe=recipe, **options)
        every = ri.invert(b, "", x, recipe=recipe, callback=lambda info: None, **options)
    assert deferred.stopped == every.stopped is not None
    assert torch.equal(deferred.input, every.input)
    # (sample 0's model output is NaN by now, so some metrics are NaN: compare NaN as equal)
    a_metrics, b_metrics = deferred.metrics.summary(), every.metrics.summary()
    assert a_metrics.keys() == b_metrics.keys()
    for key, value in a_metrics.items():
        assert value == b_metrics[key] or (math.isnan(value) and math.isnan(b_metrics[key])), key


def test_results_are_snapshots_not_views_of_the_callers_tensor(cnn: SmallCNN) -> None:
    x = torch.rand(2, 3, 8, 8)
    res = ri.invert(cnn, "conv1", x, steps=2)
    result = ri.sweep(cnn, x, layers=["relu1", "conv2"], steps=2, progress=False)
    for t in (res.original, *result.reconstructions()):
        assert t.untyped_storage().data_ptr() != x.untyped_storage().data_ptr()
    before = res.original.clone()
    x.add_(1.0)  # the caller changes x afterwards: the results keep what was inverted
    assert torch.equal(res.original, before) and torch.equal(result.reconstructions()[0], before)


def test_history_records_each_iterates_input_distance() -> None:
    """history.input_distance[i] is ||x_i - x|| of the iterate scored at step i: at step 0 the start itself, and
    the reported input's m_i is the recorded value at its best step (hand-computed in float64)."""
    torch.manual_seed(0)
    x = torch.rand(3, 5, dtype=torch.float64)
    start = torch.rand(3, 5, dtype=torch.float64)
    model = nn.Sequential(nn.Linear(5, 5).double(), nn.Tanh())
    res = ri.invert(model, "1", x, init=start, steps=40, clamp=False, recipe=recipes.default(parametrization="pixel"))
    h = res.history.input_distance
    assert h.shape == (40, 3) and h.dtype == torch.float64
    assert torch.allclose(h[0], (start - x).norm(dim=1), rtol=0, atol=1e-12)
    for b in range(3):
        step = int(res.best_step[b])
        if step < 40:
            assert float(h[step, b]) == pytest.approx(float(res.metrics.input_distance[b]), rel=1e-9)
    assert "input_distance" in res.history.as_dict()


def _bookkept_on_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    from reprinvert._search import _best

    monkeypatch.setattr(_best, "host_bookkeeping", lambda device: False)


@pytest.mark.parametrize(
    "case", ["batch-of-3", "nan-deferred", "nan-callback", "restarts-jitter", "float64", "sweep-batched"]
)
def test_cpu_bookkeeping_in_python_numbers_equals_the_accelerators_bit_for_bit(
    case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the CPU the loop keeps the best loss, best step and non-finite guard in Python numbers (fewer tensor
    operations per step); on an accelerator in tensors (no host synchronisation). Both give the same result to
    the bit: iterate, best step, history, stop message; with samples that improve at different steps, a NaN
    found late or at once, restarts with random transforms, float64, a batched sweep."""

    def run() -> Any:
        torch.manual_seed(0)
        g = torch.Generator().manual_seed(1)
        if case == "sweep-batched":
            model = SmallCNN().eval()
            x = torch.rand(2, 3, 16, 16, generator=g)
            return ri.sweep(model, x, layers=["relu1", "relu2"], steps=25, batched=True, progress=False)
        if case.startswith("nan"):
            model, x = OneSampleGoesNaN(17), torch.rand(3, 4, generator=g)
            callback = (lambda info: None) if case == "nan-callback" else None
            with pytest.warns(ri.NonFiniteWarning):
                return ri.invert(model, "", x, steps=60, callback=callback)
        dtype = torch.float64 if case == "float64" else torch.float32
        model = SmallCNN().eval().to(dtype)
        x = torch.rand(3, 3, 16, 16, generator=g, dtype=dtype)
        # plain pixels at a large step: the samples' losses oscillate, so some steps improve only some samples
        recipe = ri.recipes.default(steps=40, lr=0.3, parametrization="pixel", clamp=None)
        if case == "restarts-jitter":
            recipe = ri.recipes.default(steps=30, restarts=2, regularizers=(Jitter(max_shift=1),))
        return ri.invert(model, "relu2", x, recipe=recipe)

    def fields(res: Any) -> list[torch.Tensor | Any]:
        if isinstance(res, ri.Sweep):
            return [f for inv in res.inversions for f in fields(inv)]
        return [res.input, res.best_step, res.steps_run, res.stopped, *res.history.terms.values(),
                res.history.input_distance, res.history.lr]

    host = run()
    _bookkept_on_the_device(monkeypatch)
    device = run()
    for a, b in zip(fields(host), fields(device), strict=True):
        if isinstance(a, torch.Tensor):
            assert torch.equal(a.nan_to_num(nan=-1.0), b.nan_to_num(nan=-1.0))
        else:
            assert a == b
    if case == "batch-of-3":  # some steps improved some samples and not others: the partial path ran
        total = host.history.total
        improved = total < torch.cummin(total, 0).values.roll(1, 0).index_fill(0, torch.tensor([0]), math.inf)
        assert bool((improved.any(1) & ~improved.all(1)).any())


class _ValueReads:
    """Counts the reads of floating-point tensor values to the host (what synchronises with an accelerator): the
    operations that return a Python number or a data-dependent shape, seen by a dispatch mode, and ``tolist``,
    which does not dispatch. Integer tensors are left out: jitter draws its shifts on the host on purpose."""

    OPS = ("aten._local_scalar_dense", "aten.is_nonzero", "aten.nonzero", "aten.equal", "aten.allclose")

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from torch.utils._python_dispatch import TorchDispatchMode

        self.count = 0
        reads = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
                if str(func.overloadpacket).startswith(reads.OPS) and any(
                    isinstance(a, torch.Tensor) and a.is_floating_point() for a in args
                ):
                    reads.count += 1
                return func(*args, **(kwargs or {}))

        self.mode = Mode
        original = torch.Tensor.tolist

        def tolist(t: torch.Tensor) -> Any:
            if t.is_floating_point():
                reads.count += 1
            return original(t)

        monkeypatch.setattr(torch.Tensor, "tolist", tolist)


@pytest.mark.parametrize(
    "recipe",
    ["default", "badger", ri.recipes.default(regularizers=(Jitter(max_shift=2),)), ri.recipes.default(restarts=2)],
    ids=["default", "badger-blur", "jitter", "restarts"],
)
def test_the_accelerator_bookkeeping_reads_no_value_per_step(recipe: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """What tests/test_gpu.py checks on a GPU, checked on the CPU with the accelerator's bookkeeping forced: the
    loop reads floating-point values to the host only at its periodic checks, whatever the recipe (the seed's
    blur and jitter included), so the count does not grow with the number of steps."""
    _bookkept_on_the_device(monkeypatch)
    reads = _ValueReads(monkeypatch)
    model, x = SmallCNN().eval(), torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))

    def count(steps: int) -> int:
        reads.count = 0
        with reads.mode():
            ri.invert(model, "relu2", x, steps=steps, recipe=recipe, progress=True)
        return reads.count

    restarts = getattr(recipe, "restarts", 1)  # a name ("default", "badger") is one run
    # 64 more steps add at most the periodic checks that fall in them (every 32 steps, per restart)
    assert count(96) - count(32) <= 2 * restarts


def test_the_cpu_bookkeeping_reads_the_loss_once_per_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """The counter above sees the reads: on the CPU the loop reads each step's losses once (where that waits for
    nothing), so there the count grows with the steps."""
    reads = _ValueReads(monkeypatch)
    model, x = SmallCNN().eval(), torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))

    def count(steps: int) -> int:
        reads.count = 0
        with reads.mode():
            ri.invert(model, "relu2", x, steps=steps)
        return reads.count

    assert count(96) - count(32) >= 64
