"""The paper's Figure 1 for any set of runs: average regret and x_t against t."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping

import numpy as np

from amsgrad_optax.synthetic import _problems, _runner

#: The format written when the file name has no suffix (the suffix is added).
DEFAULT_FORMAT = "png"
_LINESTYLES = ("-", "--", "-.", ":")


def output_path(path: str | os.PathLike, *, check_writable: bool = False) -> tuple[str, str]:
  """Returns ``(file, format)``: the file :func:`plot_runs` writes for ``path``, and its format.

  The suffix picks the format; a name without one gets ``.png`` appended (as
  matplotlib does). Checks, without drawing anything, that matplotlib can
  write that format and, with ``check_writable``, that the file can be
  created, so that a long run does not end in an error.

  Args:
    path: the file name asked for.
    check_writable: also check that the folder exists and takes a new file
      (by creating and deleting a temporary one) and that an existing file
      can be overwritten.

  Returns:
    The file name that will be written, and the format name (``"png"``).

  Raises:
    ImportError: if matplotlib is not installed.
    ValueError: for a directory, a format matplotlib cannot write, a folder
      that does not exist, or a file or folder that cannot be written.

  Examples:
    >>> from amsgrad_optax.synthetic import _plot
    >>> _plot.output_path("figure1.svg")
    ('figure1.svg', 'svg')
    >>> _plot.output_path("figure1")
    ('figure1.png', 'png')
  """
  from matplotlib.figure import Figure

  path = os.fspath(path)
  if os.path.isdir(path):
    raise ValueError(
      f"{path!r} is a folder; give a file name such as {os.path.join(path, 'figure1.png')!r}"
    )
  ext = os.path.splitext(path)[1]
  fmt = ext[1:].lower()
  if not fmt:
    fmt = DEFAULT_FORMAT
    path = f"{path}.{fmt}"
    if os.path.isdir(path):
      raise ValueError(
        f"{path!r} is a folder; give a file name such as {os.path.join(path, 'figure1.png')!r}"
      )
  supported = sorted(Figure().canvas.get_supported_filetypes())
  if fmt not in supported:
    raise ValueError(
      f"matplotlib cannot write {ext!r} files ({path!r}); use one of "
      f"{', '.join('.' + s for s in supported)}"
    )
  if check_writable:
    check_writable_file(path)
  return path, fmt


def check_writable_file(path: str) -> None:
  """Raises ValueError unless ``path`` can be written (its folder exists and takes a new file).

  Nothing is left behind: a new file is probed with a temporary one, and an
  existing file is opened for writing without being truncated.

  Args:
    path: the file to be written.

  Raises:
    ValueError: for a folder, a folder that does not exist, or a file or
      folder that cannot be written.
  """
  if os.path.isdir(path):
    raise ValueError(f"{path!r} is a folder; give a file name")
  folder = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(folder):
    raise ValueError(f"the folder {folder!r} does not exist")
  try:
    if os.path.exists(path):
      with open(path, "r+b"):  # opened for writing, not truncated
        pass
    else:
      with tempfile.TemporaryFile(dir=folder):
        pass
  except OSError as e:
    raise ValueError(f"cannot write {path!r}: {e.strerror or e}") from None


def _final_label(value: float) -> str:
  """Returns a final average regret with the digits that tell curves apart (``0.330``)."""
  return f"{value:#.3g}" if abs(value) >= 1e-3 else f"{value:.2e}"


def plot_runs(
  results: Mapping[str, _runner.RunResult],
  path: str | os.PathLike,
  *,
  problem: _problems.Problem | None = None,
  title: str | None = None,
  format: str | None = None,
) -> str:
  r"""Writes a figure of :math:`R_t/t` and :math:`x_t` against :math:`t`, one curve per run.

  Two panels side by side, as in Figure 1 of the paper: the average regret
  (on a log scale when it stays positive over the second half of the run,
  which sets its range) and the iterate, both against
  :math:`t` on a log scale, so that the first thousands of steps, where Adam
  is pushed to the worst point, are as visible as the long drift that
  follows. One legend below the panels names the runs, with each one's
  final :math:`R_T/T`. matplotlib is imported only here,
  and draws through its Agg canvas, so no display is needed.

  Args:
    results: maps a label (``"adam"``, ``"amsgrad (pytorch)"``) to a
      :class:`RunResult` run with ``trace_every`` set.
    path: the image file to write; its suffix picks the format, and
      ``.png`` is appended when it has none (see :func:`output_path`).
    problem: draws the optimum :math:`x^*` and the feasible interval if given.
    title: the figure's title.
    format: the format, as :func:`output_path` returns it; None to take it
      from ``path``.

  Returns:
    The file written.

  Raises:
    ValueError: if a run has no trace, or for a format matplotlib cannot write.
    ImportError: if matplotlib is not installed (``pip install
      'amsgrad-optax[plot]'``).
  """
  traces = {}
  for label, res in results.items():
    if res.trace is None:
      raise ValueError(f"results[{label!r}] has no trace: run it with trace_every set")
    traces[label] = res.trace
  try:
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
  except ImportError as e:
    raise ImportError("plotting needs matplotlib: pip install 'amsgrad-optax[plot]'") from e
  if format is None:
    path, format = output_path(path)
  path = os.fspath(path)

  fig = Figure(figsize=(11, 4.8), layout="constrained")
  ax_r, ax_x = fig.subplots(1, 2)
  for i, (label, tr) in enumerate(traces.items()):
    # The final value in the legend: it reads exactly, and overlaps no curve.
    name = f"{label}, $R_T/T$ = {_final_label(float(tr.avg_regret[-1]))}"
    # Runs that coincide (conventions that agree) stay visible: each its own dash.
    style = {"linewidth": 1.4, "linestyle": _LINESTYLES[i % len(_LINESTYLES)]}
    (line,) = ax_r.plot(tr.t, tr.avg_regret, label=name, **style)
    ax_x.plot(tr.t, tr.x, color=line.get_color(), **style)
  for ax in (ax_r, ax_x):
    ax.set_xscale("log")
    ax.set_xlabel("$t$")
    ax.grid(True, which="major", alpha=0.35)
    ax.grid(True, which="minor", alpha=0.12)
  # The y range follows the second half of the run on the log-t axis: the first
  # steps' swings (R_t/t of hundreds, or negative before the first large
  # gradient) would flatten what follows; they run off the top or bottom.
  tails = []
  for tr in traces.values():
    t = np.asarray(tr.t, np.float64)
    tails.append(np.asarray(tr.avg_regret, np.float64)[t >= np.sqrt(t[0] * t[-1])])
  tail = np.concatenate(tails)
  tail = tail[np.isfinite(tail)]
  if tail.size and tail.min() > 0:
    low, high = tail.min() / 1.4, tail.max() * 1.4
    ax_r.set_yscale("log", nonpositive="mask")
    ax_r.set_ylim(low, high)
    # Enough labelled ticks that a value such as 0.33 reads off the axis: every
    # 1..9 within a decade or so, 1, 2, 3, 5 over a few, the powers of 10 beyond.
    decades = np.log10(high / low)
    subs: tuple[float, ...] = (
      (1.0,) if decades > 4 else (1.0, 2.0, 3.0, 5.0) if decades > 1.5 else tuple(range(1, 10))
    )
    ax_r.yaxis.set_major_locator(LogLocator(subs=subs))
    ax_r.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax_r.yaxis.set_minor_formatter(NullFormatter())
  elif tail.size:
    low, high = float(tail.min()), float(tail.max())
    pad = 0.1 * max(high - low, abs(high), 1e-12)
    ax_r.set_ylim(min(low - pad, 0.0), high + pad)
  ax_r.set_ylabel("$R_t / t$")
  ax_r.set_title("average regret")
  ax_x.set_ylabel("$x_t$")
  ax_x.set_title("iterate")
  if problem is not None:
    ax_x.axhline(problem.x_star, color="0.3", linestyle="--", linewidth=1, label="$x^*$")
    pad = 0.05 * (problem.upper - problem.lower)
    ax_x.set_ylim(problem.lower - pad, problem.upper + pad)
  # One legend for both panels, below them: it covers no curve.
  handles, labels = ax_r.get_legend_handles_labels()
  x_handles, x_labels = ax_x.get_legend_handles_labels()
  fig.legend(
    handles + x_handles,
    labels + x_labels,
    loc="outside lower center",
    ncol=min(len(labels) + len(x_labels), 3),
    frameon=False,
  )
  if title:
    fig.suptitle(title)
  fig.savefig(path, dpi=120, format=format)
  return path
