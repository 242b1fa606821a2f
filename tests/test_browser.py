"""Drive the built HTML book in headless Chromium, as a reader would.

For every page listed in the book's ``_toc.yml`` this test opens the page served from
``_build/html`` (or ``$QREF_BOOK_HTML``) on a local port and checks that

* no script of ours (anything served from localhost) logs a console error or throws;
* every ``<img>`` has loaded (``complete`` and ``naturalWidth > 0``);
* every static interactive figure (``.qref-widget``, made by :mod:`qref.widgets`) has run
  its inline script, and that moving each control with the keyboard or the mouse (arrow
  keys on a focused slider, choosing another ``<select>`` option, clicking a check box)
  shows the frame the widget's own map says, and changes the picture when that map says
  it should.

Screenshots go to ``_build/screenshots/``: ``<page>-w<i>-<name>-before.png`` and
``-after.png`` per widget (plus ``-dark.png`` in the theme's dark mode), and
``<page>.png`` for the whole page. Look at them.

Needs ``/usr/bin/chromium`` (Debian's package) and the ``playwright`` Python package;
Playwright's own browser download is not used. Without Chromium or the built book the
test is skipped with a loud message, except under CI (``CI=true``), where it fails: CI
must build the book first (``make book``).

Run: ``.venv/bin/pytest -m browser tests/test_browser.py``.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import sys
import threading
from pathlib import Path

import pytest

from _chromium import chromium, is_local, refuse_other_hosts

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
HTML_DIR = Path(os.environ.get("QREF_BOOK_HTML", REPO / "_build" / "html")).resolve()
IN_CI = os.environ.get("CI") == "true"
SCREENSHOTS = HTML_DIR.parent / "screenshots"


def _skip_or_fail(reason):
    """Fail under CI (the browser test must run there); elsewhere skip, loudly."""
    if IN_CI:
        pytest.fail(reason)
    print(f"\n*** BROWSER TEST SKIPPED: {reason} ***\n", file=sys.stderr)
    pytest.skip(reason)


def _toc_path():
    """The ``_toc.yml`` of the book whose HTML is tested (``<book>/_build/html``)."""
    if os.environ.get("QREF_BOOK_TOC"):
        return Path(os.environ["QREF_BOOK_TOC"])
    beside = HTML_DIR.parent.parent / "_toc.yml"
    return beside if beside.exists() else REPO / "_toc.yml"


def _toc_files(node):
    """All ``file:`` entries of a sphinx-external-toc tree, in reading order."""
    if isinstance(node, dict):
        out = [node["file"]] if isinstance(node.get("file"), str) else []
        out += [node["root"]] if isinstance(node.get("root"), str) else []
        for key in ("parts", "chapters", "sections"):
            for child in node.get(key) or ():
                out += _toc_files(child)
        return out
    if isinstance(node, list):
        return [f for child in node for f in _toc_files(child)]
    return []


def _pages():
    try:
        import yaml
    except ImportError:  # pragma: no cover - PyYAML comes with jupyter-book
        return []
    toc = _toc_path()
    if not toc.exists():
        return []
    files = _toc_files(yaml.safe_load(toc.read_text(encoding="utf-8")))
    return list(dict.fromkeys(re.sub(r"\.(md|ipynb|rst)$", "", f) for f in files))


PAGES = _pages()


# ------------------------------------------------------------------------------ fixtures


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # keep pytest's output readable
        pass


@pytest.fixture(scope="module")
def server():
    if not HTML_DIR.is_dir():
        _skip_or_fail(f"no built book at {HTML_DIR}: run `make book` first (or set QREF_BOOK_HTML)")
    handler = functools.partial(_QuietHandler, directory=str(HTML_DIR))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def browser():
    with chromium(_skip_or_fail) as b:
        yield b


# --------------------------------------------------------------------------------- helpers

_WIDGET_STATE = """root => {
  const d = JSON.parse(root.querySelector("script.qref-widget-data").textContent);
  const ins = [...root.querySelectorAll("[data-qref-control]")];
  const key = ins.map(el => el.type === "checkbox" ? (el.checked ? 1 : 0) : parseInt(el.value, 10)).join(",");
  const view = root.querySelector(".qref-widget-view");
  return {
    ready: root.getAttribute("data-qref-ready"),
    kind: d.kind, key: key, expected: d.map[key],
    frame: parseInt(root.getAttribute("data-qref-frame"), 10),
    shown: d.kind === "png" ? view.getAttribute("src") : view.innerHTML,
    expectedShown: d.kind === "png" ? d.frames[d.map[key]] : null,
    nframes: d.frames.length, ncombos: Object.keys(d.map).length,
    imgOk: d.kind !== "png" || (view.complete && view.naturalWidth > 0),
  };
}"""

_WAIT_IMAGES = """async () => {
  const imgs = [...document.images];
  imgs.forEach(img => { img.loading = "eager"; });
  const settled = Promise.all(imgs.map(img => img.complete ? null :
    new Promise(res => { img.addEventListener("load", res); img.addEventListener("error", res); })));
  await Promise.race([settled, new Promise(res => setTimeout(res, 15000))]);  // never hang
  return imgs.map(img => ({src: (img.currentSrc || img.src).slice(0, 120), complete: img.complete,
                           width: img.naturalWidth}));
}"""


# Marks the control that opens the outermost closed container of a widget (a <details>, or a
# sphinx-togglebutton dropdown such as a sphinx-exercise solution) so the test can click it.
_MARK_OPENER = """root => {
  document.querySelectorAll("[data-qref-open]").forEach(e => e.removeAttribute("data-qref-open"));
  const chain = [];
  for (let el = root.parentElement; el; el = el.parentElement) chain.unshift(el);
  for (const el of chain) {
    let opener = null;
    if (el.tagName === "DETAILS" && !el.open) opener = el.querySelector(":scope > summary");
    else if (el.classList.contains("toggle-hidden")) opener = el.querySelector(".toggle-button");
    if (opener) { opener.setAttribute("data-qref-open", "1"); return true; }
  }
  return false;
}"""


def _reveal(page, root, tag):
    """Open the dropdowns a widget sits in (e.g. a solution), as a reader would."""
    for _ in range(5):
        if root.is_visible() and root.bounding_box()["height"] > 0:
            return
        if not root.evaluate(_MARK_OPENER):
            break
        page.locator("[data-qref-open]").first.click()
        page.wait_for_timeout(400)  # let the toggle animation finish
    assert root.is_visible(), f"{tag}: the widget is hidden and no dropdown around it could be opened"


def _change(page, control):
    """Move one control the way a reader would; return a description of what was done."""
    kind = control.evaluate("el => el.tagName === 'SELECT' ? 'select' : el.type")
    if kind == "range":
        value, top = control.evaluate("el => [parseInt(el.value, 10), parseInt(el.max, 10)]")
        key = "ArrowRight" if value < top else "ArrowLeft"
        control.focus()
        page.keyboard.press(key)
        new = int(control.evaluate("el => el.value"))
        assert new != value, f"{key} on the slider did not move it (value stays {value})"
        label = control.evaluate("el => el.parentElement.querySelector('output').textContent")
        return f"slider {key}: {value} -> {new} (label {label!r})"
    if kind == "select":
        index, n = control.evaluate("el => [el.selectedIndex, el.options.length]")
        if n < 2:
            return "select with one option (nothing to change)"
        control.select_option(index=(index + 1) % n)
        return f"select: option {index} -> {(index + 1) % n}"
    if kind == "checkbox":
        before = control.is_checked()
        control.click()
        assert control.is_checked() != before, "clicking the check box did not toggle it"
        return f"checkbox: {before} -> {not before}"
    raise AssertionError(f"unknown control type {kind!r}")


# ----------------------------------------------------------------------------------- test


_WAIT_MATH = """async () => {
  const sources = document.querySelectorAll('.math, span.math, div.math').length;
  if (!sources) return {typeset: true, sources: 0, errors: []};
  for (let t = 0; t < 200; t++) {  // up to 20 s
    if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; break; }
    await new Promise(r => setTimeout(r, 100));
  }
  const n = document.querySelectorAll('mjx-container').length;
  // a TeX error is an <mjx-merror>; an undefined macro is typeset as red text (MathJax's
  // "noundefined" package): report the TeX source of either
  const bad = 'mjx-merror, mjx-mtext[style*="color: red"]';
  const errors = Array.from(MathJax.startup.document.math)
    .filter(m => m.typesetRoot && m.typesetRoot.querySelector(bad))
    .slice(0, 5).map(m => String(m.math).slice(0, 120));
  return {typeset: n > 0, sources, errors};
}"""


@pytest.mark.parametrize("page_name", PAGES or ["<no pages>"])
def test_page(page_name, server, browser):
    if not PAGES:
        _skip_or_fail(f"no pages found in {_toc_path()}")
    html_file = HTML_DIR / f"{page_name}.html"
    if not html_file.exists():
        pytest.fail(f"{page_name} is in {_toc_path()} but {html_file} was not built")
    slug = page_name.replace("/", "-")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    errors = []
    # requests to other hosts are refused at once and recorded; console errors they cause are
    # not failures, errors from our own pages and scripts are
    external = refuse_other_hosts(context)
    page = context.new_page()

    def on_console(msg):
        if msg.type != "error":
            return
        where = (msg.location or {}).get("url", "")
        if where and not is_local(where):
            return  # a failed request to (or a script from) an external host
        errors.append(f"console error at {where or '?'}: {msg.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.append(f"uncaught exception: {exc}"))
    page.on(
        "requestfailed",
        lambda req: None if not is_local(req.url) else errors.append(f"failed request {req.url}: {req.failure}"),
    )
    try:
        response = page.goto(f"{server}/{page_name}.html", wait_until="load")
        assert response is not None and response.ok, f"{page_name}.html: HTTP {response and response.status}"

        # Math: MathJax is served from the book itself (sphinx-mathjax-offline), so every
        # formula must typeset here too, and none may show a TeX error or an undefined macro.
        math = page.evaluate(_WAIT_MATH)
        assert math["typeset"], f"{page_name}: MathJax did not typeset the page's {math['sources']} formula(s)"
        assert not math["errors"], f"TeX errors on {page_name}: {math['errors']}"

        images = page.evaluate(_WAIT_IMAGES)
        broken = [im for im in images if is_local(im["src"]) and not (im["complete"] and im["width"] > 0)]
        assert not broken, f"images that did not load on {page_name}: {broken}"
        page.screenshot(path=str(SCREENSHOTS / f"{slug}.png"), full_page=True)

        widgets = page.locator(".qref-widget")
        for i in range(widgets.count()):
            root = widgets.nth(i)
            name = root.get_attribute("data-qref-name") or "widget"
            tag = f"{slug}-w{i}-{re.sub(r'[^A-Za-z0-9_]+', '-', name)}"
            _reveal(page, root, tag)
            root.scroll_into_view_if_needed()
            state = root.evaluate(_WIDGET_STATE)
            assert state["ready"] == "1", f"{tag}: the widget's inline script did not run"
            assert state["imgOk"], f"{tag}: the frame image did not load"
            assert state["frame"] == state["expected"], f"{tag}: initial frame does not match the map: {state}"
            first = state
            before_png = root.screenshot(path=str(SCREENSHOTS / f"{tag}-before.png"))

            controls = root.locator("[data-qref-control]")
            assert controls.count() > 0, f"{tag}: no controls"
            changed_any = False
            for j in range(controls.count()):
                prev = root.evaluate(_WIDGET_STATE)
                done = _change(page, controls.nth(j))
                now = root.evaluate(_WIDGET_STATE)
                assert now["key"] != prev["key"], f"{tag}: {done} did not change the widget state"
                assert now["frame"] == now["expected"], f"{tag}: after {done} shows frame {now['frame']}, map says {now['expected']}"
                if now["kind"] == "png":
                    assert now["shown"] == now["expectedShown"], f"{tag}: after {done} the <img> shows another frame"
                    assert now["imgOk"], f"{tag}: after {done} the image did not load"
                if now["expected"] != prev["expected"]:
                    assert now["shown"] != prev["shown"], f"{tag}: after {done} the shown frame did not change"
                    changed_any = True
            assert changed_any, f"{tag}: no control changed the picture; is the figure function using its arguments?"
            after_png = root.screenshot(path=str(SCREENSHOTS / f"{tag}-after.png"))
            final = root.evaluate(_WIDGET_STATE)
            if final["expected"] != first["expected"]:
                assert after_png != before_png, f"{tag}: the screenshots before and after are identical"
            # Dark mode of the pydata/sphinx-book theme: the frame keeps its opaque white background.
            page.evaluate("() => document.documentElement.setAttribute('data-theme', 'dark')")
            root.screenshot(path=str(SCREENSHOTS / f"{tag}-dark.png"))
            page.evaluate("() => document.documentElement.setAttribute('data-theme', 'light')")
    except AssertionError as exc:
        if errors:  # a broken widget is often explained by a script error: show both
            raise AssertionError(f"{exc}\nJavaScript errors on {page_name}:\n" + "\n".join(errors)) from None
        raise
    finally:
        context.close()
    if external:
        print(f"{page_name}: {len(external)} request(s) to external hosts blocked (no internet in the sandbox)")
    assert not errors, f"JavaScript errors on {page_name}:\n" + "\n".join(errors)
