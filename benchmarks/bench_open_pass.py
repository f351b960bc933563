"""The core's share of "every change answers at once": the open pass and every change after it,
inside a memory limit.

For a LLaMA-shaped (default 1.24e9 dims) or BERT-base-shaped (109M dims) GRADIEND written with
:mod:`benchmarks.streaming_checkpoint` (kept in ``--data`` and reused), one child process under a
cgroup memory limit (:mod:`benchmarks.memlimit`, root only; ``--no-limit`` runs without) times:

* the open pass with a new user cache (one read of the weight file for all four parts), and a
  second open from the cache (a new process's registry, the same cache);
* a change of topk at 1 dim .. 100 %, of threshold and of part, each answered without a layout
  (``select_bounds``: counts, importance kept, per-parameter kept counts; whether the shown text is
  exact at once), and the exact selection's count (``select``) without a threshold;
* the sampled Spearman matrix of the four parts (Compare parts) from the open pass's samples.

It prints one JSON object (seconds, peak memory, whether the limit killed the child). Timings on a
busy machine are not figures: report the load average with them.

    python benchmarks/bench_open_pass.py --shape llama --dtype float32 --limit 4GiB
    python benchmarks/bench_open_pass.py --shape small --no-limit        # a smoke run in seconds
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TOPKS = [1, 100, 10_000, 1e-4, 1e-3, 0.01, 0.05, 0.1, 0.25, 0.5, 0.9, 1.0]


def _shapes(name: str):
    from benchmarks.bert_shapes import bert_base_shapes
    from benchmarks.llama_shapes import llama_shapes

    if name == "llama":
        return llama_shapes()
    if name == "bert":
        return bert_base_shapes()
    return llama_shapes(layers=2, hidden=256, intermediate=512, heads=4, kv_heads=2, head_dim=64, vocab=2000)


def measure(path: str) -> dict:
    """The child: every step timed, in one process (the cache is ``$GRADIEND_CORE_CACHE``)."""
    out: dict = {}
    t = time.perf_counter()
    from gradiend_core.analysis.correlation import spearman_matrix
    from gradiend_core.checkpoint import open_checkpoint
    from gradiend_core.errors import SelectionError
    from gradiend_core.pruning.reduction import model_disk_bytes_bounds
    from gradiend_core.ranking import store
    from gradiend_core.ranking.importance import PARTS
    from gradiend_core.selection.rule import select, select_bounds
    from gradiend_core.util.units import format_bytes, format_count, format_percent

    out["import_s"] = time.perf_counter() - t
    data = open_checkpoint(path)
    out["input_dim"] = data.architecture.input_dim
    t = time.perf_counter()
    progress = []
    rankings = store.open_rankings(data, progress=lambda f, what: progress.append(f))
    out["open_pass_s"] = time.perf_counter() - t
    out["progress_calls"] = len(progress)
    store.clear_memory()
    t = time.perf_counter()
    rankings = store.open_rankings(open_checkpoint(path))
    out["reopen_from_cache_s"] = time.perf_counter() - t
    changes = []
    for part in PARTS:
        r = rankings[part]
        for topk in TOPKS:
            t = time.perf_counter()
            b = select_bounds(r, topk=topk)
            total = r.total
            mass = b.kept_mass().map(lambda m, total=total: m / total if total else float("nan"))
            per_param = b.param_counts()
            k = select(r, topk=topk).k
            changes.append(
                {
                    "part": part,
                    "topk": topk,
                    "s": time.perf_counter() - t,
                    "k": k,
                    "kept_shown": mass.shown(format_percent),
                    "per_param_exact": per_param.exact,
                    "disk_shown": model_disk_bytes_bounds(data, b).shown(format_bytes),
                }
            )
        for t_ in (1e-6, 1e-4, 1e-3, 1e-2):
            t = time.perf_counter()
            try:
                left = select_bounds(r, threshold=t_).n_after_threshold
            except SelectionError:  # keeps nothing: answered from the summary too
                left = None
            changes.append(
                {
                    "part": part,
                    "threshold": t_,
                    "s": time.perf_counter() - t,
                    "shown": left.shown(format_count) if left else "nothing",
                }
            )
    out["changes"] = changes
    out["change_max_s"] = max(c["s"] for c in changes)
    t = time.perf_counter()
    sp = spearman_matrix(rankings)
    out["spearman_s"] = time.perf_counter() - t
    out["spearman_n_used"] = sp.n_used
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=["llama", "bert", "small"], default="small")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    ap.add_argument("--data", default=str(Path(tempfile.gettempdir()) / "gradiend-bench-data"))
    ap.add_argument("--limit", default="4GiB", help="memory limit of the child (cgroup v1; root)")
    ap.add_argument("--no-limit", action="store_true", help="run the child without a memory limit")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child)))
        return 0
    from benchmarks.memlimit import parse_bytes, run_limited
    from benchmarks.streaming_checkpoint import write_streamed_checkpoint

    ck = Path(args.data) / f"{args.shape}-{args.dtype}"
    if not ck.exists():
        write_streamed_checkpoint(ck, _shapes(args.shape), dtype=args.dtype)
    cache = tempfile.mkdtemp(prefix="gradiend-bench-cache-")  # a new user's cache
    env = dict(os.environ, GRADIEND_CORE_CACHE=cache, PYTHONPATH=str(REPO))
    cmd = [sys.executable, __file__, "--child", str(ck)]
    load_before = os.getloadavg()[0]
    if args.no_limit:
        import subprocess

        t = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        result = {"returncode": proc.returncode, "wall_s": time.perf_counter() - t, "stderr": proc.stderr[-2000:]}
        stdout = proc.stdout
    else:
        run = run_limited(cmd, parse_bytes(args.limit), env=env)
        result = {
            "returncode": run.returncode,
            "wall_s": run.wall_s,
            "peak_rss_bytes": run.peak_rss_bytes,
            "cgroup_peak_anon_bytes": run.cgroup_peak_anon_bytes,
            "oom_killed": run.oom_killed,
            "limit_bytes": run.limit_bytes,
            "stderr": run.stderr[-2000:],
        }
        stdout = run.stdout
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    result.update(json.loads(lines[-1]) if lines else {})
    result.update(load_before=load_before, load_after=os.getloadavg()[0], checkpoint=str(ck))
    print(json.dumps(result, indent=2))
    return 0 if result.get("returncode") == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
