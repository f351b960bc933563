"""Zip archives of checkpoint directories: safe extraction (uploads) and packing (downloads).

Extraction treats the archive as hostile. Before anything is written it refuses entries that
would land outside the target (absolute paths, ``..``, drive letters, symbolic links, and
targets that an existing link in the destination redirects elsewhere), archives with too many
entries, and archives that claim too high a compression ratio (zip bombs). While writing it
counts the bytes that really come out (the sizes in the headers are not trusted) and stops at
the byte limit. Files are created exclusively and never through a link. On any failure every
file and directory it created is removed again, so a refused archive leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from ..errors import CheckpointError
from ..util.units import format_bytes
from .files import CONFIG_FILE
from .reader import resolve_checkpoint_dir

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_ENTRIES",
    "DEFAULT_MAX_RATIO",
    "RATIO_FLOOR_BYTES",
    "extract_checkpoint_zip",
    "zip_directory",
    "zip_verified",
]

#: Largest total uncompressed size accepted from an archive (bytes); guards against zip bombs.
DEFAULT_MAX_BYTES = 4 * 1024**3
#: Most entries (files and directories) accepted: a checkpoint directory holds about ten files.
DEFAULT_MAX_ENTRIES = 1000
#: Highest compression ratio (uncompressed / compressed bytes) accepted for an archive or an
#: entry larger than :data:`RATIO_FLOOR_BYTES`. Weights compress by about 1.1; deflate's maximum is
#: about 1030, which is what zip bombs use.
DEFAULT_MAX_RATIO = 100
#: Entries and archives up to this many uncompressed bytes are not held to the ratio (a mostly
#: zero mapping mask of a large embedding compresses very well and is still small).
RATIO_FLOOR_BYTES = 64 * 1024**2
#: Bytes copied per read while extracting.
_CHUNK = 1 << 20

ArchiveSource = str | os.PathLike | io.BytesIO | BinaryIO | bytes


def _unsafe_name(name: str) -> bool:
    p = PurePosixPath(name.replace("\\", "/"))
    return (
        not name
        or p.is_absolute()
        or ".." in p.parts
        or name.startswith(("/", "\\"))
        or (bool(p.parts) and ":" in p.parts[0])
        or "\0" in name
    )


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


@dataclass
class _Plan:
    """What an archive will write, checked before anything is written."""

    files: list[zipfile.ZipInfo] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)
    declared: int = 0
    compressed: int = 0


def _check_entries(
    zf: zipfile.ZipFile, name: str, real_dest: str, max_bytes: int, max_entries: int, max_ratio: float
) -> _Plan:
    infos = zf.infolist()
    if len(infos) > max_entries:
        raise CheckpointError(
            f"{name}: holds {len(infos):,} entries; a zipped checkpoint has a few files (at most {max_entries:,} are "
            "accepted). Zip only the checkpoint directory."
        )
    plan = _Plan()
    for info in infos:
        entry = info.filename
        if _unsafe_name(entry):
            raise CheckpointError(f"{name}: entry {entry!r} would be written outside the target directory; refused.")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise CheckpointError(f"{name}: entry {entry!r} is a symbolic link; links are refused.")
        rel = entry.replace("\\", "/").strip("/")
        if rel in ("", "."):
            continue
        target = os.path.realpath(os.path.join(real_dest, rel))
        if not _inside(target, real_dest):
            raise CheckpointError(
                f"{name}: entry {entry!r} would be written to {target}, outside the target directory {real_dest} (a "
                "link in the target directory points elsewhere); refused. Extract into an empty directory."
            )
        if info.is_dir():
            plan.dirs.append(rel)
            continue
        plan.files.append(info)
        plan.declared += info.file_size
        plan.compressed += info.compress_size
        if info.file_size > RATIO_FLOOR_BYTES and info.file_size > max_ratio * max(info.compress_size, 1):
            raise CheckpointError(
                f"{name}: entry {entry!r} claims to expand {info.compress_size:,} bytes to {info.file_size:,} (ratio "
                f"{info.file_size / max(info.compress_size, 1):,.0f}, at most {max_ratio:g} is accepted); this looks "
                "like a zip bomb and is refused."
            )
    if plan.declared > max_bytes:
        raise CheckpointError(
            f"{name}: uncompressed size {plan.declared:,} bytes exceeds the limit of {max_bytes:,} bytes "
            f"({format_bytes(max_bytes)}); open the checkpoint from a local path instead."
        )
    if plan.declared > RATIO_FLOOR_BYTES and plan.declared > max_ratio * max(plan.compressed, 1):
        raise CheckpointError(
            f"{name}: {plan.compressed:,} compressed bytes claim to expand to {plan.declared:,} (ratio "
            f"{plan.declared / max(plan.compressed, 1):,.0f}, at most {max_ratio:g} is accepted); this looks like a "
            "zip bomb and is refused."
        )
    if not any(PurePosixPath(i.filename.replace("\\", "/")).name == CONFIG_FILE for i in plan.files):
        raise CheckpointError(f"{name}: the archive holds no {CONFIG_FILE}; it is not a zipped GRADIEND checkpoint.")
    return plan


class _Writer:
    """Creates the archive's files under ``root``, remembers what it created, counts bytes."""

    def __init__(self, root: str, name: str, max_bytes: int) -> None:
        self.root, self.name, self.max_bytes = root, name, max_bytes
        self.written = 0
        self.created: list[str] = []

    def makedirs(self, rel: str) -> str:
        path = self.root
        for part in PurePosixPath(rel).parts:
            path = os.path.join(path, part)
            try:
                os.mkdir(path, 0o777)
                self.created.append(path)
            except FileExistsError:
                if os.path.islink(path) or not os.path.isdir(path):
                    raise CheckpointError(
                        f"{self.name}: {path} exists and is not a directory (or is a link); extract into an empty "
                        "directory."
                    ) from None
        return path

    def write(self, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
        rel = info.filename.replace("\\", "/").strip("/")
        parent = self.makedirs(str(PurePosixPath(rel).parent)) if "/" in rel else self.root
        path = os.path.join(parent, PurePosixPath(rel).name)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
        try:
            fd = os.open(path, flags, 0o666)
        except FileExistsError:
            raise CheckpointError(
                f"{self.name}: {path} already exists (or the archive holds {info.filename!r} twice); extract into an "
                "empty directory."
            ) from None
        self.created.append(path)
        with zf.open(info) as src, os.fdopen(fd, "wb") as dst:
            while True:
                block = src.read(_CHUNK)
                if not block:
                    break
                self.written += len(block)
                if self.written > self.max_bytes:
                    raise CheckpointError(
                        f"{self.name}: unpacks to more than the limit of {self.max_bytes:,} bytes "
                        f"({format_bytes(self.max_bytes)}); refused and removed."
                    )
                dst.write(block)

    def undo(self) -> None:
        for path in reversed(self.created):
            try:
                if os.path.isdir(path) and not os.path.islink(path):
                    os.rmdir(path)
                else:
                    os.unlink(path)
            except OSError:
                pass


def extract_checkpoint_zip(
    archive: ArchiveSource,
    dest: str | os.PathLike,
    max_bytes: int = DEFAULT_MAX_BYTES,
    *,
    max_entries: int = DEFAULT_MAX_ENTRIES,
    max_ratio: float = DEFAULT_MAX_RATIO,
) -> Path:
    """Extract a .zip of a checkpoint directory into ``dest`` and return the checkpoint dir.

    Every entry is checked before anything is written (see the module docstring); while
    writing, the bytes that come out are counted and extraction stops at ``max_bytes``. Existing
    files in ``dest`` are never overwritten. On failure, everything this call created is removed.

    Args:
        archive: path, bytes or file-like object of the .zip.
        dest: directory to extract into (created if needed).
        max_bytes: limit on the bytes written, in bytes.
        max_entries: limit on the number of entries (files and directories).
        max_ratio: limit on uncompressed / compressed bytes of an entry or of the whole archive,
            for sizes above :data:`RATIO_FLOOR_BYTES`.

    Returns:
        The directory within ``dest`` that holds ``config.json``.

    Raises:
        CheckpointError: for a file that is not a zip, an unsafe, oversized or damaged archive,
            or an archive without a checkpoint (the only exception this raises for bad input).
    """
    if isinstance(archive, (bytes, bytearray, memoryview)):
        archive = io.BytesIO(bytes(archive))
    name = getattr(archive, "name", None) or (str(archive) if isinstance(archive, (str, os.PathLike)) else "upload")
    try:
        zf = zipfile.ZipFile(archive)
    except Exception as e:  # hostile bytes: zipfile raises BadZipFile, NotImplementedError, ValueError, ...
        raise CheckpointError(
            f"{name}: not a readable .zip archive ({e}); zip the checkpoint directory and try again."
        ) from e
    with zf:
        try:
            os.makedirs(dest, exist_ok=True)
            real_dest = os.path.realpath(dest)
        except (OSError, ValueError) as e:
            raise CheckpointError(f"cannot unpack into {dest}: {getattr(e, 'strerror', None) or e}.") from e
        plan = _check_entries(zf, name, real_dest, max_bytes, max_entries, max_ratio)
        writer = _Writer(real_dest, name, max_bytes)
        try:
            for rel in plan.dirs:
                writer.makedirs(rel)
            for info in plan.files:
                writer.write(zf, info)
            return _checkpoint_dir(real_dest, plan)
        except CheckpointError:
            writer.undo()
            raise
        except Exception as e:  # hostile bytes: whatever zipfile or zlib raise while reading them
            writer.undo()
            reason = getattr(e, "strerror", None) or e
            raise CheckpointError(
                f"{name}: cannot be unpacked ({reason}); encrypted archives and exotic compression are not supported, "
                "and a damaged archive must be zipped again. Nothing was kept."
            ) from e
        except BaseException:
            writer.undo()
            raise


def _checkpoint_dir(real_dest: str, plan: _Plan) -> Path:
    """The shallowest extracted directory that holds ``config.json``."""
    configs = sorted(
        (
            PurePosixPath(i.filename.replace("\\", "/").strip("/"))
            for i in plan.files
            if PurePosixPath(i.filename.replace("\\", "/")).name == CONFIG_FILE
        ),
        key=lambda q: (len(q.parts), str(q)),
    )
    return resolve_checkpoint_dir(Path(real_dest, *configs[0].parent.parts))


def zip_directory(directory: str | os.PathLike) -> bytes:
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


def zip_verified(
    directory: str | os.PathLike,
    expected_sha256: Mapping[str, str],
    out: str | os.PathLike,
    arcname: str | None = None,
) -> int:
    """Pack exactly the files whose checksums are known into the .zip ``out``, checking each byte.

    Each file of ``expected_sha256`` is read once, written to the archive (stored, under
    ``arcname/``, default the directory's name) and hashed on the way; the archive is only kept
    when every file has the expected sha256 and the directory holds no other files.

    Args:
        directory: the directory, e.g. an export.
        expected_sha256: file name -> hex sha256, e.g. :attr:`ExportResult.file_sha256`.
        out: the .zip to write (replaced; removed again on failure).
        arcname: folder name inside the archive.

    Returns:
        The archive's size in bytes.

    Raises:
        CheckpointError: when a file is missing, extra or differs (the directory changed since
            the checksums were taken), or the archive cannot be written.
    """
    d, out = Path(directory), Path(out)
    folder = arcname or d.name
    try:
        present = sorted(f.name for f in d.iterdir() if f.is_file())
        if present != sorted(expected_sha256):
            raise CheckpointError(
                f"{d} has changed since its checksums were taken (files now: {', '.join(present) or 'none'}); it is "
                "not packed."
            )
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for fname in present:
                _add_checked(zf, d / fname, f"{folder}/{fname}", expected_sha256[fname])
        return out.stat().st_size
    except CheckpointError:
        out.unlink(missing_ok=True)
        raise
    except OSError as e:
        out.unlink(missing_ok=True)
        raise CheckpointError(f"cannot pack {d} into {out}: {e.strerror or e}.") from e
    except BaseException:
        out.unlink(missing_ok=True)
        raise


def _add_checked(zf: zipfile.ZipFile, path: Path, arcname: str, want: str) -> None:
    h = hashlib.sha256()
    size = path.stat().st_size
    info = zipfile.ZipInfo(arcname)
    info.external_attr = 0o644 << 16
    with open(path, "rb") as src, zf.open(info, "w", force_zip64=size > 2**31 - 1) as dst:
        for block in iter(lambda: src.read(_CHUNK), b""):
            h.update(block)
            dst.write(block)
    if h.hexdigest() != want:
        raise CheckpointError(f"{path} has changed since its checksum was taken; it is not packed.")
