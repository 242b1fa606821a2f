"""Debian's headless Chromium through playwright, shared by the browser and live-lab tests.

Playwright's own browser download does not work on this project's machines, so the tests
drive the ``chromium`` package (``QREF_CHROMIUM`` overrides its path) with the flags below.
"""

import contextlib
import os
from pathlib import Path
from urllib.parse import urlsplit

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

LOCAL_HOSTS = {"127.0.0.1", "localhost"}


def is_local(url):
    """A URL the tests may load: this machine, or an inline data/blob/about URL."""
    parts = urlsplit(url)
    return parts.scheme in ("data", "blob", "about", "") or parts.hostname in LOCAL_HOSTS


def refuse_other_hosts(context):
    """Abort every request of ``context`` to another host at once; return the list of their URLs.

    The sandbox has no internet (and the pages need none): requests to other hosts (thebe,
    Binder, launch buttons, extension registries) are refused instead of timing out, and
    recorded in the returned list as they happen.
    """
    refused = []

    def route(r):
        if is_local(r.request.url):
            r.continue_()
        else:
            refused.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    return refused


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
