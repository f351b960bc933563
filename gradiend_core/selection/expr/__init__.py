"""Mask expressions: one language for every keep-mask (core, CLI, API, saved masks).

A mask expression combines terms with ``&`` (and), ``|`` (or), ``~`` (not) and parentheses::

    top(decoder-weight, 5%) & top(encoder-weight, 5%)      # what both ends find important
    name('layer\\.(6|7|8|9|10|11)\\.')                     # only layers 6-11
    ~name('embeddings')                                    # everything except the embeddings
    top(decoder-weight, 0.05) & model('runs/gender', decoder-weight, 0.05)

Terms: ``top(PART, K)``, ``above(PART, T)``, ``name(REGEX)``, ``file(PATH)``,
``model(PATH, PART, K)`` (see :mod:`.syntax` for the grammar and :mod:`.evaluate` for the
semantics). The expression is the mask step of mask -> threshold -> topk.

Modules: :mod:`.syntax` (parser, tree, canonical text, errors), :mod:`.evaluate` (the mask, per-term
counts, digest), :mod:`.space` (base-global <-> current input space), :mod:`.build` (building
expressions by pointing), :mod:`.bundle` (saved masks).
"""

from ...space.coords import global_indices_to_local, global_mask_to_local, local_mask_to_global
from .build import (
    OPS,
    above_term,
    cell_term,
    combine,
    file_term,
    model_term,
    name_term,
    params_term,
    top_term,
    upset_term,
)
from .bundle import BUNDLE_FORMAT, MaskBundle, load_mask_bundle, make_mask_bundle, save_mask_bundle, space_digest
from .evaluate import MaskResult, apply_mask_expr, evaluate_mask_expr
from .syntax import (
    EXPR_PARTS,
    FUNCTIONS,
    Above,
    And,
    File,
    MaskExprError,
    Model,
    Name,
    Node,
    Not,
    Or,
    Term,
    Top,
    iter_terms,
    normalise,
    parse,
    quote,
    to_text,
)

__all__ = [
    "BUNDLE_FORMAT",
    "EXPR_PARTS",
    "FUNCTIONS",
    "OPS",
    "Above",
    "And",
    "File",
    "MaskBundle",
    "MaskExprError",
    "MaskResult",
    "Model",
    "Name",
    "Node",
    "Not",
    "Or",
    "Term",
    "Top",
    "above_term",
    "apply_mask_expr",
    "cell_term",
    "combine",
    "evaluate_mask_expr",
    "file_term",
    "global_indices_to_local",
    "global_mask_to_local",
    "iter_terms",
    "load_mask_bundle",
    "local_mask_to_global",
    "make_mask_bundle",
    "model_term",
    "name_term",
    "normalise",
    "params_term",
    "parse",
    "quote",
    "save_mask_bundle",
    "space_digest",
    "to_text",
    "top_term",
    "upset_term",
]
