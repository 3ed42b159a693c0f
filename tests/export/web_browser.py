"""Headless Chromium (Debian's /usr/bin/chromium, driven by Playwright) for the web app's tests.

`make test` installs Chromium (apt-get) and the page's npm packages (npm ci in web/) before
pytest runs. Run by hand without them, the browser tests skip, saying what is missing; under
CI (CI=true) they fail instead, so a machine that lost its browser cannot pass in silence.
"""
from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path

import pytest

from export.serve import make_server, url_of
from export.web_app import WEB_DIR, PACKAGE

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
# The flags this machine's Chromium needs as root, offline (README, "Testing").
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Chromium's built-in test camera (a moving pattern), granted without a prompt
FAKE_CAMERA_ARGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
SELFTEST_TIMEOUT_MS = 120_000


def require_browser() -> None:
    """Skip (fail under CI) unless Chromium, Playwright and web/node_modules are there."""
    missing = []
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (apt-get install chromium; `make test` does it)")
    if not (WEB_DIR / "node_modules" / PACKAGE / "package.json").exists():
        missing.append(f"{WEB_DIR}/node_modules (cd web && npm ci; `make test` does it)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing.append("the playwright Python package (requirements.txt)")
    if missing:
        message = "browser test needs " + "; ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@contextlib.contextmanager
def served(folder: Path):
    """Serve ``folder`` on 127.0.0.1 (a free port) in a thread; yields its URL."""
    server = make_server(folder, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield url_of(server)
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def chromium(extra_args: tuple[str, ...] = ()):
    """A Playwright Browser on the system Chromium (Playwright gives each launch a new empty profile
    folder, the fresh --user-data-dir this machine's Chromium wants)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS + list(extra_args))
        try:
            yield browser
        finally:
            browser.close()


def run_selftest(browser, url: str, model: str, screenshot: Path | None = None) -> tuple[dict, list[str]]:
    """Open ``url``?selftest=1&model=``model``; return (the verdict from #selftest, every URL the page
    requested outside ``url``)."""
    page = browser.new_page()
    outside = []
    page.on("request", lambda r: None if r.url.startswith(url) or r.url.startswith(("data:", "blob:"))
            else outside.append(r.url))
    try:
        page.goto(f"{url}?selftest=1&model={model}")
        # a selector, not a JS predicate: the page's Content-Security-Policy forbids eval
        page.wait_for_selector("#selftest:not(:empty)", state="attached", timeout=SELFTEST_TIMEOUT_MS)
        verdict = json.loads(page.text_content("#selftest"))
        if screenshot is not None:
            page.screenshot(path=str(screenshot), full_page=True)
    finally:
        page.close()
    return verdict, outside
