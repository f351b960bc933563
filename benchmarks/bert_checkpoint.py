"""The 109M-dim BERT-base-shaped benchmark checkpoint, written by the reference package itself."""

from __future__ import annotations

import shutil
from pathlib import Path

__all__ = ["generate"]


def generate(path: Path, input_dim: int | None = None) -> None:
    """Write a GRADIEND over every weight of a bert-base-uncased-shaped model with the reference's ``save_pretrained``.

    input_dim 109,482,240, latent_dim 1, float32 (1.3 GB). Decoder weights are multiplied by
    ``Exp(1)**3`` so the importance is heavy-tailed, as after training. With ``input_dim``, a
    scaled-down stand-in with the same parameter layout (the first axis of every shape scaled).
    """
    import numpy as np
    import torch
    from gradiend.model.param_mapped import ParamMappedGradiendModel as Ref

    from benchmarks.bert_shapes import bert_base_shapes

    shapes = bert_base_shapes()
    if input_dim is not None:
        scale = input_dim / sum(int(np.prod(s)) for _, s in shapes)
        shapes = [
            (n, tuple(max(1, int(round(d * scale))) if i == 0 else d for i, d in enumerate(s))) for n, s in shapes
        ]
    n = sum(int(np.prod(s)) for _, s in shapes)
    torch.manual_seed(0)
    ref = Ref(
        n,
        1,
        {k: {"shape": s, "repr": "all"} for k, s in shapes},
        device=torch.device("cpu"),
        base_model="bert-base-uncased",
    )
    with torch.no_grad():
        w = ref.decoder[0].linear.weight
        w.mul_(torch.empty_like(w).exponential_(1.0).pow_(3))
    partial = path.with_name(path.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    ref.save_pretrained(str(partial))
    partial.rename(path)
