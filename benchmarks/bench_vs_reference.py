"""Speed and memory of gradiend_core against the reference package on a BERT-base-sized GRADIEND.

Generates (once) a checkpoint over every weight of a bert-base-uncased-shaped model
(input_dim 109,482,240, latent_dim 1, float32, 1.3 GB) with the reference package's own
``save_pretrained``, then times both implementations in separate processes, one run each,
so that peak resident memory is measured per implementation:

* reference: ``from_pretrained``; one top-k query (``get_topk_weights(topk=0.05)``);
  ``prune(topk=0.05)``; ``save_pretrained``;
* ours: open to first histogram (read, importance, ranking, histogram); a slider move (select,
  reduction preview, histogram, figure) for 20 topk values; export at topk=0.05 (load, select,
  prune, write, reload and verify);
* optionally (``--apptest``) the dashboard's server time for one topk rerun via AppTest.

Prints a table and one JSON line. Usage::

    python benchmarks/bench_vs_reference.py [--input-dim N] [--apptest] [--skip-reference]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
GENERATED = HERE / "_generated"


def generate(path: Path, input_dim: int | None) -> None:
    """Write the benchmark checkpoint with the reference package (decoder weights heavy-tailed, as after training)."""
    import numpy as np
    import torch
    from gradiend.model.param_mapped import ParamMappedGradiendModel as Ref

    from benchmarks.bert_shapes import bert_base_shapes

    shapes = bert_base_shapes()
    if input_dim is not None:  # a scaled-down stand-in with the same parameter layout
        scale = input_dim / sum(int(np.prod(s)) for _, s in shapes)
        shapes = [(n, tuple(max(1, int(round(d * scale))) if i == 0 else d for i, d in enumerate(s))) for n, s in shapes]
    n = sum(int(np.prod(s)) for _, s in shapes)
    torch.manual_seed(0)
    ref = Ref(n, 1, {k: {"shape": s, "repr": "all"} for k, s in shapes}, device=torch.device("cpu"), base_model="bert-base-uncased")
    with torch.no_grad():
        w = ref.decoder[0].linear.weight
        w.mul_(torch.empty_like(w).exponential_(1.0).pow_(3))
    ref.save_pretrained(str(path))


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_reference(ckpt: str, out: str) -> dict:
    from gradiend.model.param_mapped import ParamMappedGradiendModel as Ref

    t0 = time.perf_counter()
    m = Ref.from_pretrained(ckpt)
    t1 = time.perf_counter()
    m.get_topk_weights(part="decoder-weight", topk=0.05)
    t2 = time.perf_counter()
    p = m.prune(topk=0.05, part="decoder-weight")
    t3 = time.perf_counter()
    p.save_pretrained(out)
    t4 = time.perf_counter()
    return {"load_s": t1 - t0, "topk_query_s": t2 - t1, "prune_s": t3 - t2, "export_s": t4 - t0, "peak_rss_mb": _rss_mb()}


def run_ours(ckpt: str, out: str) -> dict:
    import statistics

    from gradiend_core import export_pruned, read_checkpoint, reduction_report, select
    from gradiend_core.distribution import cut_value, log_histogram
    from gradiend_core.export import importance_for
    from gradiend_core.selection import Ranking
    from dashboard.figures.distribution import importance_histogram

    t0 = time.perf_counter()
    data = read_checkpoint(ckpt)
    ranking = Ranking(importance_for(data, "decoder-weight"))
    hist = log_histogram(ranking)
    importance_histogram(hist, "decoder-weight")
    t1 = time.perf_counter()
    moves = []
    for topk in [0.001 * (1.4**i) for i in range(20)]:
        s = time.perf_counter()
        sel = select(ranking, topk=min(topk, 1.0))
        reduction_report(data, sel, ranking, "decoder-weight")
        importance_histogram(log_histogram(ranking, sel), "decoder-weight", cut_value(ranking, sel))
        moves.append(time.perf_counter() - s)
    open_s = t1 - t0
    del data, ranking
    t2 = time.perf_counter()
    export_pruned(ckpt, out, topk=0.05, part="decoder-weight", source_sha256="skipped")
    t3 = time.perf_counter()
    return {
        "open_to_histogram_s": open_s,
        "slider_move_median_s": statistics.median(moves),
        "slider_move_max_s": max(moves),
        "export_s": t3 - t2,
        "peak_rss_mb": _rss_mb(),
    }


def run_apptest(ckpt: str) -> dict:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(HERE.parent / "dashboard" / "app.py"), default_timeout=600)
    at.query_params["model"] = ckpt
    t0 = time.perf_counter()
    at.run()
    t1 = time.perf_counter()
    at.text_input(key="topk").set_value("0.02").run()
    t2 = time.perf_counter()
    return {"first_run_s": t1 - t0, "topk_rerun_s": t2 - t1, "errors": [e.value for e in at.error]}


def _child(kind: str, ckpt: str, out: str) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--ckpt", ckpt, "--out", out]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input-dim", type=int, help="scale the checkpoint to about this many input dims")
    ap.add_argument("--apptest", action="store_true", help="also time a dashboard rerun with AppTest")
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--ckpt", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        fn = {"reference": run_reference, "ours": run_ours, "apptest": lambda c, o: run_apptest(c)}[args.child]
        print(json.dumps(fn(args.ckpt, args.out)))
        return 0

    name = "bert-base" if args.input_dim is None else f"bert-scaled-{args.input_dim}"
    ckpt = GENERATED / name
    if not (ckpt / "config.json").exists():
        print(f"generating {ckpt} with the reference package ...", file=sys.stderr)
        generate(ckpt, args.input_dim)
    size_mb = sum(f.stat().st_size for f in ckpt.iterdir()) / 1024**2
    results = {"checkpoint": str(ckpt), "checkpoint_mb": round(size_mb, 1), "machine": f"{platform.machine()}, {os.cpu_count()} cores"}
    for kind in (["ours"] if args.skip_reference else ["reference", "ours"]):
        out = GENERATED / f"out-{kind}"
        shutil.rmtree(out, ignore_errors=True)
        results[kind] = _child(kind, str(ckpt), str(out))
        shutil.rmtree(out, ignore_errors=True)
    if args.apptest:
        results["apptest"] = _child("apptest", str(ckpt), "")
    ours, ref = results["ours"], results.get("reference")
    rows = [
        ("open to first histogram (s)", ref and ref["load_s"] + ref["topk_query_s"], ours["open_to_histogram_s"]),
        ("one selection change (s, median)", ref and ref["topk_query_s"], ours["slider_move_median_s"]),
        ("export at topk=0.05 (s)", ref and ref["export_s"], ours["export_s"]),
        ("peak resident memory (MB)", ref and ref["peak_rss_mb"], ours["peak_rss_mb"]),
    ]
    print(f"checkpoint {ckpt} ({size_mb:.0f} MB), {results['machine']}")
    print(f"{'':34} {'reference':>10} {'ours':>10} {'ratio':>8}")
    for label, r, o in rows:
        ratio = f"{r / o:8.1f}" if r else "       -"
        print(f"{label:34} {r if r is not None else float('nan'):10.2f} {o:10.2f} {ratio}")
    if args.apptest:
        print(f"dashboard (AppTest): first run {results['apptest']['first_run_s']:.2f} s, topk rerun {results['apptest']['topk_rerun_s']:.3f} s")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
