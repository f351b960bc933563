"""Reading and writing GRADIEND checkpoint directories (format_version 0 of ``gradiend``).

The directory is the unit of exchange, as with Hugging Face ``save_pretrained``:

* ``config.json`` - ``format_version``, ``architecture`` (input_dim, latent_dim,
  activation_encoder, activation_decoder, bias_decoder, torch_dtype), ``mapping`` (mode,
  param_map entries with name/shape/repr/key/num_selected, indices_file, masks_file) and
  ``metadata``;
* weights in ``model.safetensors`` or ``pytorch_model.bin`` with keys
  ``encoder.0.linear.weight`` (latent_dim, input_dim), ``encoder.0.linear.bias`` (latent_dim,),
  ``decoder.0.linear.weight`` (input_dim, latent_dim), ``decoder.0.linear.bias`` (input_dim,)
  and, when the encoder activation is ``id`` (a LayerNorm(1) in the reference), ``encoder.1.*``;
* ``mapping_indices.*`` / ``mapping_masks.*`` (.safetensors or .pth) when some parameter is not
  fully selected;
* optional ``training.json``, ``gradiend_context.json`` and our ``pruning.json`` provenance.

All reading and writing of that layout lives in this module. Pickle-based files are loaded with
``torch.load(weights_only=True)``, which refuses to run code.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch

from .errors import CheckpointError
from .param_map import ParamEntry, ParamMap

FORMAT_VERSION = 0
CONFIG_FILE = "config.json"
SAFETENSORS_WEIGHTS = "model.safetensors"
BIN_WEIGHTS = "pytorch_model.bin"
#: JSON side files carried over unchanged from a source checkpoint into its exports.
CARRIED_JSON_FILES = ("training.json", "gradiend_context.json")
PROVENANCE_FILE = "pruning.json"

ENC_W = "encoder.0.linear.weight"
ENC_B = "encoder.0.linear.bias"
DEC_W = "decoder.0.linear.weight"
DEC_B = "decoder.0.linear.bias"

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
#: safetensors' own dtype order; it writes tensors of higher rank first, then by name.
_ST_ORDER = {"BOOL": 0, "U8": 4, "I8": 5, "I16": 9, "F16": 11, "BF16": 12, "I32": 13, "F32": 15, "F64": 17, "I64": 18}
_ST_DTYPE = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int32: "I32",
    torch.int64: "I64",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


@dataclass
class Architecture:
    """The ``architecture`` block of ``config.json``."""

    input_dim: int
    latent_dim: int
    activation_encoder: str = "tanh"
    activation_decoder: str = "id"
    bias_decoder: bool = True
    torch_dtype: str = "float32"

    def to_json(self) -> Dict[str, Any]:
        return {
            "input_dim": self.input_dim,
            "latent_dim": self.latent_dim,
            "activation_encoder": self.activation_encoder,
            "activation_decoder": self.activation_decoder,
            "bias_decoder": self.bias_decoder,
            "torch_dtype": self.torch_dtype,
        }

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.torch_dtype]


@dataclass
class CheckpointData:
    """Everything a checkpoint directory holds, read into memory.

    Attributes:
        path: the directory that holds ``config.json`` (the ``model/`` subfolder of an experiment
            directory when one was given).
        architecture: the parsed ``architecture`` block.
        param_map: the parameter map.
        state_dict: GRADIEND weights by key (dtype as stored).
        metadata: the ``metadata`` block, unchanged.
        side_files: parsed JSON side files by file name (``training.json``, ...).
        weights_file: path of the weight file that was read.
    """

    path: Path
    architecture: Architecture
    param_map: ParamMap
    state_dict: Dict[str, torch.Tensor]
    metadata: Dict[str, Any] = field(default_factory=dict)
    side_files: Dict[str, Any] = field(default_factory=dict)
    weights_file: Optional[Path] = None

    def carried_side_files(self) -> Dict[str, Any]:
        """The JSON side files an export of this checkpoint carries over unchanged."""
        return {k: v for k, v in self.side_files.items() if k in CARRIED_JSON_FILES}


# ---------------------------------------------------------------------------------------- read
def resolve_checkpoint_dir(path: os.PathLike | str) -> Path:
    """The directory holding ``config.json`` for a checkpoint or experiment directory.

    Raises:
        CheckpointError: if ``path`` does not exist or holds no checkpoint.
    """
    try:
        return _resolve_checkpoint_dir(Path(path).expanduser())
    except PermissionError as e:
        raise CheckpointError(f"{e.filename or path}: permission denied; make the checkpoint readable.") from e
    except (OSError, ValueError) as e:  # e.g. a NUL byte or an over-long name
        raise CheckpointError(f"{path!r}: not a usable path ({e}).") from e


def _resolve_checkpoint_dir(p: Path) -> Path:
    if not p.exists():
        raise CheckpointError(f"{p}: no such file or directory. Give the path of a GRADIEND checkpoint directory.")
    if p.is_file():
        raise CheckpointError(
            f"{p} is a file; give the checkpoint directory that holds config.json "
            "(a .zip must be extracted first, e.g. with gradiend_core.archive.extract_checkpoint_zip)."
        )
    if (p / CONFIG_FILE).is_file():
        return p
    if (p / "model" / CONFIG_FILE).is_file():
        return p / "model"
    if not any(p.iterdir()):
        raise CheckpointError(f"{p} is an empty directory; it holds no GRADIEND checkpoint.")
    raise CheckpointError(
        f"{p} holds no {CONFIG_FILE} (nor model/{CONFIG_FILE}); is this a GRADIEND checkpoint directory "
        "written by save_pretrained?"
    )


def _read_json(path: Path, what: str) -> Any:
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: {what} is not valid UTF-8 JSON ({e}). Re-save the checkpoint.") from e
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read {what} ({e.strerror}).") from e


_FROM_ST = {v: k for k, v in _ST_DTYPE.items()}
#: Files at least this large are read with one sequential read instead of through safetensors' mmap.
_STREAM_READ_BYTES = 64 * 1024**2


#: Bytes per read call when streaming a large file (progress is reported after each).
_READ_BLOCK = 64 * 1024**2
#: ``progress(done_bytes, total_bytes)``, called while a large weight file is read.
ProgressFn = Callable[[int, int], None]


def _read_safetensors_buffered(path: Path, progress: Optional[ProgressFn] = None) -> Dict[str, torch.Tensor]:
    """Read a safetensors file with one sequential ``readinto`` and view its tensors in place.

    Why not ``safetensors.torch.load_file``: it maps the file, and touching a 10^8-entry tensor
    through the mapping page-faults 4 KiB at a time (about 1.5 s per 400 MB here, against 0.2 s
    for a plain read). The layout read here is safetensors' documented one (8-byte header length,
    JSON header, then the data), and every offset is checked before use.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: truncated safetensors file (no header); copy it again.")
        hlen = struct.unpack("<Q", head)[0]
        if hlen > min(size - 8, 100 * 1024**2):
            raise CheckpointError(f"{path}: corrupted safetensors header (length {hlen}); copy the file again.")
        try:
            header = json.loads(f.read(hlen))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{path}: corrupted safetensors header ({e}); copy the file again.") from e
        if not isinstance(header, dict):
            raise CheckpointError(f"{path}: corrupted safetensors header (not a JSON object); copy the file again.")
        header.pop("__metadata__", None)
        data_len = size - 8 - hlen
        buf = torch.empty(data_len, dtype=torch.uint8)
        view = memoryview(buf.numpy())
        done = 0
        while done < data_len:
            got = f.readinto(view[done : done + _READ_BLOCK])
            if not got:
                raise CheckpointError(f"{path}: truncated while reading; copy the file again.")
            done += got
            if progress is not None:
                progress(done, data_len)
    out: Dict[str, torch.Tensor] = {}
    spans = []
    for name, info in header.items():
        try:
            dtype = _FROM_ST[info["dtype"]]
            shape = tuple(int(x) for x in info["shape"])
            start, stop = (int(x) for x in info["data_offsets"])
        except KeyError as e:
            raise CheckpointError(f"{path}: tensor {name!r}: unsupported or missing dtype/shape/offsets ({e}).") from e
        except (TypeError, ValueError, AttributeError) as e:
            raise CheckpointError(f"{path}: corrupted safetensors header at tensor {name!r} ({e}); copy the file again.") from e
        if any(d < 0 for d in shape):
            raise CheckpointError(f"{path}: corrupted safetensors header: tensor {name!r} has shape {list(shape)}.")
        nbytes = math.prod(shape) * torch.empty(0, dtype=dtype).element_size()
        if not (0 <= start <= stop <= data_len) or stop - start != nbytes:
            raise CheckpointError(
                f"{path}: tensor {name!r} lies outside the file or has the wrong size; the file is truncated or corrupted."
            )
        item = torch.empty(0, dtype=dtype).element_size()
        chunk = buf[start:stop]
        out[name] = (chunk.view(dtype) if start % item == 0 else chunk.clone().view(dtype)).reshape(shape)
        spans.append((start, stop))
    spans.sort()
    if any(a[1] > b[0] for a, b in zip(spans, spans[1:])):
        raise CheckpointError(f"{path}: tensors overlap in the file; it is corrupted.")
    if max((b for _, b in spans), default=0) != data_len:
        raise CheckpointError(f"{path}: data after the last tensor; the file is corrupted, copy it again.")
    return out


def _load_tensor_file(path: Path, progress: Optional[ProgressFn] = None) -> Dict[str, torch.Tensor]:
    """Load a .safetensors or pickle-based (.bin/.pth) tensor dict, never executing code."""
    if not path.is_file():
        raise CheckpointError(f"{path}: file is missing; the checkpoint is incomplete, copy it again.")
    if not os.access(path, os.R_OK):
        raise CheckpointError(f"{path}: permission denied; make the file readable.")
    if path.suffix == ".safetensors":
        if path.stat().st_size >= _STREAM_READ_BYTES:
            return _read_safetensors_buffered(path, progress)
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # safetensors raises its own SafetensorError for corrupt files
            raise CheckpointError(
                f"{path}: not a readable safetensors file ({e}); it may be truncated or corrupted, copy it again."
            ) from e
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e2:
            first_line = str(e2).strip().splitlines()[0] if str(e2).strip() else type(e2).__name__
            raise CheckpointError(
                f"{path}: refused or unreadable. Only plain tensor dicts are loaded (weights_only=True, no code is "
                f"executed); the file is corrupted or holds other Python objects, which are never unpickled here. "
                f"Re-save it as safetensors. ({first_line[:200]})"
            ) from e
    if not isinstance(obj, Mapping) or not all(torch.is_tensor(v) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a dict of tensors, got {type(obj).__name__}.")
    return dict(obj)


def _find_weights(ckpt_dir: Path) -> Path:
    for name in (SAFETENSORS_WEIGHTS, BIN_WEIGHTS):
        if (ckpt_dir / name).is_file():
            return ckpt_dir / name
    raise CheckpointError(
        f"{ckpt_dir}: no weight file ({SAFETENSORS_WEIGHTS} or {BIN_WEIGHTS}); the checkpoint is incomplete."
    )


#: Activation names of the reference format ("smht" is its hard tanh; "id" is LayerNorm(1) in the encoder).
ACTIVATIONS = ("tanh", "relu", "leakyrelu", "gelu", "silu", "elu", "sigmoid", "smht", "id")


def _activation(arch: Mapping[str, Any], key: str, default: str, cfg_path: Path) -> str:
    value = arch.get(key, default)
    if value is None or value == "":
        value = arch.get("activation_encoder", "tanh") if key == "activation_decoder" else default
    if not isinstance(value, str) or value.lower() not in ACTIVATIONS:
        raise CheckpointError(f"{cfg_path}: architecture.{key} {value!r} is not an activation of the format; use one of {', '.join(ACTIVATIONS)}.")
    return value


def _flag(arch: Mapping[str, Any], key: str, default: bool, cfg_path: Path) -> bool:
    value = arch.get(key, default)
    if not isinstance(value, bool):
        raise CheckpointError(f"{cfg_path}: architecture.{key} must be true or false, got {value!r}.")
    return value


def _shape(value: Any, where: str) -> Tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value):
        raise CheckpointError(f"{where}: shape must be a list of non-negative integers, got {value!r}.")
    return tuple(value)


def parse_architecture(cfg: Mapping[str, Any], cfg_path: Path) -> Architecture:
    """Validate and parse the ``architecture`` block.

    Raises:
        CheckpointError: naming the field that is missing or invalid.
    """
    arch = cfg.get("architecture")
    if not isinstance(arch, Mapping):
        raise CheckpointError(
            f"{cfg_path}: field 'architecture' is missing or not an object, so this is not a GRADIEND checkpoint "
            "(a base model's directory, perhaps?). Give the directory that gradiend's save_pretrained wrote."
        )
    for key in ("input_dim", "latent_dim"):
        v = arch.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise CheckpointError(f"{cfg_path}: architecture.{key} must be a positive integer, got {v!r}.")
    dtype = arch.get("torch_dtype", "float32")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise CheckpointError(
            f"{cfg_path}: architecture.torch_dtype {dtype!r} is not supported; use one of {sorted(DTYPES)}."
        )
    return Architecture(
        input_dim=int(arch["input_dim"]),
        latent_dim=int(arch["latent_dim"]),
        activation_encoder=_activation(arch, "activation_encoder", "tanh", cfg_path).lower(),
        activation_decoder=_activation(arch, "activation_decoder", "id", cfg_path),
        bias_decoder=_flag(arch, "bias_decoder", True, cfg_path),
        torch_dtype=dtype,
    )


def parse_mapping(cfg: Mapping[str, Any], ckpt_dir: Path, input_dim: int) -> ParamMap:
    """Read the ``mapping`` block and its tensor files into a :class:`ParamMap`.

    Raises:
        CheckpointError: for a missing block, file or key, a shape that disagrees with a mask
            tensor, or ``num_selected`` values that do not add up to ``input_dim``.
    """
    cfg_path = ckpt_dir / CONFIG_FILE
    mapping = cfg.get("mapping")
    if not isinstance(mapping, Mapping) or not isinstance(mapping.get("param_map"), list):
        raise CheckpointError(
            f"{cfg_path}: field 'mapping.param_map' is missing; this is a weights-only GradiendModel, "
            "not a ParamMappedGradiendModel, and cannot be mapped onto a base model."
        )
    tensors: Dict[str, Dict[str, torch.Tensor]] = {}
    for field_name in ("indices_file", "masks_file"):
        if field_name in mapping:
            tensors[field_name] = _load_tensor_file(ckpt_dir / str(mapping[field_name]))

    entries: List[ParamEntry] = []
    for i, entry in enumerate(mapping["param_map"]):
        where = f"{cfg_path}: mapping.param_map[{i}]"
        if not isinstance(entry, Mapping) or not all(k in entry for k in ("name", "shape", "repr")):
            raise CheckpointError(f"{where} needs 'name', 'shape' (list of ints) and 'repr'.")
        name = str(entry["name"])
        shape = _shape(entry["shape"], f"{where} ({name})")
        rep = entry["repr"]
        numel = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if rep == "all":
            positions = None
        elif rep in ("indices", "mask"):
            file_field = "indices_file" if rep == "indices" else "masks_file"
            if file_field not in tensors:
                raise CheckpointError(f"{where} ({name}) has repr {rep!r} but mapping.{file_field} is missing.")
            key = entry.get("key")
            if not isinstance(key, str) or key not in tensors[file_field]:
                raise CheckpointError(
                    f"{where} ({name}): key {key!r} is not in {mapping[file_field]}; the mapping file does not "
                    "belong to this config."
                )
            t = tensors[file_field][key]
            if rep == "indices":
                if t.dtype not in (torch.int32, torch.int64):
                    raise CheckpointError(f"{where} ({name}): indices must be int32 or int64, got {t.dtype}.")
                positions = t.detach().cpu().to(torch.int64).numpy().reshape(-1)
                if positions.size > 1 and not bool(np.all(positions[1:] > positions[:-1])):
                    # gradiend maps input dim i to indices[i] in stored order and always stores them
                    # increasing; a file that does not is refused rather than silently re-ordered.
                    dup = np.unique(positions).size != positions.size
                    raise CheckpointError(
                        f"{where} ({name}): indices {'contain duplicates' if dup else 'are not in increasing order'}; "
                        "this mapping file was not written by save_pretrained. Re-save the checkpoint with gradiend."
                    )
                if positions.size and (positions[0] < 0 or positions[-1] >= numel):
                    raise CheckpointError(f"{where} ({name}): indices must lie in [0, {numel}).")
            else:
                if tuple(t.shape) != shape and t.numel() != numel:
                    raise CheckpointError(
                        f"{where} ({name}): mask tensor has shape {tuple(t.shape)} but the parameter shape is "
                        f"{list(shape)}."
                    )
                positions = np.flatnonzero(t.detach().cpu().reshape(-1).to(torch.bool).numpy()).astype(np.int64)
        else:
            raise CheckpointError(f"{where} ({name}): unknown repr {rep!r}; expected 'all', 'indices' or 'mask'.")
        e = ParamEntry(name, shape, positions)
        declared = entry.get("num_selected")
        if declared is not None and (isinstance(declared, bool) or not isinstance(declared, int)):
            raise CheckpointError(f"{where} ({name}): num_selected must be an integer, got {declared!r}.")
        if declared is not None and declared != e.num_selected:
            raise CheckpointError(
                f"{where} ({name}): num_selected is {declared} but the mapping selects {e.num_selected} entries."
            )
        entries.append(e)
    try:
        pmap = ParamMap(entries)
    except ValueError as e:
        raise CheckpointError(f"{cfg_path}: {e}") from e
    if pmap.input_dim != input_dim:
        raise CheckpointError(
            f"{cfg_path}: the mapping selects {pmap.input_dim} entries in total but architecture.input_dim is "
            f"{input_dim}; config and mapping files do not belong together."
        )
    return pmap


def expected_weight_shapes(arch: Architecture) -> Dict[str, Tuple[int, ...]]:
    """State-dict keys and shapes a checkpoint with this architecture must hold."""
    shapes = {
        ENC_W: (arch.latent_dim, arch.input_dim),
        ENC_B: (arch.latent_dim,),
        DEC_W: (arch.input_dim, arch.latent_dim),
    }
    if arch.bias_decoder:
        shapes[DEC_B] = (arch.input_dim,)
    if arch.activation_encoder == "id":  # the reference uses LayerNorm(1) as the "identity" encoder activation
        shapes["encoder.1.weight"] = (1,)
        shapes["encoder.1.bias"] = (1,)
    return shapes


def read_checkpoint(path: os.PathLike | str, progress: Optional[ProgressFn] = None) -> CheckpointData:
    """Read a GRADIEND checkpoint directory (or an experiment directory with ``model/``).

    Args:
        path: checkpoint directory.
        progress: optional ``progress(done_bytes, total_bytes)`` callback while a large
            weight file is read (files under 64 MiB are read in one go without calls).

    Returns:
        A :class:`CheckpointData`; weight tensors keep their stored dtype.

    Raises:
        CheckpointError: with the file and field at fault and what to do, for every malformed input.
    """
    ckpt_dir = resolve_checkpoint_dir(path)
    cfg_path = ckpt_dir / CONFIG_FILE
    cfg = _read_json(cfg_path, "config")
    if not isinstance(cfg, Mapping):
        raise CheckpointError(f"{cfg_path}: expected a JSON object.")
    version = cfg.get("format_version", FORMAT_VERSION)
    if type(version) is not int or version != FORMAT_VERSION:
        raise CheckpointError(
            f"{cfg_path}: format_version {version!r} is not supported (this tool reads {FORMAT_VERSION}); "
            "upgrade gradiend_core or re-save the model with gradiend 0.2.x."
        )
    arch = parse_architecture(cfg, cfg_path)
    pmap = parse_mapping(cfg, ckpt_dir, arch.input_dim)
    weights_file = _find_weights(ckpt_dir)
    state = _load_tensor_file(weights_file, progress)
    for key, shape in expected_weight_shapes(arch).items():
        if key not in state:
            raise CheckpointError(f"{weights_file}: tensor {key!r} is missing; the weight file is incomplete.")
        if not state[key].is_floating_point():
            raise CheckpointError(
                f"{weights_file}: tensor {key!r} has dtype {state[key].dtype}; GRADIEND weights are floating point."
            )
        if state[key].dtype != arch.dtype and not key.startswith("encoder.1."):
            # gradiend's load_state_dict casts to architecture.torch_dtype; do the same, so numbers agree.
            state[key] = state[key].to(arch.dtype)
        if tuple(state[key].shape) != shape:
            raise CheckpointError(
                f"{weights_file}: tensor {key!r} has shape {list(state[key].shape)} but config.json's architecture "
                f"requires {list(shape)}; weights and config do not belong together."
            )
    side = {}
    for name in CARRIED_JSON_FILES + (PROVENANCE_FILE,):
        if (ckpt_dir / name).is_file():
            try:
                side[name] = _read_json(ckpt_dir / name, name)
            except CheckpointError:
                pass  # side files are informational; a broken one must not block opening the model
    meta = cfg.get("metadata") or {}
    return CheckpointData(
        path=ckpt_dir,
        architecture=arch,
        param_map=pmap,
        state_dict=state,
        metadata=dict(meta) if isinstance(meta, Mapping) else {},
        side_files=side,
        weights_file=weights_file,
    )


# --------------------------------------------------------------------------------------- write
def safetensors_size(tensors: Mapping[str, Tuple[torch.dtype, Tuple[int, ...]]]) -> int:
    """Exact size in bytes of the safetensors file that ``safetensors.torch.save_file`` writes.

    Computed from names, dtypes and shapes only (no data), so that a preview can report disk
    bytes before anything is written. The layout is safetensors' documented one: an 8-byte
    little-endian header length, a compact UTF-8 JSON header padded with spaces to a multiple of
    8, then the raw data ordered by safetensors' dtype order (descending) and name. A test pins this against
    files that safetensors actually writes.
    """
    order = sorted(tensors.items(), key=lambda kv: (-_ST_ORDER[_ST_DTYPE[kv[1][0]]], kv[0]))
    header: Dict[str, Any] = {}
    offset = 0
    for name, (dtype, shape) in order:
        n = int(np.prod(shape, dtype=np.int64)) * torch.empty(0, dtype=dtype).element_size()
        header[name] = {"dtype": _ST_DTYPE[dtype], "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    hlen = len(json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    hlen += (-hlen) % 8
    return 8 + hlen + offset


def build_mapping(
    param_map: ParamMap, use_safetensors: bool = True
) -> Tuple[Dict[str, Any], Dict[str, Tuple[torch.dtype, Tuple[int, ...], ParamEntry]], Dict[str, Tuple[torch.dtype, Tuple[int, ...], ParamEntry]]]:
    """The ``mapping`` block of ``config.json`` and what the two mapping files will hold.

    No tensor is built here, so previews of huge models stay cheap.

    Returns:
        ``(mapping_json, index_specs, mask_specs)``, the specs mapping each key (``L{i}``) to
        ``(dtype, shape, entry)``: int32 indices (int64 for parameters over 2**31-1 entries) of
        shape ``(num_selected,)``, uint8 masks of the parameter shape.
    """
    entries = []
    idx: Dict[str, Tuple[torch.dtype, Tuple[int, ...], ParamEntry]] = {}
    masks: Dict[str, Tuple[torch.dtype, Tuple[int, ...], ParamEntry]] = {}
    for e, rep, key in param_map.storage_plan():
        item: Dict[str, Any] = {"name": e.name, "shape": list(e.shape), "repr": rep}
        if rep == "indices":
            idx[key] = (torch.int32 if e.numel <= 2**31 - 1 else torch.int64, (e.num_selected,), e)
            item["key"] = key
        elif rep == "mask":
            masks[key] = (torch.uint8, tuple(e.shape), e)
            item["key"] = key
        item["num_selected"] = e.num_selected
        entries.append(item)
    reprs = sorted({item["repr"] for item in entries})
    mode = reprs[0] if len(reprs) == 1 else "mixed"
    mapping: Dict[str, Any] = {"mode": mode, "param_map": entries}
    ext = "safetensors" if use_safetensors else "pth"
    if idx:
        mapping["indices_file"] = f"mapping_indices.{ext}"
    if masks:
        mapping["masks_file"] = f"mapping_masks.{ext}"
    return mapping, idx, masks


def _materialise(specs: Mapping[str, Tuple[torch.dtype, Tuple[int, ...], ParamEntry]]) -> Dict[str, torch.Tensor]:
    out = {}
    for key, (dtype, shape, e) in specs.items():
        if dtype == torch.uint8:
            m = np.zeros(e.numel, dtype=np.uint8)
            m[e.selected_positions()] = 1
            out[key] = torch.from_numpy(m.reshape(shape))
        else:
            out[key] = torch.from_numpy(e.selected_positions().astype(np.int32 if dtype == torch.int32 else np.int64))
    return out


def side_file_text(obj: Any) -> str:
    """The exact text a JSON side file is written with."""
    return json.dumps(obj, indent=2)


def planned_file_sizes(
    architecture: Architecture,
    param_map: ParamMap,
    weight_shapes: Mapping[str, Tuple[torch.dtype, Tuple[int, ...]]],
    metadata: Mapping[str, Any],
    side_files: Optional[Mapping[str, Any]] = None,
) -> Dict[str, int]:
    """Bytes of every file :func:`write_checkpoint` writes with safetensors, before writing.

    Args:
        architecture, param_map, metadata, side_files: as for :func:`write_checkpoint`.
        weight_shapes: ``key -> (dtype, shape)`` of the weights to write.

    Returns:
        File name -> size in bytes (config.json, model.safetensors, mapping files, side files).
    """
    mapping, idx, masks = build_mapping(param_map, True)
    sizes = {
        CONFIG_FILE: len(render_config(architecture, mapping, metadata).encode("utf-8")),
        SAFETENSORS_WEIGHTS: safetensors_size(weight_shapes),
    }
    if idx:
        sizes[mapping["indices_file"]] = safetensors_size({k: (d, s) for k, (d, s, _) in idx.items()})
    if masks:
        sizes[mapping["masks_file"]] = safetensors_size({k: (d, s) for k, (d, s, _) in masks.items()})
    for name, obj in (side_files or {}).items():
        sizes[name] = len(side_file_text(obj).encode("utf-8"))
    return sizes


def render_config(arch: Architecture, mapping: Mapping[str, Any], metadata: Mapping[str, Any]) -> str:
    """The exact text of ``config.json`` (indent 2, the reference's key order)."""
    cfg = {
        "format_version": FORMAT_VERSION,
        "architecture": arch.to_json(),
        "mapping": mapping,
        "metadata": dict(metadata),
    }
    return json.dumps(cfg, indent=2)


def _save_tensors(path: Path, tensors: Mapping[str, torch.Tensor], use_safetensors: bool) -> None:
    tensors = {k: v.detach().contiguous() for k, v in tensors.items()}
    if use_safetensors:
        from safetensors.torch import save_file

        save_file(tensors, str(path))
    else:
        torch.save(tensors, str(path))


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_target(target: Path, overwrite: bool, source: Optional[Path] = None) -> None:
    """Refuse export targets that could lose data.

    Raises:
        CheckpointError: if ``target`` is the source checkpoint or lies inside it, is a file,
            or is a non-empty directory and ``overwrite`` is false.
    """
    if "\0" in str(target):
        raise CheckpointError(f"export target {str(target)!r} contains a NUL byte; choose another name.")
    t = target.expanduser().resolve()
    if source is not None:
        s = Path(source).expanduser().resolve()
        if t == s or s in t.parents:
            raise CheckpointError(
                f"export target {target} is the source checkpoint {source} or inside it; choose another directory "
                "(the source is never modified)."
            )
        if t in s.parents:
            raise CheckpointError(
                f"export target {target} contains the source checkpoint {source}; overwriting it would delete the "
                "source. Choose another directory."
            )
    if t.exists() and not t.is_dir():
        raise CheckpointError(f"export target {target} is a file; give a directory path.")
    if t.is_dir() and any(t.iterdir()) and overwrite and not (t / CONFIG_FILE).is_file():
        raise CheckpointError(
            f"export target {target} is not empty and is not a GRADIEND checkpoint; overwrite replaces only "
            "checkpoint directories. Choose an empty or new directory."
        )
    if t.is_dir() and any(t.iterdir()) and not overwrite:
        raise CheckpointError(
            f"export target {target} is not empty; choose an empty or new directory, or pass overwrite=True "
            "(CLI: --overwrite; dashboard: tick 'Replace a non-empty directory') to replace it."
        )


def write_checkpoint(
    target: os.PathLike | str,
    *,
    architecture: Architecture,
    param_map: ParamMap,
    state_dict: Mapping[str, torch.Tensor],
    metadata: Mapping[str, Any],
    side_files: Optional[Mapping[str, Any]] = None,
    use_safetensors: bool = True,
    overwrite: bool = False,
    source: Optional[os.PathLike | str] = None,
    tensor_files: Optional[Mapping[str, Tuple[Mapping[str, torch.Tensor], Mapping[str, str]]]] = None,
) -> Path:
    """Write a checkpoint directory atomically.

    Files are written into a fresh temporary directory beside ``target`` and moved into place
    with one rename, so a failure (full disk, crash) leaves either nothing or the old content.

    Args:
        target: directory to create.
        architecture, param_map, state_dict, metadata: the model.
        side_files: JSON-serialisable objects by file name (e.g. ``training.json``).
        use_safetensors: ``model.safetensors`` and ``.safetensors`` mapping files if true, else
            ``pytorch_model.bin`` and ``.pth`` (the reference's two layouts).
        overwrite: replace a non-empty ``target``.
        source: the checkpoint this one derives from; ``target`` may not be or contain it.
        tensor_files: extra safetensors files written in the same atomic step, as file name ->
            ``(tensors, header metadata)`` (e.g. the trainer's pre-prune record).

    Returns:
        The target path.

    Raises:
        CheckpointError: for a refused target (see :func:`check_target`) or a failed write.
    """
    target = Path(target).expanduser()
    check_target(target, overwrite, Path(source) if source is not None else None)
    parent = target.resolve().parent
    mapping, idx, masks = build_mapping(param_map, use_safetensors)
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=parent))
    except OSError as e:
        raise CheckpointError(
            f"cannot create {target}: {e.strerror or e} ({e.filename or parent}); choose a directory you can write."
        ) from e
    try:
        _save_tensors(tmp / (SAFETENSORS_WEIGHTS if use_safetensors else BIN_WEIGHTS), state_dict, use_safetensors)
        if idx:
            _save_tensors(tmp / mapping["indices_file"], _materialise(idx), use_safetensors)
        if masks:
            _save_tensors(tmp / mapping["masks_file"], _materialise(masks), use_safetensors)
        (tmp / CONFIG_FILE).write_text(render_config(architecture, mapping, metadata), encoding="utf-8")
        for name, obj in (side_files or {}).items():
            (tmp / name).write_text(side_file_text(obj), encoding="utf-8")
        for name, (tensors, header) in (tensor_files or {}).items():
            from safetensors.torch import save_file

            save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(tmp / name), metadata=dict(header))
        umask = os.umask(0)
        os.umask(umask)
        for f in tmp.iterdir():
            # safetensors creates files 0600; a checkpoint is shared data, so use the usual 0644 (less umask).
            os.chmod(f, 0o666 & ~umask)
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o755)
        final = target.resolve()
        if final.exists():
            # Move the old directory aside first so that the swap is two renames, never a half-written tree.
            trash = parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(final, trash)
            os.rename(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(tmp, final)
        _fsync_dir(parent)
        return final
    except CheckpointError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except (OSError, RuntimeError) as e:  # safetensors and torch.save raise their own types for I/O errors
        shutil.rmtree(tmp, ignore_errors=True)
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).strip().splitlines()[-1][:200]
        raise CheckpointError(f"writing {target} failed ({reason}); nothing was written.") from e
    except Exception as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if type(e).__name__ == "SafetensorError":
            raise CheckpointError(f"writing {target} failed ({e}); nothing was written.") from e
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

