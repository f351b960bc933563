"""The benchmark scenarios: what is generated, what is run under which memory limit, what is recorded.

* ``bert``: the 109M-dim BERT-base-shaped checkpoint: open to first histogram (cold page cache,
  warm page cache, second open with a warm user cache), in-process selection changes, export at
  topk 0.05, each against the reference; the dashboard's server time of part/threshold/topk/mask
  changes (AppTest); a visit in Chromium (first histogram, topk change, every view, export,
  download) with the server's peak memory; a second visit on a fresh server (warm caches).
* ``llama-float32`` / ``llama-bfloat16``: the 1.2e9-dim LLaMA-3.2-1B-shaped checkpoint inside
  the user memory limit (default 4 GiB): ``gradiend-core info``, ``prune --dry-run`` and an
  export at topk 0.01 (CLI and Python API), the first histogram in-process, a dashboard visit;
  the reference's load + prune + save under a cap that protects the machine.
* ``uploads``: four users upload the zipped BERT-base checkpoint at once.
* ``download``: how long a rerun takes once an export is on the page (its .zip download).
* ``readspeed``: the machine's sequential read speed, cold and warm page cache.

Every run is a child process in its own memory cgroup; results are plain dicts (see
``runner.record`` and ``dashboard_session``).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import adapters as A
from benchmarks.memlimit import format_bytes_short
from benchmarks.read_speed import evict
from benchmarks.runner import run_child, run_command

__all__ = ["Settings", "SCENARIOS", "machine_info", "median_record", "run_scenarios"]

#: topk values of the selection-change measurements: 1 dim, 100 dims, 10^4 dims, then fractions up to 100 %.
CHANGE_TOPKS = ["1", "100", "10000", "1e-3", "0.05", "0.5", "1.0"]


@dataclass
class Settings:
    """What to run and under which limits (bytes, seconds)."""

    data_dir: Path
    scenarios: list[str]
    reference: bool = True
    browser: bool = True
    user_limit: int = 4 * 1024**3
    reference_cap: int = 20 * 1024**3
    bert_cap: int = 12 * 1024**3
    upload_cap: int = 12 * 1024**3
    upload_users: int = 4
    upload_after_s: float = 150.0
    llama_topk: str = "0.01"
    export_topk: str = "0.05"
    #: typed into the dashboard's topk box in a Chromium visit (the page opens at 0.05), and exported at.
    visit_topk: str = "0.01"
    #: runs of each in-process BERT measurement (the median is reported; a shared machine is noisy).
    repeat: int = 1
    #: a scaled-down stand-in for the BERT-base checkpoint (about this many dims), for trying the harness.
    bert_input_dim: int | None = None
    timeout_s: float = 3600.0
    notes: list[str] = field(default_factory=list)

    @property
    def work(self) -> Path:
        return self.data_dir / "work"


def _log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def mem_available() -> int:
    """``MemAvailable`` of ``/proc/meminfo``, bytes."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def protective_cap(wanted: int, reserve: int = 3 * 1024**3) -> int:
    """``wanted``, lowered so that ``reserve`` bytes stay available to everyone else on the machine."""
    return min(wanted, max(1024**3, mem_available() - reserve))


def machine_info() -> dict[str, Any]:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
        platform.processor(),
    )
    total = int(next(line for line in open("/proc/meminfo") if line.startswith("MemTotal")).split()[1]) * 1024
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=A.REPO, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        commit = None
    import gradiend

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "mem_total_bytes": total,
        "mem_available_bytes_at_start": mem_available(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "commit": commit,
        "reference_version": getattr(gradiend, "__version__", "0.2.3"),
    }


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file())


def _checkpoint_info(path: Path) -> dict[str, Any]:
    arch = json.loads((path / "config.json").read_text())["architecture"]
    return {
        "path": str(path),
        "bytes": _dir_bytes(path),
        "input_dim": arch["input_dim"],
        "latent_dim": arch["latent_dim"],
        "dtype": arch["torch_dtype"],
    }


def _evict_dir(path: Path) -> None:
    for f in path.iterdir():
        if f.is_file():
            evict(f)


def _fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


# ---- data ------------------------------------------------------------------------------------


def ensure_bert(s: Settings) -> Path:
    """The BERT-base-shaped checkpoint (written by the reference), generated once."""
    path = s.data_dir / ("bert-base" if s.bert_input_dim is None else f"bert-scaled-{s.bert_input_dim}")
    if not (path / "config.json").exists():
        _log(f"generating {path} with the reference package")
        rec = run_child(
            "generate-bert",
            {"path": str(path), "input_dim": s.bert_input_dim},
            protective_cap(8 * 1024**3),
            timeout_s=s.timeout_s,
        )
        if not rec["ok"]:
            raise RuntimeError(f"generating {path} failed: {rec['failure']}")
    return path


def ensure_llama(s: Settings, dtype: str) -> Path:
    """The LLaMA-3.2-1B-shaped checkpoint, streamed to disk once (15 GB float32, 7.4 GB bfloat16)."""
    path = s.data_dir / f"llama-1b-{dtype}"
    if not (path / "config.json").exists():
        from benchmarks.llama_shapes import LLAMA_3_2_1B_ENTRIES
        from benchmarks.streaming_checkpoint import expected_weights_bytes

        need = expected_weights_bytes(LLAMA_3_2_1B_ENTRIES, 1, dtype)
        free = shutil.disk_usage(s.data_dir).free
        if free < need + 20 * 1024**3:
            raise RuntimeError(
                f"generating {path} needs {format_bytes_short(need)}; only {format_bytes_short(free)} free "
                "(keeping 20 GiB for others). Free space or pass --data-dir."
            )
        _log(f"streaming {path} ({format_bytes_short(need)})")
        rec = run_child("generate-llama", {"path": str(path), "dtype": dtype}, 2 * 1024**3, timeout_s=s.timeout_s)
        if not rec["ok"]:
            raise RuntimeError(f"generating {path} failed: {rec['failure']}")
    return path


def ensure_zip(ckpt: Path) -> Path:
    """``<ckpt>.zip`` holding ``<name>/<files>`` uncompressed, as a user zips a checkpoint directory."""
    zpath = ckpt.with_suffix(".zip")
    if not zpath.exists():
        partial = zpath.with_suffix(".zip.partial")
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for f in sorted(ckpt.iterdir()):
                zf.write(f, arcname=f"{ckpt.name}/{f.name}")
        partial.rename(zpath)
    return zpath


def ensure_mask(ckpt: Path) -> Path:
    """A random bool keep-mask (.npy, half the dims, seed 0) over the checkpoint's input dims."""
    path = ckpt.with_name(ckpt.name + "-mask.npy")
    if not path.exists():
        n = _checkpoint_info(ckpt)["input_dim"]
        np.save(path, np.random.default_rng(0).random(n, dtype=np.float32) < 0.5)
    return path


def median_importance(ckpt: Path, sample: int = 1_000_000) -> float:
    """Median |decoder weight| over the first ``sample`` dims (the decoder-weight importance at latent_dim 1)."""
    from safetensors import safe_open

    with safe_open(str(ckpt / "model.safetensors"), framework="pt") as f:
        w = f.get_slice("decoder.0.linear.weight")[:sample].float()
    return float(w.abs().sum(dim=1).median())


# ---- scenarios -------------------------------------------------------------------------------


def median_record(records: list[dict[str, Any]], step: str) -> dict[str, Any]:
    """Of repeated runs, the record whose ``step`` took the median time (the lower middle for an
    even count), with every run's time of ``step`` in ``repeats_s`` (``None`` for a failed run).
    All runs failed: the last record."""
    ok = sorted((r for r in records if r["ok"] and step in r["steps"]), key=lambda r: r["steps"][step])
    chosen = dict(ok[(len(ok) - 1) // 2] if ok else records[-1])
    chosen["repeats_s"] = [r["steps"].get(step) if r["ok"] else None for r in records]
    return chosen


def scenario_readspeed(s: Settings) -> dict[str, Any]:
    """Sequential read speed of the BERT-base weights and of the bfloat16 LLaMA weights (when generated)."""
    out = {}
    files = [ensure_bert(s) / "model.safetensors", s.data_dir / "llama-1b-bfloat16" / "model.safetensors"]
    for f in files:
        if f.exists():
            # The warm read needs the whole file in the page cache of the group: limit above its size.
            cap = protective_cap(f.stat().st_size + 2 * 1024**3)
            rec = run_child("read-speed", {"path": str(f)}, cap, timeout_s=s.timeout_s)
            out[f.parent.name] = rec["result"] if rec["ok"] else {"failure": rec["failure"]}
            evict(f)
    return out


def scenario_bert(s: Settings) -> dict[str, Any]:
    ckpt = ensure_bert(s)
    info = _checkpoint_info(ckpt)
    cap = protective_cap(s.bert_cap)
    out: dict[str, Any] = {"checkpoint": info, "cap_bytes": cap, "ours": {}, "reference": {}}
    ours, ref = out["ours"], out["reference"]
    cache = s.work / "user-cache-bert"

    env, n = {"GRADIEND_CORE_CACHE": str(cache)}, s.repeat
    opened = lambda args: run_child("ours-open", args, cap, env=env, timeout_s=s.timeout_s)  # noqa: E731

    _log(f"bert: gradiend-core, open to first histogram: cold page cache, empty user cache (x{n})")
    ours["open_cold"] = median_record(
        [(_fresh(cache), _evict_dir(ckpt), opened({"path": str(ckpt), "topks": CHANGE_TOPKS}))[-1] for _ in range(n)],
        "open_to_first_histogram",
    )
    _log(f"bert: gradiend-core, open with a warm page cache and an empty user cache, then a second time (x{n})")
    warm, second = [], []
    for _ in range(n):
        _fresh(cache)
        warm.append(opened({"path": str(ckpt)}))
        second.append(opened({"path": str(ckpt)}))
    ours["open_warm_page_cache"] = median_record(warm, "open_to_first_histogram")
    ours["open_second"] = median_record(second, "open_to_first_histogram")
    _log(f"bert: gradiend-core, export at topk {s.export_topk} (x{n})")
    dest = s.work / "export-ours" / "out"
    ours["export"] = median_record(
        [
            (
                _fresh(dest.parent),
                run_child(
                    "ours-export",
                    {"path": str(ckpt), "out": str(dest), "topk": s.export_topk},
                    cap,
                    env=env,
                    timeout_s=s.timeout_s,
                ),
            )[-1]
            for _ in range(n)
        ],
        "export_pruned",
    )
    shutil.rmtree(dest.parent, ignore_errors=True)

    if s.reference:
        _log(f"bert: reference, load + top-k query: cold page cache, then one query per topk (x{n})")
        ref["open_cold"] = median_record(
            [
                (
                    _evict_dir(ckpt),
                    run_child("ref-open", {"path": str(ckpt), "topks": CHANGE_TOPKS}, cap, timeout_s=s.timeout_s),
                )[-1]
                for _ in range(n)
            ],
            "open_to_first_topk",
        )
        _log(f"bert: reference, load + top-k query: warm page cache (x{n})")
        ref["open_warm_page_cache"] = median_record(
            [run_child("ref-open", {"path": str(ckpt)}, cap, timeout_s=s.timeout_s) for _ in range(n)],
            "open_to_first_topk",
        )
        _log(f"bert: reference, load + prune + save at topk {s.export_topk} (x{n})")
        dest = s.work / "export-ref" / "out"
        ref["export"] = median_record(
            [
                (
                    _fresh(dest.parent),
                    run_child(
                        "ref-export",
                        {"path": str(ckpt), "out": str(dest), "topk": s.export_topk},
                        cap,
                        timeout_s=s.timeout_s,
                    ),
                )[-1]
                for _ in range(n)
            ],
            "load_prune_save",
        )
        shutil.rmtree(dest.parent, ignore_errors=True)

    _log("bert: dashboard server time of selection changes (AppTest)")
    threshold = median_importance(ckpt)
    out["apptest_threshold"] = threshold
    _fresh(cache)
    out["apptest"] = run_child(
        "apptest",
        {"path": str(ckpt), "topks": CHANGE_TOPKS, "threshold": threshold, "mask": str(ensure_mask(ckpt))},
        cap,
        env={"GRADIEND_CORE_CACHE": str(cache)},
        timeout_s=s.timeout_s,
    )

    if s.browser:
        from benchmarks.dashboard_session import dashboard_visit, reopen_visit

        _log("bert: dashboard in Chromium: cold page cache, empty user cache")
        _fresh(cache)
        _evict_dir(ckpt)
        work = _fresh(s.work / "visit-bert")
        env = {"GRADIEND_CORE_CACHE": str(cache)}
        out["browser"] = dashboard_visit(str(ckpt), cap, work, topk=s.visit_topk, env=env, timeout_s=s.timeout_s)
        _log("bert: dashboard in Chromium: a second open on a fresh server (warm caches)")
        out["browser_second_open"] = reopen_visit(str(ckpt), cap, work, env=env, timeout_s=s.timeout_s)
        shutil.rmtree(work, ignore_errors=True)
    return out


def scenario_llama(s: Settings, dtype: str) -> dict[str, Any]:
    ckpt = ensure_llama(s, dtype)
    info = _checkpoint_info(ckpt)
    limit = s.user_limit
    cache = _fresh(s.work / f"user-cache-llama-{dtype}")
    env = {"GRADIEND_CORE_CACHE": str(cache)}
    out: dict[str, Any] = {"checkpoint": info, "limit_bytes": limit, "cli": {}, "api": {}}
    path, topk = str(ckpt), s.llama_topk
    _log(f"llama {dtype}: gradiend-core CLI in {format_bytes_short(limit)}")
    _evict_dir(ckpt)
    out["cli"]["info"] = run_command("info", A.cli_info(path), limit, env=env, timeout_s=s.timeout_s)
    out["cli"]["dry_run"] = run_command(
        "prune --dry-run", A.cli_dry_run(path, topk), limit, env=env, timeout_s=s.timeout_s
    )
    dest = _fresh(s.work / f"export-llama-{dtype}") / "out"
    out["cli"]["export"] = run_command(
        "prune --out", A.cli_export(path, str(dest), topk), limit, env=env, timeout_s=s.timeout_s
    )
    shutil.rmtree(dest, ignore_errors=True)
    _log(f"llama {dtype}: gradiend-core Python API in {format_bytes_short(limit)}")
    out["api"]["open_to_first_histogram"] = run_child(
        "ours-open", {"path": path}, limit, env=env, timeout_s=s.timeout_s
    )
    out["api"]["export"] = run_child(
        "ours-export", {"path": path, "out": str(dest), "topk": topk}, limit, env=env, timeout_s=s.timeout_s
    )
    shutil.rmtree(dest.parent, ignore_errors=True)
    if s.browser:
        from benchmarks.dashboard_session import dashboard_visit

        _log(f"llama {dtype}: dashboard in Chromium, server in {format_bytes_short(limit)}")
        work = _fresh(s.work / f"visit-llama-{dtype}")
        out["browser"] = dashboard_visit(path, limit, work, topk=topk, env=env, timeout_s=s.timeout_s)
        shutil.rmtree(work, ignore_errors=True)
    if s.reference:
        cap = protective_cap(s.reference_cap)
        _log(f"llama {dtype}: reference load + prune + save at topk {topk} under {format_bytes_short(cap)}")
        dest = _fresh(s.work / f"export-llama-{dtype}-ref") / "out"
        out["reference"] = {
            "export": run_child(
                "ref-export", {"path": path, "out": str(dest), "topk": topk}, cap, timeout_s=s.timeout_s
            )
        }
        shutil.rmtree(dest.parent, ignore_errors=True)
    _evict_dir(ckpt)
    shutil.rmtree(cache, ignore_errors=True)
    return out


def scenario_uploads(s: Settings) -> dict[str, Any]:
    from benchmarks.dashboard_session import upload_sessions

    ckpt = ensure_bert(s)
    zpath = ensure_zip(ckpt)
    cap = protective_cap(s.upload_cap)
    _log(
        f"uploads: {s.upload_users} users upload {zpath.name} ({format_bytes_short(zpath.stat().st_size)}) at once, "
        f"server under {format_bytes_short(cap)}"
    )
    work = _fresh(s.work / "uploads")
    out = upload_sessions(
        zpath,
        s.upload_users,
        cap,
        work,
        after_s=s.upload_after_s,
        env={"GRADIEND_CORE_CACHE": str(work / "cache")},
        timeout_s=s.timeout_s,
    )
    out["checkpoint"] = _checkpoint_info(ckpt)
    shutil.rmtree(work, ignore_errors=True)
    return out


def scenario_download(s: Settings) -> dict[str, Any]:
    ckpt = ensure_bert(s)
    cap = protective_cap(s.bert_cap)
    work = _fresh(s.work / "download")
    _log("download: reruns before and after an export (AppTest)")
    rec = run_child(
        "apptest",
        {"path": str(ckpt), "export_topks": [s.export_topk, "0.5"], "export_root": str(work)},
        cap,
        env={"GRADIEND_CORE_CACHE": str(work / "cache")},
        timeout_s=s.timeout_s,
    )
    shutil.rmtree(work, ignore_errors=True)
    return rec


SCENARIOS = {
    "readspeed": scenario_readspeed,
    "bert": scenario_bert,
    "download": scenario_download,
    "uploads": scenario_uploads,
    "llama-float32": lambda s: scenario_llama(s, "float32"),
    "llama-bfloat16": lambda s: scenario_llama(s, "bfloat16"),
}


def run_scenarios(s: Settings) -> dict[str, Any]:
    """Run the chosen scenarios in a fixed order; a scenario that raises is recorded and the rest go on."""
    s.work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    order = [n for n in SCENARIOS if n in s.scenarios]
    # Generate first so that the read-speed scenario finds every file.
    for name in order:
        if name.startswith("llama-"):
            ensure_llama(s, name.split("-", 1)[1])
    for name in order:
        t0 = time.perf_counter()
        # Other work on a shared machine slows every number; the load average says how much there was.
        load_before = [round(x, 2) for x in os.getloadavg()]
        try:
            results[name] = SCENARIOS[name](s)
        except Exception as e:  # noqa: BLE001 - one broken scenario must not lose the others
            import traceback

            traceback.print_exc()
            results[name] = {"error": f"{type(e).__name__}: {e}"}
        results[name]["scenario_wall_s"] = round(time.perf_counter() - t0, 1)
        results[name]["loadavg_before_after"] = [load_before, [round(x, 2) for x in os.getloadavg()]]
    shutil.rmtree(s.work, ignore_errors=True)
    return results
