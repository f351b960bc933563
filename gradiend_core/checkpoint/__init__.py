"""GRADIEND checkpoint directories (format_version 0 of ``gradiend``), read and written in one place.

* :mod:`.format` - names, ``config.json`` (architecture, mapping) parsed and rendered, file sizes
  planned before writing;
* :mod:`.tensor_files` - the safetensors layout (read whole or by element range) and pickle files
  loaded without running code;
* :mod:`.reader` - finding and reading a checkpoint directory;
* :mod:`.writer` - the staged, atomic directory writer;
* :mod:`.targets` - which export targets are refused.
"""

from .format import (
    ACTIVATIONS,
    BIN_WEIGHTS,
    CARRIED_JSON_FILES,
    CONFIG_FILE,
    DEC_B,
    DEC_W,
    DTYPES,
    ENC_B,
    ENC_W,
    FORMAT_VERSION,
    PROVENANCE_FILE,
    SAFETENSORS_WEIGHTS,
    Architecture,
    build_mapping,
    expected_weight_shapes,
    parse_architecture,
    parse_mapping,
    planned_file_sizes,
    render_config,
    side_file_text,
)
from .reader import (
    CheckpointData,
    find_weights,
    open_checkpoint,
    read_checkpoint,
    read_config,
    read_json,
    resolve_checkpoint_dir,
)
from .targets import check_target
from .tensor_files import ProgressFn, SafetensorsFile, load_tensor_file, safetensors_size
from .weights import WeightSource
from .writer import write_checkpoint

__all__ = [
    "ACTIVATIONS",
    "Architecture",
    "BIN_WEIGHTS",
    "CARRIED_JSON_FILES",
    "CONFIG_FILE",
    "CheckpointData",
    "DEC_B",
    "DEC_W",
    "DTYPES",
    "ENC_B",
    "ENC_W",
    "FORMAT_VERSION",
    "PROVENANCE_FILE",
    "ProgressFn",
    "SAFETENSORS_WEIGHTS",
    "SafetensorsFile",
    "WeightSource",
    "build_mapping",
    "check_target",
    "expected_weight_shapes",
    "find_weights",
    "load_tensor_file",
    "open_checkpoint",
    "parse_architecture",
    "parse_mapping",
    "planned_file_sizes",
    "read_checkpoint",
    "read_config",
    "read_json",
    "render_config",
    "resolve_checkpoint_dir",
    "safetensors_size",
    "side_file_text",
    "write_checkpoint",
]
