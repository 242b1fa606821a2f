"""Interactive figures that work in a live kernel and in the static HTML book.

Every chapter builds its interactive figures with one call::

    from qref.widgets import interactive, Slider, Dropdown, Checkbox

    def draw_grid(bits=4, scheme="asymmetric", clip=True):
        fig, ax = plt.subplots(figsize=(7, 3.2))
        ...                                  # compute with qref, plot
        return fig                           # a matplotlib Figure, or an HTML str

    interactive(draw_grid,
                Slider("bits", [2, 3, 4, 6, 8], value=4),
                Dropdown("scheme", ["asymmetric", "symmetric"]),
                Checkbox("clip", value=True))

Each control ranges over a *finite* list of values, and the function is called with one
keyword argument per control. The same cell works in two places:

* **Live kernel** (Jupyter, Binder, Colab): ipywidgets controls (a ``SelectionSlider``,
  a ``Dropdown``, a ``Checkbox``) call the function on every change and show the result
  in an ``ipywidgets.Image`` (figures) or ``ipywidgets.HTML`` (strings). Keep the function
  cheap (well under 100 ms): precompute heavy things outside it.
* **Static book** (environment variable ``QREF_STATIC_WIDGETS=1``, set by the book's
  Sphinx extension so the executing kernel inherits it): every combination of control
  values is rendered once at build time, figures become palette-quantized PNGs
  (identical frames are stored once), and the cell's output is one self-contained HTML
  fragment whose small inline script switches frames when the reader moves a control.
  No server, no kernel, no external JavaScript.

Because the static book renders the whole grid, the number of combinations (the product
of the value counts) is capped at :data:`MAX_COMBINATIONS` in both modes, so a figure that
works live also builds; aim for 150 or fewer. The encoded page weight of one figure is
capped at :data:`MAX_BYTES`.

If the environment variable ``QREF_WIDGET_TIMINGS`` names a file, every static figure
appends one JSON line to it: ``name``, ``cwd``, ``frames``, ``unique_frames``, ``bytes``
(size of the HTML output), ``median_ms`` and ``max_ms`` (time to call the function and
render one frame, i.e. the time of one live update). ``make bench`` reads it.

matplotlib, Pillow and ipywidgets are imported only when needed: ``import qref`` works
with numpy alone.
"""

from __future__ import annotations

import base64
import hashlib
import html as _html
import inspect
import io
import itertools
import json
import math
import os
import re
import statistics
import sys
import time

import numpy as np

from ._validation import check_bool, check_choice

__all__ = [
    "Checkbox",
    "Dropdown",
    "Interactive",
    "MAX_BYTES",
    "MAX_COMBINATIONS",
    "Slider",
    "interactive",
]

#: Most combinations of control values one figure may have (the static book renders each).
MAX_COMBINATIONS = 200
#: Most bytes the static HTML of one figure may weigh (frames are base64 data URIs).
MAX_BYTES = 3_000_000
#: Resolution of the rendered frames. A 7 x 3.2 in figure becomes 630 x 288 pixels.
DPI = 90
#: Palette size of the static PNG frames (Pillow's maximum-coverage quantizer). For 630 x 288
#: frames of line plots, histograms and diverging colour maps, 128 colours keep every pixel
#: within 10/255 of the original (no banding in colour bars) at 7-11 kB a frame, a third of
#: the RGB PNG. Median cut with 64 colours was as small but turned a RdBu colour bar brown.
PNG_COLORS = 128

STATIC_ENV = "QREF_STATIC_WIDGETS"
TIMINGS_ENV = "QREF_WIDGET_TIMINGS"

_counter = itertools.count()


# ----------------------------------------------------------------------------- controls


class _Control:
    """A named control over a finite tuple of values (base class, not public)."""

    kind = "control"

    def __init__(self, name, values, value, description):
        self.name = _check_name(name, f"{type(self).__name__} name")
        self.values = _check_values(values, f"{type(self).__name__} {self.name!r} values")
        self.labels = _labels(self.values, f"{type(self).__name__} {self.name!r} values")
        if value is None:
            self.index = 0
        else:
            check_choice(value, f"{type(self).__name__} {self.name!r} value", self.values)
            self.index = _index_of(self.values, value)
        if description is not None and not isinstance(description, str):
            raise TypeError(
                f"{type(self).__name__} {self.name!r} description must be a str or None, "
                f"got {type(description).__name__}"
            )
        self.description = description

    @property
    def value(self):
        """The default (initial) value."""
        return self.values[self.index]

    @property
    def label(self):
        """The text shown next to the control: ``description`` or else ``name``."""
        return self.description if self.description is not None else self.name

    def __repr__(self):
        return f"{type(self).__name__}({self.name!r}, {list(self.values)!r}, value={self.value!r})"


class Slider(_Control):
    """A slider over a finite list of values (ipywidgets ``SelectionSlider`` when live).

    Parameters
    ----------
    name : str
        The keyword argument of the figure function this control sets.
    values : list, tuple, range or 1-D numpy array
        The values the slider steps through, in order. Must be non-empty with distinct
        labels. numpy scalars are turned into Python numbers.
    value : optional
        The initial value, one of ``values``. Default: the first value.
    description : str, optional
        The label shown next to the slider. Default: ``name``.

    Raises
    ------
    TypeError
        If ``name`` is not a str, ``values`` is not a list-like sequence (a str, a set
        or a generator are refused), or ``description`` is not a str.
    ValueError
        If ``name`` is not a Python identifier, ``values`` is empty or has repeated
        labels, or ``value`` is not one of ``values``.

    Examples
    --------
    >>> from qref.widgets import Slider
    >>> s = Slider("bits", [2, 3, 4, 6, 8], value=4, description="bit width")
    >>> s.value, s.index, s.labels
    (4, 2, ('2', '3', '4', '6', '8'))
    """

    kind = "slider"

    def __init__(self, name, values, value=None, description=None):
        super().__init__(name, values, value, description)


class Dropdown(_Control):
    """A drop-down menu over a finite list of options (``<select>`` in the static book).

    Parameters
    ----------
    name : str
        The keyword argument of the figure function this control sets.
    options : list, tuple, range or 1-D numpy array
        The choices, non-empty, with distinct labels (``str(option)``).
    value : optional
        The initial option. Default: the first one.
    description : str, optional
        The label shown next to the menu. Default: ``name``.

    Raises
    ------
    TypeError, ValueError
        As for :class:`Slider`.

    Examples
    --------
    >>> from qref.widgets import Dropdown
    >>> Dropdown("scheme", ["asymmetric", "symmetric"], value="symmetric").index
    1
    """

    kind = "dropdown"

    def __init__(self, name, options, value=None, description=None):
        super().__init__(name, options, value, description)

    @property
    def options(self):
        """The choices (same as ``values``)."""
        return self.values


class Checkbox(_Control):
    """A check box: the function receives ``False`` or ``True``.

    Parameters
    ----------
    name : str
        The keyword argument of the figure function this control sets.
    value : bool, default False
        The initial state.
    description : str, optional
        The label shown next to the box. Default: ``name``.

    Raises
    ------
    TypeError
        If ``value`` is not a bool or ``description`` not a str.

    Examples
    --------
    >>> from qref.widgets import Checkbox
    >>> Checkbox("clip", value=True).values
    (False, True)
    """

    kind = "checkbox"

    def __init__(self, name, value=False, description=None):
        name = _check_name(name, "Checkbox name")
        value = check_bool(value, f"Checkbox {name!r} value")
        super().__init__(name, (False, True), value, description)

    def __repr__(self):
        return f"Checkbox({self.name!r}, value={self.value!r})"


# -------------------------------------------------------------------------- validation


def _check_name(name, what):
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a str, got {type(name).__name__} {name!r}")
    if not name.isidentifier():
        raise ValueError(f"{what} must be a Python identifier (it is passed as a keyword argument), got {name!r}")
    return name


def _check_values(values, what):
    """A finite, non-empty tuple of values; numpy arrays and scalars become Python objects."""
    if isinstance(values, np.ndarray):
        if values.ndim != 1:
            raise ValueError(f"{what} must be one-dimensional, got an array of shape {values.shape}")
        values = values.tolist()
    if not isinstance(values, (list, tuple, range)):
        raise TypeError(
            f"{what} must be a finite list, tuple, range or 1-D numpy array, got {type(values).__name__}"
        )
    values = tuple(v.item() if isinstance(v, np.generic) else v for v in values)
    if not values:
        raise ValueError(f"{what} must not be empty, got {values!r}")
    return values


def _label(v):
    if isinstance(v, float):
        return format(v, ".6g")
    return str(v)


def _labels(values, what):
    labels = tuple(_label(v) for v in values)
    if len(set(labels)) != len(labels):
        dup = sorted({lab for lab in labels if labels.count(lab) > 1})
        raise ValueError(f"{what} must be distinct, got repeated value(s) {', '.join(dup)} in {list(values)!r}")
    return labels


def _index_of(values, value):
    for i, v in enumerate(values):
        if v is value or v == value:
            return i
    raise AssertionError("unreachable: value was checked to be in values")


def _check_func(func, controls):
    if not callable(func):
        raise TypeError(f"func must be callable (it draws the figure), got {type(func).__name__}")
    if not controls:
        raise ValueError("interactive needs at least one control (Slider, Dropdown or Checkbox), got none")
    for i, c in enumerate(controls):
        if not isinstance(c, _Control):
            raise TypeError(
                f"controls must be Slider, Dropdown or Checkbox objects, got {type(c).__name__} "
                f"{c!r} at position {i}"
            )
    names = [c.name for c in controls]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"control names must be distinct, got {', '.join(repr(n) for n in dup)} more than once")
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):  # some builtins have no signature: accept them
        return
    params = sig.parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    keywords = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    unknown = [n for n in names if n not in keywords]
    if unknown:
        raise ValueError(
            f"control name(s) {', '.join(repr(n) for n in unknown)} must match keyword parameters of "
            f"{getattr(func, '__name__', 'func')}, which takes {', '.join(sorted(keywords)) or 'none'}"
        )
    missing = [
        p.name
        for p in params
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in names
    ]
    if missing:
        raise ValueError(
            f"{getattr(func, '__name__', 'func')} has required parameter(s) "
            f"{', '.join(repr(n) for n in missing)} that no control sets; give them a default or a control"
        )


def _check_grid(controls, name):
    n = math.prod(len(c.values) for c in controls)
    if n > MAX_COMBINATIONS:
        counts = " x ".join(str(len(c.values)) for c in controls)
        per = ", ".join(f"{type(c).__name__} {c.name!r}: {len(c.values)}" for c in controls)
        raise ValueError(
            f"interactive figure {name!r} has {counts} = {n} combinations of control values ({per}); "
            f"the static book renders every one, so at most {MAX_COMBINATIONS} are allowed: "
            f"shrink the grid (fewer values per control, or fewer controls)"
        )
    return n


# --------------------------------------------------------------------------- rendering


def _close(fig):
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None:
        plt.close(fig)


def _call(func, params, *, check_extent=False):
    """Call ``func(**params)``; return ``(kind, value, ms)``.

    ``kind, value`` is ``("png", PIL RGB image)`` or ``("html", str)``; ``ms`` is the time
    taken by the call and the rasterization, without the check below.

    A returned figure is rasterized (opaque white background, :data:`DPI`) and
    closed, and so is any other pyplot figure the call left open, so that the notebook's
    inline backend does not show them again at the end of the cell. With
    ``check_extent``, a figure whose labels stick out of it (and would be cut off) raises.
    """
    plt = sys.modules.get("matplotlib.pyplot")
    before = set(plt.get_fignums()) if plt is not None else set()
    try:
        t0 = time.perf_counter()
        return _render(func, func(**params), check_extent, t0)
    finally:
        plt = sys.modules.get("matplotlib.pyplot")
        if plt is not None:
            for num in set(plt.get_fignums()) - before:
                plt.close(num)


def _render(func, out, check_extent, t0):
    if isinstance(out, str):
        return "html", out, (time.perf_counter() - t0) * 1e3
    from matplotlib.figure import Figure

    if isinstance(out, Figure):
        try:
            image = _rasterize(out)
            ms = (time.perf_counter() - t0) * 1e3
            if check_extent:
                _check_extent(func, out)
        finally:
            _close(out)
        return "png", image, ms
    hint = " (did you forget `return fig`?)" if out is None else ""
    raise TypeError(
        f"{getattr(func, '__name__', 'func')} must return a matplotlib Figure or an HTML str, "
        f"got {type(out).__name__}{hint}"
    )


def _rasterize(fig):
    """Draw ``fig`` at :data:`DPI` into an RGB Pillow image, composited over white.

    The figure is drawn straight into Agg's pixel buffer: no PNG is encoded here (live mode
    encodes one quickly, static mode a palette PNG), which halves the cost of a frame. Every
    frame keeps the figure's size (no ``bbox_inches="tight"``), so the picture does not jump
    when the reader moves a control.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    fig.set_dpi(DPI)
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    rgba = Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba(), "raw", "RGBA", 0, 1)
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _fast_png(rgb):
    """PNG bytes of an RGB image, with light compression (a live update must be quick)."""
    buf = io.BytesIO()
    rgb.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _check_extent(func, fig):
    """Raise if the drawn figure's artists reach outside it (cut-off labels, legends)."""
    bb = fig.get_tightbbox()
    if bb is None:
        return
    w, h = fig.get_size_inches()
    over = {"left": -bb.x0, "bottom": -bb.y0, "right": bb.x1 - w, "top": bb.y1 - h}
    tol = 2.0 / DPI  # two pixels
    cut = {side: d for side, d in over.items() if d > tol}
    if cut:
        where = ", ".join(f"{d:.2f} in beyond the {side} edge" for side, d in cut.items())
        raise ValueError(
            f"the figure of {getattr(func, '__name__', 'func')} is cut off: its labels reach {where}; "
            f'create it with plt.subplots(..., layout="constrained") or call fig.tight_layout() before '
            f"returning it (frames are saved at the figure's size, not with bbox_inches='tight')"
        )


def _compress_png(rgb):
    """Palette-quantize an RGB image (:data:`PNG_COLORS` colours, maximum coverage) to PNG bytes."""
    from PIL import Image

    pal = rgb.quantize(colors=PNG_COLORS, method=Image.Quantize.MAXCOVERAGE)
    buf = io.BytesIO()
    pal.save(buf, format="PNG")  # optimize=True saves ~4% for 7x the time
    return buf.getvalue()


def _slug(name):
    s = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()
    return s or "figure"


def _json_for_script(obj):
    """JSON that is safe inside ``<script>``: no ``<``, ``>`` or ``&`` characters."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    return (
        text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
        .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    )


# ------------------------------------------------------------------------------ widget


class Interactive:
    """An interactive figure; the return value of :func:`interactive`.

    Displays itself when it is the last expression of a notebook cell.

    Attributes
    ----------
    name : str
        The figure's name (element ids, timings file).
    controls : tuple of Slider, Dropdown, Checkbox
        The controls, in order.
    static : bool
        True when built for the static book (``QREF_STATIC_WIDGETS=1``).
    kind : {"png", "html"}
        What the function returns: a figure (shown as a PNG) or an HTML fragment.
    last_update_ms : float
        Wall time of the last update in milliseconds: calling the function and rendering
        its result (live), or the last frame rendered (static).
    html : str
        Static mode: the self-contained HTML fragment (None when live).
    stats : dict
        Static mode: ``frames``, ``unique_frames``, ``bytes``, ``median_ms``, ``max_ms``.
    widgets : dict
        Live mode: control name -> ipywidgets control.
    output : ipywidgets.Image or ipywidgets.HTML
        Live mode: the widget showing the current frame.
    box : ipywidgets.VBox
        Live mode: the whole widget (controls, output, error area).
    last_error : str or None
        Live mode: the traceback of the last failed update (also shown under the figure).
    """

    def __init__(self, func, controls, name, static):
        self.func = func
        self.controls = tuple(controls)
        self.name = name
        self.static = static
        self.last_update_ms = float("nan")
        self.last_error = None
        self.html = None
        self.stats = None
        self.widgets = {}
        self.output = None
        self.box = None
        if static:
            self._build_static()
        else:
            self._build_live()

    # ----------------------------------------------------------------- live
    def params(self):
        """The current keyword arguments (live: the controls' values; static: defaults)."""
        if self.static or not self.widgets:
            return {c.name: c.value for c in self.controls}
        return {c.name: c.values[self._index(c)] for c in self.controls}

    def _index(self, control):
        w = self.widgets[control.name]
        if control.kind == "checkbox":
            return int(bool(w.value))
        return w.index

    def _build_live(self):
        try:
            import ipywidgets as W
        except ImportError:  # pragma: no cover - depends on the environment
            raise ImportError(
                "live interactive figures need ipywidgets: pip install 'qref[book]' "
                f"(or set {STATIC_ENV}=1 for the static HTML version)"
            ) from None
        style = {"description_width": "initial"}
        for c in self.controls:
            if c.kind == "slider":
                w = W.SelectionSlider(
                    options=list(zip(c.labels, c.values)), index=c.index, description=c.label,
                    # 18em left a 31 px track beside a long label and the readout: give the track room
                    continuous_update=True, style=style, layout=W.Layout(width="auto", min_width="32em"),
                )
            elif c.kind == "dropdown":
                w = W.Dropdown(
                    options=list(zip(c.labels, c.values)), index=c.index, description=c.label,
                    style=style, layout=W.Layout(width="auto"),
                )
            else:
                w = W.Checkbox(value=bool(c.value), description=c.label, indent=False,
                               layout=W.Layout(width="auto"))
            w.observe(self._on_change, names="index" if c.kind != "checkbox" else "value")
            self.widgets[c.name] = w
        t0 = time.perf_counter()
        self.kind, value, _ = _call(self.func, self.params(), check_extent=True)
        if self.kind == "png":
            value = _fast_png(value)
        self.last_update_ms = (time.perf_counter() - t0) * 1e3
        if self.kind == "png":
            self.output = W.Image(value=value, format="png", layout=W.Layout(max_width="100%", height="auto"))
        else:
            self.output = W.HTML(value=value)
        self._error = W.HTML(value="")
        controls = W.HBox(
            list(self.widgets.values()),
            layout=W.Layout(flex_flow="row wrap", align_items="center", grid_gap="0.3em 1.5em"),
        )
        self.box = W.VBox([controls, self.output, self._error])

    def _on_change(self, change=None):
        t0 = time.perf_counter()
        try:
            kind, value, _ = _call(self.func, self.params())
            if kind != self.kind:
                raise TypeError(
                    f"{self.name} returned a {'figure' if kind == 'png' else 'str'} after returning a "
                    f"{'figure' if self.kind == 'png' else 'str'}; it must always return the same kind"
                )
            if kind == "png":
                value = _fast_png(value)
        except Exception:  # show the error under the figure: a widget callback has no cell to fail
            import traceback

            self.last_error = traceback.format_exc()
            self._error.value = (
                '<pre style="color:#b00020;white-space:pre-wrap;font-size:0.8em">'
                f"{_html.escape(self.last_error)}</pre>"
            )
            return
        self.output.value = value
        self.last_error = None
        if self._error.value:
            self._error.value = ""
        self.last_update_ms = (time.perf_counter() - t0) * 1e3

    # --------------------------------------------------------------- static
    def _build_static(self):
        controls = self.controls
        combos = list(itertools.product(*(range(len(c.values)) for c in controls)))
        frames, seen, mapping, times = [], {}, {}, []
        kind, size, total = None, None, 0
        for n, combo in enumerate(combos):
            params = {c.name: c.values[i] for c, i in zip(controls, combo)}
            k, value, dt = _call(self.func, params, check_extent=n == 0)
            if k == "png":  # a live update also encodes a PNG: count it, so `dt` is what a reader waits
                t0 = time.perf_counter()
                _fast_png(value)
                dt += (time.perf_counter() - t0) * 1e3
            times.append(dt)
            self.last_update_ms = dt
            if kind is None:
                kind = k
            elif k != kind:
                raise TypeError(
                    f"{self.name} must always return the same kind of result, got a "
                    f"{'figure' if kind == 'png' else 'str'} and then a {'figure' if k == 'png' else 'str'} "
                    f"for {params}"
                )
            if kind == "png":  # identical pixels -> one frame
                rgb = value
                digest = hashlib.blake2b(repr(rgb.size).encode() + rgb.tobytes(), digest_size=16).digest()
            else:
                digest = hashlib.blake2b(value.encode("utf-8"), digest_size=16).digest()
            if digest not in seen:
                if kind == "png":
                    size = size or rgb.size
                    value = "data:image/png;base64," + base64.b64encode(_compress_png(rgb)).decode("ascii")
                seen[digest] = len(frames)
                frames.append(value)
                total += len(value)
                if total > MAX_BYTES:
                    raise ValueError(
                        f"interactive figure {self.name!r} weighs more than {MAX_BYTES / 1e6:g} MB after "
                        f"{len(frames)} of {len(combos)} frames; shrink the grid (fewer control values), "
                        f"the figure size, or its detail"
                    )
            mapping[",".join(map(str, combo))] = seen[digest]
        self.kind = kind
        default = ",".join(str(c.index) for c in controls)
        self.html = _static_html(self.name, controls, kind, frames, mapping, mapping[default], size)
        nbytes = len(self.html.encode("utf-8"))
        if nbytes > MAX_BYTES:
            raise ValueError(
                f"interactive figure {self.name!r} weighs {nbytes / 1e6:.2f} MB, more than "
                f"{MAX_BYTES / 1e6:g} MB; shrink the grid (fewer control values), the figure size, or its detail"
            )
        self.stats = {
            "frames": len(combos),
            "unique_frames": len(frames),
            "bytes": nbytes,
            "median_ms": round(statistics.median(times), 3),
            "max_ms": round(max(times), 3),
        }
        path = os.environ.get(TIMINGS_ENV)
        if path:
            line = json.dumps({"name": self.name, "cwd": os.getcwd(), **self.stats})
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")

    # -------------------------------------------------------------- display
    def _repr_mimebundle_(self, include=None, exclude=None, **kwargs):
        if self.static:
            return {"text/html": self.html, "text/plain": repr(self)}
        return self.box._repr_mimebundle_(include=include, exclude=exclude, **kwargs)

    def __repr__(self):
        ctrl = ", ".join(c.name for c in self.controls)
        mode = "static" if self.static else "live"
        extra = f", {self.stats['unique_frames']} frames" if self.stats else ""
        return f"<Interactive {self.name!r} ({mode}; controls: {ctrl}{extra})>"


def interactive(func, *controls, name=None):
    """Make an interactive figure: ``func(**values)`` redrawn as the reader moves controls.

    In a live kernel this builds ipywidgets that call ``func`` on every change. When the
    environment variable ``QREF_STATIC_WIDGETS`` is ``"1"`` (the static book build) it
    calls ``func`` once for every combination of control values (their cartesian product)
    and returns one self-contained HTML fragment: the controls as HTML inputs, all frames
    as compressed PNG data URIs (identical frames stored once) and a small inline script
    that switches between them.

    Parameters
    ----------
    func : callable
        ``func(**{control.name: value, ...})`` returns a :class:`matplotlib.figure.Figure`
        (rendered to PNG with an opaque white background at :data:`DPI` dots per inch, then
        closed) or a ``str`` (an HTML fragment, e.g. a table). Every control name must be a
        keyword parameter of ``func``, and every parameter without a default must have a
        control.
    *controls : Slider, Dropdown or Checkbox
        At least one, with distinct names. The product of their value counts must be at
        most :data:`MAX_COMBINATIONS` (200; aim for 150 or fewer).
    name : str, optional
        The figure's name, used in element ids and in the timings file. Default:
        ``func.__name__``.

    Returns
    -------
    Interactive
        Displays itself as the last expression of a cell. See :class:`Interactive` for
        its attributes (``last_update_ms``, and ``html``/``stats`` in static mode).

    Raises
    ------
    TypeError
        If ``func`` is not callable, a control is not a Slider, Dropdown or Checkbox,
        ``name`` is not a str, or ``func`` returns neither a Figure nor a str (or mixes
        the two).
    ValueError
        If there is no control, two controls share a name, a control name is not a keyword
        parameter of ``func``, a required parameter of ``func`` has no control, the grid has
        more than :data:`MAX_COMBINATIONS` combinations, or (static mode) the HTML would
        weigh more than :data:`MAX_BYTES`, or the figure's labels stick out of it (checked on
        the first frame: they would be cut off, since frames keep the figure's size).

    Notes
    -----
    Frames are saved at the figure's own size (not ``bbox_inches="tight"``), so the picture
    does not jump as the reader moves a control. Give the figure room for its labels with
    ``plt.subplots(..., layout="constrained")``, or, faster and perfectly steady, fixed
    margins with ``fig.subplots_adjust(left=..., bottom=...)``. Keep one update cheap:
    compute heavy things once outside ``func``; draw histograms with ``np.histogram`` and
    ``ax.stairs`` rather than ``ax.hist`` (one path instead of one patch per bin).

    Examples
    --------
    A function returning an HTML table, built as the static book builds it:

    >>> from unittest import mock
    >>> from qref.uniform import qrange
    >>> from qref.widgets import interactive, Slider, Checkbox
    >>> def code_range(bits=4, signed=True):
    ...     lo, hi = qrange(bits, signed=signed)
    ...     return f"<table><tr><td>{bits}-bit codes</td><td>{lo} ... {hi}</td></tr></table>"
    >>> with mock.patch.dict("os.environ", {"QREF_STATIC_WIDGETS": "1"}):
    ...     w = interactive(code_range, Slider("bits", [2, 4, 8], value=4), Checkbox("signed", value=True))
    >>> w.stats["frames"], w.stats["unique_frames"]
    (6, 6)
    >>> w.html.startswith('<div class="qref-widget"')
    True
    """
    _check_func(func, controls)
    if name is None:
        name = getattr(func, "__name__", None) or "figure"
    elif not isinstance(name, str) or not name.strip():
        raise TypeError(f"name must be a non-empty str or None, got {type(name).__name__} {name!r}")
    _check_grid(controls, name)
    static = os.environ.get(STATIC_ENV) == "1"
    return Interactive(func, controls, name, static)


# ------------------------------------------------------------------------ static HTML

_CSS = """
.qref-widget{margin:1.2em 0;padding:.7em .9em .8em;border:1px solid var(--pst-color-border,#d0d7de);
border-radius:.4em;color:var(--pst-color-text-base,inherit);background:var(--pst-color-surface,transparent)}
.qref-widget-controls{display:flex;flex-wrap:wrap;align-items:center;gap:.5em 1.8em;margin:0 0 .7em;
font-size:.9rem;line-height:1.4}
.qref-widget .qref-control{display:inline-flex;align-items:center;gap:.5em;margin:0;font-weight:normal;cursor:pointer}
.qref-widget .qref-control-label{font-weight:600}
.qref-widget input[type=range]{width:11em;margin:0;accent-color:var(--pst-color-primary,#0a7d91);cursor:pointer}
.qref-widget input[type=checkbox]{width:1.05em;height:1.05em;margin:0;accent-color:var(--pst-color-primary,#0a7d91)}
.qref-widget output{display:inline-block;min-width:3.5ch;padding:.05em .45em;border-radius:.3em;
font-family:var(--pst-font-family-monospace,monospace);font-size:.85rem;
background:rgba(127,127,127,.18);color:inherit}
.qref-widget select{font:inherit;font-size:.9rem;padding:.15em .4em;border-radius:.3em;
border:1px solid var(--pst-color-border,#aaa);color:var(--pst-color-text-base,inherit);
background:var(--pst-color-background,#fff);cursor:pointer}
.qref-widget img.qref-widget-view{display:block;max-width:100%;height:auto;margin:0;
background:#fff;border-radius:.25em}
.qref-widget div.qref-widget-view{overflow-x:auto}
"""

_JS = """(function(){
var s=document.currentScript,root=(s&&s.closest&&s.closest(".qref-widget"))||document.getElementById(%(id)s);
if(!root||root.getAttribute("data-qref-ready"))return;root.setAttribute("data-qref-ready","1");
var d=JSON.parse(root.querySelector("script.qref-widget-data").textContent);
var ins=root.querySelectorAll("[data-qref-control]"),view=root.querySelector(".qref-widget-view");
function update(){var key=[],alt=[];
for(var i=0;i<ins.length;i++){var el=ins[i],k=el.type==="checkbox"?(el.checked?1:0):parseInt(el.value,10);
key.push(k);alt.push(d.names[i]+"="+d.labels[i][k]);
if(el.type==="range"){var o=root.querySelector("output[for='"+el.id+"']");if(o)o.textContent=d.labels[i][k];}}
var f=d.map[key.join(",")];if(f===undefined)return;
if(d.kind==="png"){view.src=d.frames[f];view.alt=d.title+": "+alt.join(", ");}else{view.innerHTML=d.frames[f];}
root.setAttribute("data-qref-frame",String(f));}
for(var j=0;j<ins.length;j++){ins[j].addEventListener("input",update);ins[j].addEventListener("change",update);}
update();})();"""


def _static_html(name, controls, kind, frames, mapping, current, size):
    content = _json_for_script([frames, mapping]).encode("utf-8")
    uid = f"qref-{_slug(name)}-{next(_counter)}-" + hashlib.blake2b(content, digest_size=4).hexdigest()
    esc = _html.escape
    parts = [f'<div class="qref-widget" id="{uid}" data-qref-name="{esc(name)}" data-qref-frame="{current}">',
             f"<style>{_CSS.strip()}</style>", '<div class="qref-widget-controls">']
    for i, c in enumerate(controls):
        cid = f"{uid}-c{i}"
        label = f'<span class="qref-control-label">{esc(c.label)}</span>'
        if c.kind == "slider":
            parts.append(
                f'<label class="qref-control qref-slider" for="{cid}">{label}'
                f'<input type="range" id="{cid}" data-qref-control="{esc(c.name)}" min="0" '
                f'max="{len(c.values) - 1}" step="1" value="{c.index}" '
                f'aria-valuetext="{esc(c.labels[c.index])}">'
                f'<output for="{cid}">{esc(c.labels[c.index])}</output></label>'
            )
        elif c.kind == "dropdown":
            opts = "".join(
                f'<option value="{j}"{" selected" if j == c.index else ""}>{esc(lab)}</option>'
                for j, lab in enumerate(c.labels)
            )
            parts.append(
                f'<label class="qref-control qref-dropdown" for="{cid}">{label}'
                f'<select id="{cid}" data-qref-control="{esc(c.name)}">{opts}</select></label>'
            )
        else:
            checked = " checked" if c.index == 1 else ""
            parts.append(
                f'<label class="qref-control qref-checkbox" for="{cid}">'
                f'<input type="checkbox" id="{cid}" data-qref-control="{esc(c.name)}"{checked}>{label}</label>'
            )
    parts.append("</div>")
    title = f"{name}: " + ", ".join(f"{c.name}={c.labels[c.index]}" for c in controls)
    if kind == "png":
        w, h = size
        parts.append(
            f'<img class="qref-widget-view" src="{frames[current]}" width="{w}" height="{h}" alt="{esc(title)}">'
        )
    else:
        parts.append(f'<div class="qref-widget-view qref-widget-html">{frames[current]}</div>')
    data = {
        "kind": kind,
        "title": name,
        "names": [c.name for c in controls],
        "labels": [list(c.labels) for c in controls],
        "frames": frames,
        "map": mapping,
    }
    parts.append(f'<script type="application/json" class="qref-widget-data">{_json_for_script(data)}</script>')
    parts.append(f"<script>{_JS % {'id': json.dumps(uid)}}</script>")
    parts.append("</div>")
    return "\n".join(parts)
