"""Zip archives of checkpoint directories: safe extraction (uploads) and packing (downloads)."""

from __future__ import annotations

import io
import os
import stat
import zipfile
from pathlib import Path, PurePosixPath
from typing import Union

from .checkpoint import CONFIG_FILE, resolve_checkpoint_dir
from .errors import CheckpointError

#: Largest total uncompressed size accepted from an archive (bytes); guards against zip bombs.
DEFAULT_MAX_BYTES = 4 * 1024**3


def extract_checkpoint_zip(
    archive: Union[str, os.PathLike, io.BytesIO, bytes],
    dest: Union[str, os.PathLike],
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Path:
    """Extract a .zip of a checkpoint directory into ``dest`` and return the checkpoint dir.

    Every entry is checked before anything is written: no absolute paths, no ``..``, no
    symbolic links, and at most ``max_bytes`` uncompressed in total.

    Args:
        archive: path, bytes or file-like object of the .zip.
        dest: directory to extract into (created if needed).
        max_bytes: limit on the total uncompressed size, in bytes.

    Returns:
        The directory within ``dest`` that holds ``config.json``.

    Raises:
        CheckpointError: for a file that is not a zip, an unsafe or oversized archive, or an
            archive without a checkpoint.
    """
    if isinstance(archive, bytes):
        archive = io.BytesIO(archive)
    name = getattr(archive, "name", None) or (str(archive) if isinstance(archive, (str, os.PathLike)) else "upload")
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f"{name}: not a readable .zip archive ({e}); zip the checkpoint directory and try again.") from e
    dest = Path(dest)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CheckpointError(f"cannot unpack into {dest}: {e.strerror or e}.") from e
    with zf:
        total = 0
        for info in zf.infolist():
            p = PurePosixPath(info.filename)
            if p.is_absolute() or ".." in p.parts or info.filename.startswith(("/", "\\")) or (p.parts and ":" in p.parts[0]):
                raise CheckpointError(f"{name}: entry {info.filename!r} would be written outside the target directory; refused.")
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise CheckpointError(f"{name}: entry {info.filename!r} is a symbolic link; links are refused.")
            total += info.file_size
            if total > max_bytes:
                raise CheckpointError(
                    f"{name}: uncompressed size exceeds the limit of {max_bytes:,} bytes; open the checkpoint from a local "
                    "path instead."
                )
        if not any(PurePosixPath(i.filename).name == CONFIG_FILE for i in zf.infolist()):
            raise CheckpointError(f"{name}: the archive holds no {CONFIG_FILE}; it is not a zipped GRADIEND checkpoint.")
        try:
            zf.extractall(dest)
        except (zipfile.BadZipFile, RuntimeError, NotImplementedError, OSError, EOFError) as e:
            raise CheckpointError(
                f"{name}: cannot be unpacked ({e}); encrypted archives and exotic compression are not supported, and a "
                "damaged archive must be zipped again."
            ) from e
    configs = sorted(dest.rglob(CONFIG_FILE), key=lambda q: len(q.parts))
    return resolve_checkpoint_dir(configs[0].parent)


def zip_directory(directory: Union[str, os.PathLike]) -> bytes:
    """The files of ``directory`` (not recursive) as an in-memory .zip under its own name.

    Stored uncompressed: weight files barely compress and this keeps downloads quick.
    """
    d = Path(directory)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for f in sorted(d.iterdir()):
            if f.is_file():
                zf.write(f, arcname=f"{d.name}/{f.name}")
    return buf.getvalue()
