"""The page in a real browser: the server runs as ``python -m serve`` on a free local port, Debian's Chromium (driven
by Playwright, which never downloads a browser here) uploads a clip, reads its caption and nearest sounds, then
searches the library by text. A screenshot is kept in ``$AACTK_TEST_ARTIFACTS`` (default ``test-artifacts/``)."""
from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from tests.serve.conftest import REPO, clip_of, running_server

CHROMIUM = Path(os.environ.get("AACTK_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
FAKE_MICROPHONE = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]  # a beeping test signal
ARTIFACTS = Path(os.environ.get("AACTK_TEST_ARTIFACTS") or REPO / "test-artifacts")


@pytest.fixture()
def server(bundle_file, index_file, tmp_path):
    """``python -m serve`` on a free port, ready (its /health answers); yields (base URL, log file)."""
    log = tmp_path / "serve.log"
    with running_server(log, "--bundle", str(bundle_file), "--index", str(index_file)) as (base, _):
        yield base, log


@pytest.fixture()
def chromium() -> Path:
    """Debian's Chromium; its absence fails the test (never a skip), saying how to install it."""
    if not CHROMIUM.is_file():
        pytest.fail(f"Chromium is not installed at {CHROMIUM}: install Debian's with "
                    "`apt-get install -y chromium chromium-driver` (or set AACTK_CHROMIUM to its path)")
    return CHROMIUM


@pytest.mark.slow
def test_upload_caption_and_search_in_chromium(chromium, server, library, tmp_path):
    from playwright.sync_api import sync_playwright

    base, log = server
    clip = clip_of(library, "high")
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=str(chromium),
                                                       args=CHROMIUM_ARGS + FAKE_MICROPHONE,
                                                       headless=True, permissions=["microphone"])
        try:
            page = browser.new_page()
            page.goto(base + "/")
            page.wait_for_selector("body[data-ready='1']")
            assert "18 sounds in the library" in page.text_content("#status")

            # a clip: its caption and nearest sounds
            page.set_input_files("#clip-file", str(clip))
            page.click("#clip-go")
            page.wait_for_selector("#similar li", timeout=60_000)
            caption = page.text_content("#caption").strip()
            assert caption and caption != "Listening…" and page.is_hidden("#clip-error")
            nearest = page.locator("#similar li .name").all_text_contents()
            assert nearest[0] == clip.relative_to(library).as_posix()  # the clip itself is in the library
            assert page.is_visible("#clip-spectrogram")  # the clip's picture beside its caption

            # a phrase: ranked results with players
            page.fill("#query", "a high pitched beep sounds")
            page.click("#search-go")
            page.wait_for_selector("#results li", timeout=60_000)
            scores = [float(s) for s in page.locator("#results li .score").all_text_contents()]
            assert len(scores) == 10 and scores == sorted(scores, reverse=True)
            assert page.locator("#results li audio").count() == 10
            # what was found, without playing it: each sound's caption, length and spectrogram
            found = page.locator("#results li .found-caption").all_text_contents()
            assert len(found) == 10 and all(c.strip() and c != "(no caption)" for c in found), found
            assert all(d.endswith(" s") for d in page.locator("#results li .duration").all_text_contents())
            page.wait_for_function("[...document.querySelectorAll('#results img.spectrogram')]"
                                   ".every((i) => i.complete && i.naturalWidth > 0)", timeout=30_000)
            first = page.locator("#results li audio").first.get_attribute("src")
            assert httpx.get(base + first).status_code == 200

            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "serve_page.png"), full_page=True)

            # a recording (Chromium's fake microphone), encoded as WAV in the page and captioned
            page.click("#record")
            page.wait_for_selector("#record.recording")
            page.wait_for_timeout(1500)
            page.click("#record")
            page.wait_for_selector("#clip-player:not([hidden])")
            page.click("#clip-go")
            page.wait_for_function("document.getElementById('clip-info').textContent.includes('WAV')", timeout=60_000)
            info = page.text_content("#clip-info")
            seconds = float(info.split(",")[1].split()[0])
            assert 0.5 < seconds < 5 and "1 channel" in info and page.text_content("#caption").strip()
            page.wait_for_selector("#similar li")

            # a clear message for a bad file, and the page still works after it
            bad = tmp_path / "notes.wav"
            bad.write_text("not a recording\n")
            page.set_input_files("#clip-file", str(bad))
            page.click("#clip-go")
            page.wait_for_selector("#clip-error:not([hidden])")
            assert "not a readable audio file" in page.text_content("#clip-error")
        finally:
            browser.close()
    lines = log.read_text()
    assert lines.count("POST /api/caption 200") == 2  # the uploaded clip and the recording
    assert "POST /api/search 200" in lines and "POST /api/caption 415" in lines
