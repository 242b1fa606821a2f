"""Sphinx extension with the book's own build glue (loaded from `_config.yml`).

1. Static interactive figures. Before any chapter executes it sets ``QREF_STATIC_WIDGETS=1``.
   The Jupyter kernels that myst-nb starts inherit the environment, so
   :func:`qref.widgets.interactive` renders every combination of its controls at build time
   and emits a self-contained HTML widget that works in the published book, where no kernel
   runs. It also points ``QREF_WIDGET_TIMINGS`` at ``_build/widget_timings.jsonl`` so
   ``make bench`` can report how long one widget update takes.
2. Executed notebooks for download. myst-nb publishes each chapter's *executed* notebook
   as ``_build/html/_sources/<chapter>.ipynb`` (also offered by the theme's download
   button); every chapter page links to it at the top, where a reader looks first.
3. A workaround for an upstream console error: sphinx-thebe 0.3.1 registers its inline
   ``const THEBE_JS_URL = ...`` script from a handler that runs once per read, so with
   Sphinx 7.4 the script lands in every page twice and the second copy throws
   "Identifier 'THEBE_JS_URL' has already been declared". Duplicates are dropped here.
"""

from __future__ import annotations

import os
from pathlib import Path


def _build_root(app):
    # app.outdir is <root>/_build/html
    return Path(app.outdir).parent


def _set_environment(app):
    os.environ.setdefault("QREF_STATIC_WIDGETS", "1")
    timings = _build_root(app) / "widget_timings.jsonl"
    timings.parent.mkdir(parents=True, exist_ok=True)
    timings.write_text("")
    os.environ.setdefault("QREF_WIDGET_TIMINGS", str(timings))


def _is_notebook(app, docname):
    meta = app.env.metadata.get(docname, {})
    return "kernelspec" in meta or "jupytext" in meta


def _add_download_link(app, pagename, templatename, context, doctree):
    if doctree is None or not _is_notebook(app, pagename) or "body" not in context:
        return
    depth = pagename.count("/")
    href = "../" * depth + f"_sources/{pagename}.ipynb"
    link = (
        '<p class="qref-download"><a href="{}" download>'
        "Download this chapter as an executed notebook (.ipynb)</a> (to run it in Colab: "
        "File &gt; Upload notebook), or launch it live in Binder with the rocket button at the top "
        "of the page.</p>\n"
    ).format(href)
    context["body"] = link + context["body"]


def _drop_duplicate_scripts(app, pagename, templatename, context, doctree):
    scripts, seen = [], set()
    for js in context.get("script_files", []):
        # the two copies differ only in filename None vs "": compare on content and attributes
        attrs = tuple(sorted((k, str(v)) for k, v in getattr(js, "attributes", {}).items()))
        key = (str(getattr(js, "filename", js) or ""), attrs)
        if key not in seen:
            seen.add(key)
            scripts.append(js)
    context["script_files"] = scripts


def setup(app):
    app.connect("builder-inited", _set_environment)
    app.connect("html-page-context", _add_download_link)
    app.connect("html-page-context", _drop_duplicate_scripts)
    return {"version": "0.1", "parallel_read_safe": True, "parallel_write_safe": True}
