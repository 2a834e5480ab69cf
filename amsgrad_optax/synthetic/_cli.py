"""``amsgrad-synthetic``: the paper's synthetic experiment from the command line."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any, NoReturn

from amsgrad_optax import _conventions
from amsgrad_optax.synthetic import _optimizers, _problems, _runner, _sweep

PROG = "amsgrad-synthetic"
_DEFAULT_STEPS = 10_000_000
_DEFAULT_SWEEP = {"b1": [0.0, 0.5, 0.9], "b2": [0.9, 0.99, 0.999, 0.9999]}
#: Below this many steps a run takes milliseconds: no progress bar.
_PROGRESS_MIN_STEPS = 1 << 21
_PLOT_POINTS = 2000
_PHASE_MAP_STEPS = 1_000_000

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
"""


class _Parser(argparse.ArgumentParser):
  """An ArgumentParser whose errors are one line: ``amsgrad-synthetic: error: ...``."""

  def error(self, message: str) -> NoReturn:
    self.exit(2, f"{self.prog}: error: {message}\n")


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
    description=(
      "Run the synthetic experiments of Reddi, Kale & Kumar (ICLR 2018), where Adam "
      "provably converges to the worst point and AMSGrad to the optimum, compiled "
      "under jax.lax.scan."
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
    default=["pytorch"],
    metavar="NAME",
    help="AMSGrad convention(s), one run each: "
    f"{', '.join(_conventions.CONVENTIONS)} (default: pytorch)",
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
    "--eps", type=float, nargs="+", default=[1e-8], help="epsilon (default: 1e-8); several: a grid"
  )
  p.add_argument(
    "--engine",
    choices=_runner.ENGINES,
    default="auto",
    help="fast: the blocked, time-parallel engine (no trace, so no --plot); scan: the "
    "step-by-step lax.scan; auto: fast where it applies (default: auto)",
  )
  p.add_argument(
    "--theorem1-c",
    type=float,
    nargs="+",
    default=[3.0],
    metavar="C",
    help="C of theorem1 (default: 3); several values run every (C, b1, b2, ...) cell, "
    "one compiled call per optimizer, each JSON row carrying its C",
  )
  p.add_argument(
    "--seed", type=_seed, default=0, help="seed of the stochastic problem (default: 0)"
  )
  p.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
  p.add_argument(
    "--plot",
    metavar="FILE.png",
    default=None,
    help="write R(t)/t and x_t against t, one curve per run (needs matplotlib)",
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
    "Run a grid of hyperparameters (and seeds) as one vmapped call per optimizer, "
    "sharded over the devices when there are several. Any --sweep-* flag implies "
    "--sweep; --sweep alone runs b1 in {0, 0.5, 0.9} x b2 in {0.9, 0.99, 0.999, 0.9999}.",
  )
  g.add_argument("--sweep", action="store_true", help="run a grid instead of single runs")
  g.add_argument("--sweep-b1", type=float, nargs="+", metavar="B1", help="values of b1")
  g.add_argument("--sweep-b2", type=float, nargs="+", metavar="B2", help="values of b2")
  g.add_argument("--sweep-lr", type=float, nargs="+", metavar="LR", help="values of lr")
  g.add_argument("--sweep-eps", type=float, nargs="+", metavar="EPS", help="values of eps")
  g.add_argument(
    "--seeds",
    type=_positive_int,
    default=1,
    metavar="N",
    help="run every config with seeds SEED, ..., SEED+N-1 (default: 1)",
  )
  return p


def _add_figure_flags(p: argparse.ArgumentParser) -> None:
  """Adds the flags that draw the paper's figures (each also writes FILE's .json beside it)."""
  g = p.add_argument_group(
    "figures",
    "Draw a whole figure with one command; the numbers drawn go to a JSON file beside "
    "the image (fig1.png -> fig1.json). --convention picks AMSGrad's convention.",
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
    "1/sqrt(t), 10^6 steps (--steps), a 40 x 40 log grid (or --theorem1-c and --b2 values), "
    "with the theorem's b2 = 1/(1+C^2) and the boundaries drawn over it",
  )


def _resolve_defaults(args) -> None:
  """Fills in the defaults that depend on the problem or the figure asked for.

  The stochastic problem runs the paper's setting, lr alpha/sqrt(t), with the
  alpha that Figure 1's grid picks for AMSGrad (1); the phase map runs the
  theory's 1/sqrt(t) at 10^6 steps.
  """
  paper = args.problem == "stochastic" or args.phase_map is not None
  args.steps_given = args.steps is not None
  if args.steps is None:
    args.steps = _PHASE_MAP_STEPS if args.phase_map is not None else _DEFAULT_STEPS
  if args.lr is None:
    args.lr = [1.0] if paper else [1e-2]
  if args.lr_schedule is None:
    args.lr_schedule = "inverse-sqrt" if paper else "constant"


def _figure_runs(args, out) -> dict[str, Any]:
  """Draws --figure1 and/or --phase-map; returns their JSON (also written beside each image)."""
  from amsgrad_optax.synthetic import _figures

  body: dict[str, Any] = {}
  others = [f for f, on in (("--plot", args.plot), ("--sweep", args.sweep)) if on]
  if others:
    raise ValueError(
      f"--figure1 and --phase-map draw whole figures; they cannot be combined with {others[0]}"
    )
  for flag, path in (("--figure1", args.figure1), ("--phase-map", args.phase_map)):
    if path is not None:
      _figures._check_writable(path, flag)
  convention = args.convention[0]
  if args.figure1 is not None:
    if args.seeds < 8 and args.seeds != 1:
      raise ValueError(f"--figure1 draws at least 8 seeds, got --seeds {args.seeds}")
    n_seeds = max(8, args.seeds)
    steps = args.steps if args.steps_given else _figures.FIGURE1_STEPS
    json_path = _figures.json_beside(args.figure1)
    data = _figures.figure1(
      args.figure1,
      steps=steps,
      seeds=range(args.seed, args.seed + n_seeds),
      convention=convention,
      json_path=json_path,
    )
    body["figure1"] = data
    if not args.json:
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
      print(f"Figure 1: {steps:,} steps, lr alpha/sqrt(t), b1 0.9, b2 0.99", file=out)
      print(_table(headers, rows), file=out)
      print(f"\nwrote {args.figure1} and {json_path} in {data['seconds']:.1f} s", file=out)
  if args.phase_map is not None:
    c = args.theorem1_c if len(args.theorem1_c) > 1 else _figures.PHASE_MAP_C
    b2 = args.b2 if args.b2 is not None and len(args.b2) > 1 else _figures.PHASE_MAP_B2
    json_path = _figures.json_beside(args.phase_map)
    steps = args.steps if args.steps_given else _figures.PHASE_MAP_STEPS
    data = _figures.theorem1_phase_map(
      args.phase_map,
      c=c,
      b2=b2,
      steps=steps,
      learning_rate=args.lr[0],
      lr_schedule=args.lr_schedule,
      convention=convention,
      json_path=json_path,
    )
    body["phase_map"] = data
    if not args.json:
      s = data["summary"]
      print(
        f"Theorem 1 phase map: {len(c)} x {len(b2)} cells of (C, b2), {steps:,} steps, "
        f"b1 0, lr {args.lr[0]:g} ({args.lr_schedule})",
        file=out,
      )
      for name, row in s.items():
        agree = ""
        if "agrees_with_boundary" in row:
          agree = (
            f"; on the side the steady-state boundary predicts in {row['agrees_with_boundary']}"
          )
        print(
          f"  {name:8s} ends at +1 in {row['ends_near_plus_1']}, at -1 in "
          f"{row['ends_near_minus_1']} of {row['cells']} cells{agree} "
          f"({data['grid_seconds'][name]:.1f} s, compilation included)",
          file=out,
        )
      print(f"\nwrote {args.phase_map} and {json_path} in {data['seconds']:.1f} s", file=out)
  return body


def _theorem1_grid_runs(args, hp, out) -> dict[str, Any]:
  """Runs every (C, b1, b2, lr, eps) cell of theorem1, one compiled call per optimizer."""
  grid = {k: v for k, v in _hyperparameter_values(args).items() if len(v) > 1}
  if args.b2 is None:
    grid.pop("b2", None)  # each C takes the theorem's b2 = 1/(1+C^2)
  defaults = {k: v for k, v in hp.items() if k not in grid and not (k == "b2" and args.b2 is None)}
  rows_out, human, seconds = [], [], {}
  for label, name, conv in _runs(args):
    t0 = time.perf_counter()
    table = _sweep.theorem1_sweep(
      args.theorem1_c,
      args.steps,
      grid,
      optimizer=name,
      defaults=defaults,
      convention=conv or "pytorch",
      lr_schedule=args.lr_schedule,
    )
    seconds[label] = time.perf_counter() - t0
    problem = _problems.theorem1(args.theorem1_c[0])
    for row in _sweep.table_rows(table):
      row = {"label": label, "optimizer": name, "convention": conv, **row, "steps": args.steps}
      row["ends_at"] = _verdict(problem, row["x_final"])
      rows_out.append(row)
      human.append(
        [
          label,
          f"{row['C']:g}",
          f"{row['learning_rate']:g}",
          f"{row['b1']:g}",
          f"{row['b2']:.4g}",
          f"{row['x_final']:+.4f}",
          f"{row['avg_regret']:.6f}",
          row["ends_at"],
        ]
      )
  if not args.json:
    headers = ["optimizer", "C", "lr", "b1", "b2", "x_final", "avg_regret", "ends at"]
    print(_table(headers, human), file=out)
  return {"C": list(args.theorem1_c), "grid": grid, "grid_seconds": seconds, "sweep": rows_out}


# ------------------------------------------------------------------ helpers


def _problem(args) -> _problems.Problem:
  if args.problem == "theorem1":
    return _problems.theorem1(args.theorem1_c[0])
  return _problems.make_problem(args.problem)


def _hyperparameter_values(args) -> dict[str, list[float]]:
  """Returns every hyperparameter's values as given (defaults filled in), in first-seen order."""
  b1, b2 = 0.9, 0.99
  if args.problem == "theorem1":
    betas = _problems.theorem1_betas(args.theorem1_c[0])
    b1, b2 = betas["b1"], betas["b2"]
  values = {
    "learning_rate": args.lr,
    "b1": [b1] if args.b1 is None else args.b1,
    "b2": [b2] if args.b2 is None else args.b2,
    "eps": args.eps,
  }
  return {k: list(dict.fromkeys(v)) for k, v in values.items()}


def _hyperparameters(args) -> dict[str, float]:
  """Returns each hyperparameter's first value: the single runs', and the sweep's defaults."""
  return {k: v[0] for k, v in _hyperparameter_values(args).items()}


def _cli_grid(args) -> dict[str, list[float]]:
  """Returns the hyperparameters given several values on the command line (a grid to run)."""
  return {k: v for k, v in _hyperparameter_values(args).items() if len(v) > 1}


def _runs(args) -> list[tuple[str, str, str | None]]:
  """Returns ``(label, optimizer, convention)`` for every run asked for."""
  runs = []
  for name in dict.fromkeys(args.optimizer):
    if name == "amsgrad":
      for conv in dict.fromkeys(args.convention):
        runs.append((f"amsgrad ({conv})", name, conv))
    else:
      runs.append((name, name, None))
  return runs


def _fmt_hp(hp: dict[str, float], schedule: str) -> str:
  return (
    f"lr {hp['learning_rate']:g} ({schedule}), b1 {hp['b1']:g}, b2 {hp['b2']:g}, eps {hp['eps']:g}"
  )


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

  # The first column is a label (left-aligned); the others are numbers.
  def line(cells):
    return "  ".join(
      c.ljust(w) if i == 0 else c.rjust(w)
      for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    ).rstrip()

  return "\n".join([line(headers), *(line(r) for r in rows)])


def _show_progress(args, steps: int) -> bool:
  return not args.quiet and steps >= _PROGRESS_MIN_STEPS and sys.stderr.isatty()


# ------------------------------------------------------------------ modes


def _single_runs(args, problem, hp, out) -> dict[str, Any]:
  runs = _runs(args)
  txs = {
    label: _optimizers.make_optimizer(
      name, **hp, convention=conv or "pytorch", lr_schedule=args.lr_schedule
    )
    for label, name, conv in runs
  }
  trace_every = args.trace_every
  if args.plot is not None and trace_every is None:
    trace_every = max(1, args.steps // _PLOT_POINTS)
    period = getattr(problem, "period", 1)
    if trace_every >= period:
      # Whole periods: every point at the same phase, so the curve shows the
      # drift of x_t rather than an alias of its within-period sawtooth.
      trace_every -= trace_every % period
  if args.plot is not None:
    # Fail on a missing matplotlib or folder before the runs, not after them.
    try:
      import matplotlib  # noqa: F401
    except ImportError:
      raise ImportError("--plot needs matplotlib: pip install 'amsgrad-optax[plot]'") from None
    folder = os.path.dirname(os.path.abspath(args.plot))
    if not os.path.isdir(folder):
      raise ValueError(f"--plot: the folder {folder!r} does not exist")
  results: dict[str, _runner.RunResult] = {}
  for label, _, _ in runs:
    results[label] = _runner.run(
      problem,
      txs[label],
      args.steps,
      seed=args.seed,
      trace_every=trace_every,
      progress=_show_progress(args, args.steps),
      label=label,
      engine=args.engine,
    )
  if args.plot is not None:
    from amsgrad_optax.synthetic import _plot

    _plot.plot_runs(
      results,
      args.plot,
      problem=problem,
      title=f"{problem.name}: {args.steps:,} steps, {_fmt_hp(hp, args.lr_schedule)}",
    )
  records = []
  for label, name, conv in runs:
    r = results[label]
    records.append(
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
      }
    )
  if not args.json:
    rows = [
      [
        rec["label"],
        f"{rec['x_final']:+.4f}",
        f"{rec['avg_regret']:.6f}",
        f"{rec['seconds']:.3f}",
        f"{rec['compile_seconds']:.3f}",
      ]
      for rec in records
    ]
    print(_table(["optimizer", "x_final", "avg_regret", "run s", "compile s"], rows), file=out)
    if args.plot is not None:
      print(f"\nwrote {args.plot}", file=out)
  return {"results": records}


def _sweep_runs(args, problem, hp, out) -> dict[str, Any]:
  if args.plot is not None:
    raise ValueError("--plot draws single runs; it cannot be combined with --sweep")
  grid = {}
  for flag, key in (
    ("sweep_lr", "learning_rate"),
    ("sweep_b1", "b1"),
    ("sweep_b2", "b2"),
    ("sweep_eps", "eps"),
  ):
    values = getattr(args, flag)
    if values:
      grid[key] = list(dict.fromkeys(values))
  for key, values in _cli_grid(args).items():
    if key in grid:
      flag = "--lr" if key == "learning_rate" else f"--{key}"
      raise ValueError(
        f"{flag} has several values and --sweep-{flag[2:]} is given too: use one of them"
      )
    grid[key] = values
  if not grid:
    grid = dict(_DEFAULT_SWEEP)
  defaults = {k: v for k, v in hp.items() if k not in grid}
  seeds = list(range(args.seed, args.seed + args.seeds))
  if seeds[-1] >= 2**31:
    raise ValueError(f"--seed + --seeds must stay below 2**31, got {seeds[-1]}")
  # Checked up front, so that a bad value fails before any compilation.
  _sweep._check_grid(grid)
  rows_out = []
  human_rows = []
  grid_seconds = {}
  for label, name, conv in _runs(args):
    t0 = time.perf_counter()
    table = _sweep.sweep(
      problem,
      args.steps,
      grid,
      optimizer=name,
      seeds=seeds,
      defaults=defaults,
      convention=conv or "pytorch",
      lr_schedule=args.lr_schedule,
      engine=args.engine,
    )
    seconds = time.perf_counter() - t0
    grid_seconds[label] = seconds
    for row in _sweep.table_rows(table):
      row = {"label": label, "optimizer": name, "convention": conv, **row, "steps": args.steps}
      row["ends_at"] = _verdict(problem, row["x_final"])
      rows_out.append(row)
      human_rows.append(
        [
          label,
          f"{row['learning_rate']:g}",
          f"{row['b1']:g}",
          f"{row['b2']:g}",
          f"{row['eps']:g}",
          str(row["seed"]),
          f"{row['x_final']:+.4f}",
          f"{row['avg_regret']:.6f}",
          row["ends_at"],
        ]
      )
    if not args.json:
      print(
        f"# {label}: {len(table['seed'])} runs in {seconds:.2f} s (compilation included)",
        file=sys.stderr,
      )
  if not args.json:
    headers = ["optimizer", "lr", "b1", "b2", "eps", "seed", "x_final", "avg_regret", "ends at"]
    print(_table(headers, human_rows), file=out)
  return {
    "grid": grid,
    "seeds": seeds,
    "engine": args.engine,
    # Wall time of each optimizer's whole grid, compilation included, and their total.
    "seconds": sum(grid_seconds.values()),
    "grid_seconds": grid_seconds,
    "sweep": rows_out,
  }


def _verdict(problem, x: float) -> str:
  """Returns ``"x*"`` or ``"worst"`` when ``x`` ends within 10% of the interval of either."""
  worst = problem.upper if problem.x_star == problem.lower else problem.lower
  tol = 0.1 * (problem.upper - problem.lower)
  if abs(x - problem.x_star) <= tol:
    return "x*"
  if abs(x - worst) <= tol:
    return "worst"
  return "-"


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the command line; returns the exit status.

  Args:
    argv: the arguments, without the program name; None for ``sys.argv[1:]``.

  Returns:
    0 on success; 2 for bad arguments; 1 for a missing optional package or
    a file that cannot be written.
  """
  parser = build_parser()
  args = parser.parse_args(argv)
  out = sys.stdout
  _resolve_defaults(args)
  try:
    for c in args.theorem1_c:
      _problems.theorem1(c)  # every C is checked, not only the first
    if args.figure1 is not None or args.phase_map is not None:
      body = _figure_runs(args, out)
      if args.json:
        json.dump(body, out, indent=2, allow_nan=False)
        out.write("\n")
      out.flush()
      return 0
    problem = _problem(args)
    hp = _hyperparameters(args)
    is_sweep = (
      args.sweep
      or bool(_cli_grid(args))
      or any(getattr(args, f) for f in ("sweep_b1", "sweep_b2", "sweep_lr", "sweep_eps"))
    )
    # Build every optimizer once with concrete values: bad input fails here.
    for _, name, conv in _runs(args):
      _optimizers.make_optimizer(
        name, **hp, convention=conv or "pytorch", lr_schedule=args.lr_schedule
      )
    if args.steps + problem.first_step - 1 > 2**31 - 1:
      raise ValueError(f"--steps must be below 2**31, got {args.steps}")
    header = {
      "problem": problem.name,
      "description": problem.describe(),
      "steps": args.steps,
      "hyperparameters": {**hp, **_cli_grid(args), "lr_schedule": args.lr_schedule},
      "seed": args.seed,
    }
    c_grid = args.problem == "theorem1" and len(args.theorem1_c) > 1
    if c_grid:
      header["description"] = problem.describe().replace(f"{problem.big:g} x", "C x", 1)
      if args.b2 is None:
        header["hyperparameters"]["b2"] = "1/(1+C^2)"
    if not args.json:
      print(f"{problem.name}: {header['description']}", file=out)
      line = _fmt_hp(hp, args.lr_schedule)
      if c_grid and args.b2 is None:
        line = line.replace(f"b2 {hp['b2']:g}", "b2 1/(1+C^2)")
      print(f"{args.steps:,} steps; {line}\n", file=out)
    if c_grid:
      body = _theorem1_grid_runs(args, hp, out)
    elif is_sweep:
      body = _sweep_runs(args, problem, hp, out)
    else:
      body = _single_runs(args, problem, hp, out)
  except (ValueError, TypeError) as e:
    parser.exit(2, f"{PROG}: error: {_one_line(e)}\n")
  except (ImportError, OSError) as e:
    parser.exit(1, f"{PROG}: error: {_one_line(e)}\n")
  if args.json:
    json.dump({**header, **body}, out, indent=2)
    out.write("\n")
  out.flush()
  return 0


def _one_line(e: BaseException) -> str:
  return " ".join(str(e).split())
