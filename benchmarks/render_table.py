"""Render the README's performance tables (Markdown) from the benchmark's JSON line.

Usage::

    python benchmarks/bench_vs_reference.py ... | tee bench.log
    python benchmarks/render_table.py bench.log        # or: ... | python benchmarks/render_table.py

The input is the last line of the file (or stdin) that is a JSON object, as
``bench_vs_reference.py`` prints it at the end. Every figure in the tables comes from that one
line, so the README's numbers come from one run on one machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Iterable
from typing import Any

__all__ = ["load_json_line", "render"]

DASH = "-"


def load_json_line(lines: Iterable[str]) -> dict[str, Any]:
    """The last line that parses as a JSON object."""
    found = None
    for line in lines:
        line = line.strip()
        if line.startswith("{"):
            try:
                found = json.loads(line)
            except ValueError:
                continue
    if found is None:
        raise ValueError("no JSON line found; pass the output of bench_vs_reference.py.")
    return found


def _get(d: Any, *keys: Any) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _s(x: float | None) -> str:
    if x is None:
        return DASH
    return f"{x:.3f}" if x < 0.1 else f"{x:.2f}" if x < 10 else f"{x:.1f}"


def _gib(b: int | None) -> str:
    return DASH if b is None else f"{b / 1024**3:.2f} GiB"


def _step(rec: Any, name: str) -> float | None:
    return _get(rec, "steps", name) if _get(rec, "ok") else None


def _spread(rec: Any) -> str:
    """`` [3.9-4.5]`` for a repeated measurement (its range), else nothing."""
    runs = [x for x in (_get(rec, "repeats_s") or []) if x is not None]
    return f" [{_s(min(runs))}-{_s(max(runs))}]" if len(runs) > 1 else ""


def _failed(rec: dict[str, Any]) -> str:
    step = rec.get("failed_step")
    return f"fails: {rec.get('failure')}" + (f" (in {step})" if step else "")


def _run_cell(rec: Any) -> str:
    """A limited run as ``"12.3 s, peak 3.10 GiB"`` or its failure."""
    if not isinstance(rec, dict):
        return DASH
    if not rec.get("ok"):
        return _failed(rec) + f" after {_s(rec.get('wall_s'))} s"
    return f"{_s(rec.get('wall_s'))} s, peak RSS {_gib(rec.get('peak_rss_bytes'))}"


def _med_max(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return DASH
    return f"{_s(statistics.median(values))} (max {_s(max(values))})"


def _ratio(ref: float | None, ours: float | None) -> str:
    return f"{ref / ours:.1f}x" if ref and ours else DASH


def _bert(b: dict[str, Any]) -> list[str]:
    ck = b.get("checkpoint", {})
    ours, ref = b.get("ours", {}), b.get("reference", {})
    rows: list[tuple] = []

    def pair(label: str, r: float | None, o: float | None, fmt=_s, r_rec=None, o_rec=None) -> None:
        rows.append(
            (
                label,
                fmt(r) + _spread(r_rec) if r is not None else DASH,
                fmt(o) + _spread(o_rec) if o is not None else DASH,
                _ratio(r, o),
            )
        )

    def timed(label: str, key: str, ref_step: str | None, our_step: str) -> None:
        r_rec, o_rec = ref.get(key), ours.get(key)
        pair(label, _step(r_rec, ref_step) if ref_step else None, _step(o_rec, our_step), r_rec=r_rec, o_rec=o_rec)

    timed("open to first histogram, cold page cache (s)", "open_cold", "open_to_first_topk", "open_to_first_histogram")
    timed(
        "open to first histogram, warm page cache (s)",
        "open_warm_page_cache",
        "open_to_first_topk",
        "open_to_first_histogram",
    )
    timed("open a second time, warm user cache (s)", "open_second", None, "open_to_first_histogram")
    br, br2 = b.get("browser") or {}, b.get("browser_second_open") or {}
    pair("first histogram in Chromium, from navigation (s)", None, _get(br, "steps", "first histogram", "s"))
    pair("first histogram in Chromium, second open (s)", None, _get(br2, "steps", "first histogram", "s"))
    pair("topk change in Chromium, until the page is idle (s)", None, _get(br, "steps", "topk change", "s"))
    rc = _get(ref, "open_cold", "result", "changes_s") or {}
    oc = _get(ours, "open_cold", "result", "changes_s") or {}
    rows.append(
        (
            "one topk query in-process, median (max) over topk 1 .. 100 % (s)",
            _med_max(list(rc.values())),
            _med_max(list(oc.values())),
            DASH,
        )
    )
    changes = _get(b, "apptest", "result", "changes") or []
    for key, label in (("topk_s", "topk"), ("part_s", "part"), ("threshold_s", "threshold"), ("mask_s", "mask")):
        rows.append(
            (
                f"dashboard rerun on a {label} change (AppTest), median (max) (s)",
                DASH,
                _med_max([c.get(key) for c in changes]),
                DASH,
            )
        )
    timed(
        f"export at topk {_get(b, 'export_topk') or '0.05'}: load, select, prune, save (s)",
        "export",
        "load_prune_save",
        "export_pruned",
    )
    pair(
        "peak RSS, open + topk queries (GiB)",
        _get(ref, "open_cold", "peak_rss_bytes"),
        _get(ours, "open_cold", "peak_rss_bytes"),
        fmt=lambda x: f"{x / 1024**3:.2f}",
    )
    pair(
        "peak RSS, export (GiB)",
        _get(ref, "export", "peak_rss_bytes"),
        _get(ours, "export", "peak_rss_bytes"),
        fmt=lambda x: f"{x / 1024**3:.2f}",
    )
    peak = _get(br, "server", "peak_rss_bytes")
    if peak and ck.get("bytes"):
        rows.append(
            (
                "dashboard server peak RSS, every view opened + one export",
                DASH,
                f"{_gib(peak)} = {peak / ck['bytes']:.1f}x the checkpoint",
                DASH,
            )
        )
    views = {k: v["s"] for k, v in (br.get("steps") or {}).items() if k.startswith("view: ")}
    if views:
        slow = max(views, key=views.get)
        rows.append(("slowest view opened in Chromium (s)", DASH, f"{_s(views[slow])} ({slow[6:]})", DASH))
    exp = _get(br, "steps", "export", "s")
    if exp is not None:
        rows.append(("export in the dashboard, Chromium (s)", DASH, _s(exp), DASH))
    if br.get("failed_step"):
        rows.append(("dashboard visit", DASH, _failed(br), DASH))
    head = (
        f"On the {ck.get('input_dim', 0):,}-dim BERT-base-shaped checkpoint ({ck.get('dtype')}, "
        f"{ck.get('bytes', 0) / 1e9:.2f} GB); each run in a fresh process; "
        "[min-max] of repeated runs, whose median is shown"
    )
    return _table(head, ["", "`gradiend` 0.2.3", "`gradiend-core`", "reference / ours"], rows)


def _download(d: dict[str, Any]) -> list[str]:
    entries = _get(d, "result", "download") or []
    if not entries:
        return [f"Download archive: {_failed(d)}", ""] if isinstance(d, dict) and d.get("failure") else []
    rows = []
    base = entries[0].get("rerun_before_export_s")
    rows.append(("rerun with no export on the page (s)", _s(base)))
    for e in entries:
        mb = (e.get("export_bytes") or 0) / 1e6
        rows.append(
            (
                f"rerun after an export at topk {e['topk']} ({mb:,.0f} MB), median of 3 (s)",
                _s(statistics.median(e["reruns_after_export_s"])),
            )
        )
    return _table(
        "Download archive (AppTest, server time of a rerun that changes nothing)", ["", "`gradiend-core`"], rows
    )


def _uploads(u: dict[str, Any]) -> list[str]:
    if not u:
        return []
    rows = [("users", str(u.get("users")))]
    if u.get("failure"):
        rows.append(("result", _failed(u)))
        rows.append(("users with their histogram before the failure", str(u.get("users_open_before_failure", DASH))))
    rows += [
        ("seconds from upload to histogram, per user", ", ".join(_s(x) for x in u.get("user_s", [])) or DASH),
        ("server RSS before the uploads", _gib(u.get("rss_before_uploads"))),
        (
            "server peak RSS during the sessions",
            _gib(u.get("peak_rss_during")) if u.get("peak_rss_during") else _gib(_get(u, "server", "peak_rss_bytes")),
        ),
        ("server RSS when every user sees the histogram", _gib(_get(u, "at_end", "vm_rss"))),
        ("server RSS right after the pages closed", _gib(_get(u, "after_close", "vm_rss"))),
        ("server RSS after the session TTL", _gib(_get(u, "after_wait", "vm_rss"))),
        ("session temp directories left", str(u.get("session_dirs_left", DASH))),
        ("server memory limit", _gib(_get(u, "server", "limit_bytes"))),
    ]
    head = (
        f"{u.get('users')} users upload the zipped BERT-base checkpoint ({u.get('zip_bytes', 0) / 1e9:.2f} GB) at once"
    )
    return _table(head, ["", "`gradiend-core`"], rows)


def _visit_cell(v: Any) -> str:
    if not isinstance(v, dict):
        return DASH
    done = {k: s["s"] for k, s in (v.get("steps") or {}).items()}
    parts = [f"{k} {_s(x)} s" for k, x in done.items() if k != "server start"]
    if v.get("failed_step"):
        parts.append(f"{v['failed_step']}: {v.get('failure')}")
    peak = _get(v, "server", "peak_rss_bytes")
    return "; ".join(parts) + (f"; server peak RSS {_gib(peak)}" if peak else "")


def _llama(results: dict[str, Any]) -> list[str]:
    variants = [
        (k, results[k]) for k in ("llama-float32", "llama-bfloat16") if k in results and "checkpoint" in results[k]
    ]
    if not variants:
        return []
    rows = []
    for label, getter in (
        ("`gradiend-core info`", lambda r: _run_cell(_get(r, "cli", "info"))),
        ("`gradiend-core prune --topk {t} --dry-run`", lambda r: _run_cell(_get(r, "cli", "dry_run"))),
        ("`gradiend-core prune --topk {t} --out`", lambda r: _run_cell(_get(r, "cli", "export"))),
        ("Python: open to first histogram", lambda r: _run_cell(_get(r, "api", "open_to_first_histogram"))),
        ("Python: `export_pruned` at topk {t}", lambda r: _run_cell(_get(r, "api", "export"))),
        ("dashboard in Chromium", lambda r: _visit_cell(r.get("browser"))),
        (
            "`gradiend` 0.2.3: load, prune, save (own cap)",
            lambda r: (
                _run_cell(_get(r, "reference", "export"))
                + (
                    f" [cap {_gib(_get(r, 'reference', 'export', 'limit_bytes'))}]"
                    if _get(r, "reference", "export")
                    else ""
                )
            ),
        ),
    ):
        t = results.get("settings", {}).get("llama_topk", "0.01")
        rows.append((label.format(t=t), *[getter(r) for _, r in variants]))
    heads = [f"{r['checkpoint']['dtype']}, {r['checkpoint']['bytes'] / 1e9:.1f} GB" for _, r in variants]
    ck = variants[0][1]["checkpoint"]
    limit = _gib(variants[0][1].get("limit_bytes"))
    head = f"On the {ck['input_dim']:,}-dim LLaMA-3.2-1B-shaped checkpoint, inside a {limit} memory limit"
    return _table(head, [""] + heads, rows)


def _machine(results: dict[str, Any]) -> list[str]:
    m = results.get("machine", {})
    line = (
        f"Machine: {m.get('cpu')}, {m.get('cores')} cores, {m.get('mem_total_bytes', 0) / 1024**3:.1f} GiB RAM "
        f"(shared), kernel {m.get('kernel')}, commit {m.get('commit')}."
    )
    rs = _get(results, "scenarios", "readspeed") or {}
    speeds = [
        f"{name} weights ({v['bytes'] / 1e9:.1f} GB): "
        f"cold {v['cold']['mb_per_s']:,.0f} MB/s, warm {v['warm']['mb_per_s']:,.0f} MB/s"
        for name, v in rs.items()
        if isinstance(v, dict) and "cold" in v
    ]
    loads = {
        name: v.get("loadavg_before_after")
        for name, v in (results.get("scenarios") or {}).items()
        if isinstance(v, dict)
    }
    loads = {k: v for k, v in loads.items() if v}
    out = [line]
    if loads:
        out.append(
            "1-minute load average before/after each scenario (2 cores; higher means other work slowed the numbers): "
            + ", ".join(f"{k} {v[0][0]:.1f}/{v[1][0]:.1f}" for k, v in loads.items())
            + "."
        )
    if speeds:
        out.append("Sequential read: " + "; ".join(speeds) + ".")
    return out + [""]


def _table(head: str, cols: list[str], rows: list[tuple]) -> list[str]:
    out = [head, "", "| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return out + [""]


def render(results: dict[str, Any]) -> str:
    """The Markdown tables of one benchmark run's JSON (``bench_vs_reference.py``'s last line)."""
    sc = results.get("scenarios", {})
    lines = _machine(results)
    if "bert" in sc and "checkpoint" in sc["bert"]:
        b = dict(sc["bert"], export_topk=_get(results, "settings", "export_topk"))
        lines += _bert(b)
    elif "bert" in sc:
        lines += [f"BERT-base scenario: {sc['bert'].get('error')}", ""]
    if "download" in sc:
        lines += _download(sc["download"])
    if "uploads" in sc:
        lines += _uploads(sc["uploads"])
    lines += _llama({**sc, "settings": results.get("settings", {})})
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Render the README's performance tables from bench_vs_reference.py's JSON line."
    )
    ap.add_argument("file", nargs="?", help="file with the benchmark's output (default: stdin)")
    args = ap.parse_args(argv)
    lines = open(args.file) if args.file else sys.stdin
    sys.stdout.write(render(load_json_line(lines)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
