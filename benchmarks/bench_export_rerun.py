"""Server time of a dashboard rerun after a large export (the download archive must not be rebuilt).

Generates (once) a checkpoint of ``--input-dim`` dims (default 20,000,000: a 240 MB weight file),
opens it with Streamlit's AppTest at ``topk=1.0`` (the export is as large as the source), exports,
then times ``--reruns`` reruns of the page with nothing changed. Run it against two checkouts to
compare them::

    PYTHONPATH=/path/to/checkout python benchmarks/bench_export_rerun.py --app /path/to/checkout/dashboard/app.py

Prints one JSON line: export click (s), rerun times (s), their median, and the export's size.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
GENERATED = HERE / "_generated"


def generate(path: Path, input_dim: int) -> None:
    import torch
    from gradiend.model.param_mapped import ParamMappedGradiendModel as Ref

    torch.manual_seed(0)
    pm = {"w": {"shape": (input_dim,), "repr": "all"}}
    ref = Ref(input_dim, 1, pm, device=torch.device("cpu"), base_model="bench")
    ref.save_pretrained(str(path))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input-dim", type=int, default=20_000_000)
    ap.add_argument("--reruns", type=int, default=5)
    ap.add_argument("--app", default=str(HERE.parent / "dashboard" / "app.py"))
    args = ap.parse_args()
    ckpt = GENERATED / f"rerun-{args.input_dim}"
    if not (ckpt / "config.json").is_file():
        generate(ckpt, args.input_dim)

    from streamlit.testing.v1 import AppTest

    out = Path(tempfile.mkdtemp(prefix="bench-export-")) / "out"
    at = AppTest.from_file(args.app, default_timeout=1200)
    at.query_params["model"] = str(ckpt)
    at.query_params["topk"] = "1.0"
    at.run()
    at.text_input(key="export_dir").set_value(str(out)).run()
    t0 = time.perf_counter()
    at.button(key="export").click().run()
    export_s = time.perf_counter() - t0
    assert not at.exception and not at.error, [e.value for e in at.error]
    times = []
    for _ in range(args.reruns):
        t0 = time.perf_counter()
        at.run()
        times.append(time.perf_counter() - t0)
    size = sum(f.stat().st_size for f in out.iterdir())
    print(
        json.dumps(
            {
                "app": args.app,
                "input_dim": args.input_dim,
                "export_bytes": size,
                "export_click_s": round(export_s, 2),
                "rerun_s": [round(t, 3) for t in times],
                "rerun_median_s": round(statistics.median(times), 3),
            }
        )
    )


if __name__ == "__main__":
    main()
