"""Run every ``bench_*.py`` in this folder and write ``benchmarks/results.md``.

Each benchmark module exposes ``run() -> list of rows``, a row being a dict with keys
``benchmark``, ``qref_s`` (seconds), ``baseline`` (what it is compared with), ``baseline_s``,
``ratio`` (``qref_s / baseline_s``), ``target`` (the largest acceptable ratio, or None) and
``note``. This script prints one Markdown table of all rows, measured in one run on this
machine, under a header naming the machine and the library versions, followed by the book's
timings when the book has been built:

* ``_build/book_timing.json`` (written by ``benchmarks/book_timing.py`` after the build): the
  build time and each chapter's execution time; without it, the execution times are read
  from the Sphinx environment the build left in ``_build/.doctrees``;
* ``_build/widget_timings.jsonl`` (appended by :mod:`qref.widgets` when the environment
  variable ``QREF_WIDGET_TIMINGS`` names it during the build): per interactive figure, the
  time of one update (median / max) and the page weight.

Missing files give "not built yet", never an error. Speed targets live here, not in the
tests: a timing assertion in a test fails at random on a busy machine.

Usage: ``python benchmarks/run.py [--build _build] [--only uniform] [--repeats 7] [--no-write]``
(a benchmark module's ``run`` must accept ``repeats=`` for ``--repeats``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results.md"
NOT_BUILT = "not built yet"
UPDATE_BUDGET_MS = 100  #: one live update of an interactive figure
PAGE_BUDGET_BYTES = 3_000_000  #: page weight of one static interactive figure

sys.path.insert(0, str(HERE))  # book_timing, next to this file
sys.path.insert(1, str(ROOT))  # qref from the checkout, even when it is not installed

import book_timing  # noqa: E402


def _load(path):
    spec = importlib.util.spec_from_file_location(f"benchmarks.{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _loadavg():
    try:
        return "%.2f %.2f %.2f" % os.getloadavg()
    except (AttributeError, OSError):
        return "n/a"


def _versions():
    import numpy

    lines = [f"numpy {numpy.__version__}"]
    try:
        import numba
    except ImportError:
        lines.append("numba not installed (the numpy twins run)")
    else:
        try:
            layer = numba.threading_layer()
        except ValueError:  # no parallel region has run yet
            layer = "not initialized"
        lines.append(f"numba {numba.__version__} ({numba.get_num_threads()} threads, threading layer {layer})")
    return lines


def header(load_before):
    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    return [
        "# Benchmarks",
        "",
        f"Measured {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by `python benchmarks/run.py`, "
        "all rows in one run on one machine.",
        "",
        f"- CPU: {_cpu_model()}, {cores} logical core(s) ({usable} usable by this process)",
        f"- Python {platform.python_version()}, " + ", ".join(_versions()),
        f"- load average (1, 5, 15 min) before: {load_before}, after: {_loadavg()}"
        " (other processes on the machine inflate every time; the ratios are timed interleaved)",
        "",
    ]


def _fmt_s(seconds):
    if seconds is None:
        return "n/a"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} µs"


def benchmark_table(rows):
    lines = [
        "## Kernels",
        "",
        "Ratio = qref time / baseline time, best of N after a warm-up (lower is better).",
        "",
        "| benchmark | qref | baseline | baseline time | ratio | target | note |",
        "|---|---:|---|---:|---:|:---:|---|",
    ]
    for r in rows:
        target = r.get("target")
        if target is None:
            tgt = "–"
        else:
            tgt = f"≤ {target:g} " + ("✓" if r["ratio"] <= target else "✗ missed")
        lines.append(
            f"| {r['benchmark']} | {_fmt_s(r['qref_s'])} | {r['baseline']} | {_fmt_s(r['baseline_s'])} "
            f"| {r['ratio']:.2f} | {tgt} | {r.get('note', '')} |"
        )
    return lines + [""]


def book_section(build_dir):
    lines = ["## Book build", ""]
    timing_file = build_dir / book_timing.OUTPUT
    build_s, chapters, execution, source = None, None, {}, None
    if timing_file.exists():
        try:
            data = json.loads(timing_file.read_text(encoding="utf-8"))
            build_s, chapters = data.get("build_s"), data.get("chapters") or {}
            execution, source = data.get("execution") or {}, timing_file
        except (OSError, ValueError, AttributeError) as err:
            lines += [f"`{timing_file}` is unreadable ({err}).", ""]
    if chapters is None:
        try:
            records = book_timing.chapter_times(build_dir)
        except FileNotFoundError:
            return lines + [f"Book: {NOT_BUILT} (no `{timing_file}` nor `{build_dir / book_timing.ENV_PICKLE}`).", ""]
        except Exception as err:  # an environment pickle of another Sphinx version, a truncated file
            return lines + [f"Book: could not read `{build_dir / book_timing.ENV_PICKLE}` ({err!r}).", ""]
        chapters = {doc: r["runtime"] for doc, r in records.items()}
        execution = {doc: r for doc, r in records.items()}
        source = build_dir / book_timing.ENV_PICKLE
    lines.append(f"Source: `{source}`.")
    lines.append("")
    lines.append(f"- build time: {_fmt_s(build_s) if build_s is not None else 'not recorded'}")
    total = sum(t for t in chapters.values() if t is not None)
    lines.append(f"- chapter execution, total: {_fmt_s(total)} over {len(chapters)} notebook(s)")
    lines.append("")
    if chapters:
        lines += ["| chapter | execution time | method | succeeded |", "|---|---:|---|:---:|"]
        for doc, t in sorted(chapters.items(), key=lambda kv: -(kv[1] or 0)):
            info = execution.get(doc) or {}
            ok = info.get("succeeded")
            lines.append(f"| {doc} | {_fmt_s(t)} | {info.get('method') or ''} "
                         f"| {'' if ok is None else ('yes' if ok else '**no**')} |")
        lines.append("")
    return lines


def _number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _unit(value, factor, fmt, unit):
    return "n/a" if value is None else f"{value * factor:{fmt}} {unit}"


def widget_section(build_dir):
    lines = ["## Interactive figures", ""]
    path = build_dir / "widget_timings.jsonl"
    if not path.exists():
        return lines + [f"Widget timings: {NOT_BUILT} (no `{path}`; build with `QREF_WIDGET_TIMINGS={path}`).", ""]
    latest, bad = {}, 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            key = (str(rec.get("cwd", "")), str(rec["name"]))
        except (ValueError, KeyError, TypeError, AttributeError):
            bad += 1
            continue
        latest[key] = rec  # a rebuild appends again: keep the last record of each figure
    lines.append(f"Source: `{path}` (last record per figure" + (f"; {bad} unreadable line(s) skipped" if bad else "")
                 + "). Update time = calling the figure function and rendering one frame. Budget: median update "
                 f"≤ {UPDATE_BUDGET_MS} ms, page weight ≤ {PAGE_BUDGET_BYTES / 1e6:g} MB per figure.")
    lines.append("")
    if not latest:
        return lines + ["No figure recorded.", ""]
    lines += ["| figure | folder | frames (unique) | page weight | update median | update max | budget |",
              "|---|---|---:|---:|---:|---:|:---:|"]
    total = 0
    for (cwd, name), rec in sorted(latest.items()):
        try:
            cwd_rel = os.path.relpath(cwd, ROOT) if cwd else ""
        except ValueError:
            cwd_rel = cwd
        nbytes, median = _number(rec.get("bytes")), _number(rec.get("median_ms"))
        total += nbytes or 0
        over = [what for what, bad in (("slow", median is not None and median > UPDATE_BUDGET_MS),
                                       ("heavy", nbytes is not None and nbytes > PAGE_BUDGET_BYTES)) if bad]
        lines.append(f"| {name} | {cwd_rel} | {rec.get('frames', 'n/a')} ({rec.get('unique_frames', 'n/a')}) "
                     f"| {_unit(nbytes, 1e-6, '.2f', 'MB')} | {_unit(median, 1, '.1f', 'ms')} "
                     f"| {_unit(_number(rec.get('max_ms')), 1, '.1f', 'ms')} | {'✗ ' + ', '.join(over) if over else '✓'} |")
    lines += ["", f"Total page weight of the figures: {total / 1e6:.2f} MB.", ""]
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", default=str(ROOT / "_build"), help="the book's build folder (default: _build)")
    parser.add_argument("--only", help="run only bench_<ONLY>.py")
    parser.add_argument("--repeats", type=int, help="best of how many timed calls (default: each benchmark's own)")
    parser.add_argument("--no-write", action="store_true", help=f"print only, do not write {RESULTS.name}")
    args = parser.parse_args(argv)

    load_before = _loadavg()
    rows = []
    pattern = f"bench_{args.only}.py" if args.only else "bench_*.py"
    for path in sorted(HERE.glob(pattern)):
        t = time.perf_counter()
        kwargs = {} if args.repeats is None else {"repeats": args.repeats}
        module_rows = _load(path).run(**kwargs)
        print(f"{path.name}: {len(module_rows)} row(s) in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        rows += module_rows

    build_dir = Path(args.build)
    lines = header(load_before) + benchmark_table(rows) + book_section(build_dir) + widget_section(build_dir)
    text = "\n".join(lines).rstrip() + "\n"
    print(text)
    if not args.no_write:
        RESULTS.write_text(text, encoding="utf-8")
        print(f"wrote {RESULTS}", file=sys.stderr)
    missed = [r["benchmark"] for r in rows if r.get("target") is not None and r["ratio"] > r["target"]]
    if missed:
        print("targets missed: " + "; ".join(missed), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
