"""ri.spectrum: singular values of a layer's Jacobian by Lanczos on J^T J, checked against known answers in
float64 (and against a dense SVD on small cases; the library never forms the dense Jacobian)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import reprinvert as ri


def _orthogonal(n: int, seed: int = 0) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)))
    return q


def test_an_orthogonal_layer_has_all_singular_values_one() -> None:
    layer = nn.Linear(16, 16, bias=False).double()
    layer.weight.data = _orthogonal(16)
    s = ri.spectrum(layer, "", torch.rand(3, 16, dtype=torch.float64), k=4)
    assert torch.allclose(s.top, torch.ones(3, 4, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(s.bottom, torch.ones(3, 4, dtype=torch.float64), atol=1e-10)
    assert s.blind.tolist() == [0, 0, 0] and torch.allclose(s.condition, torch.ones(3, dtype=torch.float64))


def test_a_linear_layer_from_n_to_m_has_n_minus_m_blind_directions() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(12, 8).double()
    s = ri.spectrum(layer, "", torch.rand(2, 12, dtype=torch.float64), k=6)
    assert s.blind.tolist() == [4, 4] and not s.blind_at_least.any()
    assert s.input_size == 12 and s.output_size == 8
    dense = torch.linalg.svdvals(layer.weight.detach())  # the Jacobian of a linear layer is its weight
    assert torch.allclose(s.top[0], dense[:6], rtol=1e-10)
    assert torch.allclose(s.bottom[0, 4:], dense.flip(0)[:2], rtol=1e-10)
    assert bool(torch.isinf(s.condition).all()) or float(s.condition.min()) > 1e6


def test_an_invertible_linear_net_amplifies_by_one_over_its_smallest_singular_value() -> None:
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(10, 10), nn.Linear(10, 10)).double()
    s = ri.spectrum(net, "1", torch.rand(1, 10, dtype=torch.float64), k=3)
    w = net[1].weight.detach() @ net[0].weight.detach()
    dense = torch.linalg.svdvals(w)
    assert float(s.bottom[0, 0]) == pytest.approx(float(dense[-1]), rel=1e-9)
    assert float(s.condition[0]) == pytest.approx(float(dense[0] / dense[-1]), rel=1e-9)
    # amplification: the worst input error per unit of representation error is 1 / sigma_min
    v = torch.linalg.svd(w).Vh[-1]
    assert float(w.matmul(v).norm()) == pytest.approx(float(s.bottom[0, 0]), rel=1e-9)


def test_a_relu_layer_sees_only_through_its_active_units() -> None:
    """Linear(8 -> 6) then ReLU at an input where only some units are active: the Jacobian's rank is the number
    of active units, so 8 - active input directions are blind."""
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(8, 6), nn.ReLU()).double()
    x = torch.rand(1, 8, dtype=torch.float64)
    active = int((net[0](x) > 0).sum())
    assert 0 < active < 6
    s = ri.spectrum(net, "1", x, k=7)
    assert int(s.blind[0]) == 8 - active


def test_spectrum_leaves_model_and_input_alone_and_checks_arguments() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()).train()
    x = torch.rand(2, 3, 6, 6)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    s = ri.spectrum(model, "2", x, k=3, normalize="imagenet")  # on a float64 copy of the model
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert next(model.parameters()).dtype == torch.float32
    assert s.top.shape == (2, 3) and s.tolerance == 1e-6
    # the blind directions of BatchNorm + ReLU: one per inactive unit's receptive field at most; never negative
    assert (s.bottom >= 0).all() and (s.top[:, 0] > 0).all()
    with pytest.raises(ValueError, match=r"k=200: expected an int from 1 to 108"):
        ri.spectrum(model, "2", x, k=200)
    with pytest.raises(ValueError, match=r"tolerance=2: expected a number in \(0, 1\)"):
        ri.spectrum(model, "2", x, tolerance=2)


def test_a_sweep_can_add_the_spectrum_to_each_row(tmp_path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 12)).double()
    x = torch.rand(2, 12, dtype=torch.float64)
    result = ri.sweep(model, x, layers=["0", "2"], steps=3, progress=False, spectrum=4)
    assert [r.blind for r in result.rows] == [4.0, 4.0]  # 12 inputs seen through 8 units
    assert result.provenance.options["spectrum"] == 4
    assert "blind dirs" in ri.report.html_page(result)
    plain = ri.sweep(model, x, layers=["0"], steps=3, progress=False)
    assert plain.rows[0].blind is None and "blind dirs" not in ri.report.html_page(plain)
    back = ri.load(result.save(tmp_path / "s"))
    assert [r.blind for r in back.rows] == [4.0, 4.0]
    with pytest.raises(ValueError, match=r"spectrum=0: expected True / False or the number"):
        ri.sweep(model, x, layers=["0"], steps=1, progress=False, spectrum=0)


def test_many_blind_directions_are_counted_up_to_k_and_flagged() -> None:
    """Linear 30 -> 5 has 25 blind directions, a repeated singular value 0 that a one-vector Lanczos method
    cannot count: the block iterations find k of them and say there may be more."""
    torch.manual_seed(0)
    s = ri.spectrum(nn.Linear(30, 5).double(), "", torch.rand(1, 30, dtype=torch.float64), k=6)
    assert int(s.blind[0]) == 6 and bool(s.blind_at_least[0])
    assert torch.allclose(s.bottom, torch.zeros(1, 6, dtype=torch.float64), atol=1e-7)


def test_unconverged_values_are_reported_as_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    """With too few iterations the result says so: `converged` is False, and the values are Rayleigh-Ritz bounds
    of the dense SVD's (largest from below, smallest from above). On a real network (EfficientNet-Lite0's first
    block at 32 px, condition number about 8e6) the small end stops like this within the iteration budget."""
    import importlib

    spectrum_module = importlib.import_module("reprinvert._spectrum")  # the module (ri.spectrum is the function)

    u = _orthogonal(40, seed=1)
    v = _orthogonal(40, seed=2)
    values = torch.logspace(0, -2, 40, dtype=torch.float64)  # condition number 100
    layer = nn.Linear(40, 40, bias=False).double()
    layer.weight.data = u @ torch.diag(values) @ v.T
    monkeypatch.setattr(spectrum_module, "_MAXITER", 2)
    with pytest.warns(ri.ReprinvertWarning, match=r"top` are lower bounds and `bottom` upper bounds"):
        s = ri.spectrum(layer, "", torch.rand(1, 40, dtype=torch.float64), k=3)
    assert not bool(s.converged[0]) and bool(s.blind_at_least[0])
    assert (s.top[0] <= values[:3] * (1 + 1e-9)).all()
    assert (s.bottom[0] >= values.flip(0)[:3] * (1 - 1e-9)).all()
    monkeypatch.setattr(spectrum_module, "_MAXITER", 1000)
    full = ri.spectrum(layer, "", torch.rand(1, 40, dtype=torch.float64), k=3)
    assert bool(full.converged[0]) and torch.allclose(full.bottom[0], values.flip(0)[:3], rtol=1e-6)


def _bert() -> nn.Module:
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    return transformers.BertModel(transformers.BertConfig(vocab_size=300, hidden_size=32, num_hidden_layers=2,
                                                          num_attention_heads=4, intermediate_size=64)).eval()


def test_a_token_model_s_spectrum_sets_its_layernorm_invariances_apart() -> None:
    """With start= the Jacobian is taken at the embedding's output (x: token ids). BERT's embedding LayerNorm
    ignores 2 directions a position (a shift along all-ones and a scaling of its input): without setting them
    apart all k smallest values are 0 and say nothing of the layer; set apart (each verified by J v = 0) they are
    counted in `invariant`, and the layer's own directions are all seen."""
    model = _bert()
    ids = torch.randint(0, 300, (2, 5), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    kept = ids.clone()
    plain = ri.spectrum(model, "encoder.layer.0", ids, start="embeddings.word_embeddings", invariances=False,
                        model_kwargs={"attention_mask": mask})
    assert plain.blind.tolist() == [6, 6] and plain.blind_at_least.all() and plain.invariant.tolist() == [0, 0]
    s = ri.spectrum(model, "encoder.layer.0", ids, start="embeddings.word_embeddings",
                    model_kwargs={"attention_mask": mask})
    assert torch.equal(ids, kept)
    assert s.input_size == 5 * 32 and s.invariant.tolist() == [10, 10]
    assert s.blind.tolist() == [0, 0] and s.converged.all() and (s.bottom > 1e-3 * s.top[:, :1]).all()
    assert len(s.invariances) == 1 and "'embeddings.LayerNorm': 10 directions over 5 positions" in s.invariances[0]
    assert s.summary[0].startswith("0 blind directions besides 10 of known invariances")


def test_a_direction_set_apart_is_one_the_layer_ignores() -> None:
    """A LayerNorm straight on the input: its 2 invariances per row are found (with eps=1e-12, as BERT's; torch's
    default eps=1e-5 makes the scaling only nearly ignored, a singular value about eps / variance of the largest,
    so only the shift is set apart); a linear layer before it (its input is then no longer x) leaves nothing to set
    apart that is not verified."""
    x = torch.rand(1, 3, 8, dtype=torch.float64)
    s = ri.spectrum(nn.Sequential(nn.LayerNorm(8, eps=1e-12), nn.Linear(8, 8)).double(), "1", x, k=3)
    assert s.invariant.tolist() == [6] and s.blind.tolist() == [0]
    assert ri.spectrum(nn.Sequential(nn.LayerNorm(8), nn.Linear(8, 8)).double(), "1", x, k=3).invariant.tolist() == [3]
    torch.manual_seed(0)
    mixed = nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8)).double()
    t = ri.spectrum(mixed, "1", x, k=3)
    assert t.invariant.tolist() == [0] and int(t.blind[0]) == 3 and bool(t.blind_at_least[0])


def test_token_ids_without_start_are_told_to_pass_it() -> None:
    with pytest.raises(TypeError, match="start=<the embedding layer>"):
        ri.spectrum(nn.Sequential(nn.Embedding(10, 4)), "0", torch.tensor([[1, 2]]))


def test_an_unconverged_spectrum_says_so_instead_of_a_count(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    import importlib

    spectrum_module = importlib.import_module("reprinvert._spectrum")
    u, v = _orthogonal(40, seed=1), _orthogonal(40, seed=2)
    layer = nn.Linear(40, 40, bias=False).double()
    layer.weight.data = u @ torch.diag(torch.logspace(0, -2, 40, dtype=torch.float64)) @ v.T
    monkeypatch.setattr(spectrum_module, "_MAXITER", 2)
    with pytest.warns(ri.ReprinvertWarning):
        s = ri.spectrum(layer, "", torch.rand(1, 40, dtype=torch.float64), k=3)
    assert s.summary[0].startswith("not converged: no count of blind directions")
    model = nn.Sequential(layer)
    with pytest.warns(ri.ReprinvertWarning):
        swept = ri.sweep(model, torch.rand(1, 40, dtype=torch.float64), layers=["0"], steps=2, spectrum=3,
                         progress=False)
    assert swept.rows[0].blind is not None and swept.rows[0].blind != swept.rows[0].blind  # NaN: no count
    assert "not converged" in ri.report.html_page(swept)


def test_a_sweep_row_counts_known_invariances_among_the_blind_directions() -> None:
    """A LayerNorm first: its shift direction is set apart by the spectrum, and still counted in the sweep's row
    (the layer cannot see it), so a witness along it is one the spectrum agrees with."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.LayerNorm(8), nn.Linear(8, 8)).double()
    x = torch.rand(2, 8, dtype=torch.float64)
    s = ri.spectrum(model, "1", x, k=3)
    assert s.invariant.tolist() == [1, 1] and s.blind.tolist() == [0, 0]
    swept = ri.sweep(model, x, layers=["1"], steps=2, spectrum=3, progress=False)
    assert swept.rows[0].blind == 1.0


def test_a_small_layer_s_whole_spectrum_is_k_equal_to_the_input_size() -> None:
    """k may be the input's size: every singular value (against a dense SVD, float64)."""
    torch.manual_seed(0)
    layer = nn.Linear(4, 3).double()
    s = ri.spectrum(layer, "", torch.rand(1, 4, dtype=torch.float64), k=4)
    values = torch.cat([torch.linalg.svdvals(layer.weight.detach()), torch.zeros(1, dtype=torch.float64)])
    torch.testing.assert_close(s.top[0], values, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(s.bottom[0], values.flip(0), rtol=1e-9, atol=1e-12)
    assert s.blind.tolist() == [1] and s.converged.all()
    with pytest.raises(ValueError, match=r"k=5: expected an int from 1 to 4"):
        ri.spectrum(layer, "", torch.rand(1, 4, dtype=torch.float64), k=5)
