"""The one rule for shares and changes (gradiend_core.util.units): never 100 % unless all, never 0 %
unless none, increases signed + and savings -, on numbers checked by hand and by Hypothesis."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from gradiend_core.util.units import format_change, format_fraction, format_percent


def number(text: str) -> float:
    """The number in a formatted share or change (``'+0.5 %'`` -> 0.5)."""
    return float(re.sub(r"[^0-9.eE+-]", "", text.replace(" %", "")))


def test_hand_checked_values():
    assert format_percent(89_213 / 89_216) == "99.997 %"
    assert format_percent(1.0) == "100.0 %" and format_percent(0.0) == "0.0 %"
    assert format_percent(0.206) == "20.6 %" and format_percent(0.05) == "5.00 %"
    assert format_percent(float("nan")) == "n/a" and format_percent(None) == "n/a"
    # 1,078,200 -> 1,084,003 bytes is an increase of 0.538 %
    assert format_change(1_084_003, 1_078_200) == "+0.5 %"
    assert format_change(79_900, 1_078_200) == "-92.6 %"
    assert format_change(0, 10) == "-100.0 %" and format_change(10, 10) == ""
    assert format_fraction(0.99995) == "0.99995" and format_fraction(1.0) == "1.000"


@given(st.integers(1, 10**12), st.data())
def test_share_reads_100_or_0_only_at_the_ends(n, data):
    k = data.draw(st.integers(0, n))
    text = format_percent(k / n)
    assert text.endswith(" %")
    value = number(text)
    assert (value == 100) == (k == n), (k, n, text)
    assert (value == 0) == (k == 0), (k, n, text)
    assert abs(value - 100 * k / n) <= max(1e-9, 0.051)  # one decimal at worst, closer when it matters


@given(st.floats(0, 1, allow_nan=False))
def test_fraction_reads_1_or_0_only_at_the_ends(x):
    value = float(format_fraction(x))
    assert (value == 1) == (x == 1) and (value == 0) == (x == 0)


@given(st.integers(1, 10**15), st.integers(0, 10**15))
def test_change_sign_follows_the_numbers(before, after):
    text = format_change(after, before)
    if after == before:
        assert text == ""
        return
    assert not text.startswith("--") and not text.startswith("+-")
    assert text[0] == ("+" if after > before else "-")
    value = number(text)
    assert value != 0  # a change is never shown as none
    if after > 0 and after < before:
        assert abs(value) < 100  # a saving short of everything never reads -100 %
    true = 100 * (after - before) / before
    assert abs(value - true) <= max(0.051, 1e-6 * abs(true)) or abs(true) < 1e-8
