"""Every call the benchmark makes into a product, one small function per measurement.

The harness measures what a user meets, so it drives ``gradiend_core`` through its public faces:
the CLI (:func:`cli_info`, :func:`cli_dry_run`, :func:`cli_export` build the command lines), the
dashboard (``streamlit run``, see ``browser_timing`` and :func:`apptest_open`), and the Python
API (``open_checkpoint``, ``store.ranking_for``, ``plan_pruning``, ``export_pruned``). When the
core's API changes, only the functions here change; the harness and its JSON stay the same.

The reference package ``gradiend`` 0.2.3 is driven through its documented model API
(``from_pretrained``, ``get_topk_weights``, ``prune``, ``save_pretrained``).
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_PART",
    "OursOpen",
    "apptest_export",
    "apptest_kept",
    "apptest_mask",
    "apptest_open",
    "apptest_part",
    "apptest_problems",
    "apptest_threshold",
    "apptest_topk",
    "cli_dry_run",
    "cli_export",
    "cli_info",
    "cli_program",
    "dashboard_command",
    "env_with_repo",
    "ours_change",
    "ours_export",
    "ours_import",
    "ours_layout",
    "ours_open",
    "ref_change",
    "ref_export",
    "ref_import",
    "ref_open",
    "topk_value",
]

DEFAULT_PART = "decoder-weight"
REPO = Path(__file__).resolve().parent.parent
APP = REPO / "dashboard" / "app.py"


# ---- gradiend-core: command line -------------------------------------------------------------


def cli_program() -> list[str]:
    """The ``gradiend-core`` console script of this interpreter's environment."""
    exe = Path(sys.executable).with_name("gradiend-core")
    return [str(exe)] if exe.exists() else [shutil.which("gradiend-core") or "gradiend-core"]


def cli_info(path: str) -> list[str]:
    """``gradiend-core info PATH``."""
    return cli_program() + ["info", path]


def cli_dry_run(path: str, topk: str, part: str = DEFAULT_PART) -> list[str]:
    """``gradiend-core prune PATH --topk K --dry-run``."""
    return cli_program() + ["prune", path, "--part", part, "--topk", topk, "--dry-run"]


def cli_export(path: str, out: str, topk: str, part: str = DEFAULT_PART) -> list[str]:
    """``gradiend-core prune PATH --topk K --out OUT``."""
    return cli_program() + ["prune", path, "--part", part, "--topk", topk, "--out", out]


def dashboard_command(path: str | None, port: int) -> list[str]:
    """``gradiend-core dashboard [PATH] --port N --headless --address 127.0.0.1``.

    The CLI replaces itself with ``streamlit run`` (``execv``), so the process started is the
    dashboard server itself (its PID is the server's).
    """
    cmd = cli_program() + ["dashboard"]
    if path:
        cmd.append(path)
    return cmd + ["--port", str(port), "--headless", "--address", "127.0.0.1"]


# ---- gradiend-core: Python API ---------------------------------------------------------------


def ours_import() -> None:
    """Import what the Python API measurements use (timed apart: a user's session imports once)."""
    import dashboard.figures.selection  # noqa: F401
    import gradiend_core.pruning.export
    import gradiend_core.pruning.plan
    import gradiend_core.ranking.store  # noqa: F401


def ref_import() -> None:
    """Import the reference package's model class (timed apart, as :func:`ours_import`)."""
    import gradiend.model.param_mapped  # noqa: F401


@dataclass
class OursOpen:
    """What :func:`ours_open` keeps for later selection changes (opaque to the harness)."""

    data: Any
    importance: Any
    part: str


def ours_open(path: str, part: str = DEFAULT_PART) -> OursOpen:
    """Open a checkpoint as the dashboard's first run does: open (weights left in the file), the
    part's per-bucket summary (from the user cache when it was summarised before), first histogram."""
    from dashboard.figures.selection import importance_histogram
    from gradiend_core.analysis.distribution import log_histogram
    from gradiend_core.checkpoint import open_checkpoint
    from gradiend_core.ranking import store

    data = open_checkpoint(path)
    ranking = store.ranking_for(data, part, layout="never")
    importance_histogram(log_histogram(ranking), part)
    return OursOpen(data, ranking, part)


def ours_layout(state: OursOpen) -> None:
    """What the dashboard does in the background after the first histogram: lay the ranking out
    (loaded from the user cache when it was built before), so changes cost a bucket, not a pass."""
    from gradiend_core.ranking import store

    store.ranking_for(state.data, state.part, layout="now")


def ours_change(
    state: OursOpen, topk: int | float | None = None, threshold: float | None = None, mask: Any = None
) -> int:
    """One selection change as the dashboard computes it: the pruning plan (selection and preview)
    and the Selection view's histogram with the cut.

    Returns the number of kept dims.
    """
    from dashboard.figures.selection import importance_histogram
    from gradiend_core.analysis.distribution import cut_value, log_histogram
    from gradiend_core.pruning.plan import plan_pruning

    plan = plan_pruning(
        state.data, source=state.part, topk=topk, threshold=threshold, mask=mask, ranking=state.importance
    )
    sel = plan.selection
    importance_histogram(log_histogram(state.importance, sel), state.part, cut_value(state.importance, sel))
    return int(sel.k)


def ours_export(path: str, out: str, topk: int | float, part: str = DEFAULT_PART) -> int:
    """Export as a user of the Python API does: ``export_pruned(path, out, topk=..., part=...)``; returns kept dims."""
    from gradiend_core import export_pruned

    return int(export_pruned(path, out, topk=topk, part=part).selection.k)


def apptest_open(path: str, timeout_s: float = 1800.0):
    """A Streamlit ``AppTest`` of the dashboard opened on ``path`` (not yet run)."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=timeout_s)
    at.query_params["model"] = path
    return at


# ---- reference package gradiend 0.2.3 --------------------------------------------------------


def ref_open(path: str, part: str = DEFAULT_PART, topk: int | float = 0.05):
    """The reference's nearest to opening a checkpoint for a look: ``from_pretrained`` plus one ``get_topk_weights``."""
    from gradiend.model.param_mapped import ParamMappedGradiendModel

    model = ParamMappedGradiendModel.from_pretrained(path)
    model.get_topk_weights(part=part, topk=topk)
    return model


def ref_change(model: Any, topk: int | float, part: str = DEFAULT_PART) -> int:
    """The reference's nearest to a selection change: one ``get_topk_weights``; returns its length."""
    return len(model.get_topk_weights(part=part, topk=topk))


def ref_export(path: str, out: str, topk: int | float, part: str = DEFAULT_PART) -> int:
    """The reference's export: ``from_pretrained``, ``prune``, ``save_pretrained``; returns kept dims."""
    from gradiend.model.param_mapped import ParamMappedGradiendModel

    model = ParamMappedGradiendModel.from_pretrained(path)
    pruned = model.prune(topk=topk, part=part)
    del model
    pruned.save_pretrained(out)
    return int(pruned.input_dim)


def topk_value(text: str) -> int | float:
    """``"100"`` -> 100 (a count), ``"0.05"``/``"1e-3"``/``"1.0"`` -> a fraction, as both packages read topk."""
    return int(text) if text.isdigit() else float(text)


def env_with_repo(extra: dict | None = None) -> dict:
    """The environment for child processes: this checkout first on ``PYTHONPATH``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.update(extra or {})
    return env


# ---- gradiend-core: dashboard widgets under AppTest ------------------------------------------
# The widget keys are the dashboard's (dashboard/views/sidebar/controls.py, export.py).


def apptest_topk(at, text: str):
    """Type ``text`` into the topk box and rerun."""
    return at.text_input(key="topk").set_value(text).run()


def apptest_part(at, part: str):
    """Pick the importance part and rerun."""
    return at.selectbox(key="part").set_value(part).run()


def apptest_threshold(at, value: float | None):
    """Set (or clear, with ``None``) the threshold and rerun."""
    return at.number_input(key="threshold").set_value(value).run()


def apptest_mask(at, name: str | None, content: bytes | None = None):
    """Upload a mask file (or remove it, with ``None``) and rerun."""
    value = None if name is None else (name, content, "application/octet-stream")
    return at.file_uploader(key="mask_file").set_value(value).run()


def apptest_export(at, out: str):
    """Set the export directory, press Export, and return the run."""
    at.text_input(key="export_dir").set_value(out).run()
    at.checkbox(key="export_overwrite").check()
    return at.button(key="export").click().run()


def apptest_problems(at) -> list[str]:
    """Error and exception texts the page shows."""
    return [e.value for e in at.error] + [str(e.value) for e in at.exception]


def apptest_kept(at) -> str | None:
    """The preview's "Input dims kept" as shown (a check that a change took effect)."""
    return next((str(m.value) for m in at.metric if m.label == "Input dims kept"), None)
