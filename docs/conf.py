"""Sphinx configuration for the amsgrad-optax documentation."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MPLBACKEND", "Agg")

import amsgrad_optax  # noqa: E402

project = "amsgrad-optax"
author = "amsgrad-optax developers"
release = amsgrad_optax.__version__
copyright = "2026, amsgrad-optax developers"

extensions = [
  "sphinx.ext.autodoc",
  "sphinx.ext.napoleon",
  "sphinx.ext.mathjax",
  "sphinx.ext.viewcode",
  "myst_nb",
]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "jupyter_execute", ".jupyter_cache", "**.ipynb_checkpoints"]
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3

autodoc_typehints = "description"
autodoc_member_order = "bysource"
# Print the aliases by name: expanded, jax.typing.ArrayLike is a union of eight types.
autodoc_type_aliases = {
  name: name
  for name in (
    "jax.typing.ArrayLike",
    "optax.ScalarOrSchedule",
    "optax.Schedule",
    "optax.Updates",
    "optax.Params",
    "optax.OptState",
  )
}
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# Notebooks are executed once per build and cached between builds; a cell error fails it.
nb_execution_mode = "cache"
nb_execution_cache_path = str(ROOT / "docs" / "_build" / ".jupyter_cache")
nb_execution_timeout = 300
nb_execution_raise_on_error = True
nb_execution_show_tb = True

html_theme = "furo"
html_title = f"amsgrad-optax {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]  # wrapped console text, full-width figures
# MathJax is served with the pages (from the sphinx-mathjax-offline package), not from a CDN:
# the site renders its formulas offline.
mathjax_path = "mathjax/tex-chtml.js"

GENERATED = ROOT / "docs" / "_generated"


def _copy_notebooks(_app) -> None:
  """The notebooks live in notebooks/; Sphinx reads only below docs/."""
  dest = ROOT / "docs" / "notebooks"
  dest.mkdir(exist_ok=True)
  for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
    shutil.copy2(nb, dest / nb.name)


def _cli_outputs(_app) -> None:
  """Captures the CLI's --help (and a short run) so the CLI page is never stale."""
  GENERATED.mkdir(exist_ok=True)
  cli = [sys.executable, "-m", "amsgrad_optax.synthetic"]
  env = {**os.environ, "PYTHONPATH": str(ROOT)}
  runs = {
    "cli_help.txt": [*cli, "--help"],
    "cli_run.txt": [*cli, "--steps", "100000", "--quiet"],
    "cli_json.txt": [*cli, "--steps", "100000", "--quiet", "--json"],
  }
  if not (ROOT / "amsgrad_optax" / "synthetic").is_dir():
    return
  for name, cmd in runs.items():
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, timeout=300)
    (GENERATED / name).write_text(out.stdout)


def _copy_mathjax(app, exc) -> None:
  if exc is not None:
    return
  package = importlib.util.find_spec("sphinx-mathjax-offline")
  if package is None or not package.submodule_search_locations:
    raise RuntimeError("pip install sphinx-mathjax-offline (the docs extra) to render formulas")
  src = pathlib.Path(package.submodule_search_locations[0]) / "static" / "mathjax"
  shutil.copytree(src, pathlib.Path(app.outdir) / "_static" / "mathjax", dirs_exist_ok=True)


def setup(app):
  app.connect("build-finished", _copy_mathjax)
  app.connect("builder-inited", _copy_notebooks)
  app.connect("builder-inited", _cli_outputs)
