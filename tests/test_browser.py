"""The dashboard in a real browser: Debian's Chromium driven by Playwright against `streamlit run`.

Screenshots land in ``test-artifacts/`` (kept after the run, for looking at).
"""

from __future__ import annotations

import zipfile

import pytest
from browser_support import REPO, chromium, dashboard_server

ARTIFACTS = REPO / "test-artifacts"
SAMPLE = REPO / "sample_models" / "number-unpruned"

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server():
    with dashboard_server(SAMPLE) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


def _page(browser, url):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = ctx.new_page()
    page.goto(url)
    page.get_by_text("Preview", exact=True).wait_for(timeout=90_000)
    return page


def _metric(page, label: str) -> str:
    box = page.locator('[data-testid="stMetric"]', has_text=label).first
    return box.locator('[data-testid="stMetricValue"]').inner_text().strip()


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _set_topk(page, value: str) -> None:
    box = page.get_by_role("textbox", name="topk", exact=True)
    box.fill(value)
    box.press("Enter")


def test_open_change_topk_export_download(server, browser, tmp_path):
    page = _page(browser, server)
    _shot(page, "01-opened")
    before = _metric(page, "Input dims kept")
    _set_topk(page, "100")
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=stMetric]')]"
        ".some(m => m.innerText.includes('Input dims kept') && m.innerText.includes('100'))",
        timeout=30_000,
    )
    assert _metric(page, "Input dims kept") == "100" != before
    assert "topk=100" in page.url  # the selection is in the shareable URL
    _shot(page, "02-topk-100")

    out = tmp_path / "exported"
    field = page.get_by_role("textbox", name="Export directory", exact=True)
    field.fill(str(out))
    field.press("Enter")
    page.get_by_role("button", name="Export pruned model").click()
    page.get_by_text("reloaded and verified").wait_for(timeout=60_000)
    with page.expect_download(timeout=30_000) as dl:
        page.get_by_role("button", name="Download .zip").click()
    zpath = tmp_path / "download.zip"
    dl.value.save_as(zpath)
    names = zipfile.ZipFile(zpath).namelist()
    assert any(n.endswith("model.safetensors") for n in names) and any(n.endswith("config.json") for n in names)
    _shot(page, "03-exported")

    from gradiend.model.param_mapped import ParamMappedGradiendModel as RefModel

    assert RefModel.from_pretrained(str(out)).input_dim == 100


def test_copied_url_reopens_same_view(server, browser):
    page = _page(browser, f"{server}/?part=encoder-weight&topk=25")
    assert _metric(page, "Input dims kept") == "25"
    part_box = page.locator('[data-testid="stSelectbox"]', has_text="Importance part")
    assert "encoder-weight" in part_box.inner_text() + (
        part_box.locator("input").first.input_value() if part_box.locator("input").count() else ""
    )
    _shot(page, "04-from-url")


def test_switching_model_source_back_keeps_model_and_selection(server, browser):
    """Streamlit drops the state of widgets a run does not draw; the page must keep it anyway."""
    page = _page(browser, f"{server}/?topk=1000&part=decoder-bias&model={REPO / 'sample_models' / 'own-unpruned'}")
    radios = page.get_by_test_id("stRadioGroup")
    radios.get_by_text("Upload .zip").click()
    page.get_by_text("Zipped checkpoint directory").wait_for(timeout=30_000)
    radios.get_by_text("Bundled sample").click()
    page.get_by_text("Preview", exact=True).wait_for(timeout=30_000)
    page.wait_for_timeout(1500)
    assert page.get_by_role("textbox", name="topk", exact=True).input_value() == "1000"
    side = page.locator('[data-testid="stSidebar"]')
    assert (
        "own-unpruned"
        in side.locator('[data-testid="stSelectbox"]', has_text="Sample").inner_text()
        + side.locator('[data-testid="stSelectbox"]', has_text="Sample").locator("input").first.input_value()
    )
    assert _metric(page, "Input dims kept") == "1,000"
    _shot(page, "05-source-switched-back")


# ------------------------------------------------------------------ layout at 1,024 px and 1,400 px
VIEWS = (
    "Selection",
    "Distributions",
    "Compare parts",
    "Where in the model",
    "Top-k table",
    "Compare models",
    "Training",
    "Pruning stages",
)
#: Metric labels and values the page cut with an ellipsis (text wider than its box).
CUT_METRIC_TEXT = """() => [...document.querySelectorAll(
    '[data-testid=stMetricLabel], [data-testid=stMetricLabel] *,'
    + ' [data-testid=stMetricValue], [data-testid=stMetricValue] *')]
    .filter(e => (e.textContent || '').trim() && e.scrollWidth > e.clientWidth + 1)
    .map(e => e.textContent.trim())"""


def _open_at(browser, url: str, width: int):
    ctx = browser.new_context(viewport={"width": width, "height": 2400})
    page = ctx.new_page()
    page.goto(url)
    page.get_by_text("Preview", exact=True).wait_for(timeout=120_000)
    page.wait_for_function("() => !document.querySelector('[data-testid=stStatusWidget]')", timeout=120_000)
    page.wait_for_timeout(1500)
    page.wait_for_function(  # every chart drawn (Plotly loads lazily, behind skeletons)
        "() => !document.querySelector('[data-testid=stSkeleton]') && [...document.querySelectorAll("
        "'[data-testid=stPlotlyChart]')].every(c => c.querySelector('.main-svg'))",
        timeout=60_000,
    )
    return page


@pytest.mark.parametrize("width", [1024, 1400])
def test_every_view_fits_without_cut_metrics(server, browser, width):
    """Every view of the pre-pruned sample (all records present) at both widths: no exception, no
    metric label or value cut short. Screenshots: test-artifacts/view-<width>-<view>.png."""
    model = REPO / "sample_models" / "own-pre-pruned"
    for view in VIEWS:
        page = _open_at(browser, f"{server}/?model={model}&view={view.replace(' ', '+')}", width)
        assert page.locator('[data-testid="stException"]').count() == 0, view
        assert page.evaluate(CUT_METRIC_TEXT) == [], (width, view)
        _shot(page, f"view-{width}-{view.replace(' ', '-').lower()}")
        page.context.close()


def _boxes_overlap(a, b) -> bool:
    apart_x = a["x"] >= b["x"] + b["width"] or b["x"] >= a["x"] + a["width"]
    apart_y = a["y"] >= b["y"] + b["height"] or b["y"] >= a["y"] + a["height"]
    return not (apart_x or apart_y)


def _text_boxes(chart, selector: str):
    """``(text, bounding box)`` of the SVG texts of a Plotly chart matching ``selector``."""
    found = chart.locator(selector)
    out = [(found.nth(i).text_content(), found.nth(i).bounding_box()) for i in range(found.count())]
    return [(t, b) for t, b in out if t and t.strip() and b and b["width"] > 0]


def test_stage_chart_texts_do_not_overlap_at_1024(server, browser):
    model = REPO / "sample_models" / "own-pre-pruned"
    page = _open_at(browser, f"{server}/?model={model}&view=Pruning+stages", 1024)
    chart = page.locator(".js-plotly-plot", has_text="Combined reduction of both pruning stages").first
    chart.scroll_into_view_if_needed()
    axis_titles = "g[class^='g-x'][class$='title'] text, g[class^='g-y'][class$='title'] text"
    titles = _text_boxes(chart, f".annotation-text, {axis_titles}")
    texts = titles + _text_boxes(chart, ".xtick text, .ytick text, .legendtext")
    assert len(titles) >= 3, titles
    for i, (ta, a) in enumerate(texts):
        for tb, b in texts[i + 1 :]:
            assert not _boxes_overlap(a, b), (ta, tb)
    _shot(page, "stages-1024")


def test_threshold_accepts_1e_minus_5(server, browser):
    import math

    import numpy as np
    from gradiend.model.param_mapped import ParamMappedGradiendModel as RefModel

    page = _page(browser, server)
    box = page.get_by_role("spinbutton", name="Threshold (optional)")
    box.fill("1e-5")
    box.press("Enter")
    page.wait_for_function("() => location.search.includes('threshold=1e-05')", timeout=30_000)
    imp = RefModel.from_pretrained(str(SAMPLE)).get_weight_importance("decoder-weight").float().numpy()
    k = math.ceil(0.05 * int((imp >= np.float32(1e-5)).sum()))
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=stMetric]')]"
        f".some(m => m.innerText.includes('Input dims kept') && m.innerText.includes('{k:,}'))",
        timeout=30_000,
    )
    assert _metric(page, "Input dims kept") == f"{k:,}"
    _shot(page, "06-threshold-1e-5")
