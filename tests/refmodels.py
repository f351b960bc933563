"""Reference checkpoints for the tests: built and saved by the reference package ``gradiend`` itself.

Every checkpoint the interop tests read is built and saved by ``gradiend`` 0.2.3
(``gradiend.model.param_mapped.ParamMappedGradiendModel``), never by us, so our reader is checked
against the real format and our exports against the reference's own pruning.

The base model is a fake BERT slice of four parameters of very different sizes. The decoder
weights are set to look "trained": in every parameter a chosen fraction of rows is large
(|w| in [2, 3]) and the rest small (|w| in [0, 1)), so that post-pruning by decoder-weight keeps
exactly those rows. Pre-pruning uses an importance vector built the same way. The fractions are
picked so that every pruned variant stores its map with all three representations:

========================================  =====  ==========  ==========  ===============
parameter                                  numel  pre keeps   post keeps  pre + post keeps
========================================  =====  ==========  ==========  ===============
embeddings.word_embeddings.weight          1024   50 % mask   60 % mask   30 % mask
attention.self.query.weight                 256   10 % idx    100 % all   10 % indices
attention.self.query.bias                    16   100 % all   100 % all   100 % all
output.dense.weight                         512   30 % mask   10 % idx     3 % indices
========================================  =====  ==========  ==========  ===============

(the reference stores ``indices`` when ``4 * k < 0.8 * numel``, i.e. below 20 % kept).

Variants (:data:`VARIANT_NAMES`): ``unpruned``; ``pre`` (pre-pruned); ``post`` (post-pruned,
with a ``training.json``); ``both`` (pre then post); ``both_bin`` (the same saved with
``use_safetensors=False``: ``pytorch_model.bin`` and ``.pth`` mapping files); ``latent3``
(latent_dim 3, post-pruned); ``bf16`` (torch_dtype bfloat16, post-pruned); ``id_ln``
(activation_encoder ``id``, i.e. a LayerNorm(1) with non-default parameters, pre-pruned).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from gradiend.model.param_mapped import ParamMappedGradiendModel as Ref

PARAMS = (
    ("bert.embeddings.word_embeddings.weight", (64, 16)),
    ("bert.encoder.layer.0.attention.self.query.weight", (16, 16)),
    ("bert.encoder.layer.0.attention.self.query.bias", (16,)),
    ("bert.encoder.layer.0.output.dense.weight", (32, 16)),
)
NUMELS = tuple(math.prod(s) for _, s in PARAMS)
UNPRUNED_LENGTH = sum(NUMELS)  # 1808
PRE_FRACTIONS = (0.5, 0.1, 1.0, 0.3)
POST_FRACTIONS = (0.6, 1.0, 1.0, 0.1)
CPU = torch.device("cpu")


def reference_param_map() -> dict[str, dict]:
    """The reference's in-memory param_map selecting every entry of :data:`PARAMS`."""
    return {name: {"shape": shape, "repr": "all"} for name, shape in PARAMS}


def subset_mask(fractions, seed: int) -> torch.Tensor:
    """Bool (UNPRUNED_LENGTH,): in each parameter a random ``round(f * numel)`` of entries is True."""
    g = np.random.default_rng(seed)
    parts = []
    for numel, f in zip(NUMELS, fractions):
        m = np.zeros(numel, dtype=bool)
        m[g.choice(numel, size=int(round(f * numel)), replace=False)] = True
        parts.append(m)
    return torch.from_numpy(np.concatenate(parts))


def build_reference(
    *, latent_dim: int = 1, dtype: torch.dtype = torch.float32, activation_encoder: str = "tanh", seed: int = 0
) -> Ref:
    """A reference model over :data:`PARAMS` whose decoder looks trained (see the module docstring)."""
    torch.manual_seed(seed)
    model = Ref(
        UNPRUNED_LENGTH,
        latent_dim,
        reference_param_map(),
        activation_encoder=activation_encoder,
        torch_dtype=dtype,
        device=CPU,
        base_model="tiny-test",
    )
    high = subset_mask(POST_FRACTIONS, seed + 100)
    g = torch.Generator().manual_seed(seed + 200)
    mag = torch.rand(UNPRUNED_LENGTH, latent_dim, generator=g)
    mag[high] += 2.0
    sign = torch.where(torch.rand(UNPRUNED_LENGTH, latent_dim, generator=g) < 0.5, -1.0, 1.0)
    with torch.no_grad():
        model.decoder[0].linear.weight.copy_((mag * sign).to(dtype))
        if activation_encoder == "id":
            # non-default LayerNorm parameters, so that losing encoder.1.* would show
            model.encoder[1].weight.fill_(1.5)
            model.encoder[1].bias.fill_(-0.25)
    return model


def pre_prune(model: Ref, seed: int = 0) -> Ref:
    """Pre-pruning as the trainer does it: ``prune(importance=..., topk=...)`` with a gradient-like
    importance (random absolute values, large on a chosen subset)."""
    keep = subset_mask(PRE_FRACTIONS, seed + 300)
    g = torch.Generator().manual_seed(seed + 400)
    imp = torch.rand(UNPRUNED_LENGTH, generator=g) * 0.5
    imp[keep] = 1.0 + torch.rand(int(keep.sum()), generator=g)
    return model.prune(importance=imp, topk=int(keep.sum()), inplace=True)


def post_prune(model: Ref, seed: int = 0) -> Ref:
    """Post-pruning by decoder-weight, keeping exactly the large ("trained") rows."""
    large = model.get_weight_importance("decoder-weight").float() >= 2.0 * model.latent_dim
    return model.prune(topk=int(large.sum()), part="decoder-weight", inplace=True)


@dataclass(frozen=True)
class Variant:
    """A reference checkpoint on disk and how to compare models built from it."""

    name: str
    path: Path
    dtype: torch.dtype
    latent_dim: int
    pruned: bool

    @property
    def exact(self) -> bool:
        """float32: selections and weights must match the reference exactly."""
        return self.dtype == torch.float32


VARIANT_NAMES = ("unpruned", "pre", "post", "both", "both_bin", "latent3", "bf16", "id_ln")


def make_variant(name: str, root: Path) -> Variant:
    kw = {}
    if name == "latent3":
        kw["latent_dim"] = 3
    if name == "bf16":
        kw["dtype"] = torch.bfloat16
    if name == "id_ln":
        kw["activation_encoder"] = "id"
    model = build_reference(**kw)
    if name in ("pre", "both", "both_bin", "id_ln"):
        pre_prune(model)
    if name in ("post", "both", "both_bin", "latent3", "bf16"):
        post_prune(model)
    path = root / name
    save_kw = {}
    if name == "post":
        save_kw["training"] = {"epochs": 3, "lr": 1e-5}  # the reference writes it to training.json
    model.save_pretrained(str(path), use_safetensors=False if name == "both_bin" else None, **save_kw)
    return Variant(name, path, kw.get("dtype", torch.float32), kw.get("latent_dim", 1), name != "unpruned")


def ref_load(path) -> Ref:
    return Ref.from_pretrained(str(path))


def ref_global_index(model: Ref) -> np.ndarray:
    return model._get_base_global_index_map().cpu().numpy().astype(np.int64)


def random_inputs(n: int, batch: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, n, generator=torch.Generator().manual_seed(seed))
