"""Tests for qref.widgets: the interactive figures of the book, live and static."""

from __future__ import annotations

import base64
import doctest
import io
import itertools
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image  # noqa: E402

from qref import widgets  # noqa: E402
from qref.widgets import Checkbox, Dropdown, Interactive, Slider, interactive  # noqa: E402

X = np.linspace(-3, 3, 201)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv("QREF_STATIC_WIDGETS", raising=False)
    monkeypatch.delenv("QREF_WIDGET_TIMINGS", raising=False)
    yield
    plt.close("all")


@pytest.fixture
def static(monkeypatch):
    monkeypatch.setenv("QREF_STATIC_WIDGETS", "1")


@pytest.fixture
def live():
    pytest.importorskip("ipywidgets")


def steps(bits=2, scheme="a", clip=True):
    """A small figure that depends on all three arguments."""
    fig, ax = plt.subplots(figsize=(7, 3.2))
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.17, top=0.9)  # fixed margins: fast, no jitter
    step = 1.0 / 2**bits
    lim = 2.0 if clip else 3.0
    shift = 0.5 * step if scheme == "b" else 0.0
    ax.plot(X, np.clip(np.round(X / step) * step + shift, -lim, lim))
    ax.set(xlabel="x", ylabel="Q(x)", title=f"{bits} bits, scheme {scheme}, clip={clip}")
    return fig


def table(bits=2, signed=True):
    return f"<table><tr><td>{bits}</td><td>{signed}</td></tr></table>"


def blob(html):
    """The JSON data of the (single) static widget in ``html``."""
    m = re.search(r'<script type="application/json" class="qref-widget-data">(.*?)</script>', html, re.S)
    assert m, "no data blob"
    return json.loads(m.group(1))


def png_of(data_uri):
    assert data_uri.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(data_uri.split(",", 1)[1])))


CONTROLS = (Slider("bits", [2, 3, 4], value=3), Dropdown("scheme", ["a", "b"]), Checkbox("clip", value=True))


@pytest.fixture(scope="module")
def steps_widget():
    """``steps`` over CONTROLS, built once in static mode (12 frames)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QREF_STATIC_WIDGETS", "1")
        mp.delenv("QREF_WIDGET_TIMINGS", raising=False)
        return interactive(steps, *CONTROLS)


# ----------------------------------------------------------------------------- static


def test_static_one_frame_per_unique_combination(steps_widget):
    w = steps_widget
    assert isinstance(w, Interactive) and w.static and w.kind == "png"
    d = blob(w.html)
    combos = {",".join(map(str, c)) for c in itertools.product(range(3), range(2), range(2))}
    assert set(d["map"]) == combos  # every combination is mapped...
    assert sorted(set(d["map"].values())) == list(range(len(d["frames"])))  # ...to an existing frame
    assert len(d["frames"]) == 12 == len(set(d["frames"]))  # all 12 pictures differ
    assert w.stats["frames"] == 12 and w.stats["unique_frames"] == 12
    assert w.stats["bytes"] == len(w.html.encode("utf-8"))
    assert d["names"] == ["bits", "scheme", "clip"]
    assert d["labels"] == [["2", "3", "4"], ["a", "b"], ["False", "True"]]
    # frames are palette PNGs of the figure's size at widgets.DPI
    im = png_of(d["frames"][0])
    assert im.mode == "P" and im.size == (round(7 * widgets.DPI), round(3.2 * widgets.DPI))
    # the initial picture is the default combination (bits=3 -> index 1, scheme a, clip True)
    img = re.search(r'<img class="qref-widget-view" src="([^"]+)"', w.html).group(1)
    assert img == d["frames"][d["map"]["1,0,1"]]
    assert f'data-qref-frame="{d["map"]["1,0,1"]}"' in w.html


def test_static_frames_are_what_the_function_returns(static):
    w = interactive(table, Slider("bits", [2, 4, 8], value=4), Checkbox("signed", value=True))
    assert w.kind == "html"
    d = blob(w.html)
    for (i, bits), (j, signed) in itertools.product(enumerate([2, 4, 8]), enumerate([False, True])):
        assert d["frames"][d["map"][f"{i},{j}"]] == table(bits, signed)
    assert '<div class="qref-widget-view qref-widget-html">' + table(4, True) in w.html


def test_static_html_controls(steps_widget):
    h = steps_widget.html
    assert h.count('<div class="qref-widget"') == 1
    assert re.search(r'<input type="range"[^>]* min="0" max="2" step="1" value="1"', h)
    assert re.search(r"<output [^>]*>3</output>", h)  # live value label of the slider
    assert '<option value="0" selected>a</option><option value="1">b</option>' in h
    assert re.search(r'<input type="checkbox"[^>]*checked>', h)
    assert h.count("<script>") == 1 and "addEventListener" in h  # one small inline script
    assert "http" not in h.split("<script>", 1)[1]  # no external JavaScript
    assert 'data-qref-control="bits"' in h and 'data-qref-control="clip"' in h


def test_static_dedupes_identical_frames(static):
    def ignores_flag(bits=2, flag=False):
        return steps(bits=bits)

    w = interactive(ignores_flag, Slider("bits", [2, 3, 4]), Checkbox("flag"))
    d = blob(w.html)
    assert len(d["map"]) == 6 and len(d["frames"]) == 3
    assert w.stats == {**w.stats, "frames": 6, "unique_frames": 3}
    for i in range(3):
        assert d["map"][f"{i},0"] == d["map"][f"{i},1"]
    w2 = interactive(lambda bits=2, flag=False: f"<b>{bits}</b>", Slider("bits", [2, 3]), Checkbox("flag"))
    assert len(blob(w2.html)["frames"]) == 2


def test_static_ids_are_unique_and_used_by_the_script(static):
    a = interactive(table, Slider("bits", [2, 4]))
    b = interactive(table, Slider("bits", [2, 4]))
    ida = re.search(r'<div class="qref-widget" id="([^"]+)"', a.html).group(1)
    idb = re.search(r'<div class="qref-widget" id="([^"]+)"', b.html).group(1)
    assert ida != idb
    for h, uid in ((a.html, ida), (b.html, idb)):
        assert json.dumps(uid) in h.split("<script>", 1)[1]
        ids = re.findall(r'\bid="([^"]+)"', h)
        assert len(ids) == len(set(ids)) and all(i.startswith(uid) for i in ids)


def test_static_json_cannot_break_out_of_its_script(static):
    evil = "</script><script>alert(1)</script><!--"
    w = interactive(lambda flag=False: evil if flag else "ok", Checkbox("flag"))
    data_part = w.html.split('class="qref-widget-data">', 1)[1].split("</script>", 1)[0]
    assert "<" not in data_part
    assert blob(w.html)["frames"] == ["ok", evil]


def test_static_figure_background_is_opaque_white(static):
    def transparent(bits=2):
        fig = steps(bits)
        fig.patch.set_alpha(0.0)
        return fig

    d = blob(interactive(transparent, Slider("bits", [2, 3])).html)
    im = png_of(d["frames"][0]).convert("RGBA")
    assert im.getpixel((0, 0)) == (255, 255, 255, 255)
    assert "transparency" not in png_of(d["frames"][0]).info


def test_static_closes_every_figure(static):
    def leaky(bits=2):
        plt.figure()  # a stray figure the function forgot about
        return steps(bits)

    before = plt.get_fignums()
    interactive(leaky, Slider("bits", [2, 3, 4]))
    assert plt.get_fignums() == before


def test_static_display_is_one_html_output(static):
    w = interactive(table, Slider("bits", [2, 4]))
    bundle = w._repr_mimebundle_()
    assert bundle["text/html"] == w.html and set(bundle) == {"text/html", "text/plain"}
    assert "static" in repr(w) and "table" in repr(w)


def test_static_page_weight_guard(static):
    big = "x" * 1_100_000  # three such frames are more than 3 MB
    with pytest.raises(ValueError, match=r"more than 3 MB.*shrink the grid"):
        interactive(lambda i=0: f"<p>{i}</p>{big}", Slider("i", [0, 1, 2]))


def test_static_page_weight_guard_for_figures(static, monkeypatch):
    monkeypatch.setattr(widgets, "MAX_BYTES", 20_000)
    with pytest.raises(ValueError, match="shrink the grid"):
        interactive(steps, Slider("bits", [2, 3, 4, 5, 6]), Checkbox("clip"))


@pytest.mark.parametrize("mode", ["static", "live"])
def test_combination_guard(mode, monkeypatch):
    if mode == "static":
        monkeypatch.setenv("QREF_STATIC_WIDGETS", "1")
    calls = []

    def f(a=0, b=0, c=False):
        calls.append(1)
        return "x"

    with pytest.raises(ValueError, match=r"10 x 11 x 2 = 220 combinations.*at most 200.*shrink the grid"):
        interactive(f, Slider("a", range(10)), Slider("b", range(11)), Checkbox("c"))
    assert not calls  # refused before rendering anything
    interactive(f, Slider("a", range(10)), Slider("b", range(10)), Checkbox("c"))  # 200 is fine


def test_timings_file(static, monkeypatch, tmp_path):
    path = tmp_path / "timings.jsonl"
    monkeypatch.setenv("QREF_WIDGET_TIMINGS", str(path))
    w1 = interactive(steps, Slider("bits", [2, 3]), name="grid")
    w2 = interactive(table, Slider("bits", [2, 3, 4]), Checkbox("signed"))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [x["name"] for x in lines] == ["grid", "table"]
    for line, w in zip(lines, (w1, w2)):
        assert set(line) == {"name", "cwd", "frames", "unique_frames", "bytes", "median_ms", "max_ms"}
        assert line["cwd"] == os.getcwd()
        assert line["bytes"] == len(w.html.encode("utf-8"))
        assert 0 <= line["median_ms"] <= line["max_ms"]
    assert (lines[0]["frames"], lines[0]["unique_frames"]) == (2, 2)
    assert (lines[1]["frames"], lines[1]["unique_frames"]) == (6, 6)
    assert lines[0]["median_ms"] > 0  # drawing a figure takes time


def test_no_timings_file_without_env(static, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    interactive(table, Slider("bits", [2, 3]))
    assert list(tmp_path.iterdir()) == []


def test_cut_off_figure_is_refused(static):
    def cut(bits=2):
        fig, ax = plt.subplots(figsize=(7, 3.2))  # no layout: the x label falls off the bottom
        ax.plot(X, X * bits)
        ax.set(xlabel="a label below the axis", ylabel="y")
        return fig

    with pytest.raises(ValueError, match=r"cut off.*bottom edge.*constrained"):
        interactive(cut, Slider("bits", [2, 3]))


# ------------------------------------------------------------------------------- live


def test_live_builds_ipywidgets(live):
    import ipywidgets as W

    w = interactive(steps, *CONTROLS)
    assert not w.static and w.html is None and w.kind == "png"
    s, dd, cb = (w.widgets[n] for n in ("bits", "scheme", "clip"))
    assert isinstance(s, W.SelectionSlider) and isinstance(dd, W.Dropdown) and isinstance(cb, W.Checkbox)
    assert s.options == (("2", 2), ("3", 3), ("4", 4)) and s.value == 3 and s.index == 1
    assert dd.options == (("a", "a"), ("b", "b")) and dd.value == "a"
    assert cb.value is True
    assert isinstance(w.output, W.Image) and w.output.value[:8] == b"\x89PNG\r\n\x1a\n"
    assert isinstance(w.box, W.VBox) and w.output in w.box.children
    assert w.last_update_ms > 0
    assert w.params() == {"bits": 3, "scheme": "a", "clip": True}
    assert "application/vnd.jupyter.widget-view+json" in w._repr_mimebundle_()


def test_live_update_changes_the_image(live):
    w = interactive(steps, *CONTROLS)
    seen = [w.output.value]
    w.widgets["bits"].index = 2
    seen.append(w.output.value)
    w.widgets["scheme"].value = "b"
    seen.append(w.output.value)
    w.widgets["clip"].value = False
    seen.append(w.output.value)
    assert len(set(seen)) == 4
    assert w.params() == {"bits": 4, "scheme": "b", "clip": False}
    assert w.last_update_ms > 0 and w.last_error is None
    # the image is the function's figure for the current values
    assert Image.open(io.BytesIO(w.output.value)).size == (round(7 * widgets.DPI), round(3.2 * widgets.DPI))
    assert plt.get_fignums() == []


def test_live_html_function(live):
    import ipywidgets as W

    w = interactive(table, Slider("bits", [2, 4, 8], value=4), Checkbox("signed", value=True))
    assert isinstance(w.output, W.HTML) and w.output.value == table(4, True)
    w.widgets["bits"].index = 2
    w.widgets["signed"].value = False
    assert w.output.value == table(8, False)


def test_live_error_is_shown_under_the_figure(live):
    def fragile(bits=2):
        if bits == 3:
            raise RuntimeError("no 3-bit grid today")
        return table(bits)

    w = interactive(fragile, Slider("bits", [2, 3, 4]))
    w.widgets["bits"].index = 1
    assert "no 3-bit grid today" in w.last_error and "no 3-bit grid today" in w._error.value
    assert w.output.value == table(2)  # the last good frame stays
    w.widgets["bits"].index = 2
    assert w.last_error is None and w._error.value == "" and w.output.value == table(4)


def test_live_passes_values_not_labels(live):
    got = []

    def f(alpha=0.1):
        got.append(alpha)
        return "x"

    w = interactive(f, Slider("alpha", np.array([0.1, 0.25, 1 / 3]), value=0.25))
    assert [label for label, _ in w.widgets["alpha"].options] == ["0.1", "0.25", "0.333333"]
    w.widgets["alpha"].index = 2
    assert got == [0.25, 1 / 3] and all(type(a) is float for a in got)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "make, exc, match",
    [
        (lambda: Slider("bits", []), ValueError, "must not be empty"),
        (lambda: Slider("bits", [1, 2], value=3), ValueError, r"value must be one of 1, 2; got 3"),
        (lambda: Slider("bits", "248"), TypeError, "list, tuple, range"),
        (lambda: Slider("bits", {1, 2}), TypeError, "list, tuple, range"),
        (lambda: Slider("bits", (b for b in [1, 2])), TypeError, "list, tuple, range"),
        (lambda: Slider("bits", np.zeros((2, 2))), ValueError, "one-dimensional"),
        (lambda: Slider("bits", [1, 2, 1]), ValueError, "distinct.*repeated value"),
        (lambda: Slider(3, [1]), TypeError, "name must be a str"),
        (lambda: Slider("two words", [1]), ValueError, "identifier"),
        (lambda: Slider("bits", [1], description=3), TypeError, "description must be a str"),
        (lambda: Dropdown("scheme", []), ValueError, "must not be empty"),
        (lambda: Dropdown("scheme", ["a", "b"], value="c"), ValueError, "one of 'a', 'b'; got 'c'"),
        (lambda: Checkbox("clip", value=1), TypeError, "True or False"),
    ],
)
def test_bad_controls(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


@pytest.mark.parametrize(
    "args, kwargs, exc, match",
    [
        (("not callable", Slider("bits", [2])), {}, TypeError, "func must be callable"),
        ((steps,), {}, ValueError, "at least one control"),
        ((steps, "bits"), {}, TypeError, "Slider, Dropdown or Checkbox"),
        ((steps, Slider("bits", [2]), Slider("bits", [3])), {}, ValueError, "distinct.*'bits'"),
        ((steps, Slider("bitz", [2])), {}, ValueError, r"'bitz' must match keyword parameters of steps"),
        ((lambda bits, scale: "x", Slider("bits", [2])), {}, ValueError, "required parameter.*'scale'"),
        ((steps, Slider("bits", [2])), {"name": 3}, TypeError, "name must be"),
    ],
)
def test_bad_interactive_calls(args, kwargs, exc, match, static):
    with pytest.raises(exc, match=match):
        interactive(*args, **kwargs)


def test_kwargs_function_accepts_any_control(static):
    w = interactive(lambda **kw: str(sorted(kw.items())), Slider("anything", [1, 2]))
    assert w.stats["unique_frames"] == 2


@pytest.mark.parametrize("mode", ["static", "live"])
def test_bad_return_values(mode, monkeypatch):
    if mode == "static":
        monkeypatch.setenv("QREF_STATIC_WIDGETS", "1")
    else:
        pytest.importorskip("ipywidgets")
    with pytest.raises(TypeError, match=r"must return a matplotlib Figure or an HTML str, got NoneType.*return fig"):
        interactive(lambda bits=2: None, Slider("bits", [2, 3]))
    with pytest.raises(TypeError, match="got int"):
        interactive(lambda bits=2: 5, Slider("bits", [2, 3]))


def test_mixed_return_kinds_are_refused(static):
    with pytest.raises(TypeError, match="same kind"):
        interactive(lambda bits=2: "x" if bits == 2 else steps(bits), Slider("bits", [2, 3]))


# ------------------------------------------------------------------------ conventions


def test_controls_repr_and_defaults():
    assert repr(Slider("bits", [2, 4], value=4)) == "Slider('bits', [2, 4], value=4)"
    assert repr(Checkbox("clip")) == "Checkbox('clip', value=False)"
    assert Dropdown("scheme", ("a", "b")).value == "a"  # default: the first option
    assert Slider("bits", range(2, 5)).values == (2, 3, 4)
    s = Slider("bits", np.array([2, 4], dtype=np.int8), description="bit width")
    assert s.values == (2, 4) and type(s.values[0]) is int and s.label == "bit width"


def test_import_qref_does_not_import_the_plotting_stack():
    code = (
        "import sys, qref, qref.widgets; "
        "print(sorted(m for m in ('matplotlib', 'PIL', 'ipywidgets', 'IPython') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_docstring_examples_run():
    result = doctest.testmod(widgets, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
