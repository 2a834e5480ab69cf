"""The paper's Figure 1 for any set of runs: average regret and x_t against t."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from amsgrad_optax.synthetic import _problems, _runner


def plot_runs(
  results: Mapping[str, _runner.RunResult],
  path: str | os.PathLike,
  *,
  problem: _problems.Problem | None = None,
  title: str | None = None,
) -> None:
  r"""Writes a figure of :math:`R(t)/t` and :math:`x_t` against :math:`t`, one curve per run.

  Two panels side by side, as in Figure 1 of the paper: the average regret
  (on a log scale when it stays positive) and the iterate. matplotlib is
  imported only here, and draws through its Agg canvas, so no display is
  needed.

  Args:
    results: maps a label (``"adam"``, ``"amsgrad (pytorch)"``) to a
      :class:`RunResult` run with ``trace_every`` set.
    path: the image file to write; its suffix picks the format (``.png``).
    problem: draws the optimum :math:`x^*` and the feasible interval if given.
    title: the figure's title.

  Raises:
    ValueError: if a run has no trace.
    ImportError: if matplotlib is not installed (``pip install
      'amsgrad-optax[plot]'``).
  """
  for label, res in results.items():
    if res.trace is None:
      raise ValueError(f"results[{label!r}] has no trace: run it with trace_every set")
  try:
    from matplotlib.figure import Figure
  except ImportError as e:
    raise ImportError("plotting needs matplotlib: pip install 'amsgrad-optax[plot]'") from e

  fig = Figure(figsize=(11, 4.2), layout="constrained")
  ax_r, ax_x = fig.subplots(1, 2)
  all_positive = True
  for label, res in results.items():
    tr = res.trace
    ax_r.plot(tr.t, tr.avg_regret, label=label, linewidth=1.4)
    ax_x.plot(tr.t, tr.x, label=label, linewidth=1.4)
    all_positive &= bool(np.all(np.asarray(tr.avg_regret) > 0))
  if all_positive:
    ax_r.set_yscale("log")
  ax_r.set_xlabel("t")
  ax_r.set_ylabel("R(t) / t")
  ax_r.set_title("average regret")
  ax_x.set_xlabel("t")
  ax_x.set_ylabel("x_t")
  ax_x.set_title("iterate")
  if problem is not None:
    ax_x.axhline(problem.x_star, color="0.4", linestyle="--", linewidth=1, label="x*")
    pad = 0.05 * (problem.upper - problem.lower)
    ax_x.set_ylim(problem.lower - pad, problem.upper + pad)
  for ax in (ax_r, ax_x):
    ax.grid(True, alpha=0.3)
    ax.legend()
  if title:
    fig.suptitle(title)
  fig.savefig(os.fspath(path), dpi=120)
