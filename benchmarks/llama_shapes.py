"""Parameter names and shapes of a LLaMA-3.2-1B-shaped decoder (1,235,814,400 entries), without downloading it.

Defaults are LLaMA-3.2-1B's: 16 layers, hidden 2048, intermediate 8192, 32 attention heads and
8 key/value heads of dim 64, vocabulary 128,256, input embedding tied to the output head (so there
is no separate ``lm_head.weight``). Names and order follow Hugging Face ``LlamaForCausalLM``.
"""

from __future__ import annotations

__all__ = ["llama_shapes", "LLAMA_3_2_1B_ENTRIES"]

#: Entries of every parameter of :func:`llama_shapes` with its defaults (tied embedding counted once).
LLAMA_3_2_1B_ENTRIES = 1_235_814_400


def llama_shapes(
    layers: int = 16,
    hidden: int = 2048,
    intermediate: int = 8192,
    heads: int = 32,
    kv_heads: int = 8,
    head_dim: int = 64,
    vocab: int = 128_256,
) -> list[tuple[str, tuple[int, ...]]]:
    """``(name, shape)`` of every parameter of a LLaMA-shaped causal LM with tied embeddings, in model order.

    Per layer: ``self_attn.{q,k,v,o}_proj.weight`` (q/o: ``(heads*head_dim, hidden)`` and its
    transpose, k/v: ``(kv_heads*head_dim, hidden)``), ``mlp.{gate,up,down}_proj.weight``
    (``(intermediate, hidden)``, ``(intermediate, hidden)``, ``(hidden, intermediate)``),
    ``input_layernorm.weight`` and ``post_attention_layernorm.weight`` (``(hidden,)``); then
    ``model.norm.weight``. No biases (LLaMA has none).
    """
    h, q, kv = hidden, heads * head_dim, kv_heads * head_dim
    out: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (vocab, h))]
    for n in range(layers):
        p = f"model.layers.{n}"
        out += [
            (f"{p}.self_attn.q_proj.weight", (q, h)),
            (f"{p}.self_attn.k_proj.weight", (kv, h)),
            (f"{p}.self_attn.v_proj.weight", (kv, h)),
            (f"{p}.self_attn.o_proj.weight", (h, q)),
            (f"{p}.mlp.gate_proj.weight", (intermediate, h)),
            (f"{p}.mlp.up_proj.weight", (intermediate, h)),
            (f"{p}.mlp.down_proj.weight", (h, intermediate)),
            (f"{p}.input_layernorm.weight", (h,)),
            (f"{p}.post_attention_layernorm.weight", (h,)),
        ]
    out.append(("model.norm.weight", (h,)))
    return out
