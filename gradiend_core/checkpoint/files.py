"""Every file name of a GRADIEND checkpoint directory, defined once.

The directory is the unit of exchange (as with Hugging Face ``save_pretrained``); its readers and
writers (the format, the reader and writer, the export, the trainer, the size on disk, the export
target check, the gradients of the pruning curve) take the names from here.

* model files, written by ``gradiend``'s ``save_pretrained`` and read by its ``from_pretrained``:
  :data:`CONFIG_FILE`, the weights (:data:`SAFETENSORS_WEIGHTS` or :data:`BIN_WEIGHTS`) and the
  mapping files ``<stem>.safetensors`` / ``<stem>.pth`` for the stems :data:`MAPPING_STEMS`;
* JSON side files: :data:`TRAINING_FILE` and :data:`CONTEXT_FILE` (the reference's trainer writes
  them; an export carries them over unchanged) and :data:`PROVENANCE_FILE` (an export's record);
* tensor side files of this package: :data:`PRE_PRUNE_FILE` and :data:`VALIDATION_FILE` (the
  trainer's records) and :data:`EXPORT_MASK_FILE` (the mask an export's selection used).
"""

from __future__ import annotations

__all__ = [
    "BIN_WEIGHTS",
    "CARRIED_JSON_FILES",
    "CHECKPOINT_FILES",
    "CONFIG_FILE",
    "CONTEXT_FILE",
    "EXPORT_MASK_FILE",
    "MAPPING_INDICES",
    "MAPPING_MASKS",
    "MAPPING_STEMS",
    "PRE_PRUNE_FILE",
    "PROVENANCE_FILE",
    "SAFETENSORS_WEIGHTS",
    "TRAINING_FILE",
    "VALIDATION_FILE",
]

CONFIG_FILE = "config.json"
SAFETENSORS_WEIGHTS = "model.safetensors"
BIN_WEIGHTS = "pytorch_model.bin"
#: Stem of the mapping file of the selected indices (``.safetensors`` or ``.pth``).
MAPPING_INDICES = "mapping_indices"
#: Stem of the mapping file of the bool masks (``.safetensors`` or ``.pth``).
MAPPING_MASKS = "mapping_masks"
#: Stems of the mapping files.
MAPPING_STEMS = (MAPPING_INDICES, MAPPING_MASKS)

TRAINING_FILE = "training.json"
CONTEXT_FILE = "gradiend_context.json"
#: JSON side files carried over unchanged from a source checkpoint into its exports.
CARRIED_JSON_FILES = (TRAINING_FILE, CONTEXT_FILE)
PROVENANCE_FILE = "pruning.json"

PRE_PRUNE_FILE = "pre_prune.safetensors"
VALIDATION_FILE = "validation_gradients.safetensors"
#: The mask an export's selection used, saved in the export directory (see :mod:`gradiend_core.pruning.export`).
EXPORT_MASK_FILE = "mask.safetensors"

#: Names of the files a GRADIEND checkpoint directory holds (written by ``gradiend`` or by this
#: package), besides the mapping files ``<stem>.*`` of :data:`MAPPING_STEMS`.
CHECKPOINT_FILES = frozenset(
    {CONFIG_FILE, SAFETENSORS_WEIGHTS, BIN_WEIGHTS, PROVENANCE_FILE, *CARRIED_JSON_FILES}
    | {EXPORT_MASK_FILE, PRE_PRUNE_FILE, VALIDATION_FILE}
)
