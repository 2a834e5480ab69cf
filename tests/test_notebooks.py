"""Every notebook executes top to bottom, in a kernel running this interpreter.

The kernel is ``python3``; jupyter_client starts a kernelspec whose command
is ``python`` with ``sys.executable``, so the notebooks see the packages of
the environment running the tests. ``AMSGRAD_NOTEBOOK_FAST=1`` shrinks the
notebooks' training budgets (each documents it in its first cell).
"""

from __future__ import annotations

import os
import pathlib
import sys

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_the_three_stories_are_there():
  names = {p.stem for p in NOTEBOOKS}
  assert {"synthetic", "conventions", "flax_digits"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_clean(path):
  nb = nbformat.read(path, as_version=4)
  assert nb.cells[0].cell_type == "markdown", "the first cell says what you will see"
  for cell in nb.cells:
    if cell.cell_type == "code":
      assert cell.outputs == [] and cell.execution_count is None, (
        f"{path.name} has outputs: strip them before committing "
        "(jupyter nbconvert --clear-output --inplace)"
      )


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path, monkeypatch):
  monkeypatch.setenv("AMSGRAD_NOTEBOOK_FAST", "1")
  monkeypatch.setenv("MPLBACKEND", "Agg")
  # The kernel runs in notebooks/: make the package importable from a source
  # checkout too, not only from an installed one.
  paths = [str(ROOT), os.environ.get("PYTHONPATH", "")]
  monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
  nb = nbformat.read(path, as_version=4)
  nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
  client = nbclient.NotebookClient(
    nb,
    kernel_name="python3",
    timeout=300,
    resources={"metadata": {"path": str(path.parent)}},
  )
  client.execute()
  errors = [
    o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
  ]
  assert not errors
  printed = "".join(o.get("text", "") for o in nb.cells[-1].outputs).strip()
  assert os.path.realpath(printed) == os.path.realpath(sys.executable)
