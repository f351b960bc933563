"""Adapter for Hugging Face masked language models (``transformers`` is an optional extra).

``transformers`` is imported only inside :func:`load_masked_lm`; the loss works with any
tokenizer object that behaves like a Hugging Face one.

An :class:`~gradiend_core.trainer.Example` for a masked LM: ``inputs`` is a text with exactly one
mask token (``tokenizer.mask_token``, e.g. ``"the cat [MASK] happy ."``), ``factual`` and
``alternative`` are the words to predict there (``"is"``, ``"are"``), each a single token.
The loss is the model's masked-LM cross-entropy at the mask for the chosen target.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .data import Example
from .gather import LossFn

__all__ = ["backbone_params", "load_masked_lm", "masked_lm_loss"]


def load_masked_lm(path: str) -> tuple[nn.Module, Any]:
    """Load a masked LM and its tokenizer from a local directory (no network is needed for a
    local path). ``model.name_or_path`` is ``path``, which ends up in ``metadata.base_model``.

    Raises:
        ImportError: when ``transformers`` is not installed (the message names the extra).
    """
    try:
        from transformers import AutoModelForMaskedLM, AutoTokenizer
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the masked-LM adapter needs transformers: pip install 'gradiend-core[hf]' (or pip install transformers)."
        ) from e
    model = AutoModelForMaskedLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model.eval()
    return model, tokenizer


def backbone_params(model: nn.Module) -> list[str]:
    """Wildcards selecting the backbone of a Hugging Face model (``"bert.*"`` for BERT), i.e.
    everything but the task head, which is what the reference maps by default."""
    prefix = getattr(model, "base_model_prefix", "") or ""
    names = [n for n, _ in model.named_parameters()]
    if prefix and any(n.startswith(prefix + ".") for n in names):
        return [prefix + ".*"]
    return names


def masked_lm_loss(tokenizer: Any, *, max_length: int = 512) -> LossFn:
    """The loss ``(model, batch, which) -> scalar`` of a masked LM at each example's mask.

    Args:
        tokenizer: the model's tokenizer (must have a mask token).
        max_length: texts are truncated to this many tokens.

    Raises (when called):
        ValueError: for a text without exactly one mask token, or a target word that is not a
            single token of the vocabulary.
    """
    mask_id = tokenizer.mask_token_id
    if mask_id is None:
        raise ValueError("the tokenizer has no mask token; the masked-LM adapter needs one.")
    target_ids: dict[str, int] = {}

    def token_id(word: str) -> int:
        if word not in target_ids:
            pieces = tokenizer.tokenize(word)
            tid = tokenizer.convert_tokens_to_ids(pieces[0]) if len(pieces) == 1 else None
            if tid is None or tid == tokenizer.unk_token_id:
                raise ValueError(
                    f"target {word!r} is {len(pieces)} token(s) {pieces!r} for this tokenizer; "
                    "masked-LM targets must be single tokens of the vocabulary."
                )
            target_ids[word] = int(tid)
        return target_ids[word]

    def loss_fn(model: nn.Module, batch: list[Example], which: str) -> torch.Tensor:
        texts = [ex.inputs for ex in batch]
        words = [ex.factual if which == "factual" else ex.alternative for ex in batch]
        enc = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=max_length)
        ids = enc["input_ids"]
        is_mask = ids == mask_id
        counts = is_mask.sum(dim=1)
        if bool((counts != 1).any()):
            bad = int((counts != 1).nonzero()[0, 0])
            raise ValueError(
                f"example text {texts[bad]!r} has {int(counts[bad])} mask tokens; put exactly one "
                f"{tokenizer.mask_token!r} where the target word goes."
            )
        labels = torch.full_like(ids, -100)
        labels[is_mask] = torch.tensor([token_id(w) for w in words], dtype=ids.dtype)
        device = next(model.parameters()).device
        inputs = {k: v.to(device) for k, v in enc.items()}
        return model(**inputs, labels=labels.to(device)).loss

    return loss_fn
