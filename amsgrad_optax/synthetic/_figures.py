"""The paper's Figure 1 with its settings, and Theorem 1 as a phase map of the (C, b2) plane.

Each figure is one function that runs everything it shows, writes the image
and returns (and optionally writes) a JSON-ready dict of the numbers drawn:
``amsgrad-synthetic --figure1 FILE`` and ``--phase-map FILE`` call them.

Settings, and where each comes from (Reddi, Kale & Kumar, ICLR 2018):

- problems: Section 5, :math:`f_t(x) = 1010x` for :math:`t \\bmod 101 = 1`,
  else :math:`-10x`, and the stochastic version (1010x with probability
  0.01, else -10x), :math:`x \\in [-1, 1]`;
- :math:`\\beta_1 = 0.9`, :math:`\\beta_2 = 0.99` for both optimizers
  ("to enable fair comparison", Section 5);
- step size: Section 5 does not give the synthetic experiment's. We use the
  theory's :math:`\\alpha_t = \\alpha/\\sqrt{t}` (Section 2, Theorem 4) and
  choose :math:`\\alpha` per optimizer and problem by a grid, as the paper
  chose its real-data step sizes ("The parameters alpha and beta2 are chosen
  by grid search"): :data:`ALPHA_GRID`, scored by the final average regret
  :math:`R(T)/T` (the quantity of Figure 1), averaged over held-out seeds;
- horizon: the paper does not state it; :math:`T = 10^7` (the command
  line's default);
- steps are counted as everywhere in this library (see
  :func:`~amsgrad_optax.synthetic.online`): the online problem's
  :math:`t = 0, 1, \\dots`, so its large gradient comes at the second step.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from amsgrad_optax.synthetic import _optimizers, _problems, _runner, _sweep

#: The grid of :math:`\alpha` in :math:`\alpha_t = \alpha/\sqrt{t}` that Figure 1 chooses from.
ALPHA_GRID: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
#: Figure 1's decay rates (Section 5 of the paper).
FIGURE1_BETAS: dict[str, float] = {"b1": 0.9, "b2": 0.99}
#: Figure 1's horizon.
FIGURE1_STEPS = 10_000_000
#: Figure 1's stochastic seeds drawn, and the held-out seeds that choose alpha.
FIGURE1_SEEDS: tuple[int, ...] = tuple(range(8))
SELECTION_SEEDS: tuple[int, ...] = tuple(range(100, 108))
#: The phase map's default grid: 40 values of C and 40 of b2, both log-spaced.
PHASE_MAP_C: tuple[float, ...] = tuple(np.round(np.geomspace(2.2, 100.0, 40), 4).tolist())
PHASE_MAP_B2: tuple[float, ...] = tuple(np.round(np.geomspace(1e-3, 0.99, 40), 6).tolist())
PHASE_MAP_STEPS = 1_000_000


# ------------------------------------------------------------------ traces on a log-t grid


def _segments(steps: int, period: int | None) -> list[tuple[int, int]]:
  """Returns ``(block, n_blocks)`` pairs: about 90 points per decade of t, then the end.

  Blocks of half a period and more are rounded to whole periods of an online
  problem (from :math:`t = 10^3` on for the period 101), so from then on
  every point falls at the same phase of the period and the curve shows the
  drift, not an alias of the within-period sawtooth.
  """
  out, done, decade = [], 0, 0
  while done < steps:
    hi = min(10 ** (decade + 1), steps)
    block = max(1, 10**decade // 10)
    if period and 2 * block >= period:
      block = max(1, round(block / period)) * period
    n = (hi - done) // block
    if n:
      out.append((block, n))
      done += n * block
    if hi == steps and done < steps:
      out.append((steps - done, 1))
      done = steps
    decade += 1
  return out


def log_traces(
  problem: _problems.Problem,
  tx,
  steps: int,
  seeds: Sequence[int] = (0,),
) -> dict[str, np.ndarray]:
  """Returns :math:`x_t` and :math:`R(t)/t` of every seed at about 90 log-spaced t per decade.

  One compiled call: the seeds run under ``vmap``, each a step-by-step scan
  in segments of growing blocks (the trajectory is the one
  :func:`~amsgrad_optax.synthetic.run` follows; only the points recorded differ).

  Args:
    problem: the problem.
    tx: an optax transformation.
    steps: :math:`T`.
    seeds: the seeds of the stochastic coins.

  Returns:
    ``{"t": (P,), "x": (S, P), "avg_regret": (S, P)}``, ``t`` the steps done.

  Examples:
    >>> import optax
    >>> from amsgrad_optax import synthetic
    >>> tr = synthetic.log_traces(synthetic.online(), optax.sgd(0.0), 250)
    >>> tr["t"][[0, 9, 10, -1]].tolist(), tr["x"].shape  # every step to 100, then every 10
    ([1, 10, 11, 250], (1, 115))
  """
  _runner._check_problem(problem)
  steps = _runner._check_steps(steps, problem)
  segments = _segments(steps, getattr(problem, "period", None))
  pieces, done = [], 0
  for block, n in segments:
    pieces.append(done + block * np.arange(1, n + 1, dtype=np.int64))
    done += block * n
  t = np.concatenate(pieces)
  gaps = np.diff(t, prepend=0).astype(np.int32)
  max_gap = int(gaps.max())

  def one(key):
    # One scan over the recorded points, each a traced number of steps:
    # a single loop body to compile, whatever the number of segments.
    stepper = _runner._Stepper(problem, tx, key, _runner.DEFAULT_UNROLL)
    carry = _runner._init_carry(problem, tx, jnp.float32)

    def body(c, n):
      c = stepper.dynamic_steps(c, n, max_gap)
      return c, (c.x, _runner._avg(c, problem.first_step))

    _, out = jax.lax.scan(body, carry, jnp.asarray(gaps))
    return out

  keys = jax.vmap(jax.random.key)(jnp.asarray(list(seeds), jnp.int32))
  x, avg = jax.jit(jax.vmap(one))(keys)
  return {
    "t": t,
    "x": np.asarray(x, np.float64),
    "avg_regret": np.asarray(avg, np.float64),
  }


# ------------------------------------------------------------------ Figure 1


def choose_alpha(
  problem: _problems.Problem,
  optimizer: str,
  steps: int,
  *,
  grid: Sequence[float] = ALPHA_GRID,
  seeds: Sequence[int] = SELECTION_SEEDS,
  convention: str = "pytorch",
) -> dict[str, Any]:
  r"""Returns the :math:`\alpha` of ``grid`` with the lowest mean :math:`R(T)/T`, and every score.

  Every :math:`(\alpha, \text{seed})` runs :math:`\alpha_t = \alpha/\sqrt{t}`
  with Figure 1's betas, in one compiled call (:func:`sweep`).

  Args:
    problem: the problem.
    optimizer: ``"adam"`` or ``"amsgrad"`` (any name of :data:`OPTIMIZERS`).
    steps: :math:`T`.
    grid: the values of :math:`\alpha`.
    seeds: the seeds the score is averaged over (one suffices for an online problem).
    convention: the AMSGrad convention.

  Returns:
    ``{"alpha": best, "grid": [...], "mean_avg_regret": [...], "median_x_final": [...]}``.
  """
  seeds = list(seeds) if problem.stochastic else [0]
  table = _sweep.sweep(
    problem,
    steps,
    {"learning_rate": list(grid)},
    optimizer=optimizer,
    seeds=seeds,
    defaults={**FIGURE1_BETAS, "eps": 1e-8},
    convention=convention,
    lr_schedule="inverse-sqrt",
  )
  shape = (len(grid), len(seeds))
  score = table["avg_regret"].reshape(shape).mean(axis=1)
  x_med = np.median(table["x_final"].reshape(shape), axis=1)
  best = int(np.argmin(score))
  return {
    "alpha": float(grid[best]),
    "grid": [float(a) for a in grid],
    "mean_avg_regret": score.tolist(),
    "median_x_final": x_med.tolist(),
    "seeds": seeds,
  }


def _summary(values: np.ndarray) -> dict[str, list[float]]:
  q = np.quantile(values, [0.0, 0.25, 0.5, 0.75, 1.0], axis=0)
  return {k: q[i].tolist() for i, k in enumerate(("min", "q25", "median", "q75", "max"))}


def figure1(
  path: str | os.PathLike | None = None,
  *,
  steps: int = FIGURE1_STEPS,
  seeds: Sequence[int] = FIGURE1_SEEDS,
  convention: str = "pytorch",
  alpha_grid: Sequence[float] = ALPHA_GRID,
  selection_seeds: Sequence[int] = SELECTION_SEEDS,
  json_path: str | os.PathLike | None = None,
) -> dict[str, Any]:
  r"""Returns (and draws) the paper's Figure 1: Adam and AMSGrad, online and stochastic.

  Four panels: :math:`R(t)/t` and :math:`x_t` of the online problem, the
  same of the stochastic one (the paper draws three: it omits the
  stochastic regret), against :math:`t` on a log axis. Each optimizer runs
  :math:`\alpha_t = \alpha/\sqrt{t}` with the :math:`\alpha` that
  :func:`choose_alpha` picks from ``alpha_grid`` on ``selection_seeds``
  (held out from the seeds drawn); the stochastic panels draw the median
  over ``seeds`` with the interquartile band and the min-max band. See the
  module docstring for the source of every setting.

  Args:
    path: the image to write (its suffix picks the format); None to draw nothing.
    steps: :math:`T`.
    seeds: the stochastic problem's seeds drawn.
    convention: AMSGrad's convention.
    alpha_grid: the values of :math:`\alpha` to choose from.
    selection_seeds: the stochastic seeds that choose :math:`\alpha`.
    json_path: where to write the returned dict as JSON; None for nowhere.

  Returns:
    A JSON-ready dict: the settings, the grid scores and chosen
    :math:`\alpha`, the curves drawn and each run's final :math:`x_T` and
    :math:`R(T)/T`, and the wall time.
  """
  t_start = time.perf_counter()
  if path is not None:
    _check_writable(path, "path")
  if json_path is not None:
    _check_writable(json_path, "json_path")
  seeds = [int(s) for s in seeds]
  if len(seeds) < 1:
    raise ValueError(f"seeds must hold at least one seed, got {seeds!r}")
  panels = {}
  for pname in ("online", "stochastic"):
    problem = _problems.make_problem(pname)
    runs = {}
    for name in ("adam", "amsgrad"):
      label = name if name == "adam" else f"amsgrad ({convention})"
      chosen = choose_alpha(
        problem,
        name,
        steps,
        grid=alpha_grid,
        seeds=selection_seeds,
        convention=convention,
      )
      tx = _optimizers.make_optimizer(
        name,
        chosen["alpha"],
        **FIGURE1_BETAS,
        convention=convention,
        lr_schedule="inverse-sqrt",
      )
      run_seeds = seeds if problem.stochastic else [0]
      tr = log_traces(problem, tx, steps, run_seeds)
      runs[label] = {
        "optimizer": name,
        "convention": convention if name == "amsgrad" else None,
        "alpha": chosen["alpha"],
        "alpha_selection": chosen,
        "seeds": run_seeds,
        "x_final": tr["x"][:, -1].tolist(),
        "avg_regret_final": tr["avg_regret"][:, -1].tolist(),
        "x": _summary(tr["x"]),
        "avg_regret": _summary(tr["avg_regret"]),
        "t": tr["t"].tolist(),
      }
    panels[pname] = {"description": problem.describe(), "runs": runs}
  out = {
    "figure": "figure1",
    "source": "Reddi, Kale & Kumar (ICLR 2018), Section 5 and Figure 1",
    "steps": steps,
    "betas": dict(FIGURE1_BETAS),
    "eps": 1e-8,
    "lr_schedule": "inverse-sqrt",
    "alpha_grid": [float(a) for a in alpha_grid],
    "alpha_criterion": "lowest mean final R(T)/T over the selection seeds",
    "selection_seeds": [int(s) for s in selection_seeds],
    "seeds": seeds,
    "step_count": "t = 0, 1, ... (the online problem's large gradient at the second step)",
    "panels": panels,
  }
  if path is not None:
    _draw_figure1(out, path)
  out["seconds"] = time.perf_counter() - t_start
  if json_path is not None:
    _write_json(out, json_path)
  return out


_COLORS = {"adam": "tab:red", "amsgrad": "tab:blue"}


def _draw_figure1(data: dict[str, Any], path) -> None:
  Figure = _figure_class()
  fig = Figure(figsize=(13.5, 7.6), layout="constrained")
  axes = fig.subplots(2, 2)
  for row, pname in enumerate(("online", "stochastic")):
    panel = data["panels"][pname]
    ax_r, ax_x = axes[row]
    for label, run in panel["runs"].items():
      t = np.asarray(run["t"])
      color = _COLORS[run["optimizer"]]
      name = f"{label}, alpha = {run['alpha']:g}"
      for ax, key in ((ax_r, "avg_regret"), (ax_x, "x")):
        s = run[key]
        if len(run["seeds"]) > 1:
          ax.fill_between(t, s["min"], s["max"], color=color, alpha=0.12, linewidth=0)
          ax.fill_between(t, s["q25"], s["q75"], color=color, alpha=0.3, linewidth=0)
        ax.plot(t, s["median"], color=color, linewidth=1.4, label=name)
    n = len(next(iter(panel["runs"].values()))["seeds"])
    spread = f" (median, IQR and range of {n} seeds)" if n > 1 else ""
    # R(t)/t is negative while x_t > x* meets the small gradients: a
    # symmetric log axis shows those steps instead of dropping them.
    ax_r.set_yscale("symlog", linthresh=1e-2)
    ax_r.axhline(0.0, color="0.3", linewidth=0.8)
    ax_r.set(xscale="log", xlabel="t", ylabel="R(t) / t")
    ax_r.set_title(f"{pname}: average regret{spread}", fontsize=10)
    ax_x.set(xscale="log", xlabel="t", ylabel="$x_t$", ylim=(-1.08, 1.08))
    ax_x.set_title(f"{pname}: iterate{spread}", fontsize=10)
    ax_x.axhline(-1.0, color="0.3", linestyle="--", linewidth=0.9, label="x* = -1")
    for ax in (ax_r, ax_x):
      ax.grid(True, which="major", alpha=0.3)
    ax_x.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, borderaxespad=0)
  fig.suptitle(
    f"Figure 1 of Reddi et al. (2018): {data['steps']:,} steps, alpha_t = alpha/sqrt(t) "
    f"(alpha by grid), b1 = {data['betas']['b1']}, b2 = {data['betas']['b2']}",
    fontsize=11,
  )
  fig.savefig(os.fspath(path), dpi=110)


# ------------------------------------------------------------------ Theorem 1


def theorem1_drift(c: float, b2: float) -> float:
  r"""Returns Adam's net step per period, in units of :math:`\alpha`, on Theorem 1's problem in steady state.

  With :math:`\beta_1 = 0` and no :math:`\epsilon`, Adam's step is
  :math:`-\alpha g_t/\sqrt{v_t}`. The gradients repeat :math:`C, -1, -1`,
  so :math:`v_t` tends to the 3-periodic solution
  :math:`v_1 = (1-\beta_2)(C^2 + \beta_2 + \beta_2^2)/(1-\beta_2^3)`,
  :math:`v_2 = \beta_2 v_1 + 1 - \beta_2`, :math:`v_3 = \beta_2 v_2 + 1 - \beta_2`,
  and one period moves :math:`x` by :math:`\alpha D` (a slowly varying
  :math:`\alpha_t` aside) with

  .. math:: D = \frac{1}{\sqrt{v_2}} + \frac{1}{\sqrt{v_3}} - \frac{C}{\sqrt{v_1}}.

  :math:`D > 0`: :math:`x` drifts to (and is held at) +1, the worst point;
  :math:`D < 0`: it drifts to the optimum -1. This is derived here, not in
  the paper, and holds as :math:`t \to \infty` (bias corrections vanish).

  Args:
    c: :math:`C`.
    b2: :math:`\beta_2`, in [0, 1).

  Returns:
    :math:`D`.

  Examples:
    >>> from amsgrad_optax import synthetic
    >>> round(synthetic.theorem1_drift(3.0, 0.0), 6)  # v = g^2: steps -1, +1, +1
    1.0
    >>> synthetic.theorem1_drift(3.0, 0.1) > 0  # the theorem's b2 = 1/(1+C^2)
    True
  """
  a = 1.0 - b2
  v1 = a * (c * c + b2 + b2 * b2) / (1.0 - b2**3)
  v2 = b2 * v1 + a
  v3 = b2 * v2 + a
  return 1.0 / math.sqrt(v2) + 1.0 / math.sqrt(v3) - c / math.sqrt(v1)


def theorem1_boundary(c: float) -> float:
  r"""Returns the :math:`\beta_2` where :func:`theorem1_drift` changes sign: Adam fails below it.

  Args:
    c: :math:`C` > 2.

  Returns:
    :math:`\beta_2^*(C)`, by bisection on :math:`\log(\beta_2)` to 1e-12.

  Examples:
    >>> from amsgrad_optax import synthetic
    >>> round(synthetic.theorem1_boundary(3.0), 4)
    0.4723
  """
  _problems.theorem1(c)
  lo, hi = 1e-12, 1.0 - 1e-12  # drift > 0 at lo (Adam fails), < 0 at hi
  for _ in range(200):
    mid = math.sqrt(lo * hi)
    if theorem1_drift(c, mid) > 0:
      lo = mid
    else:
      hi = mid
    if hi - lo < 1e-12 * hi:
      break
  return math.sqrt(lo * hi)


def theorem1_quoted_bound(c: float) -> float:
  r"""Returns :math:`\min\{C^{-4/(C-2)}, 1 - (9/(2C))^2\}`, the bound on :math:`\beta_2` quoted for Theorem 1's problem.

  The ICLR 2022 blog-track post "Does Adam Converge and When?" (Zhang, Chen
  & Luo) quotes Reddi et al. as proving that Adam does not converge on this
  problem when :math:`\beta_2 \le` this value. It is negative (no
  :math:`\beta_2` qualifies) for :math:`C \le 4.5`.

  Args:
    c: :math:`C` > 2.

  Returns:
    The bound (may be negative).
  """
  return min(c ** (-4.0 / (c - 2.0)), 1.0 - (9.0 / (2.0 * c)) ** 2)


def theorem1_phase_map(
  path: str | os.PathLike | None = None,
  *,
  c: Sequence[float] = PHASE_MAP_C,
  b2: Sequence[float] = PHASE_MAP_B2,
  steps: int = PHASE_MAP_STEPS,
  learning_rate: float = 1.0,
  lr_schedule: str = "inverse-sqrt",
  convention: str = "pytorch",
  json_path: str | os.PathLike | None = None,
) -> dict[str, Any]:
  r"""Returns (and draws) where Adam and AMSGrad end on Theorem 1's problem over the (C, b2) plane.

  Every :math:`(C, \beta_2)` cell runs :math:`f_t(x) = Cx` for
  :math:`t \bmod 3 = 1`, else :math:`-x`, on :math:`[-1, 1]` from
  :math:`x_1 = 1`, with :math:`\beta_1 = 0` (the theorem's) and
  :math:`\alpha_t = 1/\sqrt{t}` (the paper: "for theoretical analysis, one
  requires :math:`\alpha_t = 1/\sqrt{t}`"), one compiled call per optimizer
  (:func:`theorem1_sweep`). Drawn over the map: the theorem's
  :math:`\beta_2 = 1/(1 + C^2)` (Section 3 of the paper), the bound of
  :func:`theorem1_quoted_bound`, and the steady-state boundary of
  :func:`theorem1_boundary`.

  Args:
    path: the image to write; None to draw nothing.
    c: the values of :math:`C` (> 2).
    b2: the values of :math:`\beta_2`.
    steps: :math:`T`.
    learning_rate: :math:`\alpha`.
    lr_schedule: ``"inverse-sqrt"`` or ``"constant"``.
    convention: AMSGrad's convention.
    json_path: where to write the returned dict as JSON.

  Returns:
    A JSON-ready dict: the settings, ``rows`` (one per cell and optimizer:
    ``C``, ``b1``, ``b2``, ``x_final``, ``avg_regret``), the boundaries,
    counts of where each optimizer ends (and for Adam, in how many cells the
    side it ends on, :math:`x_T > 0` or not, is the side
    :func:`theorem1_drift` predicts), and the wall times.
  """
  t_start = time.perf_counter()
  for p, name in ((path, "path"), (json_path, "json_path")):
    if p is not None:
      _check_writable(p, name)
  c = [float(v) for v in c]
  b2 = [float(v) for v in b2]
  tables, seconds = {}, {}
  for name in ("adam", "amsgrad"):
    t0 = time.perf_counter()
    tables[name] = _sweep.theorem1_sweep(
      c,
      steps,
      {"b2": b2},
      optimizer=name,
      defaults={"learning_rate": learning_rate, "b1": 0.0},
      convention=convention,
      lr_schedule=lr_schedule,
    )
    seconds[name] = time.perf_counter() - t0
  shape = (len(c), len(b2))
  drift = np.asarray([[theorem1_drift(ci, bj) for bj in b2] for ci in c])
  predicted_fail = drift > 0
  summary = {}
  for name, tab in tables.items():
    x = tab["x_final"].reshape(shape)
    summary[name] = {
      "cells": int(x.size),
      "ends_near_plus_1": int((x > 0.9).sum()),
      "ends_near_minus_1": int((x < -0.9).sum()),
    }
    if name == "adam":  # the boundary is Adam's
      summary[name]["agrees_with_boundary"] = int(((x > 0) == predicted_fail).sum())
  rows = []
  for name, tab in tables.items():
    for r in _sweep.table_rows(tab):
      rows.append({"optimizer": name, "convention": convention if name == "amsgrad" else None, **r})
  out = {
    "figure": "theorem1_phase_map",
    "source": "Reddi, Kale & Kumar (ICLR 2018), Theorem 1 (Section 3)",
    "steps": steps,
    "learning_rate": learning_rate,
    "lr_schedule": lr_schedule,
    "convention": convention,
    "b1": 0.0,
    "C": c,
    "b2": b2,
    "boundary_b2": [theorem1_boundary(ci) for ci in c],
    "theorem_b2": [1.0 / (1.0 + ci * ci) for ci in c],
    "quoted_bound_b2": [theorem1_quoted_bound(ci) for ci in c],
    "summary": summary,
    "grid_seconds": seconds,
    "rows": rows,
  }
  if path is not None:
    _draw_phase_map(out, tables, path)
  out["seconds"] = time.perf_counter() - t_start
  if json_path is not None:
    _write_json(out, json_path)
  return out


def _edges(values: np.ndarray) -> np.ndarray:
  """Returns cell edges for log-spaced centres."""
  logs = np.log(values)
  mids = (logs[1:] + logs[:-1]) / 2
  return np.exp(np.concatenate([[2 * logs[0] - mids[0]], mids, [2 * logs[-1] - mids[-1]]]))


def _draw_phase_map(data: dict[str, Any], tables, path) -> None:
  Figure = _figure_class()
  c = np.asarray(data["C"])
  b2 = np.asarray(data["b2"])
  fig = Figure(figsize=(12, 4.8), layout="constrained")
  axes = fig.subplots(1, 2, sharey=True)
  fine = np.geomspace(c.min(), c.max(), 400)
  quoted = np.asarray([theorem1_quoted_bound(v) for v in fine])
  for ax, name in zip(axes, ("adam", "amsgrad"), strict=True):
    x = tables[name]["x_final"].reshape(len(c), len(b2)).T
    if len(c) > 1 and len(b2) > 1:
      im = ax.pcolormesh(_edges(c), _edges(b2), x, cmap="RdBu_r", vmin=-1, vmax=1)
    else:
      im = ax.scatter(np.repeat(c, len(b2)), np.tile(b2, len(c)), c=x.T.ravel(), cmap="RdBu_r")
    ax.plot(fine, [theorem1_boundary(v) for v in fine], "k-", lw=1.6, label="steady-state boundary")
    ax.plot(fine, 1 / (1 + fine**2), "k--", lw=1.2, label="theorem: b2 = 1/(1+C^2)")
    ok = quoted > 0
    ax.plot(fine[ok], quoted[ok], "k:", lw=1.6, label="quoted bound (blog, 2022)")
    if len(c) > 1 and len(b2) > 1:
      ce, be = _edges(c), _edges(b2)
      ax.set(xlim=(ce[0], ce[-1]), ylim=(be[0], min(be[-1], 1.0)))
    ax.set(xscale="log", yscale="log", xlabel="C")
    label = "Adam" if name == "adam" else f"AMSGrad ({data['convention']})"
    s = data["summary"][name]
    ax.set_title(
      f"{label}: x_T at +1 in {s['ends_near_plus_1']}, at -1 in {s['ends_near_minus_1']} "
      f"of {s['cells']} cells",
      fontsize=10,
    )
  axes[0].set_ylabel("b2")
  axes[0].legend(loc="lower left", fontsize=8)
  fig.colorbar(im, ax=axes, label="$x_T$ (red: the worst point +1, blue: the optimum -1)")
  fig.suptitle(
    f"Theorem 1's problem (Cx once every 3 steps, else -x): {data['steps']:,} steps, b1 = 0, "
    f"alpha_t = {data['learning_rate']:g}/sqrt(t)"
    if data["lr_schedule"] == "inverse-sqrt"
    else f"Theorem 1's problem: {data['steps']:,} steps, b1 = 0, alpha = {data['learning_rate']:g}",
    fontsize=11,
  )
  fig.savefig(os.fspath(path), dpi=110)


# ------------------------------------------------------------------ helpers


def _figure_class():
  try:
    from matplotlib.figure import Figure
  except ImportError as e:
    raise ImportError("drawing needs matplotlib: pip install 'amsgrad-optax[plot]'") from e
  return Figure


def _check_writable(path, name: str) -> None:
  folder = os.path.dirname(os.path.abspath(os.fspath(path)))
  if not os.path.isdir(folder):
    raise ValueError(f"{name}: the folder {folder!r} does not exist")


def _write_json(data: dict[str, Any], path) -> None:
  with open(os.fspath(path), "w") as f:
    json.dump(data, f, indent=1, allow_nan=False)
    f.write("\n")


def json_beside(path: str | os.PathLike) -> str:
  """Returns the path of the JSON file written beside an image: ``fig1.png`` -> ``fig1.json``."""
  root, _ = os.path.splitext(os.fspath(path))
  return root + ".json"
