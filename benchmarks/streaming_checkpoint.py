"""Write a GRADIEND checkpoint larger than memory, chunk by chunk, in the reference package's format.

``gradiend``'s ``save_pretrained`` (and this project's writer) build every tensor in memory
first; a 1.2e9-dim GRADIEND (three float32 vectors of that length, ~15 GB) does not fit. This
module writes the same two files without ever holding a tensor:

* ``config.json``: ``json.dump(config, indent=2)`` of ``format_version``, ``architecture``,
  ``mapping`` (mode ``"all"``; one entry per parameter with ``name``, ``shape``, ``repr``,
  ``num_selected``) and ``metadata``, as the reference's ``ParamMappedGradiendModel.save_pretrained``
  writes it for an unpruned model;
* ``model.safetensors`` by its documented layout (https://github.com/huggingface/safetensors:
  8-byte little-endian header length N, N bytes of JSON header padded with spaces so that the
  data starts 8-byte aligned, then the raw little-endian data of every tensor back to back in
  header order). ``safetensors.torch.save_file`` orders tensors by dtype alignment, then name;
  all four GRADIEND tensors share one dtype, so the order is by name.

Own code rather than ``safetensors``: the library serialises whole tensors only; there is no
chunked writer. The test suite checks that the bytes equal what the reference writes for small shapes.

Values follow the reference's initialisation (``nn.Linear`` bounds ``1/sqrt(input_dim)`` for the
encoder; the decoder drawn uniformly at the same scale) with the decoder weights multiplied by
``Exp(1)**3``, as :func:`benchmarks.bench_vs_reference.generate` does, so the importance is heavy-tailed
as after training.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "DTYPE_CODES",
    "checkpoint_config",
    "tensor_specs",
    "safetensors_header",
    "expected_weights_bytes",
    "write_streamed_checkpoint",
]

#: safetensors dtype code and bytes per element of the supported GRADIEND dtypes.
DTYPE_CODES: dict[str, tuple[str, int]] = {"float32": ("F32", 4), "bfloat16": ("BF16", 2), "float16": ("F16", 2)}
_TORCH = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
#: Elements generated and written per step (64 MiB of float32).
CHUNK_ELEMENTS = 1 << 24
#: Written bytes after which the file is flushed and its pages dropped from the page cache.
FLUSH_BYTES = 1 << 30


def checkpoint_config(
    shapes: Sequence[tuple[str, tuple[int, ...]]],
    latent_dim: int = 1,
    dtype: str = "float32",
    bias_decoder: bool = True,
    metadata: Mapping[str, Any] | None = None,
    activation_encoder: str = "tanh",
    activation_decoder: str = "id",
) -> dict[str, Any]:
    """The ``config.json`` content of an unpruned GRADIEND over every entry of ``shapes``.

    Args:
        shapes: ``(parameter name, shape)`` in the order the gradient vector concatenates them.
        latent_dim: GRADIEND latent size.
        dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"``.
        bias_decoder: whether the decoder has a bias.
        metadata: free-form ``metadata`` (the reference stores ``save_pretrained``'s kwargs here).

    Returns:
        A dict whose ``json.dumps(..., indent=2)`` equals the reference's ``config.json``.
    """
    if dtype not in DTYPE_CODES:
        raise ValueError(f"dtype must be one of {sorted(DTYPE_CODES)}, got {dtype!r}.")
    entries = [
        {"name": name, "shape": list(shape), "repr": "all", "num_selected": math.prod(shape)} for name, shape in shapes
    ]
    return {
        "format_version": 0,
        "architecture": {
            "input_dim": sum(e["num_selected"] for e in entries),
            "latent_dim": latent_dim,
            "activation_encoder": activation_encoder,
            "activation_decoder": activation_decoder,
            "bias_decoder": bias_decoder,
            "torch_dtype": dtype,
        },
        "mapping": {"mode": "all", "param_map": entries},
        "metadata": dict(metadata or {}),
    }


def tensor_specs(input_dim: int, latent_dim: int = 1, bias_decoder: bool = True) -> list[tuple[str, tuple[int, ...]]]:
    """``(key, shape)`` of the GRADIEND's tensors in file order (by name; one dtype)."""
    specs = [
        ("encoder.0.linear.weight", (latent_dim, input_dim)),
        ("encoder.0.linear.bias", (latent_dim,)),
        ("decoder.0.linear.weight", (input_dim, latent_dim)),
    ]
    if bias_decoder:
        specs.append(("decoder.0.linear.bias", (input_dim,)))
    return sorted(specs)


def safetensors_header(specs: Sequence[tuple[str, tuple[int, ...]]], dtype: str) -> bytes:
    """The 8-byte length prefix plus the space-padded JSON header for ``specs`` stored back to back."""
    code, size = DTYPE_CODES[dtype]
    header: dict[str, Any] = {}
    offset = 0
    for key, shape in specs:
        n = math.prod(shape) * size
        header[key] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(8 + len(text)) % 8)
    return struct.pack("<Q", len(text)) + text


def expected_weights_bytes(
    input_dim: int, latent_dim: int = 1, dtype: str = "float32", bias_decoder: bool = True
) -> int:
    """Size of ``model.safetensors`` in bytes (header included)."""
    specs = tensor_specs(input_dim, latent_dim, bias_decoder)
    data = sum(math.prod(s) for _, s in specs) * DTYPE_CODES[dtype][1]
    return len(safetensors_header(specs, dtype)) + data


def _values(key: str, n: int, bound: float, seed: np.random.SeedSequence, chunk: int) -> Iterator[np.ndarray]:
    """float32 chunks of the ``n`` values of tensor ``key``.

    The uniform and the exponential factors come from two generators, each drawn in sequence, so
    the values do not depend on ``chunk``.
    """
    uniform_seed, exp_seed = seed.spawn(2)
    uniform, exponential = np.random.default_rng(uniform_seed), np.random.default_rng(exp_seed)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        x = uniform.random(m, dtype=np.float32)
        x *= np.float32(2 * bound)
        x -= np.float32(bound)
        if key == "decoder.0.linear.weight":
            e = exponential.standard_exponential(m, dtype=np.float32)
            x *= e * e * e
        yield x


def _encode(x: np.ndarray, dtype: str) -> bytes:
    if dtype == "float32":
        return x.astype("<f4", copy=False).tobytes()
    # torch rounds to bfloat16/float16 (round to nearest even) exactly as a model's .to(dtype) would.
    return torch.from_numpy(x).to(_TORCH[dtype]).view(torch.int16).numpy().astype("<i2", copy=False).tobytes()


def write_streamed_checkpoint(
    path: os.PathLike | str,
    shapes: Sequence[tuple[str, tuple[int, ...]]],
    *,
    latent_dim: int = 1,
    dtype: str = "float32",
    bias_decoder: bool = True,
    metadata: Mapping[str, Any] | None = None,
    seed: int = 0,
    chunk: int = CHUNK_ELEMENTS,
    progress=None,
) -> Path:
    """Write an unpruned GRADIEND over every entry of ``shapes`` to the directory ``path``.

    Memory stays at a few chunks (``chunk`` elements, default 2**24) whatever the size. The
    files are written into ``<path>.partial`` and the directory is renamed at the end, so a
    directory at ``path`` is always complete.

    Args:
        path: target directory; must not exist.
        shapes: ``(parameter name, shape)`` (e.g. :func:`benchmarks.llama_shapes.llama_shapes`).
        latent_dim, dtype, bias_decoder, metadata: see :func:`checkpoint_config`.
        seed: seed of the random values (same seed, same bytes).
        chunk: elements generated per step.
        progress: optional ``progress(bytes_written, bytes_total)``.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        FileExistsError: if ``path`` exists.
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists; remove it or pick another path.")
    cfg = checkpoint_config(shapes, latent_dim, dtype, bias_decoder, metadata)
    input_dim = cfg["architecture"]["input_dim"]
    specs = tensor_specs(input_dim, latent_dim, bias_decoder)
    total = expected_weights_bytes(input_dim, latent_dim, dtype, bias_decoder)
    bound = 1.0 / math.sqrt(input_dim)
    partial = path.with_name(path.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    seeds = dict(zip((key for key, _ in specs), np.random.SeedSequence(seed).spawn(len(specs))))
    weights = partial / "model.safetensors"
    with open(weights, "wb") as f:
        f.write(safetensors_header(specs, dtype))
        written = flushed = f.tell()
        for key, shape in specs:
            for x in _values(key, math.prod(shape), bound, seeds[key], chunk):
                written += f.write(_encode(x, dtype))
                if written - flushed >= FLUSH_BYTES:
                    # Written pages would otherwise fill the page cache that other processes share.
                    f.flush()
                    os.fdatasync(f.fileno())
                    os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
                    flushed = written
                if progress is not None:
                    progress(written, total)
        f.flush()
        os.fdatasync(f.fileno())
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    if weights.stat().st_size != total:
        raise RuntimeError(f"{weights}: wrote {weights.stat().st_size} bytes, expected {total}.")
    (partial / "config.json").write_text(json.dumps(cfg, indent=2))
    os.replace(partial, path)
    return path
