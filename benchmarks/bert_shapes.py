"""Parameter names and shapes of bert-base-uncased (109,482,240 entries), without downloading it."""

from __future__ import annotations


def bert_base_shapes(
    layers: int = 12, hidden: int = 768, intermediate: int = 3072, vocab: int = 30522
) -> list[tuple[str, tuple[int, ...]]]:
    """``(name, shape)`` of every parameter of a BERT-base-shaped encoder with pooler, in model order."""
    h, i = hidden, intermediate
    out: list[tuple[str, tuple[int, ...]]] = [
        ("bert.embeddings.word_embeddings.weight", (vocab, h)),
        ("bert.embeddings.position_embeddings.weight", (512, h)),
        ("bert.embeddings.token_type_embeddings.weight", (2, h)),
        ("bert.embeddings.LayerNorm.weight", (h,)),
        ("bert.embeddings.LayerNorm.bias", (h,)),
    ]
    for n in range(layers):
        p = f"bert.encoder.layer.{n}"
        for name in ("query", "key", "value"):
            out += [(f"{p}.attention.self.{name}.weight", (h, h)), (f"{p}.attention.self.{name}.bias", (h,))]
        out += [
            (f"{p}.attention.output.dense.weight", (h, h)),
            (f"{p}.attention.output.dense.bias", (h,)),
            (f"{p}.attention.output.LayerNorm.weight", (h,)),
            (f"{p}.attention.output.LayerNorm.bias", (h,)),
            (f"{p}.intermediate.dense.weight", (i, h)),
            (f"{p}.intermediate.dense.bias", (i,)),
            (f"{p}.output.dense.weight", (h, i)),
            (f"{p}.output.dense.bias", (h,)),
            (f"{p}.output.LayerNorm.weight", (h,)),
            (f"{p}.output.LayerNorm.bias", (h,)),
        ]
    out += [("bert.pooler.dense.weight", (h, h)), ("bert.pooler.dense.bias", (h,))]
    return out
