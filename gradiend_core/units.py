"""Human-readable numbers with units, shared by the CLI and the dashboard."""

from __future__ import annotations

import math


def format_bytes(n: float) -> str:
    """Bytes in binary units: ``1536 -> '1.5 KiB'``."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def format_count(n: float, unit: str = "") -> str:
    """Counts with k/M/G suffixes: ``109_482_240 -> '109.5M'``; small counts exact."""
    n = float(n)
    suffix = f" {unit}" if unit else ""
    if abs(n) < 10_000:
        return f"{int(n):,}{suffix}" if n == int(n) else f"{n:.3g}{suffix}"
    for div, s in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.1f}{s}{suffix}"
    raise AssertionError("unreachable")


def format_percent(x: float) -> str:
    """A share in [0, 1] as a percentage with enough digits for tiny shares."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    p = 100 * x
    if p == 0 or p >= 10:
        return f"{p:.1f} %"
    if p >= 0.01:
        return f"{p:.2f} %"
    return f"{p:.2g} %"
