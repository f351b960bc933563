"""The dashboard in a real browser: Debian's Chromium driven by Playwright against `streamlit run`.

Screenshots land in ``test-artifacts/`` (kept after the run, for looking at).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SAMPLE = REPO / "sample_models" / "number-unpruned"

pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    assert Path(CHROMIUM).exists(), "browser tests need Debian's chromium: apt-get install chromium"
    port = _free_port()
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(REPO / "dashboard" / "app.py"),
        "--server.port", str(port), "--server.address", "127.0.0.1", "--server.headless", "true",
        "--browser.gatherUsageStats", "false", "--", str(SAMPLE),
    ]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{url}/_stcore/health", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError(f"streamlit did not start: {proc.stdout.read().decode()[-2000:]}")
    yield url
    proc.terminate()
    proc.wait(timeout=20)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield b
        b.close()


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
        "() => [...document.querySelectorAll('[data-testid=stMetric]')].some(m => m.innerText.includes('Input dims kept') && m.innerText.includes('100'))",
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
    assert "encoder-weight" in part_box.inner_text() + (part_box.locator("input").first.input_value() if part_box.locator("input").count() else "")
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
    assert "own-unpruned" in side.locator('[data-testid="stSelectbox"]', has_text="Sample").inner_text() + side.locator(
        '[data-testid="stSelectbox"]', has_text="Sample").locator("input").first.input_value()
    assert _metric(page, "Input dims kept") == "1,000"
    _shot(page, "05-source-switched-back")
