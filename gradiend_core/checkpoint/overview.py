"""A checkpoint at a glance, shared by ``gradiend-core info`` and the dashboard's checkpoint header."""

from __future__ import annotations

from typing import Any

from .files import CONTEXT_FILE, PROVENANCE_FILE
from .format import build_mapping
from .reader import CheckpointData
from .sizes import directory_disk_size, gradiend_param_counts, memory_bytes

__all__ = ["checkpoint_overview"]


def checkpoint_overview(data: CheckpointData) -> dict[str, Any]:
    """Plain-JSON summary: base model, dims, dtype, activations, source/target, mapping, sizes.

    Returns:
        Ordered dict of field -> value (ints in dims, params or bytes; ``*_bytes`` are bytes).
        ``disk_bytes`` is the size on disk as :mod:`gradiend_core.checkpoint.sizes` defines it (model files:
        config, weights, mapping); ``side_files`` maps every other file to its bytes.
    """
    a = data.architecture
    ctx = data.side_files.get(CONTEXT_FILE) or {}
    meta = data.metadata
    disk = directory_disk_size(data.path)
    mapping, _, _ = build_mapping(data.param_map)
    out: dict[str, Any] = {
        "path": str(data.path),
        "base_model": meta.get("base_model") or meta.get("base_model_id") or "unknown",
        "input_dim": a.input_dim,
        "unpruned_length": data.param_map.unpruned_length,
        "latent_dim": a.latent_dim,
        "torch_dtype": a.torch_dtype,
        "activation_encoder": a.activation_encoder,
        "activation_decoder": a.activation_decoder,
        "bias_decoder": a.bias_decoder,
        "source": ctx.get("source", meta.get("source", "unknown")),
        "target": ctx.get("target", meta.get("target", "unknown")),
        "mapping_mode": mapping["mode"],
        "mapped_parameters": len(data.param_map),
        "gradiend_parameters": sum(gradiend_param_counts(a).values()),
        "memory_bytes": memory_bytes(a, data.weight_dtypes()),
        "disk_bytes": disk.model_bytes,
        "side_files": disk.side_files,
        "weights_file": data.weights_file.name if data.weights_file else None,
    }
    prov = data.side_files.get(PROVENANCE_FILE)
    if isinstance(prov, dict):
        out["pruned_from"] = prov.get("source_path")
    return out
