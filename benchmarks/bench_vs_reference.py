"""Speed and memory of gradiend-core as a user meets it, side by side with the reference package gradiend 0.2.3.

Scenarios (pick with --scenarios; default: all):

  readspeed       the machine's sequential read speed, cold and warm page cache
  bert            109,482,240-dim BERT-base-shaped checkpoint (float32, 1.3 GB, written by the
                  reference's save_pretrained): open to first histogram (cold / warm page cache,
                  second open with a warm user cache), in-process topk queries, export at topk
                  0.05, each against the reference; dashboard server time of topk, part,
                  threshold and mask changes at topk 1 .. 100 % (AppTest); a visit in Chromium
                  (first histogram, topk change, every view, export, download) with the server's
                  peak memory, and a second visit on a fresh server
  download        how long a rerun takes once an export (its .zip download) is on the page
  uploads         four users upload the zipped BERT-base checkpoint at once: server memory
                  during the sessions and after they end
  llama-float32   1,235,814,400-dim LLaMA-3.2-1B-shaped checkpoint (15 GB), inside a 4 GiB limit:
                  gradiend-core info, prune --dry-run, export at topk 0.01 (CLI and Python),
                  first histogram, a dashboard visit; the reference's load + prune + save under
                  a cap that protects the machine
  llama-bfloat16  the same in bfloat16 (7.4 GB)

Every measurement runs in its own process inside a cgroup v1 memory group (root needed), so a
run that needs more memory than allowed is killed by the OOM killer and recorded as such (which
step, which limit); the harness goes on. Generated checkpoints live in --data-dir and are reused.
Drives the products only through their public faces (see benchmarks/adapters.py).

Prints progress on stderr, then a Markdown table and, as the last line, one JSON object that
benchmarks/render_table.py turns into the README's tables.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.bert_checkpoint import generate  # noqa: E402,F401  (kept importable from here)
from benchmarks.memlimit import cgroup_available, parse_bytes  # noqa: E402
from benchmarks.render_table import render  # noqa: E402
from benchmarks.scenarios import SCENARIOS, Settings, machine_info, run_scenarios  # noqa: E402

DEFAULT_DATA_DIR = Path("/work/bench-data")


def _finite(o):
    """Strict JSON: NaN and infinities become null."""
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--scenarios", default="all", help=f"comma-separated, from: {', '.join(SCENARIOS)} (default: all)")
    ap.add_argument("--skip-reference", action="store_true", help="do not run the reference package")
    ap.add_argument("--no-browser", action="store_true", help="skip the Chromium visits (AppTest still runs)")
    ap.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help="where generated checkpoints are kept and reused (default: %(default)s; ~24 GB for both LLaMA files)",
    )
    ap.add_argument(
        "--limit", default="4GiB", help="memory limit of gradiend-core on the LLaMA checkpoints (default: %(default)s)"
    )
    ap.add_argument(
        "--reference-cap",
        default="20GiB",
        help="cap of the reference on the LLaMA checkpoints, lowered to leave 3 GiB available (default: %(default)s)",
    )
    ap.add_argument(
        "--bert-cap", default="12GiB", help="cap of every run on the BERT-base checkpoint (default: %(default)s)"
    )
    ap.add_argument(
        "--upload-cap",
        default="12GiB",
        help="cap of the dashboard server in the uploads scenario (default: %(default)s)",
    )
    ap.add_argument("--upload-users", type=int, default=4, help="concurrent uploading users (default: %(default)s)")
    ap.add_argument(
        "--upload-after",
        type=float,
        default=150.0,
        help="seconds to watch the server after the upload pages closed (default: %(default)s)",
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs of each in-process BERT-base measurement, the median reported; an odd number (default: %(default)s)",
    )
    ap.add_argument(
        "--bert-input-dim",
        type=int,
        help="replace the BERT-base checkpoint by a scaled-down stand-in of about this many dims (to try the harness)",
    )
    ap.add_argument("--timeout", type=float, default=3600.0, help="per-run timeout in seconds (default: %(default)s)")
    ap.add_argument("--json-out", type=Path, help="also write the JSON object to this file")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    # A SIGTERM unwinds like Ctrl-C, so servers are stopped and memory groups removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    chosen = list(SCENARIOS) if args.scenarios == "all" else [x.strip() for x in args.scenarios.split(",") if x.strip()]
    unknown = [x for x in chosen if x not in SCENARIOS]
    if unknown:
        print(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}.", file=sys.stderr)
        return 2
    if not cgroup_available():
        print(
            "bench_vs_reference needs root and a cgroup v1 memory hierarchy at /sys/fs/cgroup/memory: every run is "
            "memory-limited so that the machine stays usable.",
            file=sys.stderr,
        )
        return 2
    args.data_dir.mkdir(parents=True, exist_ok=True)
    settings = Settings(
        data_dir=args.data_dir,
        scenarios=chosen,
        reference=not args.skip_reference,
        browser=not args.no_browser,
        user_limit=parse_bytes(args.limit),
        reference_cap=parse_bytes(args.reference_cap),
        bert_cap=parse_bytes(args.bert_cap),
        upload_cap=parse_bytes(args.upload_cap),
        upload_users=args.upload_users,
        upload_after_s=args.upload_after,
        timeout_s=args.timeout,
        bert_input_dim=args.bert_input_dim,
        repeat=max(1, args.repeat),
    )
    t0 = time.perf_counter()
    results = {
        "benchmark": "gradiend-core vs gradiend",
        "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "settings": {
            "scenarios": chosen,
            "reference": settings.reference,
            "browser": settings.browser,
            "user_limit_bytes": settings.user_limit,
            "reference_cap_bytes": settings.reference_cap,
            "bert_cap_bytes": settings.bert_cap,
            "upload_cap_bytes": settings.upload_cap,
            "llama_topk": settings.llama_topk,
            "export_topk": settings.export_topk,
            "visit_topk": settings.visit_topk,
            "bert_input_dim": settings.bert_input_dim,
            "repeat": settings.repeat,
        },
    }
    results["scenarios"] = run_scenarios(settings)
    results["wall_s"] = round(time.perf_counter() - t0, 1)
    line = json.dumps(_finite(results), allow_nan=False, default=str)
    if args.json_out:
        args.json_out.write_text(line + "\n")
    print(render(results))
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
