"""Exports, downloads and session files in a real browser: Debian's Chromium driven by Playwright
against ``streamlit run``, started in a scratch directory (exports land there) with its own session
root, a 1 s sweep and a 2 s ``server.disconnectedSessionTTL``.

Screenshots land in ``test-artifacts/`` (kept after the run, for looking at).
"""

from __future__ import annotations

import os
import shutil
import time
import zipfile
from pathlib import Path

import pytest
from browser_support import REPO, chromium, dashboard_server

ARTIFACTS = REPO / "test-artifacts"
SAMPLES = REPO / "sample_models"

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("server-cwd")
    shutil.copytree(REPO / ".streamlit", cwd / ".streamlit")
    root = tmp_path_factory.mktemp("session-root")
    env = dict(
        os.environ, GRADIEND_DASHBOARD_TMPDIR=str(root), GRADIEND_DASHBOARD_SWEEP_SECONDS="1", PYTHONPATH=str(REPO)
    )
    options = ["--server.disconnectedSessionTTL", "2"]
    with dashboard_server(SAMPLES / "own-pre-post-pruned", cwd=cwd, env=env, options=options) as url:
        yield url, cwd, root


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


def _page(browser, url):
    ctx = browser.new_context(viewport={"width": 1280, "height": 1000}, accept_downloads=True)
    page = ctx.new_page()
    page.goto(url)
    page.get_by_text("Preview", exact=True).wait_for(timeout=90_000)
    return page


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _fill(page, label: str, value: str) -> None:
    box = page.get_by_role("textbox", name=label, exact=True)
    box.fill(value)
    box.press("Enter")


def _settle(page) -> None:
    """Wait for the script run the last input started to finish."""
    page.wait_for_timeout(400)
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="hidden", timeout=60_000)


def _metric(page, label: str) -> str:
    box = page.locator('[data-testid="stMetric"]', has_text=label).first
    return box.locator('[data-testid="stMetricValue"]').inner_text().strip()


def _export(page, out: Path, replace: bool = False) -> None:
    _fill(page, "Export directory", str(out))
    _settle(page)
    if replace:
        page.get_by_text("Replace a non-empty directory").click()
        _settle(page)
    page.get_by_role("button", name="Export pruned model").click()
    _settle(page)


def _download(page, label: str, into: Path) -> Path:
    with page.expect_download(timeout=60_000) as dl:
        page.get_by_role("button", name=label).click()
    into.mkdir(parents=True, exist_ok=True)
    dl.value.save_as(into / "download.zip")
    with zipfile.ZipFile(into / "download.zip") as zf:
        zf.extractall(into)
    return next(p for p in into.iterdir() if p.is_dir())


def test_download_is_this_sessions_export_after_another_session_replaced_it(server, browser, tmp_path):
    from gradiend.model.param_mapped import ParamMappedGradiendModel as RefModel

    url, _, _ = server
    shared = tmp_path / "shared"
    a, b = _page(browser, f"{url}/?topk=100"), _page(browser, f"{url}/?topk=300")
    _export(a, shared)
    a.get_by_text("Exported 100 input dims").wait_for(timeout=60_000)
    _export(b, shared, replace=True)
    b.get_by_text("Exported 300 input dims").wait_for(timeout=60_000)
    a.get_by_role("tab", name="Distributions").click()  # any rerun of A's page
    a.get_by_text("but the directory has changed since").wait_for(timeout=60_000)
    assert a.get_by_text("reloaded and verified").count() == 0  # no green banner for a directory that changed
    _settle(a)
    _shot(a, "safety-01-directory-replaced-by-another-session")
    got = _download(a, "Download this session's export (.zip)", tmp_path / "a-download")
    assert RefModel.from_pretrained(str(got)).input_dim == 100
    assert RefModel.from_pretrained(str(shared)).input_dim == 300
    a.context.close()
    b.context.close()


def test_export_banner_becomes_an_earlier_export_when_the_selection_changes(server, browser, tmp_path):
    url, _, _ = server
    page = _page(browser, f"{url}/?topk=100")
    _export(page, tmp_path / "first")
    page.get_by_text("Exported 100 input dims").wait_for(timeout=60_000)
    _settle(page)
    _shot(page, "safety-02-exported")
    _fill(page, "topk", "25")
    page.get_by_text("Earlier export in this session, not the current selection").wait_for(timeout=60_000)
    assert _metric(page, "Input dims kept") == "25"
    assert page.get_by_role("button", name="Download the earlier export (.zip)").is_visible()
    assert page.get_by_text("Exported 100 input dims").count() == 0
    _settle(page)
    _shot(page, "safety-03-earlier-export-after-topk-change")
    page.context.close()


def test_auto_named_export_directory_follows_the_sample(server, browser):
    from playwright.sync_api import expect

    url, cwd, _ = server
    page = _page(browser, url)
    side = page.locator('[data-testid="stSidebar"]')
    field = page.get_by_role("textbox", name="Export directory", exact=True)
    for sample in ("number-unpruned", "own-unpruned"):
        side.locator('[data-testid="stSelectbox"]', has_text="Sample").click()
        page.get_by_role("option", name=sample, exact=True).click()
        # the page reruns: the name follows the sample (waits for the rerun, fails if it never does)
        expect(field).to_have_value(str(cwd / "exports" / f"{sample}-decoder-weight-top0.05"), timeout=90_000)
        _settle(page)
    page.get_by_role("button", name="Export pruned model").click()
    page.get_by_text("Exported 4,461 input dims").wait_for(timeout=90_000)
    _settle(page)
    written = cwd / "exports" / "own-unpruned-decoder-weight-top0.05"
    assert (written / "config.json").is_file()
    assert not (cwd / "exports" / "number-unpruned-decoder-weight-top0.05").exists()
    _shot(page, "safety-04-auto-named-export-after-switching-samples")
    page.context.close()


def test_closing_the_page_deletes_the_sessions_upload(server, browser, tmp_path):
    url, _, root = server
    ck = SAMPLES / "own-pre-post-pruned"
    archive = tmp_path / "upload.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in ck.iterdir():
            zf.write(f, f"ck/{f.name}")
    before = set(root.glob("server-*/sessions/*"))
    page = _page(browser, url)
    page.get_by_test_id("stRadioGroup").get_by_text("Upload .zip").click()
    page.get_by_text("Zipped checkpoint directory").wait_for(timeout=30_000)
    zone = page.get_by_role("region", name="Zipped checkpoint directory")
    zone.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(str(archive))
    page.get_by_text("Preview", exact=True).wait_for(timeout=60_000)
    _settle(page)
    uploads = [d for d in root.glob("server-*/uploads/*") if (d / "ck" / "config.json").is_file()]
    mine = set(root.glob("server-*/sessions/*")) - before  # this page's session folder
    assert len(uploads) == 1 and len(mine) == 1
    assert sorted(p.name for p in (uploads[0] / "ck").iterdir()) == sorted(p.name for p in ck.iterdir())
    _shot(page, "safety-05-uploaded")
    page.context.close()
    deadline = time.time() + 60
    while time.time() < deadline and (uploads[0].exists() or any(d.exists() for d in mine)):
        time.sleep(0.5)
    assert not uploads[0].exists() and not any(d.exists() for d in mine)


def test_url_threshold_nan_is_named_and_the_page_works(server, browser):
    url, _, _ = server
    page = _page(browser, f"{url}/?threshold=nan&topk=50")
    page.get_by_text("URL parameter ?threshold=nan is not a usable threshold").wait_for(timeout=30_000)
    assert _metric(page, "Input dims kept") == "50"
    box = page.get_by_role("spinbutton", name="Threshold (optional)")
    assert box.input_value() == ""
    box.fill("0.05")
    box.press("Enter")
    _settle(page)
    assert page.get_by_text("URL parameter ?threshold=nan").count() == 0
    assert "threshold=0.05" in page.url
    _shot(page, "safety-06-url-threshold-nan-then-set")
    page.context.close()
