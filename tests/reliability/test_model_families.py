"""Every model family the reliability suite knows, and the ways a model can be run: in-place operations, reused
modules, selectors on structured outputs, keyword calls, train mode, ambient grad modes, wrappers (compile,
TorchScript, DataParallel), early stops through models that catch exceptions, dtypes and layouts, non-finite
values, threads and memory."""

from __future__ import annotations

import gc
import threading
import tracemalloc
import warnings
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import reprinvert as ri

from reliability_support import FAMILIES, decorate
from untouched import State
from zoo import (
    AttentionNet,
    DataclassNet,
    DictNet,
    GoesNaN,
    KwargsNet,
    Loop,
    LSTMNet,
    ResNetTiny,
    SharedNet,
    SmallCNN,
    Stateful,
    Swallower,
    mlp,
)

FAST = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# 1. in-place ops after the hooked module ------------------------------------------------------------------------
@FAST
@given(c=st.integers(1, 6), seed=st.integers(0, 2**16), size=st.integers(4, 9))
def test_capture_before_inplace_ops_equals_truncated_recompute(c: int, seed: int, size: int) -> None:
    torch.manual_seed(seed)
    model = ResNetTiny(c).eval()
    x = torch.randn(2, 3, size, size)
    state = State.of(model, x)
    with ri.capture(model, ["bn", "block.bn2", "block.bn1"]) as reps, torch.no_grad():
        model(x)
    with torch.no_grad():
        h = torch.relu(model.bn(model.stem(x)))
        b1 = model.block.bn1(model.block.conv1(h))
        b2 = model.block.bn2(model.block.conv2(torch.relu(b1)))
        assert torch.equal(reps["bn"], model.bn(model.stem(x)))  # before ReLU(inplace=True)
        assert torch.equal(reps["block.bn1"], b1)
        assert torch.equal(reps["block.bn2"], b2)  # before `out += x`
        assert not torch.equal(reps["block.bn2"], b2 + h)  # the `+=` really changed that tensor afterwards
    state.check(model)


# 2. a module used twice / in a loop -----------------------------------------------------------------------------


@FAST
@given(steps=st.integers(2, 6), pick=st.integers(0, 5), seed=st.integers(0, 2**16))
def test_reused_module_needs_call_and_each_call_is_exact(steps: int, pick: int, seed: int) -> None:
    torch.manual_seed(seed)
    model, x = Loop(), torch.randn(2, steps, 4)
    with pytest.raises(ri.LayerCallError, match=rf"layer 'cell' \(Linear\) ran {steps} times .* call=0..{steps - 1}"):
        ri.represent(model, "cell", x, stop=False)
    call = pick % steps
    rep = ri.represent(model, "cell", x, call=call)
    with torch.no_grad():
        h = torch.zeros(2, 4)
        for t in range(call):
            h = torch.tanh(model.cell(h) + x[:, t])
        assert torch.equal(rep, model.cell(h))
    res = ri.invert(SharedNet(), "lin", torch.rand(2, 4), call=1, steps=2)
    assert res.steps_run == 2


# 3. tuple, dict, None-containing and dataclass outputs ----------------------------------------------------------
def test_selectors_on_structured_outputs() -> None:
    x = torch.rand(2, 5, 3)
    lstm = LSTMNet()
    with pytest.raises(ri.OutputSelectionError, match=r"layer 'lstm' returned tuple\(.*\) with 3 tensors.*select=0"):
        ri.represent(lstm, "lstm", x)
    out, h = ri.represent(lstm, "lstm", x, select=0), ri.represent(lstm, "lstm", x, select=(1, 0))
    assert torch.allclose(h[0], out[:, -1])
    attn = AttentionNet()
    a = torch.rand(2, 5, 8)
    with pytest.raises(ri.OutputSelectionError, match=r"layer 'attn' returned tuple\(Tensor\[2, 5, 8\], Tensor"):
        ri.represent(attn, "attn", a)
    assert ri.invert(attn, "attn", a, select=0, steps=2).target.shape == (2, 5, 8)
    d = DictNet()
    assert ri.represent(d, "block", torch.rand(2, 4), select="feat").shape == (2, 6)
    assert ri.represent(d, "", torch.rand(2, 4), select="logits").shape == (2, 2)
    dc = DataclassNet()
    assert ri.represent(dc, "encoder", torch.rand(2, 3, 4), select="pooled").shape == (2, 6)
    with pytest.raises(ri.OutputSelectionError, match=r"ModelOutput\(last_hidden_state=Tensor.*attentions=None\)"):
        ri.represent(dc, "encoder", torch.rand(2, 3, 4))

    class NoneTuple(nn.Module):
        """(linear(x), None): a single tensor next to a None needs no selector."""

        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 3)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
            return self.lin(x), None

    assert ri.invert(NoneTuple(), "", torch.rand(2, 3), steps=2).target.shape == (2, 3)


# 4. modules called with keyword arguments only ------------------------------------------------------------------
def test_keyword_only_modules() -> None:
    model, x = KwargsNet(), torch.rand(2, 4)
    with torch.no_grad():
        expected = 2.0 * model.block.lin(x)
    assert torch.equal(ri.represent(model, "block", x), expected)
    res = ri.invert(model, "block2", x, steps=3)
    assert res.steps_run == 3
    started = ri.invert(model, "block2", x, start="block", steps=3)  # the start layer is called by keyword too
    assert started.start == "block" and started.input.shape == (2, 4)


# 5. train-mode models: eval by default, train=True opt-out, buffers restored either way --------------------------


def test_train_mode_models() -> None:
    model = Stateful().train()
    x = torch.rand(4, 4)
    state = State.of(model, x)
    calls_buffer = model.calls
    rep = ri.represent(model, "drop", x)
    with torch.no_grad():
        expected = nn.functional.batch_norm(model.lin(x), model.bn.running_mean, model.bn.running_var,
                                            model.bn.weight, model.bn.bias)
    assert torch.allclose(rep, expected, atol=1e-6)  # eval mode: running statistics, no dropout
    state.check(model)
    rep_train = ri.represent(model, "drop", x, train=True)  # batch statistics and dropout
    assert not torch.allclose(rep_train, expected, atol=1e-3)
    state.check(model)
    ri.invert(model, "drop", x, steps=3, train=True)
    ri.invert(model, "drop", x, steps=3)
    state.check(model)  # running stats, num_batches_tracked, the rebound buffer and the global RNG are back
    assert model.calls is calls_buffer and model.training and model.bn.training


# 6. mixed training flags and requires_grad: restored one by one --------------------------------------------------
def test_mixed_flags_restored_exactly() -> None:
    model = decorate(ResNetTiny())
    flags = {n: m.training for n, m in model.named_modules()}
    req = {n: p.requires_grad for n, p in model.named_parameters()}
    assert len(set(flags.values())) == 2 and len(set(req.values())) == 2  # really mixed
    ri.invert(model, "block.bn2", torch.rand(1, 3, 6, 6), steps=2)
    ri.invert(model, "block.bn2", torch.rand(1, 3, 6, 6), steps=2, train=True)
    assert {n: m.training for n, m in model.named_modules()} == flags
    assert {n: p.requires_grad for n, p in model.named_parameters()} == req


# 9. ambient torch.no_grad() and inference mode -------------------------------------------------------------------
def test_ambient_no_grad_and_inference_mode() -> None:
    model = SmallCNN().eval()
    x = torch.rand(1, 3, 8, 8)
    reference = ri.invert(model, "conv2", x, steps=3, seed=3)
    with torch.no_grad():
        under_no_grad = ri.invert(model, "conv2", x, steps=3, seed=3)
    assert not torch.is_inference_mode_enabled() and torch.is_grad_enabled()
    with torch.inference_mode():
        x_inf = x.clone()
        inside = ri.invert(model, "conv2", x, steps=3, seed=3)
        rep_inside = ri.represent(model, "conv2", x)
    from_inference_tensor = ri.invert(model, "conv2", x_inf, steps=3, seed=3)
    for r in (under_no_grad, inside, from_inference_tensor):
        assert torch.equal(r.input, reference.input)
    assert torch.equal(rep_inside, reference.target)
    state = State.of(model)  # inference tensors have no version counter to compare
    ri.represent(model, "conv2", x_inf)
    state.check(model)
    assert not from_inference_tensor.input.is_inference()


# 10. torch.compile, TorchScript, DataParallel --------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_compiled_runs_eagerly_and_matches_uncompiled() -> None:
    torch.manual_seed(0)
    model = mlp()
    compiled = torch.compile(model)
    x = torch.rand(3, 6)
    a, b = ri.invert(compiled, "2", x, steps=4, seed=1), ri.invert(model, "2", x, steps=4, seed=1)
    assert a.layer == b.layer == "2" and torch.equal(a.input, b.input) and torch.equal(a.target, b.target)
    with ri.capture(compiled, "_orig_mod.1") as reps, torch.no_grad():
        model(x)
    assert torch.equal(reps["_orig_mod.1"], ri.represent(model, "1", x))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_refused_clearly() -> None:
    model, x = mlp(), torch.rand(2, 6)
    for scripted in (torch.jit.script(model), torch.jit.trace(model, x)):
        with pytest.raises(TypeError, match=r"model is a TorchScript module .* Pass the original nn.Module"):
            ri.invert(scripted, "0", x)

    class Outer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = torch.jit.script(mlp())
            self.head = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.inner(x))

    with pytest.raises(TypeError, match=r"layer='inner.0' is a TorchScript module .* without torch.jit.script"):
        ri.represent(Outer(), "inner.0", x)


def test_dataparallel_with_and_without_prefix() -> None:
    model = SmallCNN().eval()
    wrapped = nn.DataParallel(model)
    x = torch.rand(2, 3, 8, 8)
    plain = ri.invert(model, "conv2", x, steps=3)
    for name in ("conv2", "module.conv2"):
        res = ri.invert(wrapped, name, x, steps=3)
        assert torch.equal(res.input, plain.input)
        assert torch.equal(ri.represent(wrapped, name, x), plain.target)


# 11. early stop inside models that catch Exception (or everything) ----------------------------------------------
def test_early_stop_through_models_that_catch_exceptions() -> None:
    model = Swallower()
    x = torch.rand(2, 4)
    ri.represent(model, "lin", x, stop=True)
    ri.invert(model, "lin", x, steps=3)
    assert model.after_calls == 1  # only the target's full forward ran the rest of the model

    class SwallowsAll(nn.Module):
        """lin(x) inside a bare `except BaseException` (hostile); the capture must still be right."""

        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 4)
            self.after = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            try:
                y = self.lin(x)
            except BaseException:
                y = x
            return self.after(y)

    hostile = SwallowsAll()
    with torch.no_grad():
        assert torch.equal(ri.represent(hostile, "lin", x), hostile.lin(x))
    assert ri.invert(hostile, "lin", x, steps=3).steps_run == 3


# 12. dtypes, layouts, devices ------------------------------------------------------------------------------------
@pytest.mark.parametrize("model_dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("x_dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_precisions(model_dtype: torch.dtype, x_dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    model = SmallCNN().to(model_dtype)
    x = torch.rand(2, 3, 8, 8).to(x_dtype)
    state = State.of(model, x)
    res = ri.invert(model, "conv2", x, steps=5)
    state.check(model)
    assert res.input.dtype == x_dtype and bool(torch.isfinite(res.input.float()).all())
    assert res.target.dtype == model_dtype and res.steps_run == 5
    assert all(torch.isfinite(v).all() for v in res.history.terms.values())


def test_channels_last_matches_contiguous() -> None:
    model = SmallCNN().eval()
    x = torch.rand(2, 3, 8, 8)
    cl = x.to(memory_format=torch.channels_last)
    state = State.of(model, cl)
    a, b = ri.invert(model, "conv2", cl, steps=4), ri.invert(model, "conv2", x, steps=4)
    state.check(model)
    assert torch.allclose(a.input, b.input, atol=1e-5)
    assert torch.allclose(ri.represent(model, "conv2", cl), ri.represent(model, "conv2", x), atol=1e-6)


# 13. NaN appearing mid-optimization ------------------------------------------------------------------------------


@FAST
@given(at=st.integers(2, 8), seed=st.integers(0, 100))
def test_nan_mid_optimization_stops_with_the_best_finite_iterate(at: int, seed: int) -> None:
    model = GoesNaN(at)
    x = torch.rand(2, 4)
    state = State.of(model, x)
    with pytest.warns(ri.NonFiniteWarning, match=rf"non-finite loss at step {at - 2}"):
        res = ri.invert(model, "", x, steps=10, seed=seed)
    state.check(model)
    assert res.steps_run == at - 2 and res.stopped is not None
    assert bool(torch.isfinite(res.input).all())


def test_nan_from_the_model_on_its_own_inputs() -> None:
    """y = sqrt(x - 0.6): NaN once the iterate leaves the domain; a huge learning rate guarantees it."""

    class Sqrt(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sqrt(x - 0.6)

    x = torch.full((1, 8), 0.9)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = ri.invert(Sqrt(), "", x, steps=50, lr=50.0, optimizer="gd")
    assert any(issubclass(w.category, ri.NonFiniteWarning) for w in caught)
    assert res.steps_run < 50 and bool(torch.isfinite(res.input).all())


# 14. two threads capturing from the same model -------------------------------------------------------------------
def test_two_threads_capture_only_their_own_forward() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Tanh()).eval()
    xs = [torch.full((1, 4), float(i)) for i in range(2)]
    barrier = threading.Barrier(2)
    got: dict[int, Any] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            with ri.capture(model, "0", call=0) as reps:
                barrier.wait()  # both captures open: each thread's hook sees the other's forward
                for _ in range(20):
                    with torch.no_grad():
                        model(xs[i])
                    reps_now = reps.calls()["0"]
                    got.setdefault(i, []).append(reps_now)
                barrier.wait()
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i in range(2):
        assert got[i] == list(range(1, 21))  # only its own 20 forwards were counted
    assert ri.represent(model, "0", xs[0]).shape == (1, 4)
    from untouched import hooks_left

    assert hooks_left(model) == {}


# 15. memory: no growth over a long inversion ---------------------------------------------------------------------
def _live_tensors() -> int:
    gc.collect()
    count = 0
    for obj in gc.get_objects():
        if issubclass(type(obj), torch.Tensor):  # type(): no attribute look-up on lazy module proxies
            count += 1
    return count


def _growth(leak: bool, steps: int = 1000) -> tuple[int, int]:
    """Tensors alive and Python memory (bytes) at step 1000 minus at step 100 of a tiny inversion."""
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 4))
    kept: list[torch.Tensor] = []
    marks: dict[int, tuple[int, int]] = {}

    class Leaky(ri.regularizers.Regularizer):
        """A penalty that keeps each step's graph alive when ``leak`` (the control: the probe must see it)."""

        name = "leaky"

        def penalty(self, x: torch.Tensor, t: float) -> torch.Tensor:
            p = x.pow(2).sum(1) * 0
            if leak:
                kept.append(p)
            return p

    def callback(info: ri.StepInfo) -> None:
        if info.step + 1 in (100, steps):
            marks[info.step + 1] = (_live_tensors(), tracemalloc.get_traced_memory()[0])

    tracemalloc.start()
    try:
        ri.invert(model, "2", torch.rand(2, 4), steps=steps, callback=callback, regularizers=[Leaky()],
                  optimizer="adam", lr=0.01)
    finally:
        tracemalloc.stop()
    (t0, m0), (t1, m1) = marks[100], marks[steps]
    return t1 - t0, m1 - m0


def test_no_memory_growth_over_a_long_inversion() -> None:
    tensors, memory = _growth(leak=False)
    assert tensors <= 0, f"{tensors} more live tensors at step 1000 than at step 100"
    assert memory < 64 * 1024, f"Python memory grew by {memory} bytes between step 100 and step 1000"
    # the same probe on a loop that keeps every step's graph must fail: it can detect a leak
    leaked_tensors, leaked_memory = _growth(leak=True, steps=300)
    assert leaked_tensors >= 200 and leaked_memory > memory


def test_every_family_is_registered() -> None:
    assert len(FAMILIES) >= 10
