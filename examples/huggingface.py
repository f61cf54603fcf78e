"""Hugging Face transformers built from configs: a GPT-2 inverted in embedding space and a ViT on photos.

    python examples/huggingface.py            # the default's 500 steps per layer (a few CPU minutes)
    python examples/huggingface.py --smoke    # 20 steps (seconds)

Needs the ``zoo`` extra (``pip install torch==2.13.0 -e '.[zoo]'``). The models have random weights (nothing is
downloaded): the script shows the mechanics on real architectures. For a trained model, load it from a local
folder with ``from_pretrained(path)``. Token ids cannot be optimised, so the GPT-2 search starts at the word
embeddings (``start="wte"``) and maps its result back to ids with ``nearest_tokens``. Writes
``<out>/huggingface.png`` (the ViT's grid) and prints both tables.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import transformers

import reprinvert as ri


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (used by the test suite)")
    parser.add_argument("--out", default="examples-output", help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)
    steps = 20 if args.smoke else None  # None: the default recipe's 500
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)

    # GPT-2: invert each block in the space of the word embeddings.
    gpt2 = transformers.GPT2Model(transformers.GPT2Config(n_layer=4, n_embd=64, n_head=4)).eval()
    ids = torch.tensor([[464, 2068, 7586, 21831, 18045], [1212, 318, 257, 1332, 13]])
    tokens = ri.sweep(gpt2, ids, start="wte", steps=steps)
    print(tokens)
    for name, reason in tokens.provenance.skipped_layers:
        print(f"  skipped {name}: {reason}")
    recovered = ri.nearest_tokens(gpt2.wte, tokens[-1].input)
    print(f"ids recovered from the last layer ({tokens.layers[-1]}): {(recovered == ids).float().mean():.0%}")

    # ViT: the model expects (x - 0.5) / 0.5; the photos stay in [0, 1].
    vit = transformers.ViTModel(transformers.ViTConfig(
        image_size=32, patch_size=4, hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128,
    )).eval()
    x = ri.data.sample_images(size=32)[:2]
    images = ri.sweep(vit, x, steps=steps, normalize="inception")
    print(images)

    path = ri.report.save_grid(images, Path(args.out) / "huggingface.png")
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
