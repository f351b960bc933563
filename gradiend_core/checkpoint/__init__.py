"""GRADIEND checkpoint directories (format_version 0 of ``gradiend``), read and written in one place.

* :mod:`.files` - every file name of a checkpoint directory, defined once;
* :mod:`.format` - tensor names, ``config.json`` (architecture, mapping) parsed and rendered, file
  sizes planned before writing;
* :mod:`.tensor_files` - the safetensors layout (read whole or by element range) and pickle files
  loaded without running code;
* :mod:`.reader` - finding and reading a checkpoint directory;
* :mod:`.writer` - the staged, atomic directory writer;
* :mod:`.targets` - which export targets are refused;
* :mod:`.weights` - a checkpoint's weights read from their file in blocks;
* :mod:`.records` - the trainer's records next to a checkpoint (pre-prune, validation gradients);
* :mod:`.sizes` - parameters and bytes in memory, size on disk;
* :mod:`.archive` - zip archives of checkpoint directories (safe extraction, packing);
* :mod:`.overview` - a checkpoint at a glance (``gradiend-core info``, the dashboard's header).

This package's ``__init__`` gathers the reader's and writer's names; its modules import each other
directly.
"""

from .files import BIN_WEIGHTS, CARRIED_JSON_FILES, CONFIG_FILE, PROVENANCE_FILE, SAFETENSORS_WEIGHTS
from .format import (
    ACTIVATIONS,
    DEC_B,
    DEC_W,
    DTYPES,
    ENC_B,
    ENC_W,
    FORMAT_VERSION,
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
