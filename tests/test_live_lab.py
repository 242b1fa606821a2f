"""The book's chapters, live in JupyterLab, as a student gets them on Binder.

``tests/test_browser.py`` checks the *static* HTML book. This test checks the other way of
reading it: it starts a real JupyterLab server (headless, on a free local port, with a random
token) in a temporary directory holding a copy of one or two chapters, configured as Binder
configures it (``postBuild``'s settings override makes JupyterLab open the MyST ``.md``
chapters as Jupytext notebooks; ``jupyterlab-myst`` renders their Markdown), then drives
headless Chromium through Playwright, like a student:

1. opens ``book/<chapter>.md`` (the URL a Binder launch button opens) and checks it opens
   as a *notebook* with the chapter's cells, not in the text editor;
2. checks that the MyST Markdown is rendered by jupyterlab-myst: admonitions (the
   "Learning goals" box), ``{exercise}`` boxes, and no MyST error node;
3. runs *Run -> Run All Cells* from the menu and waits (on JupyterLab's own DOM state: every
   code cell's prompt shows an execution count, the kernel indicator says idle) until the
   kernel has run every cell; no cell may show an error output (a traceback);
4. for every interactive figure (the ipywidgets that :func:`qref.widgets.interactive` builds
   in a live kernel): moves its slider with the keyboard, picks another option in its
   drop-down and clicks its check box (sliders first, the drop-down last), and checks that
   the picture really changes: the decoded pixels of the ``<img>`` (drawn into a canvas and
   hashed) differ before and after, within :data:`UPDATE_TIMEOUT_MS`. A move after which
   the kernel has answered (the server's ``last_activity``, then idle) but the pixels stay
   the same is allowed and listed (a method may ignore a setting), but every figure must
   change with at least one control, never show an error under it, and show its first
   picture again, pixel for pixel, when every control is put back.

Screenshots (``<chapter>-opened.png``, ``-myst-*.png``, ``-w<i>-before/after-<control>.png``,
``-end.png``, and ``-error-*.png`` when a cell fails) and the server's log go to
``_build/live_screenshots/`` (or ``$QREF_LIVE_ARTIFACTS``). Look at them.

Needs ``jupyterlab`` (plus what ``requirements.txt`` installs: jupytext, jupyterlab-myst,
ipywidgets, ipykernel), Debian's ``/usr/bin/chromium`` and the ``playwright`` package.
Without them the test is skipped with the reason, unless ``QREF_LIVE_REQUIRED=1``, which
turns the skip into a failure (for a CI job that must run it). Chapters: ``rounding`` and
``integer_inference`` (light, and between them a slider, a drop-down and a check box), or
the comma-separated list in ``$QREF_LIVE_CHAPTERS`` (``all``: every chapter, about 25 s each).

Run: ``.venv/bin/python -m pytest -m live tests/test_live_lab.py`` (40-50 s for the two
default chapters on 2 shared cores: the server starts in about 1 s, each chapter takes 16-25 s
to open, run and drive).

Versions matter: jupytext 1.19's lab extension (the "Jupytext Notebook" viewer that
``postBuild`` names) needs JupyterLab 4.6; with JupyterLab 4.4 or 4.5 it fails to load and the
chapters open as Markdown source, which this test reports. jupyterlab-myst 2.7 declares
@jupyter/ydoc 3 (``jupyter labextension list`` flags it on JupyterLab 4.6) but works there:
this test checks its rendering.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from _chromium import chromium, is_local, refuse_other_hosts

pytestmark = pytest.mark.live

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("QREF_LIVE_ARTIFACTS", REPO / "_build" / "live_screenshots"))
def _chapters():
    names = os.environ.get("QREF_LIVE_CHAPTERS", "rounding,integer_inference")
    if names.strip() == "all":  # every chapter that is a notebook with code cells
        return sorted(p.stem for p in (REPO / "book").glob("*.md")
                      if "format_name: myst" in p.read_text(encoding="utf-8")[:400]
                      and "```{code-cell}" in p.read_text(encoding="utf-8"))
    return [c.strip() for c in names.split(",") if c.strip()]


CHAPTERS = _chapters()
REQUIRED = os.environ.get("QREF_LIVE_REQUIRED") == "1"

SERVER_START_TIMEOUT_S = 90  # the server answers /api/status
OPEN_TIMEOUT_MS = 120_000  # JupyterLab loads, opens the chapter, attaches every cell, kernel idle
RUN_ALL_TIMEOUT_MS = 300_000  # every cell executed (chapters take < 30 s in the book build)
UPDATE_TIMEOUT_MS = 30_000  # one widget update (median 56-110 ms in the static build)
# What jupyterlab-myst logs as console errors while rendering one cell at a time: a {ref} to a
# label in another cell, a KaTeX error (also flagged in the rendered cell, where the test finds it).
MYST_CONSOLE = r"Cross reference target was not found|Undefined control sequence|KaTeX|Citation|at position \d+:"


def _skip(reason):
    if REQUIRED:
        pytest.fail(f"QREF_LIVE_REQUIRED=1 but {reason}")
    print(f"\n*** LIVE JUPYTERLAB TEST SKIPPED: {reason} ***\n", file=sys.stderr)
    pytest.skip(reason)


def _postbuild_overrides():
    """The JupyterLab settings overrides that ``postBuild`` writes (its JSON here-document)."""
    text = (REPO / "postBuild").read_text(encoding="utf-8")
    m = re.search(r"overrides\.json\"?\s*<<'?JSON'?\n(.*?)\nJSON\n", text, re.S)
    assert m, "postBuild no longer writes overrides.json from a JSON here-document: update this test"
    overrides = json.loads(m.group(1))
    viewers = overrides["@jupyterlab/docmanager-extension:plugin"]["defaultViewers"]
    assert viewers.get("markdown") == "Jupytext Notebook", f"postBuild's defaultViewers: {viewers}"
    return overrides


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid):
    """PIDs of the live child processes of ``pid`` (from /proc; empty where there is no /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return out


def _alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _api(base, token, path, method="GET"):
    req = urllib.request.Request(f"{base}{path}", method=method, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        body = r.read()
    return json.loads(body) if body else None


# ------------------------------------------------------------------------------ fixtures


class Lab:
    def __init__(self, base, token, root, log, proc):
        self.base, self.token, self.root, self.log, self.proc = base, token, root, log, proc

    def url(self, path):
        return f"{self.base}{path}?token={self.token}"

    def log_tail(self, n=40):
        try:
            return "\n".join(self.log.read_text(encoding="utf-8", errors="replace").splitlines()[-n:])
        except OSError:
            return "(no server log)"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server configured like Binder's, serving copies of the chapters."""
    if importlib.util.find_spec("jupyterlab") is None:
        _skip("jupyterlab is not installed (pip install 'jupyterlab>=4.6,<4.7')")
    for mod in ("jupytext", "jupyterlab_myst", "ipywidgets", "ipykernel"):
        if importlib.util.find_spec(mod) is None:
            _skip(f"{mod} is not installed (pip install -r requirements.txt)")
    tmp = tmp_path_factory.mktemp("live_lab")
    root = tmp / "repo"
    (root / "book").mkdir(parents=True)
    for chapter in CHAPTERS:
        src = REPO / "book" / f"{chapter}.md"
        if not src.exists():
            pytest.fail(f"QREF_LIVE_CHAPTERS names {chapter!r} but {src} does not exist")
        shutil.copy2(src, root / "book" / src.name)
    # postBuild writes its overrides into <sys.prefix>/share/jupyter/lab/settings; the test
    # writes the same JSON into a private app settings directory (the shared .venv stays
    # untouched). Only for the test: no "Would you like news?" toast over the figures.
    settings = tmp / "lab-settings"
    settings.mkdir()
    overrides = _postbuild_overrides()
    overrides.setdefault("@jupyterlab/apputils-extension:notification", {})["fetchNews"] = "false"
    (settings / "overrides.json").write_text(json.dumps(overrides, indent=2), encoding="utf-8")

    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "QREF_STATIC", "QREF_WIDGET"))}
    env.update(
        JUPYTER_CONFIG_DIR=str(tmp / "config"),  # no user config leaks in
        JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(tmp / "user-settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"),
        IPYTHONDIR=str(tmp / "ipython"),
        MPLBACKEND="module://matplotlib_inline.backend_inline",
        PYTHONUNBUFFERED="1",
    )
    env.pop("QREF_STATIC_WIDGETS", None)  # the kernel must build live ipywidgets
    token = secrets.token_hex(16)
    log = tmp / "server.log"
    proc = None
    base = None
    for _attempt in range(3):  # the free port can be taken between _free_port and bind
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        cmd = [
            sys.executable, "-m", "jupyterlab", "--no-browser",
            "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
            f"--LabApp.app_settings_dir={settings}",
            "--LabApp.extension_manager=readonly",  # no PyPI queries
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--ServerApp.shutdown_no_activity_timeout=1800",  # a safety net if teardown never runs
            "--MappingKernelManager.cull_idle_timeout=0",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")  # containers run as root; Binder does not
        with open(log, "ab") as fh:
            proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        up = False
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                _api(base, token, "/api/status")
                up = True
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.25)
        if up:
            break
        _stop_server(proc, base, token)
        proc = None
    lab = Lab(base, token, root, log, proc)
    if proc is None:
        pytest.fail(f"JupyterLab did not start within {SERVER_START_TIMEOUT_S} s; its log:\n{lab.log_tail()}")
    try:
        yield lab
    finally:
        leftovers = _stop_server(proc, base, token)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copy2(log, ARTIFACTS / "server.log")
        assert not leftovers, f"processes left behind after stopping JupyterLab: {leftovers}"


def _shutdown_kernels(lab):
    try:
        for s in _api(lab.base, lab.token, "/api/sessions") or []:
            _api(lab.base, lab.token, f"/api/sessions/{s['id']}", method="DELETE")
    except (urllib.error.URLError, OSError, ValueError):
        pass


def _stop_server(proc, base, token):
    """Shut every kernel down, then the server; kill what is left. Returns PIDs still alive."""
    kernel_pids = set(_children(proc.pid))
    try:
        if proc.poll() is None:
            for k in _api(base, token, "/api/kernels") or []:
                try:
                    _api(base, token, f"/api/kernels/{k['id']}", method="DELETE")
                except (urllib.error.URLError, OSError):
                    pass
    except (urllib.error.URLError, OSError, ValueError):
        pass
    kernel_pids |= set(_children(proc.pid))
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # jupyter-server shuts its kernels down on SIGTERM
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in kernel_pids):
        time.sleep(0.1)
    left = sorted(p for p in kernel_pids if _alive(p))
    for pid in left:  # processes this test started (the server's kernels), by their id
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


@pytest.fixture(scope="module")
def browser():
    with chromium(_skip) as b:
        yield b


# --------------------------------------------------------------------------------- JS probes

# Every cell attached to the DOM (JupyterLab 4 attaches a long notebook's cells lazily), the
# kernel ready and idle.
_OPENED = """n => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  // opened as Markdown text: jupytext's "Jupytext Notebook" viewer missing (postBuild's override
  // names it) or its lab extension not loaded (it needs a matching JupyterLab version)
  if (!panel && document.querySelector('#jp-main-dock-panel .jp-FileEditor:not(.lm-mod-hidden)')) return 'editor';
  if (!panel) return false;
  const ind = panel.querySelector('.jp-Notebook-ExecutionIndicator');
  return panel.querySelectorAll('.jp-Notebook .jp-Cell').length >= n
      && !!ind && ind.getAttribute('data-status') === 'idle';
}"""

# Done when every code cell shows an execution count and the kernel is idle; also stop
# waiting (and report) when an error output has appeared and the kernel is idle again.
_RUN_STATE = """() => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  const cells = [...panel.querySelectorAll('.jp-Notebook .jp-CodeCell')];
  const prompts = cells.map(c => (c.querySelector('.jp-InputPrompt') || {}).textContent || '');
  const ind = panel.querySelector('.jp-Notebook-ExecutionIndicator');
  const idle = !!ind && ind.getAttribute('data-status') === 'idle';
  const done = prompts.every(p => /^\\s*\\[\\d+\\]:\\s*$/.test(p));
  const errors = [];
  cells.forEach((c, i) => {
    c.querySelectorAll('.jp-OutputArea-output').forEach(o => {
      const mime = o.getAttribute('data-mime-type') || '';
      const text = o.innerText || '';
      if (mime === 'application/vnd.jupyter.stderr' &&
          (/Traceback \\(most recent call last\\)/.test(text) || /^\\S*(Error|Exception)\\b.*/m.test(text) ||
           /^-{20,}/m.test(text)))
        errors.push({cell: i, text: text.slice(0, 1500)});
    });
  });
  const stderr = [];
  cells.forEach((c, i) => c.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
      .forEach(o => stderr.push({cell: i, text: (o.innerText || '').slice(0, 300)})));
  return {n: cells.length, prompts, idle, done, errors, stderr,
          finished: idle && (done || errors.length > 0)};
}"""

# MyST rendering by jupyterlab-myst: its markdown cells carry a `.myst` renderer; admonitions
# are <aside class="myst-admonition ...">, exercises <aside class="myst-exercise ...">.
_MYST_STATE = """() => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  const md = [...panel.querySelectorAll('.jp-Notebook .jp-MarkdownCell')];
  const rendered = md.filter(c => c.querySelector('.jp-RenderedMarkdown, .myst, .jp-MarkdownOutput'));
  const myst = md.filter(c => c.querySelector('.myst'));
  const texts = el => [...el].map(e => (e.querySelector('[class*="-title"], [class*="header-text"]') || e).innerText.trim().slice(0, 80));
  // raw directive fences left in the rendered text mean the MyST renderer did not parse them
  const raw = [];
  rendered.forEach((c, i) => {
    const out = c.querySelector('.myst, .jp-RenderedMarkdown');
    const t = out ? out.innerText : '';
    const m = t.match(/^(```|:::)\\s*\\{[a-z:-]+\\}.*$/m);
    if (m) raw.push({cell: i, text: m[0].slice(0, 120)});
  });
  // jupyterlab-myst marks what it could not render with a warning icon in yellow (a title
  // says why: "Citation Not Found", a KaTeX error such as "Undefined control sequence: \\round
  // at position 7: ...") or as red text (a KaTeX error in display math)
  const flagged = [...panel.querySelectorAll('.myst .text-yellow-600, .myst .text-red-500, .myst [class*="myst-error"]')]
      .map(e => ({title: (e.getAttribute('title') || '').split('\\n')[0].slice(0, 160),
                  text: (e.textContent || '').trim().slice(0, 120)}));
  const citations = flagged.filter(f => f.title === 'Citation Not Found').map(f => f.text);
  const errs = flagged.filter(f => f.title !== 'Citation Not Found').map(f => f.title || f.text);
  return {markdownCells: md.length, rendered: rendered.length, myst: myst.length,
          admonitions: texts(panel.querySelectorAll('.myst aside.myst-admonition')),
          exercises: texts(panel.querySelectorAll('.myst aside.myst-exercise[id]')),
          solutions: texts(panel.querySelectorAll('.myst aside.myst-exercise:not([id])')),
          proofs: texts(panel.querySelectorAll('.myst aside.myst-proof')),
          math: panel.querySelectorAll('.myst .katex, .myst mjx-container').length,
          raw, errs, citations};
}"""

# A hash of the decoded pixels of an <img> (drawn into a canvas); null until it has loaded.
_PIXELS = """img => {
  if (!img.complete || !img.naturalWidth) return null;
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const ctx = c.getContext('2d');
  ctx.drawImage(img, 0, 0);
  const d = new Uint32Array(ctx.getImageData(0, 0, c.width, c.height).data.buffer);
  let h1 = 0x811c9dc5, h2 = 7;
  for (let i = 0; i < d.length; i++) { h1 = Math.imul(h1 ^ d[i], 16777619); h2 = (h2 * 31 + d[i]) | 0; }
  return c.width + 'x' + c.height + ':' + (h1 >>> 0).toString(16) + (h2 >>> 0).toString(16);
}"""



# ------------------------------------------------------------------------------ helpers


def _expected_cells(path):
    import jupytext

    nb = jupytext.read(path)
    return len(nb.cells), sum(c.cell_type == "code" for c in nb.cells)


def _slug(text):
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:40] or "x"



def _kernel_id(lab, path):
    sessions = [s for s in _api(lab.base, lab.token, "/api/sessions") if s.get("path") == path]
    assert len(sessions) == 1, f"expected one kernel session for {path}, got {sessions}"
    return sessions[0]["kernel"]["id"]


def _kernel(lab, kernel_id):
    """The server's view of a kernel: ``execution_state`` and ``last_activity`` (the time of its
    last message, status messages included)."""
    return _api(lab.base, lab.token, f"/api/kernels/{kernel_id}")


def _wait_update(page, img, before, lab, kernel_id, activity, grace_s=2.0):
    """After a control moved: ``"changed"`` once the picture's pixels differ from ``before``;
    ``"same"`` once the kernel has handled the change (a message since ``activity``, idle
    again) and the picture still has not changed ``grace_s`` later (the update would have
    arrived with the kernel's reply); ``None`` if neither happens within UPDATE_TIMEOUT_MS."""
    deadline = time.monotonic() + UPDATE_TIMEOUT_MS / 1e3
    idle_since = None
    while time.monotonic() < deadline:
        now = img.evaluate(_PIXELS)
        if now is not None and now != before:
            return "changed"
        k = _kernel(lab, kernel_id)
        if k["last_activity"] != activity and k["execution_state"] == "idle":
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since >= grace_s:
                return "same"
        else:
            idle_since = None
        page.wait_for_timeout(100)
    return None


def _run_all_cells(page):
    """Run -> Run All Cells, from JupyterLab's menu bar, as a student does."""
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    item = page.locator(".lm-Menu .lm-Menu-item", has=page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")))
    item.wait_for(state="visible", timeout=10_000)
    item.click()


def _control_kind(control):
    return control.evaluate(
        """el => el.classList.contains('widget-dropdown') ? 'dropdown'
              : el.classList.contains('widget-checkbox') ? 'checkbox'
              : (el.classList.contains('widget-slider') || el.classList.contains('widget-hslider')) ? 'slider' : '?'"""
    )


def _readout(control):
    return control.evaluate(
        """el => { const r = el.querySelector('.widget-readout, select, input[type=checkbox]');
                   return !r ? '' : r.type === 'checkbox' ? String(r.checked) : (r.value !== undefined && r.tagName !== 'DIV' ? r.value : r.innerText); }"""
    )


def _move(page, control, kind):
    """Move one ipywidgets control as a student would (arrow key on the slider's handle,
    another option of the drop-down, a click on the check box).

    Returns ``(description, moved, undo)``; ``undo()`` moves it back the same way.
    """
    before = _readout(control)
    if kind == "slider":
        handle = control.locator(".noUi-handle").first
        handle.scroll_into_view_if_needed()
        handle.focus()
        key, back = "ArrowRight", "ArrowLeft"
        page.keyboard.press(key)
        if _readout(control) == before:  # at the right end already
            key, back = "ArrowLeft", "ArrowRight"
            page.keyboard.press(key)

        def undo():
            handle.focus()
            page.keyboard.press(back)
    elif kind == "dropdown":
        select = control.locator("select")
        n = select.evaluate("el => el.options.length")
        index = select.evaluate("el => el.selectedIndex")
        select.select_option(index=(index + 1) % n)

        def undo():
            select.select_option(index=index)
    else:
        box = control.locator("input[type=checkbox]")
        box.click()

        def undo():
            box.click()
    after = _readout(control)
    return f"{kind} {before!r} -> {after!r}", after != before, undo


# ----------------------------------------------------------------------------------- test


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_live_in_jupyterlab(chapter, browser, lab):
    md_file = lab.root / "book" / f"{chapter}.md"
    n_cells, n_code = _expected_cells(md_file)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = lambda name: str(ARTIFACTS / f"{chapter}-{name}.png")  # noqa: E731
    for old in ARTIFACTS.glob(f"{chapter}-*.png"):
        old.unlink()

    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    js_errors, myst_console, jupytext_console = [], [], []
    external = refuse_other_hosts(context)  # no internet in the sandbox (and none needed)
    page = context.new_page()

    def on_console(msg):
        if re.search(r"jupytext|Jupytext Notebook", msg.text, re.I) and msg.type in ("error", "warning"):
            jupytext_console.append(msg.text.splitlines()[0][:300])
        if msg.type != "error":
            return
        where = (msg.location or {}).get("url", "")
        if where and not is_local(where):
            return
        if re.search(MYST_CONSOLE, msg.text):  # jupyterlab-myst's rendering messages: checked in the DOM
            myst_console.append(msg.text.splitlines()[0][:160])
            return
        js_errors.append(f"console error at {where or '?'}: {msg.text[:500]}")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: js_errors.append(f"uncaught exception: {exc}"))
    timings, problems = {}, []
    t0 = time.monotonic()
    try:
        # 1. open the chapter as Binder's launch button does: /lab/tree/book/<chapter>.md
        # (`reset`: a fresh workspace, as on Binder, not the tabs of the previous chapter)
        page.goto(lab.url(f"/lab/tree/book/{chapter}.md") + "&reset", wait_until="domcontentloaded")
        try:
            opened = page.wait_for_function(_OPENED, arg=n_cells, timeout=OPEN_TIMEOUT_MS, polling=250).json_value()
        except Exception:
            opened = "timeout"
        if opened != True:  # noqa: E712 (the probe returns true, 'editor' or nothing)
            page.screenshot(path=shot("open-failed"))
            how = ("it opened in the text editor, as Markdown source" if opened == "editor" else
                   f"no notebook with {n_cells} cells and an idle kernel within {OPEN_TIMEOUT_MS // 1000} s")
            raise AssertionError(
                f"{chapter}.md did not open as a Jupytext notebook: {how}; see {shot('open-failed')}. "
                f"jupyterlab-jupytext's messages in the browser console: {jupytext_console or 'none'}"
            ) from None
        timings["open_s"] = time.monotonic() - t0
        assert page.locator(".jp-NotebookPanel:visible .jp-CodeCell").count() == n_code
        tab = page.locator("#jp-main-dock-panel .lm-TabBar-tab.lm-mod-current .lm-TabBar-tabLabel").first.inner_text()
        assert tab == f"{chapter}.md", f"the current tab is {tab!r}"
        page.screenshot(path=shot("opened"))

        # 2. MyST rendered by jupyterlab-myst
        myst = page.evaluate(_MYST_STATE)
        assert myst["rendered"] == myst["markdownCells"], f"unrendered markdown cells: {myst}"
        assert myst["myst"] == myst["markdownCells"], (
            f"jupyterlab-myst did not render {myst['markdownCells'] - myst['myst']} of {myst['markdownCells']} "
            f"markdown cells (plain JupyterLab markdown instead): is the extension loaded? {myst}"
        )
        assert any(a.startswith("Learning goals") for a in myst["admonitions"]), (
            f"no 'Learning goals' admonition rendered: {myst['admonitions']}"
        )
        n_ex = len(re.findall(r"^```\{exercise\}", md_file.read_text(encoding="utf-8"), re.M))
        assert len(myst["exercises"]) == n_ex, f"{n_ex} {{exercise}} directives, {len(myst['exercises'])} rendered: {myst}"
        assert myst["math"] > 0, "no math typeset in the markdown cells"
        if myst["raw"]:
            problems.append(f"directives left as raw text (not parsed by MyST): {myst['raw']}")
        if myst["errs"]:  # e.g. math macros the book defines in _config.yml (MathJax) but KaTeX does not know
            page.locator(".jp-NotebookPanel:visible .myst", has=page.locator(".text-yellow-600[title]:not([title='Citation Not Found']), .text-red-500")).first.screenshot(path=shot("myst-error"))
            problems.append(
                f"jupyterlab-myst could not render {len(myst['errs'])} item(s) (see {shot('myst-error')}): "
                + "; ".join(dict.fromkeys(myst["errs"]))
            )
        for sel, name in (("aside.myst-admonition", "admonition"), ("aside.myst-exercise[id]", "exercise")):
            el = page.locator(f".jp-NotebookPanel:visible .myst {sel}").first
            el.scroll_into_view_if_needed()
            el.screenshot(path=shot(f"myst-{name}"))

        # 3. Run -> Run All Cells, and wait for the kernel to run every cell
        t1 = time.monotonic()
        _run_all_cells(page)
        page.wait_for_function(
            "() => [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputPrompt')]"
            ".some(p => /\\[[*\\d]+\\]/.test(p.textContent))",
            timeout=30_000,
        )
        try:
            page.wait_for_function(f"() => ({_RUN_STATE})().finished", timeout=RUN_ALL_TIMEOUT_MS, polling=500)
        except Exception:
            state = page.evaluate(_RUN_STATE)
            page.screenshot(path=shot("run-timeout"))
            raise AssertionError(
                f"{chapter}: the cells did not finish within {RUN_ALL_TIMEOUT_MS // 1000} s: prompts "
                f"{state['prompts']}, kernel idle {state['idle']}; server log:\n{lab.log_tail()}"
            ) from None
        timings["run_all_s"] = time.monotonic() - t1
        state = page.evaluate(_RUN_STATE)
        if state["errors"]:
            cells = page.locator(".jp-NotebookPanel:visible .jp-CodeCell")
            for e in state["errors"][:3]:
                cells.nth(e["cell"]).scroll_into_view_if_needed()
                cells.nth(e["cell"]).screenshot(path=shot(f"error-cell{e['cell']}"))
            raise AssertionError(
                f"{chapter}: {len(state['errors'])} code cell(s) failed in the live kernel "
                f"(screenshots {shot('error-cell*')}):\n"
                + "\n---\n".join(f"code cell {e['cell']}:\n{e['text']}" for e in state["errors"])
            )
        assert state["done"] and state["n"] == n_code, f"not every code cell ran: {state['prompts']}"
        counts = [int(re.search(r"\d+", p).group()) for p in state["prompts"]]
        assert counts == list(range(counts[0], counts[0] + n_code)), f"cells ran out of order: {counts}"

        # 4. every live interactive figure: move each control, the picture must change
        figures = page.locator(
            ".jp-NotebookPanel:visible .jp-OutputArea-output .widget-vbox:has(> .widget-hbox):has(> img.widget-image)"
        )
        n_fig = figures.count()
        n_calls = len(re.findall(r"^interactive\(", md_file.read_text(encoding="utf-8"), re.M))
        assert n_fig >= 1, f"{chapter}: no live ipywidgets figure rendered (widget manager not loaded?)"
        assert n_fig == n_calls, f"{chapter}: {n_calls} interactive(...) calls but {n_fig} live figures"
        timings["updates_ms"] = []
        seen_kinds, unchanged = set(), []
        kernel_id = _kernel_id(lab, f"book/{chapter}.md")
        for i in range(n_fig):
            fig = figures.nth(i)
            fig.scroll_into_view_if_needed()
            img = fig.locator("> img.widget-image")
            page.wait_for_function(f"img => ({_PIXELS})(img) !== null", arg=img.element_handle(), timeout=UPDATE_TIMEOUT_MS)
            fig.screenshot(path=shot(f"w{i}-before"))
            first = img.evaluate(_PIXELS)
            undos = []
            controls = fig.locator("> .widget-hbox > .widget-inline-hbox, > .widget-hbox > .widget-checkbox")
            assert controls.count() > 0, f"figure {i}: no controls"
            kinds = [_control_kind(controls.nth(j)) for j in range(controls.count())]
            assert "?" not in kinds, f"figure {i}: unknown control among {kinds}"
            seen_kinds.update(kinds)
            changed_any = False
            # sliders first, the drop-down (often the method, which may ignore a slider) last
            for j in sorted(range(len(kinds)), key=lambda j: ("slider", "checkbox", "dropdown").index(kinds[j])):
                control, kind = controls.nth(j), kinds[j]
                before = img.evaluate(_PIXELS)
                activity = _kernel(lab, kernel_id)["last_activity"]
                t2 = time.monotonic()
                done, moved, undo = _move(page, control, kind)
                undos.append(undo)
                assert moved, f"figure {i}: the {kind} did not move ({done})"
                outcome = _wait_update(page, img, before, lab, kernel_id, activity)
                if outcome is None:
                    fig.screenshot(path=shot(f"w{i}-stuck-{kind}"))
                    err = fig.locator("pre").all_inner_texts()
                    raise AssertionError(
                        f"{chapter} figure {i}: after {done} neither did the picture change nor did the kernel "
                        f"handle the update within {UPDATE_TIMEOUT_MS // 1000} s; error under the figure: "
                        f"{err or 'none'}; see {shot(f'w{i}-stuck-{kind}')}"
                    )
                if outcome == "changed":
                    changed_any = True
                    timings["updates_ms"].append(round((time.monotonic() - t2) * 1e3))
                else:  # the function drew the same picture for the new value: legitimate (e.g. a
                    # method that ignores this setting), as long as some control changes it
                    unchanged.append(f"figure {i}: {done}")
                fig.screenshot(path=shot(f"w{i}-after-{j}-{kind}"))
                assert not fig.locator("pre").count(), f"figure {i}: error under the figure: {fig.locator('pre').all_inner_texts()}"
            assert changed_any, (
                f"{chapter} figure {i}: the kernel handled every control change ({kinds}) but the picture never "
                f"changed; is the figure function using its arguments? see {shot(f'w{i}-before')}"
            )
            # Put every control back: the figure must show the first picture again, pixel for
            # pixel (the picture is a function of the controls; no stale or out-of-order frame).
            for undo in reversed(undos):
                undo()
            try:
                page.wait_for_function(
                    "([img, want]) => (" + _PIXELS + ")(img) === want", arg=[img.element_handle(), first],
                    timeout=UPDATE_TIMEOUT_MS, polling=50,
                )
            except Exception:
                fig.screenshot(path=shot(f"w{i}-restored"))
                problems.append(
                    f"figure {i}: with every control back at its first value the picture differs from the "
                    f"first one (compare {shot(f'w{i}-before')} and {shot(f'w{i}-restored')})"
                )
        page.locator(".jp-NotebookPanel:visible .jp-Notebook").first.evaluate("el => el.scrollTo(0, 0)")
        page.screenshot(path=shot("end"))
    except AssertionError as exc:
        extra = problems + (["JavaScript errors:\n" + "\n".join(js_errors[:20])] if js_errors else [])
        if extra:
            raise AssertionError(f"{exc}\nAlso:\n" + "\n".join(extra)) from None
        raise
    finally:
        context.close()
        _shutdown_kernels(lab)  # the next chapter starts with a quiet machine
    timings["total_s"] = time.monotonic() - t0
    print(f"\n{chapter}: {json.dumps(timings)}; controls moved: {sorted(seen_kinds)}; "
          f"{len(myst['citations'])} citation(s) shown as 'Citation Not Found' (jupyterlab-myst has no "
          f"bibliography); jupyterlab-myst console messages: {sorted(set(myst_console))}; "
          f"{len(external)} external request(s) refused; control moves that left the picture as it "
          f"was (the kernel handled them): {unchanged or 'none'}")
    if js_errors:
        problems.append("JavaScript errors in JupyterLab:\n" + "\n".join(js_errors[:20]))
    assert not problems, f"{chapter} in live JupyterLab:\n" + "\n".join(problems)
