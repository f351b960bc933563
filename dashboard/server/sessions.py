"""What the dashboard keeps on disk for its sessions, and when it lets go of it.

One server process serves every browser session, so everything here is shared, locked and
bounded in bytes:

* **Where** - ``$GRADIEND_DASHBOARD_TMPDIR`` (default: ``<system temp>/gradiend-dashboard-<uid>``)
  holds one folder per server process, ``server-<pid>-<random>/``, locked (``flock``) for the
  process's lifetime; in it ``sessions/<id>/`` (a session's mask uploads and export download
  archives) and ``uploads/<sha256>/`` (an uploaded .zip, unpacked once per content and shared by
  every session that uploads the same bytes).
* **How much** - a session may keep at most ``GRADIEND_DASHBOARD_SESSION_BYTES`` (default
  8 GiB; its uploads count in full) and all unpacked uploads together at most
  ``GRADIEND_DASHBOARD_UPLOAD_BYTES`` (default 16 GiB). Values are bytes, or a number with K, M,
  G or T (powers of 1024). Sizes are reserved before anything is written.
* **How long** - a failed unpack is deleted at once. A session's files are deleted when the
  session ends: Streamlit releases the session-scoped resource of :func:`session_files` when a
  session disconnects or is closed, and a sweep (every ``GRADIEND_DASHBOARD_SWEEP_SECONDS``,
  default 30) deletes the files of a released session once it has not come back for
  ``server.disconnectedSessionTTL`` seconds (Streamlit's own time limit for resuming a session).
  An upload is deleted when the last session using it ends or drops it. Folders of server
  processes that no longer run (their lock is free) are deleted when the next server starts.
"""

from __future__ import annotations

import atexit
import fcntl
import hashlib
import io
import os
import shutil
import tempfile
import threading
import time
import uuid
import weakref
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import streamlit as st

from dashboard.services.memory import release_freed_memory
from gradiend_core.checkpoint.archive import extract_checkpoint_zip
from gradiend_core.errors import CheckpointError
from gradiend_core.util.units import format_bytes, parse_bytes

__all__ = [
    "Budgets",
    "ENV_SESSION_BYTES",
    "ENV_SWEEP_SECONDS",
    "ENV_TMPDIR",
    "ENV_UPLOAD_BYTES",
    "SessionDir",
    "SessionRegistry",
    "allowed_roots",
    "check_allowed",
    "registry",
    "session_files",
    "size_setting",
    "upload_checkpoint",
]

ENV_TMPDIR = "GRADIEND_DASHBOARD_TMPDIR"
ENV_SESSION_BYTES = "GRADIEND_DASHBOARD_SESSION_BYTES"
ENV_UPLOAD_BYTES = "GRADIEND_DASHBOARD_UPLOAD_BYTES"
ENV_SWEEP_SECONDS = "GRADIEND_DASHBOARD_SWEEP_SECONDS"
DEFAULT_SESSION_BYTES = 8 * 1024**3
DEFAULT_UPLOAD_BYTES = 16 * 1024**3
DEFAULT_SWEEP_SECONDS = 30.0


def size_setting(text: str, variable: str) -> int:
    """A positive size from the environment variable ``variable`` (see
    :func:`gradiend_core.util.units.parse_bytes`: bytes, or a number with K, M, G or T).

    Raises:
        ValueError: naming ``variable`` when ``text`` is not such a size or not positive.
    """
    try:
        value = parse_bytes(text)
    except ValueError as e:
        raise ValueError(f"{variable}={text!r}: {e}") from None
    if value <= 0:
        raise ValueError(f"{variable}={text!r} must be a positive size in bytes, e.g. 8G or 512M.")
    return value


@dataclass(frozen=True)
class Budgets:
    """Byte limits: per session (its files and the uploads it uses) and for all uploads."""

    session_bytes: int = DEFAULT_SESSION_BYTES
    upload_bytes: int = DEFAULT_UPLOAD_BYTES

    @classmethod
    def from_env(cls) -> Budgets:
        """The limits set by ``GRADIEND_DASHBOARD_SESSION_BYTES`` / ``..._UPLOAD_BYTES`` (or defaults).

        Raises:
            ValueError: for a value that is not a size.
        """

        def size(variable: str, default: int) -> int:
            raw = os.environ.get(variable)
            return size_setting(raw, variable) if raw else default

        return cls(size(ENV_SESSION_BYTES, DEFAULT_SESSION_BYTES), size(ENV_UPLOAD_BYTES, DEFAULT_UPLOAD_BYTES))


@dataclass
class _Upload:
    """An unpacked upload, shared by the sessions in ``users``."""

    digest: str
    folder: Path
    checkpoint: Path | None = None
    nbytes: int = 0
    users: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class SessionDir:
    """One session's files.

    Attributes:
        key: the session's key (one per ``st.session_state``).
        path: its private directory.
        upload: digest of the upload it uses (``None`` without one).
        own_bytes: bytes of the files it keeps in ``path``, by relative name.
        failed: digest -> message of uploads that could not be opened (not retried).
        detached_at: ``time.monotonic()`` when Streamlit released the session (disconnected or
            closed), ``None`` while connected.
    """

    key: str
    path: Path
    streamlit_id: str | None = None
    upload: str | None = None
    upload_ids: dict[str, str] = field(default_factory=dict)  # upload's file id -> sha256 (hashed once)
    own_bytes: dict[str, int] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    detached_at: float | None = None


def _lock_is_free(folder: Path) -> bool:
    """Whether no process holds ``folder/.lock`` (its server has ended)."""
    try:
        fd = os.open(folder / ".lock", os.O_RDWR)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # closing drops a lock taken here


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


class SessionRegistry:
    """The server process's session files, uploads and budgets (see the module docstring).

    Args:
        root: the folder that holds one folder per server process.
        budgets: the byte limits.
        grace_seconds: how long a released session may come back before its files go
            (``None``: Streamlit's ``server.disconnectedSessionTTL``).
        is_active: ``is_active(streamlit_session_id)``, whether Streamlit still serves a session.
        on_upload_removed: called with an upload's checkpoint directory just before it is deleted
            (to drop what caches hold of it).
        on_session_ended: called with the Streamlit session id of a session that ended and is no
            longer served (default: drop the files Streamlit's uploader keeps of it).
    """

    def __init__(
        self,
        root: Path,
        budgets: Budgets,
        grace_seconds: float | None = None,
        is_active: Callable[[str], bool] | None = None,
        on_upload_removed: Callable[[Path], None] | None = None,
        on_session_ended: Callable[[str], None] | None = None,
    ) -> None:
        self.budgets = budgets
        self._on_session_ended = on_session_ended or _drop_streamlit_uploads
        self._grace = grace_seconds
        self._is_active = is_active or _streamlit_session_active
        self._on_upload_removed = on_upload_removed
        self._lock = threading.RLock()
        self._sessions: dict[str, SessionDir] = {}
        self._uploads: dict[str, _Upload] = {}
        self._reserved = 0
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._remove_stale(root)
        self.folder = Path(tempfile.mkdtemp(prefix=f"server-{os.getpid()}-", dir=root))
        self._lock_fd = os.open(self.folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        (self.folder / "sessions").mkdir()
        (self.folder / "uploads").mkdir()

    @staticmethod
    def _remove_stale(root: Path) -> None:
        """Remove the folders of servers that ended (their lock is free)."""
        for d in root.glob("server-*"):
            if d.is_dir() and not d.is_symlink() and _lock_is_free(d):
                shutil.rmtree(d, ignore_errors=True)

    # ------------------------------------------------------------------------- sessions
    def session(self, key: str, streamlit_id: str | None = None) -> SessionDir:
        """The files of session ``key`` (created on first use); marks it connected."""
        with self._lock:
            s = self._sessions.get(key)
            if s is None:
                path = self.folder / "sessions" / key
                path.mkdir(mode=0o700, exist_ok=True)
                s = self._sessions[key] = SessionDir(key, path, streamlit_id)
            s.detached_at = None
            s.streamlit_id = streamlit_id or s.streamlit_id
            return s

    def sessions(self) -> list[str]:
        """Keys of the sessions that have files."""
        with self._lock:
            return list(self._sessions)

    def detach(self, key: str) -> None:
        """Streamlit released the session (disconnected or closed); :meth:`sweep` ends it unless
        it comes back."""
        with self._lock:
            s = self._sessions.get(key)
            if s is not None and s.detached_at is None:
                s.detached_at = time.monotonic()

    def end(self, key: str) -> None:
        """Delete a session's files and drop its uses of uploads."""
        with self._lock:
            s = self._sessions.pop(key, None)
            if s is None:
                return
            gone = self._drop_upload(s)
        shutil.rmtree(s.path, ignore_errors=True)
        self._delete_uploads(gone)
        if s.streamlit_id and not self._is_active(s.streamlit_id):
            self._on_session_ended(s.streamlit_id)
        release_freed_memory()  # what the session held goes back to the system, not just to the heap

    def sweep(self) -> list[str]:
        """End every released session that has not come back within the grace period.

        Returns:
            The keys of the sessions ended.
        """
        grace = self._grace if self._grace is not None else _streamlit_ttl()
        now = time.monotonic()
        with self._lock:
            due = [
                s.key
                for s in self._sessions.values()
                if s.detached_at is not None
                and now - s.detached_at >= grace
                and not (s.streamlit_id and self._is_active(s.streamlit_id))
            ]
        for key in due:
            self.end(key)
        return due

    def close(self) -> None:
        """Delete everything of this server process (at exit)."""
        for key in self.sessions():
            self.end(key)
        shutil.rmtree(self.folder, ignore_errors=True)
        try:
            os.close(self._lock_fd)
        except OSError:
            pass

    # -------------------------------------------------------------------------- budgets
    def upload_bytes(self) -> int:
        """Bytes of all unpacked uploads (and reservations for those being unpacked)."""
        with self._lock:
            return sum(u.nbytes for u in self._uploads.values()) + self._reserved

    def session_bytes(self, s: SessionDir) -> int:
        """Bytes a session keeps: its own files and the upload it uses."""
        with self._lock:
            up = self._uploads.get(s.upload) if s.upload else None
            return sum(s.own_bytes.values()) + (up.nbytes if up else 0)

    def _session_room(self, s: SessionDir) -> int:
        return self.budgets.session_bytes - self.session_bytes(s)

    def _too_big(self, what: str, nbytes: int, s: SessionDir) -> str | None:
        room = self._session_room(s)
        if nbytes > room:
            return (
                f"{what} needs {format_bytes(nbytes)}, but this session may keep only {format_bytes(room)} more on the "
                f"server ({format_bytes(self.budgets.session_bytes)} in all, set by {ENV_SESSION_BYTES})."
            )
        return None

    # ---------------------------------------------------------------- a session's files
    def store(self, s: SessionDir, relative: str, data: bytes) -> Path:
        """Write ``data`` to ``relative`` inside the session's directory, within its budget.

        Raises:
            CheckpointError: when the session's budget does not allow it.
        """
        with self._lock:
            old = s.own_bytes.pop(relative, 0)
            problem = self._too_big(relative, len(data), s)
            if problem:
                s.own_bytes[relative] = old
                raise CheckpointError(problem)
            s.own_bytes[relative] = len(data)
        path = s.path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def reserve(self, s: SessionDir, relative: str, nbytes: int) -> Path:
        """Account ``nbytes`` for a file the caller writes to ``relative`` (e.g. a download archive).

        Raises:
            CheckpointError: when the session's budget does not allow it.
        """
        with self._lock:
            old = s.own_bytes.pop(relative, 0)
            problem = self._too_big(relative, nbytes, s)
            if problem:
                s.own_bytes[relative] = old
                raise CheckpointError(problem)
            s.own_bytes[relative] = nbytes
        (s.path / relative).parent.mkdir(parents=True, exist_ok=True)
        return s.path / relative

    def discard(self, s: SessionDir, relative: str) -> None:
        """Delete a file of the session and its accounting."""
        with self._lock:
            s.own_bytes.pop(relative, None)
        (s.path / relative).unlink(missing_ok=True)

    # -------------------------------------------------------------------------- uploads
    def open_upload(self, s: SessionDir, data: memoryview, name: str, file_id: str | None = None) -> Path:
        """The checkpoint directory of an uploaded .zip for session ``s``, unpacked once per content.

        The session drops the upload it used before. Identical bytes from several sessions share
        one unpacked copy; a copy is deleted when its last session drops it. An upload that
        fails is deleted at once and its error is remembered (not retried on every rerun).

        Args:
            s: the session.
            data: the .zip's bytes.
            name: its file name (for messages).
            file_id: the upload's id, if the caller has one: the bytes are hashed once per id.

        Raises:
            CheckpointError: for an unsafe or broken archive, or one the budgets do not allow.
        """
        digest = s.upload_ids.get(file_id) if file_id else None
        if digest is None:
            digest = hashlib.sha256(data).hexdigest()
            if file_id:
                s.upload_ids = {file_id: digest}
        if digest in s.failed:
            raise CheckpointError(s.failed[digest])
        with self._lock:
            up = self._uploads.get(digest)
            if s.upload == digest and up is not None and up.checkpoint is not None:
                return up.checkpoint
            gone = self._drop_upload(s)
        self._delete_uploads(gone)
        try:
            return self._use_upload(s, digest, data, name)
        except CheckpointError as e:
            s.failed[digest] = str(e)
            raise

    def release_upload(self, s: SessionDir) -> None:
        """The session no longer uses an upload (e.g. it chose another model source)."""
        with self._lock:
            gone = self._drop_upload(s)
        self._delete_uploads(gone)

    def fail_upload(self, s: SessionDir, message: str) -> None:
        """The session's upload unpacked but does not open: remember why, and drop it (deleted
        unless another session opened the same bytes)."""
        with self._lock:
            if s.upload:
                s.failed[s.upload] = message
        self.release_upload(s)

    def upload_folders(self, s: SessionDir) -> list[Path]:
        """Folders of the upload the session uses (for :func:`check_allowed`)."""
        with self._lock:
            up = self._uploads.get(s.upload) if s.upload else None
            return [up.folder] if up is not None else []

    def _drop_upload(self, s: SessionDir) -> list[_Upload]:
        """Drop the session's use of its upload (lock held); returns uploads no one uses."""
        digest, s.upload = s.upload, None
        up = self._uploads.get(digest) if digest else None
        if up is None:
            return []
        up.users.discard(s.key)
        if up.users or up.checkpoint is None:
            return []
        del self._uploads[digest]
        return [up]

    def _delete_uploads(self, gone: list[_Upload]) -> None:
        for up in gone:
            if self._on_upload_removed is not None and up.checkpoint is not None:
                self._on_upload_removed(up.checkpoint)  # first: caches may need to read the files once more
            shutil.rmtree(up.folder, ignore_errors=True)

    def _use_upload(self, s: SessionDir, digest: str, data: memoryview, name: str) -> Path:
        with self._lock:
            up = self._uploads.setdefault(digest, _Upload(digest, self.folder / "uploads" / digest))
            up.users.add(s.key)
            s.upload = digest
        with up.lock:  # one unpack per content; others wait for it
            if up.checkpoint is not None:
                return up.checkpoint
            try:
                return self._unpack(s, up, data, name)
            except BaseException:
                with self._lock:
                    up.users.discard(s.key)
                    s.upload = None
                    if not up.users and self._uploads.get(digest) is up:
                        del self._uploads[digest]
                raise

    def _unpack(self, s: SessionDir, up: _Upload, data: memoryview, name: str) -> Path:
        declared = _declared_size(data, name)
        with self._lock:
            problem = self._too_big(f"unpacking {name}", declared, s)
            room = self.budgets.upload_bytes - self.upload_bytes()
            if problem is None and declared > room:
                problem = (
                    f"unpacking {name} needs {format_bytes(declared)}, but the uploads of all sessions may use only "
                    f"{format_bytes(max(room, 0))} more ({format_bytes(self.budgets.upload_bytes)} in all, set by "
                    f"{ENV_UPLOAD_BYTES}). Try again later or open the checkpoint from a path."
                )
            if problem:
                raise CheckpointError(problem)
            self._reserved += declared
        partial = up.folder.with_name(f"{up.digest}.partial-{uuid.uuid4().hex[:8]}")
        try:
            ck = extract_checkpoint_zip(io.BytesIO(data), partial, max_bytes=declared)
            nbytes = _dir_bytes(partial)
            os.rename(partial, up.folder)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        finally:
            with self._lock:
                self._reserved -= declared
        with self._lock:
            up.nbytes = nbytes
            up.checkpoint = up.folder / ck.relative_to(partial)
        return up.checkpoint


def _declared_size(data: memoryview, name: str) -> int:
    """Uncompressed bytes the archive's directory claims (what unpacking may write at most)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return sum(max(i.file_size, 0) for i in zf.infolist())
    except Exception as e:  # hostile bytes: zipfile raises BadZipFile, NotImplementedError, ValueError, ...
        raise CheckpointError(
            f"{name}: not a readable .zip archive ({e}); zip the checkpoint directory and try again."
        ) from e


# --------------------------------------------------------------------- Streamlit's side
def _streamlit_session_active(streamlit_id: str) -> bool:
    from streamlit.runtime import Runtime

    if not Runtime.exists():
        return False
    try:
        return Runtime.instance().is_active_session(streamlit_id) is True
    except Exception:
        return False


def _drop_streamlit_uploads(streamlit_id: str) -> None:
    """Drop the uploaded files Streamlit keeps in memory for a session that ended. Streamlit frees
    them when it shuts a session down, which it does not do for a disconnected session whose
    reconnect window expired (the session only leaves its storage): without this, every upload
    stays in the server's memory for good."""
    from streamlit.runtime import Runtime

    if not Runtime.exists():
        return
    try:
        Runtime.instance().uploaded_file_mgr.remove_session_files(streamlit_id)
    except Exception:  # pragma: no cover - a Streamlit without this hook keeps its files
        pass


def _streamlit_ttl() -> float:
    try:
        return float(st.get_option("server.disconnectedSessionTTL"))
    except Exception:
        return 120.0


def default_root() -> Path:
    """``$GRADIEND_DASHBOARD_TMPDIR``, else a per-user folder in the system's temp directory."""
    if os.environ.get(ENV_TMPDIR):
        return Path(os.environ[ENV_TMPDIR]).expanduser()
    root = Path(tempfile.gettempdir()) / f"gradiend-dashboard-{os.getuid()}"
    try:
        root.mkdir(mode=0o700, exist_ok=True)
        info = os.lstat(root)
        if root.is_symlink() or info.st_uid != os.getuid() or info.st_mode & 0o077:
            raise PermissionError(f"{root} is not a private folder of this user")
    except OSError:
        # someone else made it (or made it a link): use a fresh private folder instead
        root = Path(tempfile.mkdtemp(prefix="gradiend-dashboard-"))
    return root


_REGISTRY: SessionRegistry | None = None
_REGISTRY_LOCK = threading.Lock()


def _forget_cached(checkpoint: Path) -> None:
    from dashboard.services.loading import forget_checkpoint

    forget_checkpoint(checkpoint)


def registry() -> SessionRegistry:
    """The server process's registry, made on first use (which deletes what ended servers left)
    together with a background sweep."""
    global _REGISTRY
    with _REGISTRY_LOCK:
        if _REGISTRY is None:
            _REGISTRY = SessionRegistry(default_root(), Budgets.from_env(), on_upload_removed=_forget_cached)
            atexit.register(_REGISTRY.close)
            _start_sweeper(_REGISTRY)
        return _REGISTRY


def _start_sweeper(reg: SessionRegistry) -> None:
    raw = os.environ.get(ENV_SWEEP_SECONDS)
    try:
        every = float(raw) if raw else DEFAULT_SWEEP_SECONDS
    except ValueError:
        every = DEFAULT_SWEEP_SECONDS
    ref = weakref.ref(reg)

    def loop() -> None:
        while True:
            time.sleep(max(every, 0.1))
            r = ref()
            if r is None:
                return
            try:
                r.sweep()
            except Exception:  # pragma: no cover - the sweep must never stop
                pass
            del r

    threading.Thread(target=loop, name="gradiend-session-sweep", daemon=True).start()


class _Token:
    """Lives in ``st.session_state``: names the session and, should the session state be
    garbage-collected without Streamlit releasing it, ends the session then."""

    def __init__(self) -> None:
        self.key = uuid.uuid4().hex
        weakref.finalize(self, _end_quietly, self.key)


def _end_quietly(key: str) -> None:
    reg = _REGISTRY
    if reg is not None:
        reg.end(key)


def _released(key: str) -> None:
    reg = _REGISTRY
    if reg is not None:
        reg.detach(key)


@st.cache_resource(scope="session", on_release=_released, show_spinner=False)
def _attached(key: str) -> str:
    """Streamlit releases this session-scoped entry when the session disconnects or closes."""
    return key


def session_files() -> SessionDir:
    """This session's files (created on first use); attaches the session to Streamlit's
    session-end signal and runs a sweep."""
    token = st.session_state.get("_session_files")
    if not isinstance(token, _Token):
        token = st.session_state["_session_files"] = _Token()
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    reg = registry()
    s = reg.session(token.key, ctx.session_id if ctx is not None else None)
    if ctx is not None:  # outside a script run there is no session for Streamlit to release
        _attached(token.key)
    reg.sweep()
    return s


def upload_checkpoint(uploaded) -> Path:
    """The checkpoint directory of a ``st.file_uploader`` .zip for this session (see
    :meth:`SessionRegistry.open_upload`).

    Raises:
        CheckpointError: for a refused archive.
    """
    s = session_files()
    return registry().open_upload(s, uploaded.getbuffer(), uploaded.name, getattr(uploaded, "file_id", None))


def allowed_roots() -> list[Path] | None:
    """Directories the dashboard may read and write, from ``GRADIEND_DASHBOARD_ROOTS``
    (``os.pathsep``-separated); ``None`` means unrestricted (a single-user local run)."""
    raw = os.environ.get("GRADIEND_DASHBOARD_ROOTS")
    if not raw:
        return None
    return [Path(p).expanduser().resolve() for p in raw.split(os.pathsep) if p]


def check_allowed(path: Path, what: str) -> None:
    """Raise ``PermissionError`` if ``path`` lies outside the allowed roots (see :func:`allowed_roots`).

    The session's own temporary directory, the upload it uses and the bundled samples are always
    allowed.
    """
    from dashboard.services.loading import SAMPLES_DIR

    roots = allowed_roots()
    if roots is None:
        return
    p = Path(path).expanduser().resolve()
    s = session_files()
    extra = [SAMPLES_DIR.resolve(), s.path.resolve()] + [f.resolve() for f in registry().upload_folders(s)]
    if not any(p == r or r in p.parents for r in roots + extra):
        raise PermissionError(
            f"{what} {path} is outside the directories this dashboard may use "
            f"({os.pathsep.join(str(r) for r in roots)}; set by GRADIEND_DASHBOARD_ROOTS)."
        )
