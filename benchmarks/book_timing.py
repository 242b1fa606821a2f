"""Write ``<build>/book_timing.json``: the book's build time and each chapter's execution time.

After ``jupyter-book build``, myst-nb (1.x) keeps one execution record per notebook in the
Sphinx environment pickle ``<build>/.doctrees/environment.pickle``:
``env.nb_metadata[docname]["exec_data"]`` is a dict with ``runtime`` (seconds), ``method``
(``"force"``, ``"cache"``, ...), ``succeeded``, ``error``, ``traceback`` and ``mtime``. This
script reads those records and writes::

    {"build_s": 183.2,                                  # wall time of the whole build, or null
     "chapters": {"book/rounding": 4.1, ...},           # execution seconds per notebook
     "execution": {"book/rounding": {"method": "force", "succeeded": true}, ...},
     "source": "_build/.doctrees/environment.pickle", "written": "2026-...Z"}

The build time is not in the pickle: pass it (``--build-seconds 183.2``) or the POSIX time the
build started (``--since $T0``), e.g. in the Makefile::

    T0=$$(date +%s); jupyter-book build --warningiserror . && \\
        python benchmarks/book_timing.py _build --since $$T0

``benchmarks/run.py`` reads the JSON file (and, if it is missing, calls :func:`chapter_times`
itself, without a build time).
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ENV_PICKLE = Path(".doctrees") / "environment.pickle"
OUTPUT = "book_timing.json"


class _Stub(dict):
    """Stands in for a class the pickle names but this interpreter cannot import.

    Sphinx pickles its whole environment, which holds objects of every extension the book
    uses (a local extension, sphinx-proof, bibtex, ...) and of Sphinx itself (when this runs
    without Sphinx installed). The execution records themselves are plain dicts, so the other
    objects only need to unpickle into *something*: a dict that also takes list items.
    """

    def __new__(cls, *args, **kwargs):
        return dict.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def append(self, item):
        self.setdefault("_items", []).append(item)

    def extend(self, items):
        self.setdefault("_items", []).extend(items)

    add = append
    __hash__ = object.__hash__  # stubs may be keys of other dicts

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slots)
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.__dict__.update(state)

    def __call__(self, *args, **kwargs):  # a stubbed function used as a reconstructor
        return _Stub()


class _TolerantUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return type(name, (_Stub,), {"__module__": module})


def chapter_times(build_dir):
    """Execution records of the notebooks of a built book.

    Parameters
    ----------
    build_dir : str or Path
        The build folder (``_build``), holding ``.doctrees/environment.pickle``.

    Returns
    -------
    dict
        ``{docname: {"runtime": seconds or None, "method": str, "succeeded": bool}}``, in the
        order of the document names; empty if the book has no executed notebooks.

    Raises
    ------
    FileNotFoundError
        If the environment pickle does not exist (the book was not built).
    """
    path = Path(build_dir) / ENV_PICKLE
    with open(path, "rb") as fh:
        env = _TolerantUnpickler(fh).load()
    metadata = getattr(env, "nb_metadata", None) or {}
    records = {}
    for docname in sorted(metadata):
        data = (metadata[docname] or {}).get("exec_data")
        if not data:
            continue
        runtime = data.get("runtime")
        records[docname] = {
            "runtime": None if runtime is None else float(runtime),
            "method": data.get("method"),
            "succeeded": bool(data.get("succeeded")),
        }
    return records


def write_timing(build_dir, build_s=None):
    """Write ``<build_dir>/book_timing.json`` and return its content as a dict."""
    build_dir = Path(build_dir)
    records = chapter_times(build_dir)
    result = {
        "build_s": None if build_s is None else round(float(build_s), 3),
        "chapters": {doc: r["runtime"] for doc, r in records.items()},
        "execution": {doc: {"method": r["method"], "succeeded": r["succeeded"]} for doc, r in records.items()},
        "source": str(build_dir / ENV_PICKLE),
        "written": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    (build_dir / OUTPUT).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("build_dir", nargs="?", default="_build", help="the book's build folder (default: _build)")
    when = parser.add_mutually_exclusive_group()
    when.add_argument("--build-seconds", type=float, help="wall time of the build, in seconds")
    when.add_argument("--since", type=float, help="POSIX time at which the build started (date +%%s)")
    args = parser.parse_args(argv)
    build_s = args.build_seconds
    if args.since is not None:
        build_s = time.time() - args.since
    if build_s is not None and build_s < 0:
        parser.error(f"the build time must be >= 0 seconds, got {build_s}")
    try:
        result = write_timing(args.build_dir, build_s)
    except FileNotFoundError:
        print(f"book_timing: no {Path(args.build_dir) / ENV_PICKLE}: build the book first", file=sys.stderr)
        return 1
    print(f"book_timing: {len(result['chapters'])} chapter(s), build {result['build_s']} s "
          f"-> {Path(args.build_dir) / OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
