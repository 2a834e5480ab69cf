"""``amsgrad-synthetic``: the paper's synthetic experiment from the command line.

The command works in three stages, each in its own functions: :func:`_validate`
checks every flag, value and output destination and returns a :class:`_Plan`
(a usage error exits 2 before anything runs); :func:`_execute` runs the plan,
keeping what finished when interrupted; :func:`_emit_header` and
:func:`_emit` print the results, as a table or as strict JSON. ``--figure1``
and ``--phase-map`` go the same way through :func:`_validate_figures`,
:func:`_execute_figures` and :func:`_emit_figures`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TextIO

import numpy as np

from amsgrad_optax import _conventions
from amsgrad_optax.synthetic import _fast, _optimizers, _problems, _runner, _sweep

PROG = "amsgrad-synthetic"
_DEFAULT_STEPS = 10_000_000
_DEFAULT_SWEEP = {"b1": [0.0, 0.5, 0.9], "b2": [0.9, 0.99, 0.999, 0.9999]}
_DEFAULT_HP = {"learning_rate": 1e-2, "b1": 0.9, "b2": 0.99, "eps": 1e-8}
_DEFAULT_THEOREM1_C = 3.0
#: The stochastic problem's default lr: alpha of the paper's alpha/sqrt(t), Figure 1's AMSGrad pick.
_STOCHASTIC_LR = 1.0
#: Below this many steps a run takes milliseconds: no progress bar.
_PROGRESS_MIN_STEPS = 1 << 21
_PLOT_POINTS = 2000
#: The dtype every run computes in; hyperparameters are checked in it.
_DTYPE = np.float32
#: The exit status after an interrupt (128 + SIGINT), as shells report it.
_EXIT_INTERRUPTED = 130

#: Each hyperparameter's flag, and the optimizers that use it.
_FLAGS = {"learning_rate": "--lr", "b1": "--b1", "b2": "--b2", "eps": "--eps"}
_USED_BY = {
  "learning_rate": ("adam", "amsgrad", "adamnc", "sgd"),
  "b1": ("adam", "amsgrad", "adamnc"),
  "b2": ("adam", "amsgrad"),
  "eps": ("adam", "amsgrad", "adamnc"),
}
_SWEEP_FLAGS = {"learning_rate": "sweep_lr", "b1": "sweep_b1", "b2": "sweep_b2", "eps": "sweep_eps"}

_EPILOG = """\
examples:
  amsgrad-synthetic                                  # Adam vs AMSGrad, 10^7 steps
  amsgrad-synthetic --convention pytorch optax --json
  amsgrad-synthetic --steps 1e6 --plot figure1.png
  amsgrad-synthetic --problem stochastic --seed 3     # lr 1/sqrt(t), the paper's setting
  amsgrad-synthetic --problem theorem1 --theorem1-c 5  # b1 = 0, b2 = 1/(1+C^2)
  amsgrad-synthetic --problem theorem1 --theorem1-c 3 6 12 --b2 0.01 0.1 0.5 --json
  amsgrad-synthetic --figure1 fig1.png               # the paper's Figure 1 (+ fig1.json)
  amsgrad-synthetic --phase-map theorem1.png         # Theorem 1 over (C, b2) (+ .json)
  amsgrad-synthetic --sweep --sweep-b1 0 0.9 --sweep-b2 0.9 0.99 0.999 --steps 1e6
  amsgrad-synthetic --optimizer adam --b1 0 0.5 0.9 --b2 0.9 0.99 0.999 --steps 1e6 --json
  amsgrad-synthetic --engine scan                   # the step-by-step scan, not the fast engine

hyperparameters:
  Every run computes in float32, and every value is checked there: a value
  that float32 rounds to an invalid one (--b2 0.99999999 rounds to 1) or
  cannot hold (--lr 1e300) is an error that names the nearest valid value.

--json output (strict JSON: no NaN or Infinity tokens):
  problem, description, steps, seed, engine; hyperparameters: each a number,
  or a list for the swept ones, and lr_schedule; interrupted: true when
  Ctrl-C stopped the command (the runs that finished are listed); plot:
  the file written, with --plot.
  single runs: results, one object per run: label, optimizer, convention
    (null but for amsgrad), x_final, avg_regret (R(T)/T), regret (R(T)),
    steps, seconds, compile_seconds, diverged.
  sweeps: sweep, one object per run: label, optimizer, convention,
    learning_rate, b1, b2, eps, seed, x_final, regret, avg_regret, steps,
    ends_at ("x*", "worst", "-" or "diverged"), diverged; and grid, seeds,
    seconds, grid_seconds. With several --theorem1-c values each row has its
    C too, the document lists them in C, and b2 is "1/(1+C^2)" unless given.
  figures: figure1 and/or phase_map, each the JSON also written beside its
    image (fig1.png -> fig1.json); and interrupted.
  diverged is true when x_final or the regret is not finite; such a number
  is written as null.

Ctrl-C prints the runs that finished (the table, or the JSON with
"interrupted": true), says so on stderr and exits 130. Single runs and
sweeps on the fast engine stop within a fraction of a second (a sweep keeps
the grids of the optimizers that finished and drops the one it was
running); a sweep on --engine scan stops when the grid it is running
returns, and a figure (--figure1, --phase-map) when it is done, before the
next one starts (press Ctrl-C twice to stop at once).

exit status: 0 done; 2 bad arguments (one line on stderr, before anything
runs); 1 an output file that could not be written; 130 interrupted.
"""


class _Parser(argparse.ArgumentParser):
  """An ArgumentParser whose errors are one line: ``amsgrad-synthetic: error: ...``."""

  def error(self, message: str) -> NoReturn:
    self.exit(2, f"{self.prog}: error: {message}\n")


class _UsageError(ValueError):
  """A command line that cannot run: exits 2 with the message, before anything runs."""


def _steps(text: str) -> int:
  """Parses a step count: ``10000000``, ``10_000_000`` or ``1e7``."""
  try:
    value = int(text)
  except ValueError:
    try:
      as_float = float(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if not as_float.is_integer():
      raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    value = int(as_float)
  if value < 1:
    raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
  return value


def _positive_int(text: str) -> int:
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
  if value < 1:
    raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
  return value


def _seed(text: str) -> int:
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"must be an integer in [0, 2**31), got {text!r}") from None
  if not 0 <= value < 2**31:
    raise argparse.ArgumentTypeError(f"must be an integer in [0, 2**31), got {text!r}")
  return value


def build_parser() -> argparse.ArgumentParser:
  """Returns the command line's argument parser."""
  p = _Parser(
    prog=PROG,
    # Wrapped by hand: the raw formatter keeps the epilog's layout, and lines.
    description=(
      "Run the synthetic experiments of Reddi, Kale & Kumar (ICLR 2018), where Adam\n"
      "provably converges to the worst point and AMSGrad to the optimum, compiled\n"
      "with JAX: by default on the blocked, time-parallel fast engine."
    ),
    epilog=_EPILOG,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument(
    "--problem",
    choices=_problems.PROBLEMS,
    default="online",
    help="online: 1010x once every 101 steps, else -10x; stochastic: 1010x with "
    "probability 0.01, else -10x; theorem1: Cx once every 3 steps, else -x (default: online)",
  )
  p.add_argument(
    "--optimizer",
    nargs="+",
    choices=_optimizers.OPTIMIZERS,
    default=["adam", "amsgrad"],
    metavar="NAME",
    help=f"one or several of {', '.join(_optimizers.OPTIMIZERS)} (default: adam amsgrad)",
  )
  p.add_argument(
    "--convention",
    nargs="+",
    choices=_conventions.CONVENTIONS,
    default=None,
    metavar="NAME",
    help="AMSGrad convention(s), one run each: "
    f"{', '.join(_conventions.CONVENTIONS)} (default: pytorch; amsgrad only)",
  )
  p.add_argument(
    "--steps",
    type=_steps,
    default=None,
    help="number of steps T, e.g. 1e6 (default: 10,000,000; --phase-map: 1,000,000)",
  )
  p.add_argument(
    "--lr",
    type=float,
    nargs="+",
    default=None,
    help="learning rate (default: 0.01; stochastic: 1, with --lr-schedule inverse-sqrt; "
    "--phase-map: 1); several values run their grid with the other multi-valued "
    "hyperparameters, as one compiled call",
  )
  p.add_argument(
    "--lr-schedule",
    choices=_optimizers.LR_SCHEDULES,
    default=None,
    help="constant, or inverse-sqrt for the paper's lr/sqrt(t) (default: constant; "
    "stochastic and --phase-map: inverse-sqrt)",
  )
  p.add_argument(
    "--b1",
    type=float,
    nargs="+",
    default=None,
    help="first-moment decay (default: 0.9; theorem1: 0); several values: a grid",
  )
  p.add_argument(
    "--b2",
    type=float,
    nargs="+",
    default=None,
    help="second-moment decay (default: 0.99; theorem1: 1/(1+C^2)); several values: a grid",
  )
  p.add_argument(
    "--eps", type=float, nargs="+", default=None, help="epsilon (default: 1e-8); several: a grid"
  )
  p.add_argument(
    "--engine",
    choices=_runner.ENGINES,
    default="auto",
    help="fast: the blocked, time-parallel engine (records no curve, so no --plot); scan: "
    "the step-by-step lax.scan; auto: fast where it applies (default: auto)",
  )
  p.add_argument(
    "--theorem1-c",
    type=float,
    nargs="+",
    default=None,
    metavar="C",
    help="C of --problem theorem1, > 2 (default: 3); several values run every (C, b1, b2, "
    "...) cell, one compiled call per optimizer, each JSON row carrying its C; with "
    "--phase-map, the map's C axis",
  )
  p.add_argument(
    "--seed",
    type=_seed,
    default=None,
    help="seed of --problem stochastic, or the first of --figure1's (default: 0)",
  )
  p.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
  p.add_argument(
    "--plot",
    metavar="FILE.png",
    default=None,
    help="write R(t)/t and x_t against t, one curve per run (needs matplotlib); the "
    "suffix picks the format, .png when there is none",
  )
  p.add_argument(
    "--trace-every",
    type=_positive_int,
    default=None,
    metavar="K",
    help=f"record x_t and R(t)/t every K steps for --plot (default: about "
    f"steps/{_PLOT_POINTS}, a whole number of periods for online problems)",
  )
  p.add_argument("--quiet", action="store_true", help="no progress bar")
  _add_figure_flags(p)
  g = p.add_argument_group(
    "sweep",
    "Run a grid of hyperparameters (and seeds) as one batch per optimizer, sharded\n"
    "over the devices when there are several; on the fast engine in calls of about\n"
    "0.1 s (a progress bar; Ctrl-C drops the unfinished grid, see below), on --engine\n"
    "scan as one vmapped call. Any --sweep-* flag implies --sweep; --sweep alone\n"
    "runs b1 in {0, 0.5, 0.9} x b2 in {0.9, 0.99, 0.999, 0.9999}.",
  )
  g.add_argument("--sweep", action="store_true", help="run a grid instead of single runs")
  g.add_argument("--sweep-b1", type=float, nargs="+", metavar="B1", help="values of b1")
  g.add_argument("--sweep-b2", type=float, nargs="+", metavar="B2", help="values of b2")
  g.add_argument("--sweep-lr", type=float, nargs="+", metavar="LR", help="values of lr")
  g.add_argument("--sweep-eps", type=float, nargs="+", metavar="EPS", help="values of eps")
  g.add_argument(
    "--seeds",
    type=_positive_int,
    default=None,
    metavar="N",
    help="run every config of --problem stochastic with seeds SEED, ..., SEED+N-1 (default: "
    "1; --figure1: 8, at least 8)",
  )
  return p


def _add_figure_flags(p: argparse.ArgumentParser) -> None:
  """Adds the flags that draw the paper's figures (each also writes FILE's .json beside it)."""
  g = p.add_argument_group(
    "figures",
    "Draw a whole figure with one command; the numbers drawn go to a JSON file beside\n"
    "the image (fig1.png -> fig1.json). --convention picks AMSGrad's convention (one).\n"
    "Both outputs are checked before anything runs. A figure is one uninterruptible\n"
    "piece: Ctrl-C takes effect when it is done (between --figure1 and --phase-map).",
  )
  g.add_argument(
    "--figure1",
    metavar="FILE.png",
    default=None,
    help="the paper's Figure 1: Adam and AMSGrad on the online and the stochastic problem, "
    "lr alpha/sqrt(t) with alpha chosen per optimizer from a grid, b1 0.9, b2 0.99, "
    "10^7 steps (--steps), the stochastic one over 8 seeds from --seed (--seeds, at least 8)",
  )
  g.add_argument(
    "--phase-map",
    metavar="FILE.png",
    default=None,
    help="Theorem 1 over the (C, b2) plane: where Adam and AMSGrad end, b1 = 0, lr "
    "1/sqrt(t) (--lr, --lr-schedule), 10^6 steps (--steps), a 40 x 40 log grid (or at "
    "least 2 values each of --theorem1-c and --b2), with the theorem's b2 = 1/(1+C^2) and "
    "the boundaries drawn over it",
  )


# ------------------------------------------------------------------ validation


@dataclasses.dataclass
class _Plan:
  """Everything :func:`_execute` needs, checked."""

  problem: _problems.Problem
  #: Each hyperparameter's single value (a sweep's fixed values and defaults).
  hp: dict[str, float]
  #: The hyperparameters that take several values, and those values (sweeps only).
  grid: dict[str, list[float]]
  is_sweep: bool
  runs: list[tuple[str, str, str | None]]
  seed: int
  seeds: list[int]
  plot: str | None  # the file the figure is written to (suffix resolved)
  plot_format: str | None
  trace_every: int | None
  #: ``(steps, trace_every)`` of the short run that draws a plot's first steps, or None.
  early_trace: tuple[int, int] | None = None
  #: Theorem 1's values of C when several are given (one compiled grid over them), else None.
  c_values: list[float] | None = None
  #: Whether b2 is each C's own 1/(1+C^2) (a C grid with no --b2 nor b2 in the grid).
  b2_per_c: bool = False


def _num(value: float) -> str:
  """Returns the shortest text that reads back as ``value`` (``0.9999999``, ``1e-08``, ``1``)."""
  text = repr(float(value))
  return text[:-2] if text.endswith(".0") else text


def _f32(value: float) -> np.float32:
  with np.errstate(over="ignore", under="ignore"):
    return np.float32(value)


def _f32_text(value: np.floating) -> str:
  """Returns the shortest text of a float32 value: ``0.99999994``, not 0.9999999403953552."""
  return str(np.float32(value))


def _check_hyperparameter(name: str, value: float, what: str) -> None:
  """Raises _UsageError unless ``value`` is valid for ``name`` in the runs' dtype.

  ``what`` names the value for the message: the flag (``--b2``), or where a
  derived value came from.
  """
  dtype = np.dtype(_DTYPE).name
  tiny = np.finfo(_DTYPE).smallest_normal
  if not math.isfinite(value):
    raise _UsageError(f"{what} must be a finite number, got {_num(value)}")
  if name in ("b1", "b2"):
    if not 0.0 <= value < 1.0:
      raise _UsageError(f"{what} must be in [0, 1), got {value!r}")
  elif value < 0.0:
    raise _UsageError(f"{what} must be in [0, inf), got {value!r}")
  v32 = _f32(value)
  if name in ("b1", "b2") and v32 >= 1:
    nearest = np.nextafter(np.float32(1), np.float32(0))
    raise _UsageError(
      f"{what} {_num(value)} rounds to 1 in {dtype}, the dtype of the runs, where it must be "
      f"below 1; the nearest valid value is {_f32_text(nearest)}"
    )
  if not np.isfinite(v32):
    raise _UsageError(
      f"{what} {_num(value)} overflows {dtype}, the dtype of the runs; the largest valid "
      f"value is {_f32_text(np.finfo(_DTYPE).max)}"
    )
  if value != 0 and v32 < tiny:
    raise _UsageError(
      f"{what} {_num(value)} is below the smallest normal {dtype} number, the dtype of the "
      f"runs (it would round to {_f32_text(v32)} or flush to 0); use 0 or at least "
      f"{_f32_text(tiny)}"
    )


def _check_distinct(flag: str, values: Sequence[float]) -> None:
  """Raises _UsageError if two of a flag's values are one number in the runs' dtype."""
  seen: dict[np.float32, float] = {}
  for v in values:
    v32 = _f32(v)
    if v32 in seen:
      raise _UsageError(
        f"{flag} {_num(seen[v32])} and {_num(v)} are the same number in "
        f"{np.dtype(_DTYPE).name}, the dtype of the runs ({_f32_text(v32)}): keep one"
      )
    seen[v32] = v


def _phase_map_axis(
  name: str, flag: str, values: Sequence[float], check: Callable[[float], None]
) -> list[float]:
  """The distinct ``values`` of one axis of ``--phase-map``, each checked; at least two."""
  axis = list(dict.fromkeys(values))
  if len(axis) < 2:
    raise _UsageError(
      f"--phase-map draws {name} along an axis: give at least 2 values of {flag} "
      "(or none, for its 40-value log grid)"
    )
  for v in axis:
    check(v)
  _check_distinct(flag, axis)
  return axis


def _check_theorem1_c(c: float) -> None:
  if not math.isfinite(c) or not c > 2:
    raise _UsageError(
      f"--theorem1-c must be a finite number > 2 (the optimum is -1 only when C > 2), got {_num(c)}"
    )
  # The second moment holds C^2: it must stay finite.
  largest = np.float32(np.sqrt(np.float64(np.finfo(_DTYPE).max)))
  with np.errstate(over="ignore"):
    square = _f32(c) * _f32(c)
  if not np.isfinite(square):
    raise _UsageError(
      f"--theorem1-c {_num(c)}: C^2 overflows {np.dtype(_DTYPE).name}, the dtype of the "
      f"runs; the largest valid value is {_f32_text(largest)}"
    )


def _check_applies(args: argparse.Namespace) -> None:
  """Raises _UsageError for a flag that the rest of the command line would ignore."""
  if args.theorem1_c is not None and args.problem != "theorem1":
    raise _UsageError("--theorem1-c applies to --problem theorem1 only")
  stochastic = args.problem == "stochastic"
  for flag, value in (("--seed", args.seed), ("--seeds", args.seeds)):
    if value is not None and not stochastic:
      raise _UsageError(
        f"{flag} applies to --problem stochastic only; --problem {args.problem} is deterministic"
      )
  optimizers = list(dict.fromkeys(args.optimizer))
  if args.convention is not None and "amsgrad" not in optimizers:
    raise _UsageError(
      f"--convention applies to --optimizer amsgrad only, got --optimizer {' '.join(optimizers)}"
    )
  for name, flag in _FLAGS.items():
    for given, shown in (
      (getattr(args, flag[2:]), flag),
      (getattr(args, _SWEEP_FLAGS[name]), None),
    ):
      shown = shown or f"--{_SWEEP_FLAGS[name].replace('_', '-')}"
      if given is not None and not any(o in _USED_BY[name] for o in optimizers):
        raise _UsageError(
          f"{shown} is not used by --optimizer {' '.join(optimizers)} (it applies to "
          f"{', '.join(_USED_BY[name])})"
        )
  if args.trace_every is not None and args.plot is None:
    raise _UsageError("--trace-every sets the points of --plot; it applies with --plot only")


def _hyperparameter_values(args: argparse.Namespace) -> dict[str, list[float]]:
  """Returns every hyperparameter's values as given (defaults filled in), in first-seen order."""
  values = {k: [v] for k, v in _DEFAULT_HP.items()}
  if args.problem == "stochastic":
    values["learning_rate"] = [_STOCHASTIC_LR]
  if args.problem == "theorem1":
    c = _theorem1_cs(args)[0]
    values.update({k: [v] for k, v in _problems.theorem1_betas(c).items()})
  for name, flag in _FLAGS.items():
    given = getattr(args, flag[2:])
    if given is not None:
      values[name] = given
  return {k: list(dict.fromkeys(v)) for k, v in values.items()}


def _theorem1_cs(args: argparse.Namespace) -> list[float]:
  """Returns the values of --theorem1-c, repeats dropped, or the default's."""
  return list(dict.fromkeys(args.theorem1_c or [_DEFAULT_THEOREM1_C]))


def _resolve_defaults(args: argparse.Namespace) -> None:
  """Fills in --steps and --lr-schedule, whose defaults depend on the problem.

  The stochastic problem runs the paper's setting, lr alpha/sqrt(t) with the
  alpha that Figure 1's grid picks for AMSGrad (1). The hyperparameters stay
  None when not given (:func:`_hyperparameter_values` fills them in), so that
  the checks can tell a given flag from a default.
  """
  if args.steps is None:
    args.steps = _DEFAULT_STEPS
  if args.lr_schedule is None:
    args.lr_schedule = "inverse-sqrt" if args.problem == "stochastic" else "constant"


def _sweep_grid(args: argparse.Namespace, values: dict[str, list[float]]) -> dict[str, list[float]]:
  """Returns the grid of a sweep: --sweep-* values, several values of a flag, or the default."""
  grid = {}
  for name, attr in _SWEEP_FLAGS.items():
    given = getattr(args, attr)
    if given:
      grid[name] = list(dict.fromkeys(given))
  for name, vals in values.items():
    if len(vals) > 1:
      flag = _FLAGS[name]
      if name in grid:
        raise _UsageError(
          f"{flag} has several values and --sweep-{flag[2:]} is given too: use one of them"
        )
      grid[name] = vals
  return grid or {k: list(v) for k, v in _DEFAULT_SWEEP.items()}


def _runs(args: argparse.Namespace) -> list[tuple[str, str, str | None]]:
  """Returns ``(label, optimizer, convention)`` for every run asked for."""
  runs = []
  for name in dict.fromkeys(args.optimizer):
    if name == "amsgrad":
      for conv in dict.fromkeys(args.convention or ["pytorch"]):
        runs.append((f"amsgrad ({conv})", name, conv))
    else:
      runs.append((name, name, None))
  return runs


def _check_plot(path: str) -> tuple[str, str]:
  """Returns ``(file, format)`` that ``--plot path`` writes; raises _UsageError if it cannot."""
  try:
    from amsgrad_optax.synthetic import _plot

    return _plot.output_path(path, check_writable=True)
  except ImportError:
    raise _UsageError(
      "--plot needs matplotlib, which is not installed: pip install 'amsgrad-optax[plot]'"
    ) from None
  except ValueError as e:
    raise _UsageError(f"--plot: {_one_line(e)}") from None


def _validate(args: argparse.Namespace) -> _Plan:
  """Returns the checked plan of the command line; raises _UsageError for anything wrong.

  Everything that can be checked without running is checked here, so that a
  bad command line fails at once, with nothing on stdout.
  """
  _check_applies(args)
  _resolve_defaults(args)
  cs = _theorem1_cs(args)
  problem: _problems.Problem
  if args.problem == "theorem1":
    for c in cs:  # every C, not only the first
      _check_theorem1_c(c)
    _check_distinct("--theorem1-c", cs)
    problem = _problems.theorem1(cs[0])
  else:
    problem = _problems.make_problem(args.problem)
  c_grid = args.problem == "theorem1" and len(cs) > 1
  values = _hyperparameter_values(args)
  for name, vals in values.items():
    given = getattr(args, _FLAGS[name][2:]) is not None
    derived = [(v, cs[0]) for v in vals]
    if not given and args.problem == "theorem1" and name in ("b1", "b2"):
      # Each C's own betas are run (b2 = 1/(1+C^2)) unless given: check them all.
      derived = [(_problems.theorem1_betas(c)[name], c) for c in cs]
    for v, c in derived:
      try:
        _check_hyperparameter(name, v, _FLAGS[name] if given else f"the default {name}")
      except _UsageError as e:
        if given or args.problem != "theorem1":
          raise
        raise _UsageError(
          f"--theorem1-c {_num(c)} gives {name} = {_num(v)}, which the runs cannot "
          f"use ({e}); give --{name} or a smaller C"
        ) from None
    _check_distinct(_FLAGS[name], vals)
  for name, attr in _SWEEP_FLAGS.items():
    flag = f"--{attr.replace('_', '-')}"
    for v in getattr(args, attr) or []:
      _check_hyperparameter(name, v, flag)
    _check_distinct(flag, getattr(args, attr) or [])
  hp = {k: v[0] for k, v in values.items()}
  hp_grid = (
    args.sweep
    or any(len(v) > 1 for v in values.values())
    or any(getattr(args, a) for a in _SWEEP_FLAGS.values())
  )
  is_sweep = hp_grid or c_grid
  if args.seeds is not None and not is_sweep:
    raise _UsageError(
      "--seeds applies to sweeps (--sweep, --sweep-*, or several values of --lr, --b1, --b2 "
      "or --eps); a single run takes --seed"
    )
  grid = _sweep_grid(args, values) if hp_grid else {}
  b2_per_c = c_grid and args.b2 is None and "b2" not in grid
  if c_grid and args.engine == "scan":
    raise _UsageError(
      "several values of --theorem1-c run as one grid on the fast engine; --engine scan "
      "runs one C: give one --theorem1-c, or use --engine auto (the default)"
    )
  optimizers = list(dict.fromkeys(args.optimizer))
  unused = [k for k in grid if not any(o in _USED_BY[k] for o in optimizers)]
  if unused:  # only the default grid can get here: given flags were checked
    raise _UsageError(
      f"--sweep alone sweeps {' and '.join(unused)}, which --optimizer {' '.join(optimizers)} "
      "does not use: give the values to sweep, e.g. --sweep-lr 0.01 0.1"
    )
  runs = _runs(args)
  seed = 0 if args.seed is None else args.seed
  seeds = list(range(seed, seed + (args.seeds or 1)))
  if seeds[-1] >= 2**31:
    raise _UsageError(f"--seed + --seeds must stay below 2**31, got {seeds[-1]}")
  if args.steps + problem.first_step - 1 > 2**31 - 1:
    raise _UsageError(f"--steps must be below 2**31, got {args.steps}")
  batch = len(seeds) * math.prod(len(v) for v in grid.values()) if is_sweep else 1
  if c_grid:
    batch = len(cs) * math.prod(len(v) for v in grid.values())
    if not _fast.fits(problem, args.steps, batch):
      raise _UsageError(
        f"several values of --theorem1-c run on the fast engine, which cannot run --steps "
        f"{args.steps}: its last block would pass step 2**31 - 1; give fewer steps"
      )
  if args.engine == "fast" and not _fast.fits(problem, args.steps, batch):
    raise _UsageError(
      f"--engine fast cannot run --steps {args.steps}: its last block would pass step "
      "2**31 - 1; use --engine auto or scan"
    )
  plot = plot_format = early = None
  trace_every = args.trace_every
  if args.plot is not None:
    if is_sweep:
      raise _UsageError(
        "--plot draws single runs; it cannot be combined with --sweep, --sweep-* or several "
        "values of --lr, --b1, --b2, --eps or --theorem1-c"
      )
    if args.engine == "fast":
      raise _UsageError(
        "--plot draws x_t and R(t)/t along the run, which --engine fast does not record: "
        "use --engine auto (the default) or scan"
      )
    plot, plot_format = _check_plot(args.plot)
    if trace_every is None:
      trace_every = _trace_every(problem, args.steps // _PLOT_POINTS)
      # The plot's t axis is logarithmic: a second, short run traced 50 times
      # as often draws the first steps, where the main trace has few points.
      early_every = _trace_every(problem, trace_every // 50)
      period = getattr(problem, "period", None)  # the stochastic problem has none
      if period is not None and trace_every >= period:
        # Whole periods too: a phase that drifts from point to point draws the
        # within-period sawtooth as a thick band.
        early_every = max(early_every, period)
      if early_every < trace_every and 2 * early_every * _PLOT_POINTS <= args.steps:
        early = (early_every * _PLOT_POINTS, early_every)
  # Second line of defence: the library's own checks, in its words.
  try:
    for _, name, conv in runs:
      _optimizers.make_optimizer(
        name, **hp, convention=conv or "pytorch", lr_schedule=args.lr_schedule
      )
    if grid:
      _sweep._check_grid(grid)
  except (ValueError, TypeError) as e:
    raise _UsageError(_one_line(e)) from None
  return _Plan(
    problem=problem,
    hp=hp,
    grid=grid,
    is_sweep=is_sweep,
    runs=runs,
    seed=seed,
    seeds=seeds,
    plot=plot,
    plot_format=plot_format,
    trace_every=trace_every,
    early_trace=early,
    c_values=cs if c_grid else None,
    b2_per_c=b2_per_c,
  )


def _trace_every(problem: _problems.Problem, every: int) -> int:
  """Returns ``every`` (at least 1) rounded to whole periods of an online problem."""
  every = max(1, every)
  period = getattr(problem, "period", 1)
  if every >= period / 8:
    # Whole periods: every point at the same phase, so the curve shows the
    # drift of x_t rather than an alias of its within-period sawtooth (a
    # thick band); below an eighth of a period the points draw the sawtooth.
    every = max(period, every - every % period)
  return every


# ------------------------------------------------------------------ running


@dataclasses.dataclass
class _Outcome:
  """What ran: the records (finished runs only), and whether Ctrl-C stopped it."""

  records: list[dict[str, Any]]
  interrupted: bool = False
  results: dict[str, _runner.RunResult] = dataclasses.field(default_factory=dict)
  grid_seconds: dict[str, float] = dataclasses.field(default_factory=dict)
  plot_written: str | None = None


def _show_progress(args: argparse.Namespace, steps: int) -> bool:
  return not args.quiet and steps >= _PROGRESS_MIN_STEPS and sys.stderr.isatty()


def _finite(*values: float) -> bool:
  return all(math.isfinite(v) for v in values)


def _execute_single(args: argparse.Namespace, plan: _Plan, outcome: _Outcome) -> None:
  for label, name, conv in plan.runs:
    tx = _optimizers.make_optimizer(
      name, **plan.hp, convention=conv or "pytorch", lr_schedule=args.lr_schedule
    )
    r = _runner.run(
      plan.problem,
      tx,
      args.steps,
      seed=plan.seed,
      trace_every=plan.trace_every,
      progress=_show_progress(args, args.steps),
      label=label,
      engine=args.engine,
    )
    outcome.results[label] = r
    if plan.early_trace is not None:
      early_steps, early_every = plan.early_trace
      e = _runner.run(plan.problem, tx, early_steps, seed=plan.seed, trace_every=early_every)
      assert e.trace is not None and r.trace is not None  # both ran with trace_every
      outcome.results[label] = r._replace(trace=_merge_traces(e.trace, r.trace))
    outcome.records.append(
      {
        "label": label,
        "optimizer": name,
        "convention": conv,
        "x_final": r.x_final,
        "avg_regret": r.avg_regret,
        "regret": r.regret,
        "steps": r.steps,
        "seconds": r.seconds,
        "compile_seconds": r.compile_seconds,
        "diverged": not _finite(r.x_final, r.regret),
      }
    )


def _merge_traces(early: _runner.Trace, main: _runner.Trace) -> _runner.Trace:
  """Returns the points of ``early``, then those of ``main`` past its end."""
  keep = main.t > early.t[-1]
  return _runner.Trace(*(np.concatenate([a, b[keep]]) for a, b in zip(early, main, strict=True)))


def _execute_sweep(args: argparse.Namespace, plan: _Plan, outcome: _Outcome) -> None:
  defaults = {k: v for k, v in plan.hp.items() if k not in plan.grid}
  if plan.b2_per_c:
    del defaults["b2"]  # each C takes the theorem's b2 = 1/(1+C^2)
  for label, name, conv in plan.runs:
    t0 = time.perf_counter()
    # The fast engine stops between its calls of about 0.1 s (the unfinished
    # grid is dropped); the scan's one call when it returns (see _sweep).
    progress = _show_progress(args, args.steps)
    if plan.c_values is not None:
      table = _sweep.theorem1_sweep(
        plan.c_values,
        args.steps,
        plan.grid,
        optimizer=name,
        defaults=defaults,
        convention=conv or "pytorch",
        lr_schedule=args.lr_schedule,
        progress=progress,
        label=label,
      )
      table["seed"] = np.full(len(table["C"]), plan.seed)
    else:
      table = _sweep.sweep(
        plan.problem,
        args.steps,
        plan.grid,
        optimizer=name,
        seeds=plan.seeds,
        defaults=defaults,
        convention=conv or "pytorch",
        lr_schedule=args.lr_schedule,
        engine=args.engine,
        progress=progress,
        label=label,
      )
    seconds = time.perf_counter() - t0
    outcome.grid_seconds[label] = seconds
    for row in _sweep.table_rows(table):
      row = {"label": label, "optimizer": name, "convention": conv, **row, "steps": args.steps}
      row["diverged"] = not _finite(row["x_final"], row["regret"])
      row["ends_at"] = "diverged" if row["diverged"] else _verdict(plan.problem, row["x_final"])
      outcome.records.append(row)
    if not args.json:
      print(
        f"# {label}: {len(table['seed'])} runs in {seconds:.2f} s (compilation included)",
        file=sys.stderr,
      )


def _execute(args: argparse.Namespace, plan: _Plan) -> _Outcome:
  """Runs the plan; on Ctrl-C returns what finished, marked interrupted."""
  outcome = _Outcome(records=[])
  try:
    if plan.is_sweep:
      _execute_sweep(args, plan, outcome)
    else:
      _execute_single(args, plan, outcome)
  except KeyboardInterrupt:
    outcome.interrupted = True
  return outcome


def _write_plot(args: argparse.Namespace, plan: _Plan, outcome: _Outcome) -> None:
  """Draws the finished runs into the checked ``--plot`` file, if one was asked for."""
  if plan.plot is None or not outcome.results:
    return
  from amsgrad_optax.synthetic import _plot

  try:
    outcome.plot_written = _plot.plot_runs(
      outcome.results,
      plan.plot,
      problem=plan.problem,
      title=f"{plan.problem.name}: {args.steps:,} steps, {_fmt_hp(plan, args.lr_schedule)}",
      format=plan.plot_format,
    )
  except KeyboardInterrupt:
    outcome.interrupted = True


def _verdict(problem: _problems.Problem, x: float) -> str:
  """Returns ``"x*"`` or ``"worst"`` when ``x`` ends within 10% of the interval of either."""
  worst = problem.upper if problem.x_star == problem.lower else problem.lower
  tol = 0.1 * (problem.upper - problem.lower)
  if abs(x - problem.x_star) <= tol:
    return "x*"
  if abs(x - worst) <= tol:
    return "worst"
  return "-"


# ------------------------------------------------------------------ output


def _fmt_hp(plan: _Plan, schedule: str) -> str:
  """Returns the hyperparameters in words; a swept one lists its values."""

  def one(name: str, short: str) -> str:
    if name in plan.grid:
      return f"{short} in {{{', '.join(_num(v) for v in plan.grid[name])}}}"
    if name == "b2" and plan.b2_per_c:
      return f"{short} 1/(1+C^2)"
    return f"{short} {_num(plan.hp[name])}"

  lr = one("learning_rate", "lr")
  return f"{lr} ({schedule}), {one('b1', 'b1')}, {one('b2', 'b2')}, {one('eps', 'eps')}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

  # The first column is a label (left-aligned); the others are numbers.
  def line(cells):
    return "  ".join(
      c.ljust(w) if i == 0 else c.rjust(w)
      for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    ).rstrip()

  return "\n".join([line(headers), *(line(r) for r in rows)])


def _description(plan: _Plan) -> str:
  """Returns the problem in words; a C grid's reads ``C x`` for its large coefficient."""
  text = plan.problem.describe()
  if plan.c_values is not None:
    text = text.replace(f"{plan.problem.big:g} x", "C x", 1)
  return text


def _header(args: argparse.Namespace, plan: _Plan) -> dict[str, Any]:
  hyperparameters: dict[str, Any] = dict(plan.hp)
  hyperparameters.update(plan.grid)
  if plan.b2_per_c:
    hyperparameters["b2"] = "1/(1+C^2)"
  return {
    "problem": plan.problem.name,
    "description": _description(plan),
    "steps": args.steps,
    "hyperparameters": {**hyperparameters, "lr_schedule": args.lr_schedule},
    "seed": plan.seed,
    "engine": args.engine,
  }


def _emit_header(args: argparse.Namespace, plan: _Plan, out: TextIO) -> None:
  """Prints the problem and the hyperparameters before the runs (human output only)."""
  if args.json:
    return
  print(f"{plan.problem.name}: {_description(plan)}", file=out)
  print(f"{args.steps:,} steps; {_fmt_hp(plan, args.lr_schedule)}\n", file=out)
  out.flush()


def _json_safe(record: dict[str, Any]) -> dict[str, Any]:
  """Returns ``record`` with every non-finite float replaced by None (JSON null)."""
  return {
    k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()
  }


def _emit(args: argparse.Namespace, plan: _Plan, outcome: _Outcome, out: TextIO) -> None:
  """Prints the finished runs: the table, or the whole JSON document."""
  records = outcome.records
  if args.json:
    doc = _header(args, plan)
    if plan.c_values is not None:
      doc["C"] = list(plan.c_values)
    if plan.is_sweep:
      doc.update(
        grid=plan.grid,
        seeds=plan.seeds,
        # Wall time of each optimizer's whole grid, compilation included, and their total.
        seconds=sum(outcome.grid_seconds.values()),
        grid_seconds=outcome.grid_seconds,
        sweep=[_json_safe(r) for r in records],
      )
    else:
      doc["results"] = [_json_safe(r) for r in records]
    if plan.plot is not None:
      doc["plot"] = outcome.plot_written
    doc["interrupted"] = outcome.interrupted
    out.write(json.dumps(doc, indent=2, allow_nan=False) + "\n")
    out.flush()
    return
  if plan.c_values is not None:  # deterministic: a C column, no seed column
    headers = ["optimizer", "C", "lr", "b1", "b2", "eps", "x_final", "avg_regret", "ends at"]
    rows = [
      [
        r["label"],
        *(_num(r[k]) for k in ("C", "learning_rate", "b1")),
        # Each C's own 1/(1+C^2) in 4 digits; given values exactly, to tell them apart.
        f"{r['b2']:.4g}" if plan.b2_per_c else _num(r["b2"]),
        _num(r["eps"]),
        f"{r['x_final']:+.4f}",
        f"{r['avg_regret']:.6f}",
        r["ends_at"],
      ]
      for r in records
    ]
  elif plan.is_sweep:
    headers = ["optimizer", "lr", "b1", "b2", "eps", "seed", "x_final", "avg_regret", "ends at"]
    rows = [
      [
        r["label"],
        *(_num(r[k]) for k in ("learning_rate", "b1", "b2", "eps")),
        str(r["seed"]),
        f"{r['x_final']:+.4f}",
        f"{r['avg_regret']:.6f}",
        r["ends_at"],
      ]
      for r in records
    ]
  else:
    headers = ["optimizer", "x_final", "avg_regret", "run s", "compile s"]
    rows = [
      [
        r["label"],
        f"{r['x_final']:+.4f}",
        f"{r['avg_regret']:.6f}",
        f"{r['seconds']:.3f}",
        f"{r['compile_seconds']:.3f}",
      ]
      for r in records
    ]
  if rows:
    print(_table(headers, rows), file=out)
  diverged = list(dict.fromkeys(r["label"] for r in records if r["diverged"]))
  if diverged:
    print(f"\ndiverged (x_t or the regret is not finite): {', '.join(diverged)}", file=out)
  if outcome.plot_written is not None:
    print(f"\nwrote {outcome.plot_written}", file=out)
  out.flush()


# ------------------------------------------------------------------ figures


@dataclasses.dataclass
class _FigurePlan:
  """Everything :func:`_execute_figures` needs for --figure1 and --phase-map, checked."""

  #: ``(flag, image, json)`` of each figure asked for, in the order they run.
  figures: list[tuple[str, str, str]]
  #: --steps when given; None for each figure's own default.
  steps: int | None
  seeds: list[int]
  convention: str
  c: list[float]
  b2: list[float]
  learning_rate: float
  lr_schedule: str


def _check_figure_output(flag: str, path: str) -> tuple[str, str]:
  """Returns ``(image, json)`` that ``flag path`` writes; raises _UsageError if either cannot be."""
  from amsgrad_optax.synthetic import _figures

  try:
    from amsgrad_optax.synthetic import _plot

    image, _ = _plot.output_path(path, check_writable=True)
    json_path = _figures.json_beside(image)
    _plot.check_writable_file(json_path)
  except ImportError:
    raise _UsageError(
      f"{flag} needs matplotlib, which is not installed: pip install 'amsgrad-optax[plot]'"
    ) from None
  except ValueError as e:
    raise _UsageError(f"{flag}: {_one_line(e)}") from None
  return image, json_path


def _validate_figures(args: argparse.Namespace) -> _FigurePlan:
  """Returns the checked plan of --figure1 and/or --phase-map; raises _UsageError if wrong.

  The figures run their own settings, so every flag that they would ignore is
  refused, and their images and the JSON files beside them are checked
  before anything runs.
  """
  from amsgrad_optax.synthetic import _figures

  asked = [(f, p) for f, p in (("--figure1", args.figure1), ("--phase-map", args.phase_map)) if p]
  names = " and ".join(f for f, _ in asked)
  subject = f"{names} draws a whole figure; it" if len(asked) == 1 else f"{names} draw whole "
  if len(asked) > 1:
    subject += "figures; they"
  defaults = build_parser()
  ignored = [
    ("--plot", args.plot is not None),
    ("--trace-every", args.trace_every is not None),
    ("--sweep", args.sweep),
    *((f"--{a.replace('_', '-')}", getattr(args, a) is not None) for a in _SWEEP_FLAGS.values()),
    ("--b1", args.b1 is not None),
    ("--eps", args.eps is not None),
    ("--problem", args.problem != defaults.get_default("problem")),
    ("--optimizer", list(args.optimizer) != defaults.get_default("optimizer")),
    ("--engine", args.engine != defaults.get_default("engine")),
  ]
  for flag, given in ignored:
    if given:
      raise _UsageError(f"{subject} cannot be combined with {flag}")
  figure1 = args.figure1 is not None
  phase_map = args.phase_map is not None
  if not phase_map:
    for flag, value in (
      ("--lr", args.lr),
      ("--lr-schedule", args.lr_schedule),
      ("--theorem1-c", args.theorem1_c),
      ("--b2", args.b2),
    ):
      if value is not None:
        raise _UsageError(
          f"{flag} applies to --phase-map only; --figure1 runs the paper's settings "
          "(lr alpha/sqrt(t) with alpha chosen from its grid, b1 0.9, b2 0.99)"
        )
  if not figure1:
    for flag, value in (("--seed", args.seed), ("--seeds", args.seeds)):
      if value is not None:
        raise _UsageError(
          f"{flag} applies to --figure1's stochastic panel only; --phase-map is deterministic"
        )
  conventions = list(dict.fromkeys(args.convention or ["pytorch"]))
  if len(conventions) > 1:
    raise _UsageError(
      f"{names} draw{'s' if len(asked) == 1 else ''} one AMSGrad convention, got --convention "
      f"{' '.join(conventions)}"
    )
  if args.steps is not None and args.steps > 2**31 - 2:
    raise _UsageError(f"--steps must be below 2**31, got {args.steps}")
  n_seeds = 8 if args.seeds is None else args.seeds
  if n_seeds < 8:
    raise _UsageError(f"--figure1 draws at least 8 seeds, got --seeds {n_seeds}")
  seed = 0 if args.seed is None else args.seed
  seeds = list(range(seed, seed + n_seeds))
  if seeds[-1] >= 2**31:
    raise _UsageError(f"--seed + --seeds must stay below 2**31, got {seeds[-1]}")
  c = [float(v) for v in _figures.PHASE_MAP_C]
  b2 = [float(v) for v in _figures.PHASE_MAP_B2]
  learning_rate = 1.0
  if phase_map:
    if args.theorem1_c is not None:
      c = _phase_map_axis("C", "--theorem1-c", args.theorem1_c, _check_theorem1_c)
    if args.b2 is not None:
      b2 = _phase_map_axis("b2", "--b2", args.b2, lambda v: _check_hyperparameter("b2", v, "--b2"))
    if args.lr is not None:
      if len(set(args.lr)) > 1:
        raise _UsageError(f"--phase-map runs one lr, got --lr {' '.join(_num(v) for v in args.lr)}")
      learning_rate = args.lr[0]
      _check_hyperparameter("learning_rate", learning_rate, "--lr")
    steps = _figures.PHASE_MAP_STEPS if args.steps is None else args.steps
    if not _fast.fits(_problems.theorem1(c[0]), steps, len(c) * len(b2)):
      raise _UsageError(
        f"--phase-map runs on the fast engine, which cannot run --steps {steps}: its last "
        "block would pass step 2**31 - 1; give fewer steps"
      )
  figures = []
  for flag, path in asked:
    image, json_path = _check_figure_output(flag, path)
    figures.append((flag, image, json_path))
  if len(figures) == 2:
    (_, *first), (_, *second) = figures
    for p in first:
      if any(os.path.abspath(p) == os.path.abspath(q) for q in second):
        raise _UsageError(
          f"--figure1 and --phase-map would both write {p!r}: give them different names"
        )
  return _FigurePlan(
    figures=figures,
    steps=args.steps,
    seeds=seeds,
    convention=conventions[0],
    c=c,
    b2=b2,
    learning_rate=learning_rate,
    lr_schedule=args.lr_schedule or "inverse-sqrt",
  )


def _execute_figures(plan: _FigurePlan) -> tuple[dict[str, Any], bool]:
  """Draws the figures; returns their JSON (also written beside each image) and whether interrupted.

  Each figure is one uninterruptible piece (its compiled calls must not be
  cut short): Ctrl-C takes effect when the figure it arrives in is done.
  """
  from amsgrad_optax.synthetic import _figures

  body: dict[str, Any] = {}
  try:
    for flag, image, json_path in plan.figures:
      with _runner.deferred_interrupt():
        if flag == "--figure1":
          body["figure1"] = _figures.figure1(
            image,
            steps=_figures.FIGURE1_STEPS if plan.steps is None else plan.steps,
            seeds=plan.seeds,
            convention=plan.convention,
            json_path=json_path,
          )
        else:
          body["phase_map"] = _figures.theorem1_phase_map(
            image,
            c=plan.c,
            b2=plan.b2,
            steps=_figures.PHASE_MAP_STEPS if plan.steps is None else plan.steps,
            learning_rate=plan.learning_rate,
            lr_schedule=plan.lr_schedule,
            convention=plan.convention,
            json_path=json_path,
          )
  except KeyboardInterrupt:
    return body, True
  return body, False


def _emit_figures(
  args: argparse.Namespace, plan: _FigurePlan, body: dict[str, Any], interrupted: bool, out: TextIO
) -> None:
  """Prints the finished figures: a summary of each, or the JSON of all."""
  if args.json:
    doc = {**body, "interrupted": interrupted}
    out.write(json.dumps(doc, indent=2, allow_nan=False) + "\n")
    out.flush()
    return
  files = {flag: (image, json_path) for flag, image, json_path in plan.figures}
  if "figure1" in body:
    data = body["figure1"]
    rows = []
    for pname, panel in data["panels"].items():
      for label, run in panel["runs"].items():
        xs, rs = run["x_final"], run["avg_regret_final"]
        rows.append(
          [
            f"{pname}: {label}",
            f"{run['alpha']:g}",
            f"{statistics.median(xs):+.4f}",
            f"[{min(xs):+.3f}, {max(xs):+.3f}]",
            f"{statistics.median(rs):.5f}",
          ]
        )
    headers = ["run", "alpha", "x_T (median)", "x_T (range)", "R(T)/T (median)"]
    print(f"Figure 1: {data['steps']:,} steps, lr alpha/sqrt(t), b1 0.9, b2 0.99", file=out)
    print(_table(headers, rows), file=out)
    image, json_path = files["--figure1"]
    print(f"\nwrote {image} and {json_path} in {data['seconds']:.1f} s", file=out)
  if "phase_map" in body:
    data = body["phase_map"]
    if "figure1" in body:
      print(file=out)
    print(
      f"Theorem 1 phase map: {len(data['C'])} x {len(data['b2'])} cells of (C, b2), "
      f"{data['steps']:,} steps, b1 0, lr {_num(data['learning_rate'])} ({data['lr_schedule']})",
      file=out,
    )
    for name, row in data["summary"].items():
      agree = ""
      if "agrees_with_boundary" in row:
        agree = f"; on the side the steady-state boundary predicts in {row['agrees_with_boundary']}"
      print(
        f"  {name:8s} ends at +1 in {row['ends_near_plus_1']}, at -1 in "
        f"{row['ends_near_minus_1']} of {row['cells']} cells{agree} "
        f"({data['grid_seconds'][name]:.1f} s, compilation included)",
        file=out,
      )
    image, json_path = files["--phase-map"]
    print(f"\nwrote {image} and {json_path} in {data['seconds']:.1f} s", file=out)
  out.flush()


def _run_figures(
  args: argparse.Namespace, plan: _FigurePlan, parser: argparse.ArgumentParser
) -> int:
  """Draws the figures of a checked plan and prints them; returns the exit status."""
  out = sys.stdout
  try:
    body, interrupted = _execute_figures(plan)
  except (ValueError, TypeError) as e:
    parser.exit(2, f"{PROG}: error: {_one_line(e)}\n")
  except (ImportError, OSError) as e:
    parser.exit(1, f"{PROG}: error: {_one_line(e)}\n")
  try:
    _emit_figures(args, plan, body, interrupted, out)
  except BrokenPipeError:
    return _reader_gone()
  if interrupted:
    sys.stderr.write(f"{PROG}: interrupted: {len(body)} of {len(plan.figures)} figures finished\n")
    return _EXIT_INTERRUPTED
  return 0


def _interrupted_line(plan: _Plan, outcome: _Outcome) -> str:
  if plan.is_sweep:
    done = len(outcome.grid_seconds)
    what = f"{done} of {len(plan.runs)} optimizers' grids finished"
  else:
    what = f"{len(outcome.results)} of {len(plan.runs)} runs finished"
  return f"{PROG}: interrupted: {what}\n"


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the command line; returns the exit status.

  Args:
    argv: the arguments, without the program name; None for ``sys.argv[1:]``.

  Returns:
    0 on success; 2 for bad arguments (before anything runs); 1 for an
    output file that cannot be written after all; 130 when interrupted
    (Ctrl-C), after printing the runs that finished.
  """
  parser = build_parser()
  out = sys.stdout
  try:
    args = parser.parse_args(argv)
    if args.figure1 is not None or args.phase_map is not None:
      figure_plan = _validate_figures(args)
    else:
      plan = _validate(args)
  except _UsageError as e:
    parser.exit(2, f"{PROG}: error: {_one_line(e)}\n")
  except KeyboardInterrupt:
    parser.exit(_EXIT_INTERRUPTED, f"{PROG}: interrupted\n")
  if args.figure1 is not None or args.phase_map is not None:
    return _run_figures(args, figure_plan, parser)
  try:
    _emit_header(args, plan, out)
    outcome = _execute(args, plan)
    _write_plot(args, plan, outcome)
  except BrokenPipeError:
    return _reader_gone()
  except (ValueError, TypeError) as e:
    parser.exit(2, f"{PROG}: error: {_one_line(e)}\n")
  except (ImportError, OSError) as e:
    parser.exit(1, f"{PROG}: error: {_one_line(e)}\n")
  try:
    _emit(args, plan, outcome, out)
  except BrokenPipeError:
    return _reader_gone()
  if outcome.interrupted:
    sys.stderr.write(_interrupted_line(plan, outcome))
    return _EXIT_INTERRUPTED
  return 0


def _reader_gone() -> int:
  """Returns the exit status when stdout's reader has gone (``| head``): quietly, as cat does."""
  try:
    # Later flushes (at exit) must not fail again: point stdout at /dev/null.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
  except (OSError, ValueError, AttributeError):
    pass
  return 1


def _one_line(e: BaseException) -> str:
  return " ".join(str(e).split())
