"""Issue 6: bad inputs, each refused with a message that names the argument, the value received and the fix.

Every row is ``(id, call, exception type, pattern)``; the pattern covers the three parts of the message. After
every refusal the model, the input and every hook dictionary are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import reprinvert as ri

from reliability_support import LEDGER
from untouched import State
from zoo import Argmax, Detaches, DictNet, LSTMNet, ScriptedChild, SharedNet, Skips, SmallCNN, TokenModel, mlp

M = SmallCNN
X = (2, 3, 8, 8)


def _x() -> torch.Tensor:
    return torch.rand(*X)


def _nan() -> torch.Tensor:
    x = _x()
    x[0, 0, 0, 0] = float("nan")
    return x


def _inf() -> torch.Tensor:
    x = _x()
    x[1, 2, 3, 4] = float("-inf")
    return x


# (id, model factory, input factory, call(model, x), exception, pattern: argument + value + fix)
Case = tuple[str, Callable[[], nn.Module], Callable[[], Any], Callable[[nn.Module, Any], Any], type, str]
CASES: list[Case] = [
    ("layer-unknown", M, _x, lambda m, x: ri.invert(m, "conv", x), ri.LayerNotFoundError,
     r"layer='conv' is not a layer of SmallCNN; closest: .*'conv1'.*see reprinvert.list_layers\(model\)"),
    ("layer-float", M, _x, lambda m, x: ri.invert(m, 1.5, x), TypeError,
     r"layer must be a str, int or nn.Module, got float: 1.5; see reprinvert.list_layers"),
    ("layer-none", M, _x, lambda m, x: ri.invert(m, None, x), TypeError,
     r"layer must be a str, int or nn.Module, got NoneType: None; see reprinvert.list_layers"),
    ("layer-bool", M, _x, lambda m, x: ri.invert(m, True, x), TypeError,
     r"layer must be a str, int or nn.Module, got the bool True"),
    ("layer-index", M, _x, lambda m, x: ri.invert(m, 9, x), ri.LayerNotFoundError,
     r"layer=9: index out of range .* \(valid: -6..5\); use a dotted name from reprinvert.list_layers"),
    ("layer-foreign-module", M, _x, lambda m, x: ri.invert(m, nn.ReLU(), x), ri.LayerNotFoundError,
     r"layer: the module ReLU passed as layer is not a submodule .* reprinvert.list_layers"),
    ("layers-type", M, _x, lambda m, x: ri.capture(m, 2.5).__enter__(), TypeError,
     r"layers must be a layer \(str, int or nn.Module\) or a list of them, got float: 2.5; see reprinvert"),
    ("layers-empty", M, _x, lambda m, x: ri.capture(m, []).__enter__(), ValueError,
     r"layers is empty; pass at least one layer name \(see reprinvert.list_layers"),
    ("start-unknown", M, _x, lambda m, x: ri.invert(m, "conv2", x, start="stem"), ri.LayerNotFoundError,
     r"start='stem' is not a layer of SmallCNN; .*see reprinvert.list_layers"),
    ("start-never-runs-first", M, _x, lambda m, x: ri.invert(m, "conv1", x, start="head"), ri.LayerCallError,
     r"start layer 'head' ran 0 times in one forward pass; a start layer must run exactly once"),
    ("layer-never-ran", Skips, lambda: torch.rand(2, 3), lambda m, x: ri.invert(m, "b", x), ri.LayerCallError,
     r"layer 'b' \(Linear\) never ran during the forward pass; check .*reprinvert.describe\(model, x\)"),
    ("layer-ran-twice", SharedNet, lambda: torch.rand(2, 4), lambda m, x: ri.invert(m, "lin", x),
     ri.LayerCallError, r"layer 'lin' \(Linear\) ran 2 times in one forward pass .* pass call=0..1"),
    ("call-too-large", SharedNet, lambda: torch.rand(2, 4), lambda m, x: ri.invert(m, "lin", x, call=5),
     ri.LayerCallError, r"layer 'lin' ran 2 time\(s\), but call=5 was requested \(calls count from 0\)"),
    ("call-negative", M, _x, lambda m, x: ri.invert(m, "conv1", x, call=-1), ValueError,
     r"call=-1 for layer 'conv1': expected a non-negative int \(0 = first call\)"),
    ("call-str", M, _x, lambda m, x: ri.invert(m, "conv1", x, call="first"), ValueError,
     r"call='first' for layer 'conv1': expected a non-negative int"),
    ("select-missing", DictNet, lambda: torch.rand(2, 4), lambda m, x: ri.invert(m, "block", x, select="feats"),
     ri.OutputSelectionError, r"select='feats' does not lead to a tensor in the output of layer 'block', which "
     r"is dict\('feat': Tensor\[2, 6\], 'aux': None, 'scale': Tensor\[2\]\)"),
    ("select-needed", LSTMNet, lambda: torch.rand(2, 4, 3), lambda m, x: ri.invert(m, "lstm", x),
     ri.OutputSelectionError, r"layer 'lstm' returned tuple\(.*\) with 3 tensors; say which one to use, "
     r"e.g. select=0, select=\(1, 0\)"),
    ("select-not-tensor", DictNet, lambda: torch.rand(2, 4), lambda m, x: ri.invert(m, "block", x, select="aux"),
     ri.OutputSelectionError, r"select='aux' gave None for layer 'block', not a tensor; the output is dict"),
    ("layer-detached", Detaches, lambda: torch.rand(2, 3), lambda m, x: ri.invert(m, "b", x, steps=2),
     ri.OutputSelectionError, r"layer 'b' returned a tensor that does not depend differentiably on the input "
     r"\(the model detaches it .*\).*choose an earlier layer"),
    ("layer-integer-output", Argmax, lambda: torch.rand(2, 3), lambda m, x: ri.invert(m, "", x, steps=2),
     ri.OutputSelectionError, r"layer '' returned a tensor .* \(its dtype is torch.int64\).*choose an earlier"),
    ("x-list", M, lambda: [[0.5]], lambda m, x: ri.invert(m, "conv1", x), TypeError,
     r"x must be a torch.Tensor, got list; convert with torch.as_tensor\(x\)"),
    ("x-numpy", M, lambda: _x().numpy(), lambda m, x: ri.invert(m, "conv1", x), TypeError,
     r"x must be a torch.Tensor, got ndarray; convert with torch.as_tensor\(x\)"),
    ("x-empty-batch", M, lambda: torch.rand(0, 3, 8, 8), lambda m, x: ri.invert(m, "conv1", x), ValueError,
     r"x has shape \(0, 3, 8, 8\): an empty batch; pass at least one sample, batch first"),
    ("x-scalar", M, lambda: torch.tensor(0.5), lambda m, x: ri.invert(m, "conv1", x), ValueError,
     r"x has shape \(\): an empty batch; pass at least one sample, batch first, e.g. \(1, C, H, W\)"),
    ("x-int64", TokenModel, lambda: torch.randint(0, 20, (2, 5)), lambda m, x: ri.invert(m, "act", x), TypeError,
     r"x has dtype torch.int64, which cannot be optimised .* pass start=<name of the embedding layer>"),
    ("x-uint8", M, lambda: (_x() * 255).to(torch.uint8), lambda m, x: ri.invert(m, "conv1", x), TypeError,
     r"x has dtype torch.uint8, which cannot be optimised .* x.float\(\) / 255 for uint8 images"),
    ("x-bool", M, lambda: _x() > 0.5, lambda m, x: ri.invert(m, "conv1", x), TypeError,
     r"x has dtype torch.bool, which cannot be optimised .* convert images with x.float\(\)"),
    ("x-complex", M, lambda: torch.rand(*X, dtype=torch.complex64), lambda m, x: ri.invert(m, "conv1", x),
     TypeError, r"x has dtype torch.complex64; complex inputs are not supported"),
    ("x-nan", M, _nan, lambda m, x: ri.invert(m, "conv1", x), ValueError,
     r"x contains NaN or Inf values; .* Clean the input first \(e.g. torch.nan_to_num\(x\)\)"),
    ("x-inf", M, _inf, lambda m, x: ri.invert(m, "conv1", x), ValueError,
     r"x contains NaN or Inf values; .*torch.nan_to_num"),
    ("x-sparse", M, lambda: _x().to_sparse(), lambda m, x: ri.invert(m, "conv1", x), TypeError,
     r"x has layout torch.sparse_coo; reprinvert needs a dense tensor: pass x.to_dense\(\)"),
    ("x-meta", M, lambda: _x().to("meta"), lambda m, x: ri.invert(m, "conv1", x), ValueError,
     r"x is on the meta device, which holds shapes but no values; pass a tensor with data"),
    ("model-on-meta", lambda: nn.Linear(3, 3, device="meta"), lambda: torch.rand(2, 3),
     lambda m, x: ri.invert(m, "", x), TypeError,
     r"the model holds meta-device tensors \(weight, bias\): .* materialise the model first"),
    ("model-function", M, _x, lambda m, x: ri.invert(lambda t: t, "conv1", x), TypeError,
     r"model must be a torch.nn.Module, got function; wrap plain functions in an nn.Module"),
    ("model-scripted", lambda: torch.jit.script(mlp()), lambda: torch.rand(2, 6),
     lambda m, x: ri.invert(m, "0", x), TypeError,
     r"model is a TorchScript module \(RecursiveScriptModule\); .* Pass the original nn.Module instead"),
    ("layer-scripted", ScriptedChild, lambda: torch.rand(2, 3), lambda m, x: ri.represent(m, "inner", x),
     TypeError, r"layer='inner' is a TorchScript module \(RecursiveScriptModule\).*without torch.jit.script"),
    ("model-kwargs-list", M, _x, lambda m, x: ri.invert(m, "conv1", x, model_kwargs=["mask"]), TypeError,
     r"model_kwargs must be a dict of keyword arguments .* got list: \['mask'\]; e.g. model_kwargs=\{'mask'"),
    ("steps-zero", M, _x, lambda m, x: ri.invert(m, "conv1", x, steps=0), ValueError,
     r"steps=0: expected a positive int \(the number of optimisation steps\)"),
    ("steps-float", M, _x, lambda m, x: ri.invert(m, "conv1", x, steps=2.5), ValueError,
     r"steps=2.5: expected a positive int"),
    ("steps-bool", M, _x, lambda m, x: ri.invert(m, "conv1", x, steps=True), ValueError,
     r"steps=True: expected a positive int"),
    ("lr-negative", M, _x, lambda m, x: ri.invert(m, "conv1", x, lr=-1.0), ValueError,
     r"lr=-1.0: expected a positive learning rate"),
    ("optimizer-unknown", M, _x, lambda m, x: ri.invert(m, "conv1", x, optimizer="sgdd"), ValueError,
     r"optimizer='sgdd': expected one of \('gd', 'sgd', 'adam', 'lbfgs'\)"),
    ("loss-unknown", M, _x, lambda m, x: ri.invert(m, "conv1", x, loss="l3"), ValueError,
     r"loss='l3': expected one of"),
    ("init-unknown", M, _x, lambda m, x: ri.invert(m, "conv1", x, init="ones"), ValueError,
     r"init='ones': expected one of \('seed', 'grey', 'zeros', 'uniform', 'normal'\)"),
    ("init-type", M, _x, lambda m, x: ri.invert(m, "conv1", x, init=3), TypeError,
     r"init must be 'seed', 'grey', 'zeros', 'uniform', 'normal' or a tensor of the input's shape, got int: 3"),
    ("init-shape", M, _x, lambda m, x: ri.invert(m, "conv1", x, init=torch.zeros(1, 3)), ValueError,
     r"init has shape \(1, 3\), but the optimised tensor has shape \(2, 3, 8, 8\); pass a tensor of that shape"),
    ("clamp-reversed", M, _x, lambda m, x: ri.invert(m, "conv1", x, clamp=(1.0, 0.0)), ValueError,
     r"clamp=\(1.0, 0.0\): expected None or a pair \(low, high\) with low < high"),
    ("recipe-unknown", M, _x, lambda m, x: ri.invert(m, "conv1", x, recipe="fast"), ValueError,
     r"recipe='fast' is unknown; available recipes: \['badger', 'default', 'mahendran-vedaldi'\]"),
    ("regularizers-type", M, _x, lambda m, x: ri.invert(m, "conv1", x, regularizers=[3]), ValueError,
     r"regularizers=\(3,\): expected a tuple of reprinvert.regularizers.Regularizer objects"),
    ("seed-str", M, _x, lambda m, x: ri.invert(m, "conv1", x, seed="zero"), TypeError,
     r"seed must be an int or None, got 'zero' \(str\)"),
    ("seed-and-generator", M, _x, lambda m, x: ri.invert(m, "conv1", x, seed=1, generator=torch.Generator()),
     ValueError, r"seed=1 and generator=.* were both given; pass only one of them"),
    ("generator-type", M, _x, lambda m, x: ri.invert(m, "conv1", x, generator=3), TypeError,
     r"generator must be a torch.Generator or None, got int: 3; or pass seed=<int>"),
    ("callback-type", M, _x, lambda m, x: ri.invert(m, "conv1", x, callback=3), TypeError,
     r"callback must be callable \(StepInfo -> bool \| None\), got int"),
    ("sigma-negative", M, _x, lambda m, x: ri.invert(m, "conv1", x, sigma=-1), ValueError,
     r"sigma=-1: expected a non-negative standard deviation \(default 1/25\)"),
    ("sigma-nan", M, _x, lambda m, x: ri.invert(m, "conv1", x, sigma=float("nan")), ValueError,
     r"sigma=nan: expected a non-negative standard deviation"),
    ("data-range-zero", M, _x, lambda m, x: ri.invert(m, "conv1", x, data_range=0), ValueError,
     r"data_range=0: expected a positive number \(1.0 for images in \[0, 1\]\)"),
    ("train-str", M, _x, lambda m, x: ri.invert(m, "conv1", x, train="no"), TypeError,
     r"train must be True or False, got str: 'no'"),
    ("track-best-str", M, _x, lambda m, x: ri.invert(m, "conv1", x, track_best="yes"), TypeError,
     r"track_best must be True or False, got str: 'yes'"),
    ("evaluate-shape", M, _x, lambda m, x: ri.evaluate(m, "conv1", x, x[:1]), ValueError,
     r"x_g and x must have the same shape, got \(1, 3, 8, 8\) and \(2, 3, 8, 8\)"),
    ("nearest-metric", M, _x, lambda m, x: ri.nearest_tokens(torch.eye(4, 3), torch.zeros(2, 3), metric="dot"),
     ValueError, r"metric='dot': expected 'l2' or 'cosine'"),
]


def test_at_least_25_distinct_bad_inputs() -> None:
    ids = [c[0] for c in CASES]
    assert len(set(ids)) == len(ids) >= 25


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_with_a_clear_message(case: Case) -> None:
    name, make_model, make_x, call, exc, pattern = case
    torch.manual_seed(0)
    model = make_model()
    x = make_x()
    tensors = [x] if isinstance(x, torch.Tensor) and x.layout == torch.strided and not x.is_meta else []
    on_meta = any(p.is_meta for p in model.parameters())
    state = None if isinstance(model, torch.jit.ScriptModule) or on_meta else State.of(model, *tensors)
    with pytest.raises(exc, match=pattern):
        call(model, x)
    LEDGER.bad_inputs.add(name)
    if state is not None:
        state.check(model)
