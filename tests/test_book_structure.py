"""Every chapter has what the project promises a chapter has (checked on the sources).

Learning goals, theory with citations, code that calls ``qref``, at least one interactive
figure, a "Check it against the paper" section whose code asserts, exercises with solutions,
and a summary; chapters are MyST Markdown notebooks with a jupytext header, listed in the
table of contents and in the preface's map of chapters. The build and the browser test check
that all of this executes and renders; this test checks that none of it is missing.
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOC = (ROOT / "_toc.yml").read_text(encoding="utf-8")
CHAPTERS = [name for name in re.findall(r"file:\s*book/(\w+)", TOC) if name not in ("preface", "bibliography")]


def _code_cells(text):
    return re.findall(r"```\{code-cell\}[^\n]*\n(.*?)```", text, flags=re.S)


def _section(text, title):
    """The text of the level-2 section ``title``, up to the next level-2 heading."""
    m = re.search(rf"^## {re.escape(title)}\s*$(.*?)(?=^## |\Z)", text, flags=re.S | re.M)
    return m.group(1) if m else None


def test_toc_lists_every_chapter_file():
    on_disk = {p.stem for p in (ROOT / "book").glob("*.md")} - {"preface", "bibliography"}
    assert set(CHAPTERS) == on_disk, f"in the toc but not on disk, or the reverse: {set(CHAPTERS) ^ on_disk}"
    assert len(CHAPTERS) == len(set(CHAPTERS))


@pytest.mark.parametrize("name", CHAPTERS)
def test_chapter_has_every_part(name):
    text = (ROOT / "book" / f"{name}.md").read_text(encoding="utf-8")
    assert text.startswith("---\njupytext:"), "a MyST notebook starts with its jupytext header"
    assert "format_name: myst" in text.split("---")[1]
    assert re.search(r"```\{admonition\} Learning goals", text), "no Learning goals admonition"
    assert re.search(r"\{cite(:[tp])?\}`", text), "no {cite} reference"
    cells = _code_cells(text)
    assert any(re.search(r"\bqref\b", c) for c in cells), "no code cell uses qref"
    assert any("interactive(" in c for c in cells), "no interactive figure"
    check = _section(text, "Check it against the paper")
    assert check is not None, "no 'Check it against the paper' section"
    assert any(re.search(r"^\s*assert\b", c, flags=re.M) for c in _code_cells(check)), \
        "the paper check asserts nothing"
    exercises = re.findall(r"```\{exercise\}", text)
    solutions = re.findall(r"```\{solution-start\}", text)
    assert exercises and len(solutions) == len(exercises), \
        f"{len(exercises)} exercises, {len(solutions)} solutions"
    assert _section(text, "Summary"), "no Summary section"


def test_preface_maps_every_chapter():
    preface = (ROOT / "book" / "preface.md").read_text(encoding="utf-8")
    mapped = re.findall(r"\{doc\}`(\w+)`", preface)
    missing = [c for c in CHAPTERS if c not in mapped]
    assert not missing, f"chapters missing from the preface's map: {missing}"


@pytest.mark.parametrize("name", CHAPTERS + ["preface"])
def test_no_custom_tex_macros(name):
    # JupyterLab (Binder) renders the maths with KaTeX, which knows only standard LaTeX: the
    # book once had \round, \clip, \E and \R defined for MathJax alone, and they showed as
    # raw source with a warning sign there. Write the expansion out instead.
    text = (ROOT / "book" / f"{name}.md").read_text(encoding="utf-8")
    found = re.findall(r"\\(?:round|clip)\{|\\[ER](?![A-Za-z])|_\\(?:min|max)\b", text)
    assert not found, f"macros or constructs KaTeX rejects: {sorted(set(found))}"
