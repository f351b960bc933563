"""Layer x component of a base-model parameter name.

Parameter names are parsed into ``(layer, component)`` for BERT, RoBERTa, DistilBERT, GPT-2 and
LLaMA-style models (Mistral, Qwen, ... share LLaMA's names). ``layer`` is the block number as a
string (``"0"``, ``"1"``, ...) or ``"-"`` for parameters outside the blocks. Components, by role:

====================  ==========================  ====================  ===========  =================================
component             BERT / RoBERTa              DistilBERT            GPT-2        LLaMA
====================  ==========================  ====================  ===========  =================================
embeddings            embeddings.*_embeddings     embeddings.*          wte, wpe     embed_tokens
embeddings LayerNorm  embeddings.LayerNorm        embeddings.LayerNorm  -            -
query / key / value   attention.self.query/...    attention.q_lin/...   -            self_attn.q_proj/k_proj/v_proj
attention qkv         -                           -                     attn.c_attn  (fused qkv_proj, query_key_value)
attention output      attention.output.dense      attention.out_lin     attn.c_proj  self_attn.o_proj
attention LayerNorm   attention.output.LayerNorm  sa_layer_norm         ln_1         input_layernorm
gate                  -                           -                     -            mlp.gate_proj
intermediate          intermediate.dense          ffn.lin1              mlp.c_fc     mlp.up_proj
output                output.dense                ffn.lin2              mlp.c_proj   mlp.down_proj
MLP LayerNorm         output.LayerNorm            output_layer_norm     ln_2         post_attention_layernorm
final LayerNorm       -                           -                     ln_f         norm
pooler                pooler.*                    -                     -            -
head                  cls.*, lm_head.*,           vocab_*, classifier   lm_head      lm_head, score
                      classifier, qa_outputs
other                 anything else
====================  ==========================  ====================  ===========  =================================

"attention LayerNorm" / "MLP LayerNorm" name the norm that belongs to the attention / MLP
sub-block, whether it is applied after it (BERT, DistilBERT) or before it (GPT-2, LLaMA).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = [
    "COMPONENTS",
    "NO_LAYER",
    "layer_sort_key",
    "parse_param_name",
]


NO_LAYER = "-"
#: Display order of the components.
COMPONENTS = (
    "embeddings",
    "embeddings LayerNorm",
    "query",
    "key",
    "value",
    "attention qkv",
    "attention output",
    "attention LayerNorm",
    "gate",
    "intermediate",
    "output",
    "MLP LayerNorm",
    "final LayerNorm",
    "pooler",
    "head",
    "other",
)
# "<prefix>.layer.3.<rest>", "h.3.", "layers.3.", "blocks.3." - the block number and what follows.
_LAYER_RE = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)\.(.+)$")


def _rule(pattern: str) -> re.Pattern:
    # a pattern matches whole dot-separated name pieces, anywhere in the name
    return re.compile(r"(?:^|\.)(?:" + pattern + r")(?:\.|$)")


# In-block rules, first match wins (LayerNorm rules come before the dense rules they would hit).
_BLOCK_RULES: Sequence[tuple[re.Pattern, str]] = [
    (_rule(r"attention\.output\.LayerNorm|sa_layer_norm|ln_1|input_layernorm"), "attention LayerNorm"),
    (_rule(r"output\.LayerNorm|output_layer_norm|ln_2|post_attention_layernorm"), "MLP LayerNorm"),
    (_rule(r"attention\.self\.query|q_lin|q_proj"), "query"),
    (_rule(r"attention\.self\.key|k_lin|k_proj"), "key"),
    (_rule(r"attention\.self\.value|v_lin|v_proj"), "value"),
    (_rule(r"c_attn|qkv_proj|query_key_value|Wqkv"), "attention qkv"),
    (_rule(r"attention\.output\.dense|out_lin|attn\.c_proj|o_proj|out_proj"), "attention output"),
    (_rule(r"gate_proj"), "gate"),
    (_rule(r"intermediate\.dense|ffn\.lin1|mlp\.c_fc|up_proj|fc1"), "intermediate"),
    (_rule(r"output\.dense|ffn\.lin2|mlp\.c_proj|down_proj|fc2"), "output"),
]
# Rules for parameters outside the blocks, first match wins.
_TOP_RULES: Sequence[tuple[re.Pattern, str]] = [
    (_rule(r"embeddings\.LayerNorm|embeddings\.layer_norm|embedding_layernorm"), "embeddings LayerNorm"),
    (
        _rule(
            r"vocab_transform|vocab_layer_norm|vocab_projector|lm_head|cls|classifier|qa_outputs|score|pre_classifier"
        ),
        "head",
    ),
    (_rule(r"pooler"), "pooler"),
    (_rule(r"[a-z_]*embeddings|embed_tokens|embed_positions|wte|wpe"), "embeddings"),
    (_rule(r"ln_f|norm|final_layer_norm|final_layernorm"), "final LayerNorm"),
]


def parse_param_name(name: str) -> tuple[str, str]:
    """``(layer, component)`` of a base-model parameter name (see the module table).

    Examples:
        ``"bert.encoder.layer.3.attention.self.query.weight"`` -> ``("3", "query")``;
        ``"transformer.h.0.attn.c_attn.weight"`` -> ``("0", "attention qkv")``;
        ``"model.norm.weight"`` -> ``("-", "final LayerNorm")``; an unknown name -> ``(layer or
        "-", "other")``.
    """
    m = _LAYER_RE.search(name)
    if m:
        rest = m.group(2)
        for rule, component in _BLOCK_RULES:
            if rule.search(rest):
                return m.group(1), component
        return m.group(1), "other"
    for rule, component in _TOP_RULES:
        if rule.search(name):
            return NO_LAYER, component
    return NO_LAYER, "other"


def layer_sort_key(layer: str) -> tuple[int, int, str]:
    """Sort ``"-"`` first, then block numbers ascending, then anything else by name."""
    if layer == NO_LAYER:
        return (0, 0, "")
    if layer.isdigit():
        return (1, int(layer), "")
    return (2, 0, layer)
