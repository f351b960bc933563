"""Speed of the pruning curve on a BERT-base-sized GRADIEND (input_dim 109,482,240) with 64 samples.

The checkpoint is the one of ``bench_vs_reference.py`` (every weight of a bert-base-uncased-shaped
model, written by the reference package's ``save_pretrained``), generated once under
``/work/bench-data/`` (``--data-dir``). 64 gradients over 109M dims are 28 GB in float32, more than
this machine's memory, which is the case the streaming accumulation is for: the gradient columns
arrive chunk by chunk (here synthetic, ``g_j = y_j * W_enc + noise`` with labels ``y_j = +-1`` and
a fixed bank of Gaussian noise whose rows are reused with a shift per chunk) and only per-bucket
sums are kept.

Timed: the whole curve of one part (decoder-weight) - importance, bucket counts, plan (a 48-point
log grid plus an exact point at topk = 5 %), the streaming accumulation and the measures - with the
time spent producing the synthetic gradient chunks measured apart (a real run reads them from a
cache file or computes them from the base model). Prints a few lines and one JSON line::

    python benchmarks/bench_curve.py [--samples 64] [--input-dim N] [--data-dir /work/bench-data]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import torch  # noqa: E402

from benchmarks.bench_vs_reference import generate  # noqa: E402

CHUNK = 1 << 20
BANK = 1 << 22


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--input-dim", type=int, help="scale the checkpoint to about this many input dims")
    ap.add_argument("--data-dir", default=os.environ.get("GRADIEND_BENCH_DATA", "/work/bench-data"))
    ap.add_argument("--part", default="decoder-weight")
    args = ap.parse_args()

    from gradiend_core.checkpoint import read_checkpoint
    from gradiend_core.curve.measures import Encoder
    from gradiend_core.curve.sums import BucketSums, bucket_counts, log_grid, plan_curve
    from gradiend_core.ranking.importance import weight_importance
    from gradiend_core.selection.rule import resolve_k

    name = "bert-base" if args.input_dim is None else f"bert-scaled-{args.input_dim}"
    ckpt = Path(args.data_dir) / name
    if not (ckpt / "config.json").exists():
        print(f"generating {ckpt} with the reference package ...", file=sys.stderr)
        generate(ckpt, args.input_dim)
    t0 = time.perf_counter()
    data = read_checkpoint(ckpt)
    t_read = time.perf_counter() - t0
    enc = Encoder.of(data)
    n, m = enc.input_dim, args.samples

    # synthetic gradients: a noise bank of BANK x m, shifted per chunk, plus the label signal
    gen = torch.Generator().manual_seed(0)
    bank = torch.randn(BANK + CHUNK, m, generator=gen)
    labels = torch.where(torch.arange(m) % 2 == 0, 1.0, -1.0)
    w0 = enc.weight[0].to(torch.float32)
    scale = float(bank.std()) / float(w0.abs().mean()) * 0.002  # weak: the full correlation stays below 1
    buf = torch.empty(CHUNK, m)

    def chunk_columns(s: int, e: int) -> torch.Tensor:
        """(m, e - s): a transposed view of a (e - s, m) buffer, as BucketSums takes it without a copy."""
        off = (s * 7919) % BANK
        out = buf[: e - s]
        torch.addr(bank[off : off + e - s], w0[s:e], labels, alpha=scale, out=out)
        return out.t()

    t_gen = cpu_gen = 0.0
    t1, c1 = time.perf_counter(), time.process_time()
    imp = weight_importance(data.state_dict, args.part)
    counts = bucket_counts(imp)
    k_sel = resolve_k(0.05, n)
    plan = plan_curve(counts, log_grid(n, 48), exact=[k_sel])
    t_plan = time.perf_counter() - t1
    acc = BucketSums(plan, m, enc.latent_dim)
    t_add = 0.0
    for s in range(0, n, CHUNK):
        e = min(n, s + CHUNK)
        g0, q0 = time.perf_counter(), time.process_time()
        cols = chunk_columns(s, e)
        g1, q1 = time.perf_counter(), time.process_time()
        acc.add(s, imp[s:e], enc.weight[:, s:e], cols)
        t_add += time.perf_counter() - g1
        t_gen += g1 - g0
        cpu_gen += q1 - q0
    f0 = time.perf_counter()
    curve = acc.finish(enc, labels.numpy(), args.part, selection_k=k_sel)
    t_finish = time.perf_counter() - f0
    total = time.perf_counter() - t1
    curve_s = total - t_gen
    curve_cpu_s = time.process_time() - c1 - cpu_gen
    load = os.getloadavg()[0]
    recorded = int(plan.counts[plan.recorded].sum())
    result = {
        "benchmark": "pruning_curve",
        "checkpoint": str(ckpt),
        "input_dim": n,
        "samples": m,
        "part": args.part,
        "points": int(curve.ks.size),
        "points_exact_k": int(curve.requested.sum()),
        "recorded_members": recorded,
        "read_checkpoint_s": round(t_read, 2),
        "importance_and_plan_s": round(t_plan, 2),
        "accumulate_s": round(t_add, 2),
        "measures_s": round(t_finish, 2),
        "curve_s": round(curve_s, 2),
        "curve_cpu_s": round(curve_cpu_s, 2),
        "load_average_1min": round(load, 2),
        "synthetic_gradients_s": round(t_gen, 2),
        "wall_s": round(total, 2),
        "label_correlation_full": round(curve.full["label_correlation"], 4),
        "label_correlation_at_5pct": round(curve.at(k_sel)["label_correlation"], 4),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}",
    }
    print(
        f"{n:,} dims x {m} samples, {args.part}: curve {curve_s:.2f} s (importance + plan {t_plan:.2f} s, "
        f"accumulate {t_add:.2f} s, measures {t_finish:.2f} s; {curve_cpu_s:.1f} CPU s); synthetic gradients "
        f"{t_gen:.2f} s apart; load average {load:.1f} on {os.cpu_count()} cores"
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
