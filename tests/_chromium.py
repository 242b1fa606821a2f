"""Debian's headless Chromium through playwright, shared by the browser and live-lab tests.

Playwright's own browser download does not work on this project's machines, so the tests
drive the ``chromium`` package (``QREF_CHROMIUM`` overrides its path) with the flags below.
"""

import contextlib
import os
from pathlib import Path

CHROMIUM = Path(os.environ.get("QREF_CHROMIUM", "/usr/bin/chromium"))  # Debian's package
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]


@contextlib.contextmanager
def chromium(unavailable):
    """Launch headless Chromium; ``unavailable(reason)`` (a skip or a failure) if it cannot be."""
    if not CHROMIUM.exists():
        unavailable(f"{CHROMIUM} not found: apt-get install chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("the playwright Python package is not installed (pip install 'qref[test]')")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
