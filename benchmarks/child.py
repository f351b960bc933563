"""Measurements that run in their own process, under a memory limit (see ``runner.run_child``).

``python -m benchmarks.child KIND JSON_ARGS`` runs one measurement and prints JSON lines:
``{"begin": step}`` before and ``{"end": step, "s": seconds}`` after every step, then
``{"result": {...}}``. A process killed mid-way (out of memory) leaves the step it was in as the
last ``begin`` without an ``end``, which is how the harness names the failed step.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks import adapters as A

__all__ = ["KINDS", "step", "main"]


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


@contextmanager
def step(name: str) -> Iterator[None]:
    """Mark a timed step on stdout (see the module docstring)."""
    _emit({"begin": name})
    t0 = time.perf_counter()
    yield
    _emit({"end": name, "s": time.perf_counter() - t0})


def _rss() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmHWM:", "VmRSS:")):
                out[line.split(":")[0]] = int(line.split()[1]) * 1024
    return out


# ---- generation ------------------------------------------------------------------------------


def generate_bert(args: dict[str, Any]) -> dict[str, Any]:
    from benchmarks.bert_checkpoint import generate

    with step("generate"):
        generate(Path(args["path"]), args.get("input_dim"))
    return {}


def generate_llama(args: dict[str, Any]) -> dict[str, Any]:
    from benchmarks.llama_shapes import llama_shapes
    from benchmarks.streaming_checkpoint import write_streamed_checkpoint

    shapes = llama_shapes(**args.get("shape_args", {}))
    with step("generate"):
        write_streamed_checkpoint(
            args["path"],
            shapes,
            dtype=args["dtype"],
            metadata={"base_model": "llama-3.2-1b-shaped (random weights)"},
            seed=args.get("seed", 0),
        )
    return {}


# ---- gradiend-core, Python API ---------------------------------------------------------------


def ours_open(args: dict[str, Any]) -> dict[str, Any]:
    """Open to first histogram; with ``topks``, then one in-process selection change per topk."""
    with step("import"):
        A.ours_import()
    with step("open_to_first_histogram"):
        state = A.ours_open(args["path"], args.get("part", A.DEFAULT_PART))
    if args.get("topks"):
        with step("layout"):
            A.ours_layout(state)
    changes = {}
    for t in args.get("topks", []):
        with step(f"change topk={t}"):
            t0 = time.perf_counter()
            A.ours_change(state, topk=A.topk_value(t))
            changes[t] = time.perf_counter() - t0
    return {"changes_s": changes, **_rss()}


def ours_export(args: dict[str, Any]) -> dict[str, Any]:
    with step("import"):
        A.ours_import()
    with step("export_pruned"):
        kept = A.ours_export(args["path"], args["out"], A.topk_value(args["topk"]), args.get("part", A.DEFAULT_PART))
    return {"kept": kept, **_rss()}


# ---- reference -------------------------------------------------------------------------------


def ref_open(args: dict[str, Any]) -> dict[str, Any]:
    """Load plus one top-k query (the reference's nearest to a first look), then one query per topk."""
    with step("import"):
        A.ref_import()
    with step("open_to_first_topk"):
        model = A.ref_open(args["path"], args.get("part", A.DEFAULT_PART))
    changes = {}
    for t in args.get("topks", []):
        with step(f"change topk={t}"):
            t0 = time.perf_counter()
            A.ref_change(model, A.topk_value(t), args.get("part", A.DEFAULT_PART))
            changes[t] = time.perf_counter() - t0
    return {"changes_s": changes, **_rss()}


def ref_export(args: dict[str, Any]) -> dict[str, Any]:
    with step("import"):
        A.ref_import()
    with step("load_prune_save"):
        kept = A.ref_export(args["path"], args["out"], A.topk_value(args["topk"]), args.get("part", A.DEFAULT_PART))
    return {"kept": kept, **_rss()}


# ---- dashboard under AppTest -----------------------------------------------------------------


def _timed(name: str, fn: Callable[[], Any], problems: dict[str, Any]) -> float:
    with step(name):
        t0 = time.perf_counter()
        at = fn()
        dt = time.perf_counter() - t0
    shown = A.apptest_problems(at)
    if shown:
        problems[name] = shown[:3]
    return dt


def apptest(args: dict[str, Any]) -> dict[str, Any]:
    """Server time of the dashboard's reruns (AppTest runs the page in this process).

    For every topk: the topk change, a part change and back, a threshold set and cleared, a mask
    upload and removal. Then the download archive: reruns before and after an export.
    """
    path, other = args["path"], args.get("other_part", "encoder-weight")
    at = A.apptest_open(path)
    problems: dict[str, Any] = {}
    first = _timed("first_run", at.run, problems)
    rows = []
    if args.get("topks"):
        mask_name, mask_bytes = Path(args["mask"]).name, Path(args["mask"]).read_bytes()
    # _timed calls each action at once; partial binds this iteration's values all the same (the threshold
    # lambda holds no loop variable and reads args inside the step, as before)
    for t in args.get("topks", []):
        row = {"topk": t}
        row["topk_s"] = _timed(f"topk={t}", partial(A.apptest_topk, at, t), problems)
        row["kept"] = A.apptest_kept(at)
        row["part_s"] = _timed(f"part={other} @ topk={t}", partial(A.apptest_part, at, other), problems)
        row["part_back_s"] = _timed(
            f"part={A.DEFAULT_PART} @ topk={t}", partial(A.apptest_part, at, A.DEFAULT_PART), problems
        )
        row["threshold_s"] = _timed(
            f"threshold @ topk={t}", lambda: A.apptest_threshold(at, args["threshold"]), problems
        )
        row["kept_with_threshold"] = A.apptest_kept(at)
        row["threshold_clear_s"] = _timed(
            f"threshold cleared @ topk={t}", partial(A.apptest_threshold, at, None), problems
        )
        row["mask_s"] = _timed(f"mask @ topk={t}", partial(A.apptest_mask, at, mask_name, mask_bytes), problems)
        row["kept_with_mask"] = A.apptest_kept(at)
        row["mask_clear_s"] = _timed(f"mask removed @ topk={t}", partial(A.apptest_mask, at, None), problems)
        rows.append(row)
    download = []
    for i, t in enumerate(args.get("export_topks", [])):
        entry = {"topk": t}
        _timed(f"download: topk={t}", partial(A.apptest_topk, at, t), problems)
        entry["rerun_before_export_s"] = _timed(f"download: rerun before export @ {t}", at.run, problems)
        out = str(Path(args["export_root"]) / f"apptest-export-{i}")
        entry["export_s"] = _timed(f"download: export @ {t}", partial(A.apptest_export, at, out), problems)
        entry["export_bytes"] = sum(f.stat().st_size for f in Path(out).iterdir()) if Path(out).is_dir() else None
        entry["reruns_after_export_s"] = [
            _timed(f"download: rerun {j} after export @ {t}", at.run, problems) for j in range(3)
        ]
        download.append(entry)
    return {"first_run_s": first, "changes": rows, "download": download, "problems": problems, **_rss()}


def read_speed(args: dict[str, Any]) -> dict[str, Any]:
    from benchmarks.read_speed import read_speeds

    with step("read"):
        out = read_speeds(args["path"])
    return out


KINDS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "generate-bert": generate_bert,
    "generate-llama": generate_llama,
    "ours-open": ours_open,
    "ours-export": ours_export,
    "ref-open": ref_open,
    "ref-export": ref_export,
    "apptest": apptest,
    "read-speed": read_speed,
}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    kind, args = argv[0], json.loads(argv[1])
    result = KINDS[kind](args)
    _emit({"result": result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
