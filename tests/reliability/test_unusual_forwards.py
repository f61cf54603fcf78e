"""Models whose forward does more than compute the function the search differentiates: fast paths that differ
from the gradient path, complex outputs, reused layers, models built under inference mode, shared backbones on two
threads, forwards that register hooks, write parameters or draw random numbers, checkpoints, vmap, threads and
meta tensors; and results that must be snapshots, not views."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import reprinvert as ri

from zoo import Checkpointed, MetaBuffer, SamplingNet, SelfUpdating, Threaded, Vmapped


def _encoder() -> nn.TransformerEncoder:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, batch_first=True, dropout=0.0)
    return nn.TransformerEncoder(layer, 2).eval()


def test_transformer_fast_path_target_is_the_function_the_search_minimises() -> None:
    """In eval mode with a padding mask, nn.TransformerEncoder takes a nested-tensor fast path when nothing needs
    gradients. The target, the metrics and the final scoring are computed on the search's path: at z = x the loss
    is exactly 0, and describe reports the dense outputs the search sees."""
    enc = _encoder()
    x = torch.rand(2, 5, 8)
    mask = torch.tensor([[False] * 5, [False, False, False, True, True]])
    kwargs = {"src_key_padding_mask": mask}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch's prototype warning about nested tensors
        at_x = ri.invert(enc, "layers.0", x, init=x.clone(), steps=1, model_kwargs=kwargs, track_best=False,
                         clamp=False)
        assert at_x.history["data"][0].tolist() == [0.0, 0.0]
        assert at_x.metrics.embedding_distance.tolist() == [0.0, 0.0]
        desc = ri.describe(enc, x, model_kwargs=kwargs)
        res = ri.invert(enc, "layers.0", x, model_kwargs=kwargs, steps=100)
    assert desc["layers.0"].shape == (2, 5, 8)
    assert bool(res.metrics.represents.all())


def test_complex_outputs_keep_their_imaginary_part() -> None:
    """A layer with complex output: distances, the loss and the metrics use real and imaginary parts."""

    class Spectrum(nn.Module):
        """fft(lin(x)): complex, and invertible."""

        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.lin = nn.Linear(8, 8)
            self.fft = nn.Identity()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fft(torch.fft.fft(self.lin(x)))

    model, x = Spectrum().eval(), torch.rand(2, 8)
    moved = x.clone()
    moved[:, 0] += 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns when a cast drops an imaginary part
        m = ri.evaluate(model, "fft", x, moved)
        res = ri.invert(model, "fft", x)
    with torch.no_grad():
        expected = (model(x) - model(moved)).abs().pow(2).sum(1).sqrt().double()
    torch.testing.assert_close(m.embedding_distance, expected)
    assert float(res.metrics.relative_input_distance.max()) < 1e-2


def test_evaluate_and_reference_distance_refuse_a_reused_layer_without_call() -> None:
    """As invert does: a shared module's 'output' is ambiguous, so call= must say which."""
    from zoo import Shared

    model, x = Shared(), torch.randn(2, 4)
    with pytest.raises(ri.LayerCallError, match=r"ran 2 times .* pass call=0..1"):
        ri.evaluate(model, "lin", x, x)
    with pytest.raises(ri.LayerCallError, match=r"ran 2 times .* pass call=0..1"):
        ri.metrics.reference_distance(model, "lin", x)
    assert ri.evaluate(model, "lin", x, x, call=1).embedding_distance.tolist() == [0.0, 0.0]


def test_selectors_reach_named_fields() -> None:
    """NamedTuple fields, PackedSequence.data and torch.return_types fields, by name."""
    from collections import namedtuple

    from reprinvert._outputs import select_output

    pair = namedtuple("pair", "first second")
    t = torch.ones(2, 3)
    assert select_output(pair(t, None), "first") is t
    values = torch.max(torch.rand(3, 4), dim=1)
    assert select_output(values, "values") is values.values and select_output(values, 1) is values.indices
    packed = nn.utils.rnn.pack_padded_sequence(torch.rand(2, 3, 4), [3, 2], batch_first=True)
    assert select_output(packed, "data") is packed.data


def test_clear_errors_for_a_tuple_input_and_a_start_after_the_layer() -> None:
    from zoo import TokenModel

    with pytest.raises(TypeError, match=r"x is a tuple of 2 arguments.*model_kwargs=\{'name': value\}"):
        ri.invert(nn.Linear(2, 2), "", (torch.rand(1, 2), torch.rand(1, 2)))  # type: ignore[arg-type]
    with pytest.raises(ri.LayerCallError, match=r"start layer 'proj' ran 0 times .* did not run before layer 'embed'"):
        ri.invert(TokenModel(), "embed", torch.randint(0, 10, (2, 4)), start="proj", steps=2)


def test_a_long_plan_stopped_early_costs_what_ran() -> None:
    """steps=5_000_000 stopped by a callback after 3 steps: the history and the schedule grow with the steps that
    ran (a plan allocated up front would take 120 MB for the history alone). Measured in a fresh process."""
    import subprocess
    import sys

    code = (
        "import resource, torch, torch.nn as nn, reprinvert as ri\n"
        "m = nn.Sequential(nn.Linear(4, 4)); x = torch.rand(2, 4)\n"
        "ri.invert(m, '0', x, steps=3)\n"  # warm-up: imports, kernels, allocator
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "r = ri.invert(m, '0', x, steps=5_000_000, callback=lambda info: info.step >= 2)\n"
        "grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before\n"
        "print(r.steps_run, tuple(r.history.total.shape), tuple(r.history.lr.shape), grown)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[:4] == ["3", "(3,", "2)", "(3,)"]  # steps run, history (steps, batch), learning rates (steps,)
    assert int(out[4]) < 30 * 1024, f"peak memory grew by {int(out[4]) // 1024} MB"


def test_a_model_built_under_inference_mode_is_refused_and_left_as_it_was() -> None:
    import copy

    with torch.inference_mode():
        model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    flags = [p.requires_grad for p in model.parameters()]
    for call in (
        lambda: ri.invert(model, "0", torch.rand(2, 4), steps=2),
        lambda: ri.represent(model, "0", torch.rand(2, 4)),
        lambda: ri.describe(model, torch.rand(2, 4)),
    ):
        with pytest.raises(TypeError, match=r"inference tensors \(0.weight, 0.bias\).*copy.deepcopy\(model\)"):
            call()
    assert [p.requires_grad for p in model.parameters()] == flags
    assert ri.invert(copy.deepcopy(model), "0", torch.rand(2, 4), steps=2).steps_run == 2


def test_two_threads_on_two_models_that_share_a_backbone() -> None:
    """Each call locks every module of its model, so a shared submodule's flags are restored, not overwritten."""
    import threading

    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.1), nn.ReLU())
    models = [nn.Sequential(backbone, nn.Linear(8, k)).train() for k in (2, 3)]
    errors: list[BaseException] = []

    def work(model: nn.Module) -> None:
        try:
            for _ in range(15):
                ri.invert(model, "0", torch.rand(2, 8), steps=3)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work, args=(m,)) for m in models]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(m.training for m in backbone.modules()) and all(p.requires_grad for p in backbone.parameters())


def test_what_a_forward_registers_is_removed_and_lazy_models_are_refused() -> None:
    class Registers(nn.Module):
        """lin(x); registers a buffer on its first forward."""

        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if not hasattr(self, "seen"):
                self.register_buffer("seen", torch.ones(1))
            return self.lin(x)

    model = Registers()
    ri.describe(model, torch.rand(2, 4))
    ri.invert(model, "lin", torch.rand(2, 4), steps=2)
    assert list(model._buffers) == []
    lazy = nn.Sequential(nn.LazyLinear(4))
    with pytest.raises(TypeError, match=r"uninitialised \(lazy\) parameters \(0.weight, 0.bias\).*run model\(x\) once"):
        ri.describe(lazy, torch.rand(2, 3))
    assert isinstance(lazy[0].weight, nn.parameter.UninitializedParameter)


def test_a_broken_gradient_is_a_clear_error() -> None:
    """A dynamically quantized model breaks the autograd graph: a clear error, not torch's from autograd.grad; a
    layer inside a reentrant checkpoint is named as the cause."""
    from torch.utils.checkpoint import checkpoint

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch deprecates its quantized tensors
        quantized = torch.ao.quantization.quantize_dynamic(
            nn.Sequential(nn.Linear(4, 4), nn.ReLU()), {nn.Linear}, dtype=torch.qint8
        )
        with pytest.raises(ri.OutputSelectionError, match=r"layer '1' .* gradient does not reach the input.*quantiz"):
            ri.invert(quantized, "1", torch.rand(2, 4), steps=3)

    class ViaNumpy(nn.Module):
        """lin(a copy of x made through numpy): the output depends on a tensor outside the autograd graph."""

        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(torch.from_numpy(x.detach().numpy().copy()))

    for layer in ("lin", ""):
        with pytest.raises(ri.OutputSelectionError, match=r"not depend differentiably on the input|does not reach"):
            ri.invert(ViaNumpy(), layer, torch.rand(2, 4), steps=3)

    class Checkpointed(nn.Module):
        """b(checkpoint(a, x)) with the reentrant checkpoint."""

        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(checkpoint(self.a, x, use_reentrant=True))

    with pytest.raises(ri.OutputSelectionError, match=r"reentrant torch.utils.checkpoint.*use_reentrant=False"):
        ri.invert(Checkpointed(), "a", torch.rand(2, 4), steps=3)
    with pytest.raises(ri.OutputSelectionError, match=r"checkpoint with use_reentrant=True before layer 'b'"):
        ri.invert(Checkpointed(), "b", torch.rand(2, 4), steps=3)


@pytest.mark.parametrize("train", [False, True])
def test_model_randomness_comes_from_the_seed_and_no_stream_is_rewound(train: bool) -> None:
    """Dropout in train mode and a sampling forward draw from a stream seeded by ``seed``: the result does not
    depend on the global RNG, the global RNG is not advanced by the model, and draws that other code makes during
    the run (here a callback) are not rewound afterwards, so they never repeat."""
    torch.manual_seed(0)
    model = SamplingNet()
    x = torch.rand(2, 4)
    runs = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        before = torch.get_rng_state()
        runs.append(ri.invert(model, "dec", x, steps=6, seed=3, train=train, clamp=False))
        assert torch.equal(torch.get_rng_state(), before)  # the model's draws did not touch the global stream
    assert torch.equal(runs[0].input, runs[1].input)
    assert torch.equal(runs[0].metrics.embedding_distance, runs[1].metrics.embedding_distance)
    other = ri.invert(model, "dec", x, steps=6, seed=4, train=train, clamp=False)
    assert not torch.equal(other.input, runs[0].input)

    drawn: list[torch.Tensor] = []
    ri.invert(model, "dec", x, steps=5, seed=3, train=train, clamp=False,
              callback=lambda info: drawn.append(torch.rand(4)))
    drawn += [torch.rand(4) for _ in range(5)]  # the caller's next draws must be new numbers
    assert len({tuple(d.tolist()) for d in drawn}) == len(drawn)


class _Depth:
    """A user's depth counter: a pre-hook counts up, an ``always_call`` forward hook counts down."""

    def __init__(self) -> None:
        self.depth = 0
        self.entered = 0

    def pre(self, module: nn.Module, args: object) -> None:
        self.depth += 1
        self.entered += 1

    def post(self, module: nn.Module, args: object, output: object) -> None:
        self.depth -= 1


def test_always_call_hooks_still_balance_when_the_forward_is_cut_short() -> None:
    """The early stop skips the rest of the forward; a user's always_call hooks (module and global ones) still
    run for every module left unfinished, so counters that pair pre-hooks with them stay balanced."""
    from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

    torch.manual_seed(0)
    model = nn.Sequential(nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4)), nn.Linear(4, 2))
    x = torch.rand(3, 4)
    local = _Depth()
    handles = []
    for module in (model, model[0], model[0][0]):  # the root, an ancestor of the layer, and the layer itself
        handles.append(module.register_forward_pre_hook(local.pre))
        handles.append(module.register_forward_hook(local.post, always_call=True))
    try:
        ri.invert(model, "0.0", x, steps=3)
        ri.represent(model, "0.1", x)
        sw = ri.sweep(model, x, layers=["0.0", "0.2"], steps=2, batched=True)
        assert sw.provenance.options["batched"]
        with ri.capture(model, "0.0", stop=True):
            model(x)
        assert local.entered > 0 and local.depth == 0
        seen = _Depth()
        handles.append(register_module_forward_pre_hook(seen.pre))
        handles.append(register_module_forward_hook(seen.post, always_call=True))
        ri.invert(model, "0.0", x, steps=3)
        assert seen.entered > 0 and seen.depth == 0
    finally:
        for h in handles:
            h.remove()


def test_parameters_a_forward_writes_are_restored_or_named() -> None:
    """nn.Embedding(max_norm=...) rewrites its weight on every lookup and a train-mode forward may update a
    parameter: both come back as they were. A write reprinvert keeps no copy for is named in a warning."""
    torch.manual_seed(0)
    model = SelfUpdating()
    with torch.no_grad():
        model.emb.weight.mul_(3)  # rows longer than max_norm: the lookup renormalises them in place
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = torch.tensor([[1, 2, 3]])
    for train in (False, True):
        with warnings.catch_warnings():
            warnings.simplefilter("error", ri.ReprinvertWarning)
            ri.invert(model, "lin", ids, start="emb", steps=3, train=train)
            ri.represent(model, "lin", ids)
        after = model.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before), train

    class Writer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                self.lin.bias.add_(1.0)  # a write in eval mode that no module type announces
            return self.lin(x)

    with pytest.warns(ri.ReprinvertWarning, match=r"changed parameter\(s\) lin.bias .*copy.deepcopy"):
        ri.represent(Writer(), "lin", torch.rand(2, 3))


def test_clear_errors_for_checkpoints_transforms_threads_and_meta_tensors() -> None:
    """Each of these used to end in a raw torch error or a misleading one (or, for vmap, a silently wrong
    per-sample tensor from represent); each is now an error that names the cause and the way out."""
    torch.manual_seed(0)
    x = torch.rand(2, 4)
    with pytest.raises(ri.OutputSelectionError, match=r"start layer 'a' runs inside a torch.utils.checkpoint"):
        ri.invert(Checkpointed(), "c", x, start="a", steps=2)
    assert ri.invert(Checkpointed(), "b", x, steps=2).metrics.input_distance.shape == (2,)  # a layer inside is fine
    for call in (lambda m: ri.invert(m, "a", x, steps=2), lambda m: ri.represent(m, "a", x)):
        with pytest.raises(ri.OutputSelectionError, match=r"inside torch.vmap .* outside the transformed function"):
            call(Vmapped())
    with pytest.raises(ri.LayerCallError, match=r"ran only in another thread .* runs in the calling thread"):
        ri.invert(Threaded(), "a", x, steps=2)
    for model, names in ((MetaBuffer(), "shift"), (nn.Linear(4, 4).to("meta"), "weight, bias")):
        with pytest.raises(TypeError, match=rf"meta-device tensors \({names}\).*to_empty"):
            ri.invert(model, "a" if names == "shift" else "", x, steps=2)
        with pytest.raises(TypeError, match=r"meta-device tensors"):
            ri.describe(model, x)


def test_represent_reports_a_reused_module_by_default() -> None:
    """Without call=, represent runs the whole model, so a module that runs twice is an error, not silently call 0;
    with call= (or stop=True) it stops after the layer. An error after the layer does not matter."""

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.lin(torch.tanh(self.lin(x)))
            if x.shape[0] == 3:
                raise RuntimeError("a head that rejects this batch")
            return h

    torch.manual_seed(0)
    m, x = Twice(), torch.rand(2, 4)
    with pytest.raises(ri.LayerCallError, match=r"layer 'lin' \(Linear\) ran 2 times"):
        ri.represent(m, "lin", x)
    with torch.no_grad():
        assert torch.equal(ri.represent(m, "lin", x, call=1), m.lin(torch.tanh(m.lin(x))))
        assert torch.equal(ri.represent(m, "lin", x, stop=True), m.lin(x))
    assert ri.represent(m, "lin", torch.rand(3, 4), call=0).shape == (3, 4)
    with pytest.raises(ri.LayerCallError, match="ran 2 times"):
        ri.represent(m, "lin", torch.rand(3, 4))  # the downstream error does not hide the reuse


def test_keyword_tensors_the_model_writes_into_stay_the_callers() -> None:
    """A model that modifies a model_kwargs tensor in place: the caller's tensor is untouched, and every forward
    pass (every step) sees the values the caller passed, so the function being inverted does not drift."""

    class Masker(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
            scale.add_(1.0)  # hostile: writes into its argument
            return self.lin(x) * (scale - 1.0)

    torch.manual_seed(0)
    model, x = Masker(), torch.rand(2, 4)
    scale = torch.ones(4)
    res = ri.invert(model, "", x, steps=20, model_kwargs={"scale": scale}, clamp=False)
    assert torch.equal(scale, torch.ones(4))
    assert torch.allclose(res.target, model.lin(x).detach())
    plain = ri.invert(model.lin, "", x, steps=20, clamp=False)  # the same function, without the hostile write
    assert torch.equal(res.input, plain.input)


@pytest.mark.parametrize("train", [False, True])
def test_a_callback_draws_from_the_callers_stream_while_the_search_holds_the_models(train: bool) -> None:
    """The search holds the model's random stream for its whole loop; the caller's callback still draws from
    torch's global stream (the same numbers as without reprinvert around it), and its draws change nothing in the
    model's."""
    torch.manual_seed(0)
    model = SamplingNet()
    x = torch.rand(2, 4)
    quiet = ri.invert(model, "dec", x, steps=5, seed=3, train=train, clamp=False)
    torch.manual_seed(5)
    drawn: list[torch.Tensor] = []
    noisy = ri.invert(model, "dec", x, steps=5, seed=3, train=train, clamp=False,
                      callback=lambda info: drawn.append(torch.rand(4)))
    torch.manual_seed(5)
    assert all(torch.equal(d, torch.rand(4)) for d in drawn) and len(drawn) == 5
    assert torch.equal(noisy.input, quiet.input)
    assert torch.equal(noisy.metrics.embedding_distance, quiet.metrics.embedding_distance)
