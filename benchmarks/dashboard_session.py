"""One user's visit to the dashboard in Chromium, step by step, with time and server memory per step.

Steps: server start; first histogram; a topk change; every other view opened (tabs as the page
lists them); an export; the download of its .zip. A step that fails (the server killed by the
OOM killer, a timeout, an error on the page) is recorded with its reason, and the steps after it
are listed as not reached. :func:`upload_sessions` runs several users uploading the same zipped
checkpoint at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.browser_timing import (
    HISTOGRAM_DRAWN_JS,
    DashboardServer,
    ServerDied,
    chromium,
    histogram_drawn,
    new_page,
    page_problems,
    time_rerun,
    time_to_histogram,
    view_names,
)

__all__ = ["dashboard_visit", "reopen_visit", "upload_sessions"]

_EXPORTED = "() => document.body.innerText.includes('reloaded and verified')"


def _log(msg: str) -> None:
    import sys

    print(f"[bench]   {msg}", file=sys.stderr, flush=True)


def _fill(page: Any, label: str, value: str) -> None:
    box = page.get_by_role("textbox", name=label, exact=True)
    if box.input_value() == value:  # no change, no rerun: the wait for one would never end
        raise ValueError(f"{label} already shows {value!r}; pick a value that changes it.")
    box.fill(value)
    box.press("Enter")


def _download(page: Any) -> int:
    with page.expect_download(timeout=600_000) as dl:
        page.get_by_role("button", name="Download .zip").click()
    return Path(dl.value.path()).stat().st_size


def _run_steps(
    server: DashboardServer, steps: list[tuple[str, Callable[[], Any]]], out: dict[str, Any], page: Any = None
) -> bool:
    """Run ``(name, fn)`` steps in order; ``fn`` returns seconds (or a dict with ``s``). False after a failure."""
    for i, (name, fn) in enumerate(steps):
        try:
            got = fn()
        except (ServerDied, TimeoutError, Exception) as e:  # noqa: BLE001 - any failure is a result here
            out["failed_step"] = name
            out["failure"] = server.death() if not server.alive() else f"{type(e).__name__}: {str(e)[:300]}"
            out["not_reached"] = [n for n, _ in steps[i + 1 :]]
            _log(f"{name}: FAILED: {out['failure']}")
            return False
        rec = got if isinstance(got, dict) else {"s": got}
        rec["memory"] = server.mark(name)
        if page is not None:
            shown = page_problems(page)
            if shown:
                rec["page_problems"] = shown[:3]
        out["steps"][name] = rec
        _log(f"{name}: {rec['s']:.2f} s, server VmHWM {(rec['memory']['vm_hwm'] or 0) / 2**20:,.0f} MiB")
    return True


def dashboard_visit(
    path: str,
    limit_bytes: int,
    workdir: Path,
    *,
    topk: str = "0.01",
    env: dict[str, str] | None = None,
    timeout_s: float = 1800,
) -> dict[str, Any]:
    """A user's visit on ``path`` (see the module docstring), the server limited to ``limit_bytes``.

    ``topk`` is typed into the topk box (it must differ from the page's default, 0.05) and the
    export is made at it.

    Returns ``{"steps": {name: {"s", "memory", ...}}, "failed_step", "failure", "not_reached", "server": {...}}``.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {"steps": {}, "failed_step": None, "failure": None, "not_reached": []}
    server = DashboardServer(path, limit_bytes, env=env, cwd=workdir, log=workdir / "server.log")
    try:
        with chromium() as browser:
            page = new_page(browser)
            first = [
                ("server start", lambda: server.wait_ready()),
                ("first histogram", lambda: time_to_histogram(page, server, server.url, timeout_s)),
            ]
            if _run_steps(server, first, out, page):
                views = view_names(page)[1:]
                export_dir = str(workdir / "export")
                rest = [("topk change", lambda: time_rerun(page, server, lambda: _fill(page, "topk", topk), timeout_s))]
                rest += [
                    (
                        f"view: {v}",
                        (
                            lambda v=v: time_rerun(
                                page, server, lambda: page.get_by_role("tab", name=v).click(), timeout_s
                            )
                        ),
                    )
                    for v in views
                ]
                rest += [
                    (
                        "view: back to the first",
                        lambda: time_rerun(page, server, lambda: page.get_by_role("tab").first.click(), timeout_s),
                    ),
                    (
                        "export directory typed",
                        lambda: time_rerun(
                            page, server, lambda: _fill(page, "Export directory", export_dir), timeout_s
                        ),
                    ),
                    (
                        "export",
                        lambda: time_rerun(
                            page,
                            server,
                            lambda: page.get_by_role("button", name="Export pruned model").click(),
                            timeout_s,
                            then=_EXPORTED,
                        ),
                    ),
                    ("download .zip", lambda: _timed_download(page)),
                ]
                _run_steps(server, rest, out, page)
            else:
                out["not_reached"] += ["topk change", "every view", "export", "download .zip"]
    finally:
        out["server"] = server.stop()
    return out


def _timed_download(page: Any) -> dict[str, Any]:
    t0 = time.perf_counter()
    size = _download(page)
    return {"s": time.perf_counter() - t0, "bytes": size}


def reopen_visit(
    path: str, limit_bytes: int, workdir: Path, *, env: dict[str, str] | None = None, timeout_s: float = 1800
) -> dict[str, Any]:
    """A fresh server on ``path`` and one navigation to the first histogram (a second open: warm caches)."""
    workdir.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {"steps": {}, "failed_step": None, "failure": None, "not_reached": []}
    server = DashboardServer(path, limit_bytes, env=env, cwd=workdir, log=workdir / "server-reopen.log")
    try:
        with chromium() as browser:
            page = new_page(browser)
            _run_steps(
                server,
                [
                    ("server start", lambda: server.wait_ready()),
                    ("first histogram", lambda: time_to_histogram(page, server, server.url, timeout_s)),
                ],
                out,
                page,
            )
    finally:
        out["server"] = server.stop()
    return out


def upload_sessions(
    zip_path: Path,
    n: int,
    limit_bytes: int,
    workdir: Path,
    *,
    after_s: float = 150,
    env: dict[str, str] | None = None,
    timeout_s: float = 1800,
) -> dict[str, Any]:
    """``n`` users upload ``zip_path`` at once ("Upload .zip"); server memory during, and after they leave.

    Each page opens the dashboard, picks "Upload .zip" and sets the file; all uploads start within
    a second. The time of each user is from setting the file to its histogram being drawn. After
    every page is closed the server's memory is sampled for ``after_s`` seconds (Streamlit drops a
    disconnected session after ``server.disconnectedSessionTTL``, 120 s by default).

    Returns per-user seconds, peak server RSS during the sessions, RSS at their end, RSS after
    ``after_s``, session temp directories left on disk, the server's exit and peaks.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    tmp = workdir / "tmp"
    tmp.mkdir(exist_ok=True)
    env = dict(env or {}, TMPDIR=str(tmp))
    out: dict[str, Any] = {"users": n, "zip_bytes": zip_path.stat().st_size, "failed_step": None, "failure": None}
    server = DashboardServer(None, limit_bytes, env=env, cwd=workdir, log=workdir / "server-uploads.log")
    done: dict[int, float] = {}
    t_start: float | None = None
    step = "open the pages"
    try:
        server.wait_ready()
        with chromium() as browser:
            pages = []
            for _ in range(n):
                page = new_page(browser)
                page.goto(server.url)
                page.get_by_text("Preview", exact=True).wait_for(timeout=300_000)
                page.get_by_test_id("stRadioGroup").get_by_text("Upload .zip").click()
                page.get_by_text("Zipped checkpoint directory").wait_for(timeout=60_000)
                # The sample's histogram must be gone, so that the one drawn later is the upload's.
                page.wait_for_function(f"() => !({HISTOGRAM_DRAWN_JS})()", timeout=60_000)
                pages.append(page)
            out["rss_before_uploads"] = server.memory()["vm_rss"]
            step = "uploads until every histogram is drawn"
            t_start = server.now()
            started = []
            for page in pages:
                box = page.locator('[data-testid="stFileUploader"]', has_text="Zipped checkpoint directory")
                box.locator('input[type="file"]').set_input_files(str(zip_path))
                started.append(time.perf_counter())
            deadline = time.monotonic() + timeout_s
            while len(done) < n:
                for i, page in enumerate(pages):
                    if i not in done and histogram_drawn(page):
                        done[i] = time.perf_counter() - started[i]
                        _log(f"user {i}: histogram after {done[i]:.1f} s")
                if not server.alive():
                    raise ServerDied(server.death())
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{n - len(done)} of {n} uploads not open after {timeout_s:.0f} s")
                time.sleep(0.25)
            t_end = server.now()
            out["user_s"] = [round(done[i], 2) for i in range(n)]
            out["peak_rss_during"] = server.peak_rss_between(t_start, t_end)
            out["at_end"] = server.mark("all uploads open")
            out["session_dirs_open"] = len(list(tmp.glob("gradiend-session-*")))
            step = "pages closed, waiting"
            for page in pages:
                page.context.close()
        t_closed = server.now()
        out["after_close"] = server.mark("pages closed")
        time.sleep(after_s)
        out["after_wait"] = server.mark(f"{after_s:.0f} s after the pages closed")
        out["min_rss_after_close"] = min((s["rss"] for s in server.samples if s["t"] >= t_closed), default=None)
        out["session_dirs_left"] = len(list(tmp.glob("gradiend-session-*")))
    except Exception as e:  # noqa: BLE001 - recorded, not raised
        out["failed_step"] = step
        out["failure"] = server.death() if not server.alive() else f"{type(e).__name__}: {str(e)[:300]}"
        out["users_open_before_failure"] = len(done)
        out["user_s_before_failure"] = {i: round(t, 2) for i, t in done.items()}
        if t_start is not None and "peak_rss_during" not in out:
            out["peak_rss_during"] = server.peak_rss_between(t_start, server.now())
        _log(f"uploads: FAILED in {step!r}: {out['failure']} ({len(done)} of {n} users had their histogram)")
    finally:
        out["server"] = server.stop()
    return out
