"""The dashboard as a user meets it: ``gradiend-core dashboard`` under a memory limit, driven by Chromium.

:class:`DashboardServer` starts the server inside a memory cgroup and samples its memory (the
``VmRSS``/``VmHWM`` of the server process from ``/proc``, and the group's charge) in a
background thread. :func:`chromium` launches Debian's Chromium through Playwright. The page
helpers time what a user waits for:

* :func:`time_to_histogram`: from navigation until the Selection view's Plotly histogram has
  drawn its bars (SVG bar paths present), i.e. until the user sees the distribution;
* :func:`time_rerun`: from an action (typing a topk, opening a view, pressing Export) until the
  page's script has finished running again (Streamlit's ``data-test-script-state`` attribute is
  back to ``notRunning`` after at least one more run).

Every wait also watches the server process, so a server killed by the OOM killer ends the wait
at once with :class:`ServerDied` instead of a browser timeout.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.adapters import REPO, dashboard_command, env_with_repo
from benchmarks.memlimit import MemoryCgroup, format_bytes_short, proc_status_bytes

__all__ = [
    "CHROMIUM",
    "DashboardServer",
    "HISTOGRAM_DRAWN_JS",
    "ServerDied",
    "chromium",
    "histogram_drawn",
    "new_page",
    "page_problems",
    "time_rerun",
    "time_to_histogram",
    "view_names",
]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

#: Counts finished script runs in ``window.__stDone`` (Streamlit sets ``data-test-script-state`` on its app root).
_RUN_COUNTER = """
(() => {
  window.__stDone = 0;
  let last = null;
  const seen = () => {
    const app = document.querySelector('[data-testid="stApp"]');
    const s = app ? app.getAttribute('data-test-script-state') : null;
    if (s !== last) { if (s === 'notRunning' && last !== null) window.__stDone += 1; last = s; }
  };
  new MutationObserver(seen).observe(document, {subtree: true, childList: true, attributes: true,
                                                attributeFilter: ['data-test-script-state']});
})();
"""
#: JS predicate: true once the first Plotly chart on the page has drawn bar shapes.
HISTOGRAM_DRAWN_JS = (
    "() => !!document.querySelector('[data-testid=\"stPlotlyChart\"] .js-plotly-plot .barlayer .point path')"
)
_IDLE = (
    "() => { const a = document.querySelector('[data-testid=\"stApp\"]'); "
    "return !!a && a.getAttribute('data-test-script-state') === 'notRunning'; }"
)


class ServerDied(RuntimeError):
    """The dashboard server process ended while the page waited for it."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DashboardServer:
    """``gradiend-core dashboard [PATH]`` in a memory cgroup, with its memory sampled every ``sample_s``.

    Args:
        path: checkpoint to open (``None``: the CLI's default, the bundled sample).
        limit_bytes: the cgroup's memory limit.
        env: extra environment (e.g. ``TMPDIR``, ``GRADIEND_CORE_CACHE``).
        cwd: working directory (the dashboard's default export root is ``./exports``).
        log: file for the server's output.
    """

    def __init__(
        self,
        path: str | None,
        limit_bytes: int,
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        log: Path | None = None,
        sample_s: float = 0.2,
    ) -> None:
        self.path, self.limit_bytes, self.sample_s = path, int(limit_bytes), sample_s
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cgroup = MemoryCgroup(limit_bytes)
        self._log = open(log or os.devnull, "wb")
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            self.cgroup.wrap(dashboard_command(path, self.port)),
            env=env_with_repo(env),
            cwd=cwd or REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.samples: list[dict[str, Any]] = []
        self.marks: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample_loop, daemon=True)
        self._sampler.start()

    # -- process state ---------------------------------------------------------------------------
    def alive(self) -> bool:
        return self.proc.poll() is None

    def oom_killed(self) -> bool:
        return self.cgroup.oom_kills() > 0

    def wait_ready(self, timeout_s: float = 120) -> float:
        """Wait for ``/_stcore/health``; seconds since start."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise ServerDied(self.death())
            try:
                urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2)
                return time.perf_counter() - self.t0
            except OSError:
                time.sleep(0.25)
        raise TimeoutError(f"the dashboard did not answer on {self.url} within {timeout_s:.0f} s")

    def death(self) -> str:
        """Why the server ended, in words."""
        if self.oom_killed():
            return f"server killed by the OOM killer at the {format_bytes_short(self.limit_bytes)} limit"
        return f"server exited with status {self.proc.returncode}"

    # -- memory ----------------------------------------------------------------------------------
    def memory(self) -> dict[str, int | None]:
        """Current ``VmRSS``, ``VmHWM`` of the server and the group's charge / peak / anonymous memory, bytes."""
        pid = self.proc.pid
        return {
            "vm_rss": proc_status_bytes(pid, "VmRSS"),
            "vm_hwm": proc_status_bytes(pid, "VmHWM"),
            "cgroup_usage": self.cgroup.usage(),
            "cgroup_peak": self.cgroup.max_usage(),
            "cgroup_anon": self.cgroup.anon(),
        }

    def _sample_loop(self) -> None:
        while not self._stop.is_set():
            m = self.memory()
            if m["vm_rss"] is not None:
                self.samples.append(
                    {
                        "t": round(time.perf_counter() - self.t0, 2),
                        "rss": m["vm_rss"],
                        "hwm": m["vm_hwm"],
                        "anon": m["cgroup_anon"],
                    }
                )
            self._stop.wait(self.sample_s)

    def mark(self, label: str) -> dict[str, Any]:
        """Record the memory now under ``label`` (also kept in :attr:`marks`)."""
        m = {"label": label, "t": round(time.perf_counter() - self.t0, 2), **self.memory()}
        self.marks.append(m)
        return m

    def peak_rss_between(self, t_from: float, t_to: float) -> int | None:
        vals = [s["rss"] for s in self.samples if t_from <= s["t"] <= t_to]
        return max(vals) if vals else None

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def stop(self) -> dict[str, Any]:
        """Stop the server; return its exit, OOM state and peaks (``peak_rss_bytes``: the largest sampled ``VmHWM``)."""
        self.mark("stop")
        if self.alive():
            self.proc.terminate()
            deadline = time.monotonic() + 20
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.1)
            if self.alive():
                self.proc.kill()
                while self.alive():
                    time.sleep(0.1)
        self._stop.set()
        self._sampler.join(timeout=5)
        out = {
            "limit_bytes": self.limit_bytes,
            "oom_killed": self.oom_killed(),
            "exit_status": self.proc.returncode,
            "peak_rss_bytes": max([x["hwm"] or 0 for x in self.samples] + [m["vm_hwm"] or 0 for m in self.marks])
            or None,
            "cgroup_peak_bytes": self.cgroup.max_usage(),
            "cgroup_peak_anon_sampled_bytes": max((s["anon"] or 0 for s in self.samples), default=None),
        }
        self.cgroup.remove()
        self._log.close()
        return out


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium (Debian's) via Playwright."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser: Any) -> Any:
    """A fresh browser context and page that counts finished script runs."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    ctx.add_init_script(_RUN_COUNTER)
    return ctx.new_page()


def _wait(page: Any, server: DashboardServer, js: str, timeout_s: float, what: str) -> None:
    """Poll ``js`` on the page until true, watching the server (raises :class:`ServerDied`, ``TimeoutError``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            page.wait_for_function(js, timeout=1000, polling=50)
            return
        except Exception as e:  # playwright's TimeoutError: check the server, then keep waiting
            if "Timeout" not in type(e).__name__:
                raise
        if not server.alive():
            raise ServerDied(server.death())
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not done after {timeout_s:.0f} s")


def histogram_drawn(page: Any) -> bool:
    return bool(page.evaluate(HISTOGRAM_DRAWN_JS))


def time_to_histogram(page: Any, server: DashboardServer, url: str, timeout_s: float = 1800) -> float:
    """Seconds from navigating to ``url`` until the first Plotly histogram has drawn its bars."""
    t0 = time.perf_counter()
    page.goto(url, wait_until="commit")
    _wait(page, server, HISTOGRAM_DRAWN_JS, timeout_s, "first histogram")
    return time.perf_counter() - t0


def time_rerun(
    page: Any, server: DashboardServer, action: Callable[[], Any], timeout_s: float = 1800, then: str | None = None
) -> float:
    """Seconds from ``action()`` until the page's script has run again and is idle.

    With ``then`` (a JS predicate), also until it holds.
    """
    done = page.evaluate("() => window.__stDone || 0")
    t0 = time.perf_counter()
    action()
    _wait(page, server, f"() => (window.__stDone || 0) > {done} && ({_IDLE})()", timeout_s, "rerun")
    if then:
        _wait(page, server, then, timeout_s, "rerun result")
    return time.perf_counter() - t0


def view_names(page: Any) -> list[str]:
    """Names of the dashboard's view tabs, as shown."""
    return [t.inner_text().strip() for t in page.get_by_role("tab").all()]


def page_problems(page: Any) -> list[str]:
    """Texts of exceptions and error boxes the page shows."""
    loc = page.locator('[data-testid="stException"], [data-testid="stAlertContentError"]')
    return [loc.nth(i).inner_text()[:300] for i in range(loc.count())]
