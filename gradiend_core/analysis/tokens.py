"""Token text for the rows of a token embedding: which vocabulary entry a kept dim belongs to.

A dim in ``bert.embeddings.word_embeddings.weight`` at coords ``(row, col)`` is a coordinate of
the embedding of token id ``row``; showing that token's text says which words a GRADIEND reads.
The text comes from the base model's tokenizer when it is on this machine: the checkpoint's
``metadata.base_model`` is a local directory (``transformers.AutoTokenizer`` with
``local_files_only=True``; the model hub is never asked). ``transformers`` is imported only when a
tokenizer is loaded, so importing this module stays cheap.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["EMBEDDING_NAME", "load_tokenizer", "resolve_base_model", "token_texts"]

#: Names of token-embedding matrices (one row per token id) in BERT, GPT-2, LLaMA, T5, GPT-NeoX and
#: tied output heads.
EMBEDDING_NAME = re.compile(
    r"(?:^|\.)(?:word_embeddings|wte|embed_tokens|tok_embeddings|embed_in|shared|lm_head|predictions\.decoder)\.weight$"
)
#: Files that make a directory a tokenizer directory.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "tokenizer.model")


def resolve_base_model(metadata: Mapping[str, Any], checkpoint_dir: str | os.PathLike) -> Path | None:
    """The local directory of the checkpoint's base model, or ``None`` when it is not on this machine.

    ``metadata["base_model"]`` (else ``"base_model_id"``) is tried as given (absolute, or relative
    to the working directory), then relative to the checkpoint directory and each of its parents,
    which finds a path recorded relative to a project root. A hub id such as
    ``bert-base-uncased`` resolves only if such a directory exists.
    """
    name = metadata.get("base_model") or metadata.get("base_model_id")
    if not isinstance(name, str) or not name.strip():
        return None
    given = Path(name.strip()).expanduser()
    here = Path(checkpoint_dir).resolve()
    candidates = [given] if given.is_absolute() else [given, *(d / given for d in (here, *here.parents))]
    for c in candidates:
        if c.is_dir() and any((c / f).is_file() for f in TOKENIZER_FILES):
            return c.resolve()
    return None


def load_tokenizer(directory: str | os.PathLike):
    """``transformers.AutoTokenizer`` from a local directory (``local_files_only=True``), or ``None``
    when ``transformers`` is missing or the directory holds no loadable tokenizer."""
    try:
        from transformers import AutoTokenizer
    except ImportError:
        return None
    try:
        return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def token_texts(
    param_names: Sequence[str], coords: Sequence[Sequence[int]], param_shapes: Sequence[Sequence[int]], tokenizer
) -> list[str]:
    """The token of each row that lies in a token embedding, ``""`` for the other rows.

    Args:
        param_names, coords, param_shapes: per row, the base-model parameter, the entry's position
            in it and the parameter's shape (as in :class:`~gradiend_core.analysis.topk_table.TopkFeatureTable`).
        tokenizer: a Hugging Face tokenizer; a parameter counts as its embedding when its name
            matches :data:`EMBEDDING_NAME`, it is 2-D and has at least ``len(tokenizer)`` rows
            (models often pad the vocabulary; padding rows have no token).

    Returns:
        One string per row (``tokenizer.convert_ids_to_tokens`` of ``coords[0]``).
    """
    vocab = len(tokenizer)
    rows = [
        i
        for i, (name, c, shape) in enumerate(zip(param_names, coords, param_shapes))
        if len(shape) == 2 and shape[0] >= vocab and len(c) == 2 and c[0] < vocab and EMBEDDING_NAME.search(name)
    ]
    out = [""] * len(param_names)
    if rows:
        for i, text in zip(rows, tokenizer.convert_ids_to_tokens([int(coords[i][0]) for i in rows])):
            out[i] = str(text)
    return out
