"""Building a mask by clicking charts in a real browser (Debian's Chromium via Playwright).

Clicks land on cell and bar centres computed from the chart's own axes (Plotly's
``_fullLayout``), as a user's mouse would. Expected sets come from the reference package's own
``prune`` and from the parameter shapes, not from the core. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from gradiend.model.param_mapped import ParamMappedGradiendModel as RefModel
from test_browser import ARTIFACTS, REPO, SAMPLE, browser, server  # noqa: F401 - fixtures

pytestmark = pytest.mark.browser

PARTS = ("encoder-weight", "decoder-weight", "decoder-bias", "decoder-sum")

#: Page position of a category pair on a chart (key: the chart's Streamlit key).
_CENTRE = """([key, x, y, row]) => {
  const gd = document.querySelector('.st-key-' + key + ' .js-plotly-plot');
  const fl = gd._fullLayout, xa = fl['xaxis'], ya = fl[row === 2 ? 'yaxis2' : 'yaxis'], r = gd.getBoundingClientRect();
  const py = y === null ? ya._length * 0.9 : ya.c2p(ya.d2c(y));
  return [r.left + xa._offset + xa.c2p(xa.d2c(x)), r.top + ya._offset + py];
}"""


def _chart_key(page, prefix: str) -> str:
    """The current key of a picking chart (it carries a counter that changes after each pick)."""
    loc = page.locator(f'[class*="st-key-{prefix}_"] .js-plotly-plot').first
    loc.wait_for(timeout=60_000)
    cls = loc.locator("xpath=ancestor::*[contains(@class, 'st-key-')][1]").get_attribute("class")
    return re.search(rf"st-key-({prefix}_\d+)", cls).group(1)


def _click(page, prefix: str, x: str, y, shift: bool = False, row: int = 1) -> None:
    key = _chart_key(page, prefix)
    page.locator(f".st-key-{key}").scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    px, py = page.evaluate(_CENTRE, [key, x, y, row])
    if shift:
        page.keyboard.down("Shift")
    page.mouse.click(px, py)
    if shift:
        page.keyboard.up("Shift")
    page.wait_for_timeout(1500)


def _open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()
    page.wait_for_timeout(1500)


def _expression(page) -> str:
    from urllib.parse import parse_qs, urlparse

    return parse_qs(urlparse(page.url).query).get("mask_expr", [""])[0]


def _wait_kept(page, n: int) -> None:
    text = f"{n:,}"
    page.wait_for_function(
        "t => [...document.querySelectorAll('[data-testid=stMetric]')]"
        ".some(m => m.innerText.includes('Input dims kept')"
        " && m.querySelector('[data-testid=stMetricValue]').innerText.trim() === t)",
        arg=text,
        timeout=30_000,
    )


def _reference_sets():
    ref = RefModel.from_pretrained(str(SAMPLE))
    sizes = {n: int(np.prod(s["shape"])) for n, s in ref.param_map.items()}
    offsets = dict(zip(sizes, np.cumsum([0] + list(sizes.values()))))
    tops = {}
    for p in PARTS:
        pruned = RefModel.from_pretrained(str(SAMPLE)).prune(topk=0.05, part=p)
        tops[p] = set(pruned._get_base_global_index_map().tolist())
    return sizes, offsets, tops


def test_mask_by_clicking_heatmap_and_upset_then_export(server, browser, tmp_path):  # noqa: F811
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = ctx.new_page()
    page.goto(f"{server}/?topk=1.0&view=Where+in+the+model")  # topk 1.0: what the mask keeps is what is kept
    page.get_by_text("Preview", exact=True).wait_for(timeout=90_000)
    sizes, offsets, tops = _reference_sets()

    # Where in the model: layer 1 x intermediate, shift-click layer 1 x output, include
    _click(page, "where_heatmap", "intermediate", "layer 1")
    _click(page, "where_heatmap", "output", "layer 1", shift=True)
    page.get_by_text("2 cell(s)").wait_for(timeout=30_000)
    page.get_by_role("button", name="Include (|)").first.click()
    mlp = [n for n in sizes if re.fullmatch(r"bert\.encoder\.layer\.1\.(intermediate|output)\.dense\.(weight|bias)", n)]
    assert len(mlp) == 4
    page.get_by_text(f"keeps {sum(sizes[n] for n in mlp):,} of 89,216 input dims").first.wait_for(timeout=30_000)
    expr = _expression(page)
    assert expr.startswith('name("^bert\\.encoder\\.layer\\.1\\.(?:') and "intermediate" in expr and "output" in expr
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "mask-01-heatmap-include.png"), full_page=True)

    # Compare parts: the bar of dims in the encoder's and the decoder's top 5 % only; intersect
    _open_tab(page, "Compare parts")
    page.get_by_role("textbox", name="topk", exact=True).fill("0.05")
    page.get_by_role("textbox", name="topk", exact=True).press("Enter")
    page.wait_for_timeout(2000)
    _click(page, "parts_upset_fig", "encoder-weight & decoder-weight", None)
    page.get_by_text("pattern 'encoder-weight & decoder-weight'").wait_for(timeout=30_000)
    page.get_by_role("button", name="Intersect (&)").first.click()
    page.wait_for_function(
        "() => new URL(location.href).searchParams.get('mask_expr')?.includes('top(decoder-sum')",
        timeout=30_000,
    )
    expr = _expression(page)
    assert expr.endswith(
        "& top(encoder-weight, 0.05) & top(decoder-weight, 0.05) & ~top(decoder-bias, 0.05) & ~top(decoder-sum, 0.05)"
    )
    in_mlp = {i for n in mlp for i in range(offsets[n], offsets[n] + sizes[n])}
    exact = (tops["encoder-weight"] & tops["decoder-weight"]) - tops["decoder-bias"] - tops["decoder-sum"]
    shared = in_mlp & exact
    assert shared
    page.get_by_text(f"keeps {len(shared):,} of").first.wait_for(timeout=30_000)  # the mask panel's label
    # 0.05 of what the mask leaves: ceil(0.05 * |shared|)
    _wait_kept(page, -(-len(shared) * 5 // 100))
    page.screenshot(path=str(ARTIFACTS / "mask-02-upset-intersect.png"), full_page=True)

    # export: pruning.json records the expression; the reproduce command uses --mask-expr
    out = tmp_path / "clicked"
    field = page.get_by_role("textbox", name="Export directory", exact=True)
    field.fill(str(out))
    field.press("Enter")
    page.wait_for_timeout(1000)
    page.get_by_role("button", name="Export pruned model").click()
    page.get_by_text("reloaded and verified").wait_for(timeout=60_000)
    record = json.loads((out / "pruning.json").read_text())
    assert record["mask_expr"] == expr and record["kept_dims"] == -(-len(shared) * 5 // 100)
    page.get_by_text("Reproduce this export").click()
    command = page.locator("code", has_text="gradiend-core prune").first.inner_text()
    assert "--mask-expr" in command and "top(decoder-sum, 0.05)" in command
    page.screenshot(path=str(ARTIFACTS / "mask-03-exported.png"), full_page=True)
    ctx.close()


def test_bad_mask_expr_in_url_is_pointed_and_page_stays_usable(server, browser):  # noqa: F811
    page = browser.new_page(viewport={"width": 1024, "height": 900})
    page.goto(f"{server}/?topk=100&mask_expr=top(decoder-weight,%205%25)%20%26%26%20name('x')")
    page.get_by_text("Preview", exact=True).wait_for(timeout=90_000)
    page.get_by_text("URL parameter mask_expr").wait_for(timeout=30_000)
    alert = page.locator('[data-testid="stAlert"]', has_text="URL parameter mask_expr").first
    message = alert.locator("code").first.text_content()
    assert "column 26" in message
    shown, caret = [line for line in message.splitlines() if line.startswith("    ")][:2]
    assert shown[caret.index("^")] == "&" and caret.index("^") - 4 == 25  # under the second '&', column 26
    _wait_kept(page, 100)
    page.screenshot(path=str(ARTIFACTS / "mask-04-bad-url.png"), full_page=True)
    page.close()
