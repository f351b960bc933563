"""Export settings whose written files are pinned byte for byte (``golden/export_digests.json``).

The digests were written by ``python tests/export_cases.py`` before the core was restructured;
``test_export_golden.py`` exports the same settings with the current code and compares. Only the
files that describe the model are pinned (config, weights, mapping files, carried JSON side
files); ``pruning.json`` holds a timestamp and paths, and the carried records and the saved mask
(``mask.safetensors``) are not the model; other tests check them.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden" / "export_digests.json"
PINNED_SUFFIXES = (".safetensors", ".bin", ".pth", ".json")
UNPINNED = {"pruning.json", "pre_prune.safetensors", "validation_gradients.safetensors", "mask.safetensors"}

#: name -> (sample, keyword arguments of export_pruned; "mask" is built by ``_mask``)
CASES: dict[str, tuple] = {
    "unpruned-dw-top5pct": ("number-unpruned", {"part": "decoder-weight", "topk": 0.05}),
    "unpruned-ew-top1000": ("number-unpruned", {"part": "encoder-weight", "topk": 1000}),
    "unpruned-ds-threshold": ("number-unpruned", {"part": "decoder-sum", "threshold": 1e-3}),
    "unpruned-db-bin": ("number-unpruned", {"part": "decoder-bias", "topk": 0.2, "use_safetensors": False}),
    "unpruned-mask-top100": ("number-unpruned", {"part": "decoder-weight", "topk": 100, "mask": "every-third"}),
    "postpruned-dw-top50pct": ("number-post-pruned", {"part": "decoder-weight", "topk": 0.5}),
    "prepruned-ew-top300": ("number-pre-pruned", {"part": "encoder-weight", "topk": 300}),
    "own-pre-post-ds-top25pct": ("own-pre-post-pruned", {"part": "decoder-sum", "topk": 0.25}),
    "gender-mask-only": ("gender-unpruned", {"mask": "every-third"}),
}


def _mask(kind: str, input_dim: int) -> np.ndarray:
    assert kind == "every-third"
    m = np.zeros(input_dim, dtype=bool)
    m[::3] = True
    return m


def export_case(name: str, out_root: Path, lazy: bool = False) -> dict[str, str]:
    """Export one case into ``out_root/name`` and return sha256 of its pinned files by name.

    ``lazy`` opens the source without loading its weights (the export then gathers the kept
    dims from the weight file); otherwise the weights are read into memory first.
    """
    from gradiend_core import export_pruned, read_checkpoint
    from gradiend_core.checkpoint import open_checkpoint

    sample, kwargs = CASES[name]
    kwargs = dict(kwargs)
    data = (open_checkpoint if lazy else read_checkpoint)(REPO / "sample_models" / sample)
    if "mask" in kwargs:
        kwargs["mask"] = _mask(kwargs["mask"], data.architecture.input_dim)
    result = export_pruned(data, out_root / name, **kwargs)
    return {
        f.name: hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(result.path.iterdir())
        if f.is_file() and f.name.endswith(PINNED_SUFFIXES) and f.name not in UNPINNED
    }


if __name__ == "__main__":  # regenerate the pins (only when a format change is intended)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        digests = {name: export_case(name, Path(tmp)) for name in CASES}
    GOLDEN.write_text(json.dumps(digests, indent=2, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN} ({len(digests)} cases)", file=sys.stderr)
