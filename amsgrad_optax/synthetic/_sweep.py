"""A grid of hyperparameters and seeds, run as one compiled, vmapped (and sharded) call."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from amsgrad_optax import _validation
from amsgrad_optax.synthetic import _fast, _optimizers, _problems, _runner
from amsgrad_optax.synthetic._runner import DEFAULT_UNROLL

#: The hyperparameters a sweep can vary, as :func:`make_optimizer` names them.
HYPERPARAMETERS: tuple[str, ...] = ("learning_rate", "b1", "b2", "eps")

_DEFAULTS = {"learning_rate": 1e-2, "b1": 0.9, "b2": 0.99, "eps": 1e-8}
_AXIS = "configs"


def _check_grid(grid: Mapping[str, Sequence[float]]) -> dict[str, np.ndarray]:
  out = {}
  for name, values in grid.items():
    if name not in HYPERPARAMETERS:
      raise ValueError(f"grid keys must be among {HYPERPARAMETERS}, got {name!r}")
    arr = np.atleast_1d(np.asarray(values, dtype=np.float64))
    if arr.ndim != 1 or arr.size == 0:
      raise ValueError(f"grid[{name!r}] must be a non-empty 1-D sequence, got {values!r}")
    high = 1.0 if name in ("b1", "b2") else np.inf
    for v in arr.tolist():
      _validation.check_range(name, v, low=0.0, high=high)
    out[name] = arr
  return out


def _check_seeds(seeds: Sequence[int]) -> np.ndarray:
  arr = np.atleast_1d(np.asarray(seeds))
  if arr.ndim != 1 or arr.size == 0 or not np.issubdtype(arr.dtype, np.integer):
    raise ValueError(f"seeds must be a non-empty sequence of ints, got {seeds!r}")
  if arr.min() < 0 or arr.max() > np.iinfo(np.int32).max:
    raise ValueError(f"seeds must be in [0, 2**31), got {seeds!r}")
  return arr.astype(np.int32)


def sweep(
  problem: _problems.Problem,
  steps: int,
  grid: Mapping[str, Sequence[float]] | None = None,
  *,
  optimizer: str | Callable[..., optax.GradientTransformation] = "adam",
  seeds: Sequence[int] = (0,),
  defaults: Mapping[str, float] | None = None,
  convention: str = "pytorch",
  lr_schedule: str = "constant",
  shard: bool | None = None,
  unroll: int = DEFAULT_UNROLL,
  engine: str = "auto",
  progress: bool = False,
  label: str | None = None,
) -> dict[str, np.ndarray]:
  r"""Returns the final point and average regret of every config of a grid, run as one call.

  The configs are the Cartesian product of ``grid``'s values (the last key
  varying fastest), each run once per seed (the seed varying fastest of
  all). Hyperparameters not in ``grid`` take ``defaults``. All configs run
  in one batch; with more than one device (and
  ``shard`` not False) the config axis is split over a 1-D mesh of all
  devices, padding it to a multiple of their number. Hyperparameters enter
  the run as float32 arrays (the table shows them as given), so a config
  matches :func:`run` with the same values as float32 arrays.

  Args:
    problem: an :class:`OnlineProblem` or :class:`StochasticProblem`.
    steps: :math:`T` for every config.
    grid: maps names in :data:`HYPERPARAMETERS` to sequences of values;
      None or empty for the defaults alone.
    optimizer: a name in :data:`OPTIMIZERS`, or a callable taking
      ``learning_rate``, ``b1``, ``b2`` and ``eps`` (JAX scalars) as
      keywords and returning an optax transformation.
    seeds: the seeds of the ``jax.random`` keys.
    defaults: values of the hyperparameters not in ``grid`` (default
      ``learning_rate=1e-2, b1=0.9, b2=0.99, eps=1e-8``).
    convention: the AMSGrad convention when ``optimizer == "amsgrad"``.
    lr_schedule: ``"constant"`` or ``"inverse-sqrt"``, for named optimizers.
    shard: split the configs over the devices: None for "when there is more
      than one", True or False to force.
    unroll: the inner scan's unroll factor; the default 4 is the fastest
      measured on CPU.
    engine: ``"auto"`` (for a named optimizer, the blocked, time-parallel
      engine with all configs batched together; a callable's
      transformations run each as :func:`simulate` picks), ``"fast"`` (a
      named optimizer only) or ``"scan"`` (the step-by-step scan always).
      The fast engine runs as host calls of about 0.1 s each, so that the
      progress bar moves and Ctrl-C (KeyboardInterrupt) takes effect
      between them, dropping the unfinished grid; the scan runs as one
      ``jax.jit(jax.vmap(...))`` call, interrupted only when it returns.
    progress: show a tqdm progress bar on stderr (the fast engine only).
    label: the bar's description.

  Returns:
    A dict of equal-length NumPy arrays, one row per run: a column per name
    in :data:`HYPERPARAMETERS`, ``seed``, ``x_final``, ``regret`` and
    ``avg_regret`` (float64, from the compensated float32 total).

  Examples:
    >>> from amsgrad_optax import synthetic
    >>> grid = {"b1": [0.0, 0.9], "b2": [0.99, 0.999]}
    >>> adam = synthetic.sweep(synthetic.online(), 20_200, grid, optimizer="adam", shard=False)
    >>> [(r["b1"], r["b2"], round(r["x_final"], 2)) for r in synthetic.table_rows(adam)]
    [(0.0, 0.99, 1.0), (0.0, 0.999, 0.42), (0.9, 0.99, 1.0), (0.9, 0.999, 0.28)]
  """
  _runner._check_problem(problem)
  steps = _runner._check_steps(steps, problem)
  grid_np = _check_grid(grid or {})
  seeds_np = _check_seeds(seeds)
  fixed = dict(_DEFAULTS)
  for name, value in (defaults or {}).items():
    if name not in HYPERPARAMETERS:
      raise ValueError(f"defaults keys must be among {HYPERPARAMETERS}, got {name!r}")
    fixed[name] = value
  _check_grid({k: [v] for k, v in fixed.items()})

  if engine not in _runner.ENGINES:
    raise ValueError(f"engine must be one of {_runner.ENGINES}, got {engine!r}")
  if isinstance(optimizer, str):
    # Built once with concrete values, so a bad name or convention fails here.
    _optimizers.make_optimizer(optimizer, **fixed, convention=convention, lr_schedule=lr_schedule)

    def make_tx(**hp):
      return _optimizers.make_optimizer(
        optimizer, **hp, convention=convention, lr_schedule=lr_schedule
      )
  elif callable(optimizer):
    make_tx = optimizer
  else:
    raise TypeError(
      f"optimizer must be a name in {_optimizers.OPTIMIZERS} or a callable, got {optimizer!r}"
    )

  names = list(grid_np)
  combos = list(itertools.product(*(grid_np[n] for n in names)))
  columns: dict[str, np.ndarray] = {}
  n_configs = len(combos) * seeds_np.size
  for name in HYPERPARAMETERS:
    if name in grid_np:
      col = np.asarray([c[names.index(name)] for c in combos], np.float64)
    else:
      col = np.full(len(combos), float(fixed[name]))
    columns[name] = np.repeat(col, seeds_np.size)
  columns["seed"] = np.tile(seeds_np, len(combos)).astype(np.int64)

  fast = None
  if engine != "scan":
    why = None
    if not isinstance(optimizer, str):
      why = "the optimizer is a callable, not a name in OPTIMIZERS"
    elif optimizer not in _optimizers.FAST_OPTIMIZERS:
      why = f"the fast engine has no closed form for {optimizer!r}"
    elif not _fast.fits(problem, steps, n_configs):
      why = "its padded last chunk would run past the int32 step index"
    else:
      fast = (optimizer, convention, lr_schedule)
    if why is not None and engine == "fast":
      raise ValueError(f"engine='fast' cannot run this sweep: {why}; use engine='auto' or 'scan'")

  x_out, regret_out, residual = _run_configs(
    problem,
    make_tx,
    steps,
    {n: columns[n] for n in HYPERPARAMETERS},
    columns["seed"],
    shard=shard,
    unroll=unroll,
    fast=fast,
    inner_engine="scan" if engine == "scan" else "auto",
    progress=progress,
    label=label,
  )
  regret = np.asarray(regret_out, np.float64)[:n_configs]
  regret = regret + np.asarray(residual, np.float64)[:n_configs]
  columns["x_final"] = np.asarray(x_out, np.float64)[:n_configs]
  columns["regret"] = regret
  columns["avg_regret"] = regret / steps
  return columns


def _run_configs(
  problem: _problems.Problem,
  make_tx: Callable[..., optax.GradientTransformation],
  steps: int,
  hyperparameters: Mapping[str, np.ndarray],
  seeds: np.ndarray,
  *,
  shard: bool | None,
  unroll: int,
  fast: tuple[str, str, str] | None = None,
  inner_engine: str = "auto",
  progress: bool = False,
  label: str | None = None,
) -> tuple[Any, Any, Any]:
  """Returns ``(x_final, regret, residual)`` of every config, padded to a multiple of the devices.

  The fast engine runs as host-driven calls of :func:`_fast.advance_batch`
  (a progress bar, and Ctrl-C between calls); the scan as one
  ``jit(vmap(...))`` call. With ``shard`` the inputs and outputs are split
  over a 1-D mesh of all devices along the config axis.
  """

  def one(hp: dict[str, jax.Array], seed: jax.Array):
    tx = make_tx(**hp)
    sim = _runner.simulate(
      problem, tx, steps, key=jax.random.key(seed), unroll=unroll, engine=inner_engine
    )
    return sim.x_final, sim.regret, sim.regret_residual

  devices = jax.devices()
  if shard is None:
    shard = len(devices) > 1
  n = len(seeds)
  n_dev = len(devices) if shard else 1
  pad = -(-n // n_dev) * n_dev - n

  def padded(a: np.ndarray, dtype) -> np.ndarray:
    # Extra configs repeat the last one; their results are dropped.
    a = np.asarray(a)
    if pad:
      a = np.concatenate([a, np.repeat(a[-1:], pad)])
    return a.astype(dtype)

  hp_in = {k: padded(v, np.float32) for k, v in hyperparameters.items()}
  seed_in = padded(seeds, np.int32)
  mesh = Mesh(np.asarray(devices), (_AXIS,)) if shard else None

  def put(tree: Any) -> Any:
    if mesh is None:
      return tree
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec(_AXIS)))

  def jit(f: Callable[..., Any], n_split: int, n_replicated: int = 0, **kw: Any) -> Any:
    if mesh is None:
      return jax.jit(f, **kw)
    split = NamedSharding(mesh, PartitionSpec(_AXIS))
    whole = NamedSharding(mesh, PartitionSpec())
    shardings = (split,) * n_split + (whole,) * n_replicated
    return jax.jit(f, in_shardings=shardings, out_shardings=split, **kw)

  hp_in, seed_in = put(hp_in), put(seed_in)
  if fast is None:
    # One compiled call, traced, compiled and run at once: Ctrl-C takes
    # effect when it returns (cutting tracing short would crash at exit).
    with _runner.deferred_interrupt():
      return jit(jax.vmap(one), 2)(hp_in, seed_in)

  # The fast engine is batched itself: the runs share its rows and loops. The
  # host runs its chunks in calls of about 0.1 s (the bar moves, Ctrl-C stops
  # between calls); the chunks are those of one _fast.simulate_batch call.
  name, convention, lr_schedule = fast

  def advance(hp, seeds, state, first, count):
    hp = dict(hp)
    big = hp.pop("big", None)
    spec = _fast.OptimizerSpec(name, **hp, convention=convention, lr_schedule=lr_schedule)
    keys = jax.vmap(jax.random.key)(seeds)
    return _fast.advance_batch(problem, spec, steps, keys, state, first, count, big=big)

  batch = n + pad
  i32 = np.int32(0)
  with _runner.deferred_interrupt():  # no KeyboardInterrupt inside XLA's compilation
    state = put(_fast.initial_state(problem, batch, np.float32))
    compiled = jit(advance, 3, 2, donate_argnums=2).lower(hp_in, seed_in, state, i32, i32).compile()
  state, _ = _runner._drive_chunks(
    lambda s, first, count: compiled(hp_in, seed_in, s, first, count),
    state,
    _fast.num_chunks(steps, batch),
    _fast.chunk_steps(steps, batch),
    steps,
    progress,
    label,
  )
  return _fast.result(jax.device_get(state))


def theorem1_sweep(
  c: Sequence[float],
  steps: int,
  grid: Mapping[str, Sequence[float]] | None = None,
  *,
  optimizer: str = "adam",
  defaults: Mapping[str, float] | None = None,
  convention: str = "pytorch",
  lr_schedule: str = "constant",
  shard: bool | None = None,
  progress: bool = False,
  label: str | None = None,
) -> dict[str, np.ndarray]:
  r"""Returns the final point and average regret of Theorem 1's problem over a grid of C and hyperparameters.

  Every config of the Cartesian product of ``c`` and ``grid`` (C varying
  slowest, then ``grid``'s keys in order, the last fastest) runs the problem
  of :func:`theorem1` with its own C, all in one batch of the fast engine
  (C enters as a per-run array, so the grid compiles once), run as host
  calls of about 0.1 s as :func:`sweep` does. Where
  ``b2`` is in neither ``grid`` nor ``defaults``, each C gets the theorem's
  :math:`eta_2 = 1/(1 + C^2)`; ``b1`` defaults to the theorem's 0.

  Args:
    c: values of :math:`C`, each > 2 (so that :math:`x^* = -1` for all).
    steps: :math:`T` for every config.
    grid: maps names in :data:`HYPERPARAMETERS` to sequences of values.
    optimizer: a name in :data:`OPTIMIZERS`.
    defaults: values of the hyperparameters not in ``grid`` (default
      ``learning_rate=1e-2, b1=0, eps=1e-8``, ``b2`` as above).
    convention: the AMSGrad convention when ``optimizer == "amsgrad"``.
    lr_schedule: ``"constant"`` or ``"inverse-sqrt"``.
    shard: as for :func:`sweep`.
    progress: show a tqdm progress bar on stderr.
    label: the bar's description.

  Returns:
    A dict of equal-length NumPy arrays, one row per config: ``C``, a column
    per name in :data:`HYPERPARAMETERS`, ``x_final``, ``regret`` and
    ``avg_regret``.

  Raises:
    ValueError: for a C that is not > 2, a bad grid, or an optimizer that is
      not a name.

  Examples:
    >>> from amsgrad_optax import synthetic
    >>> adam = synthetic.theorem1_sweep([3.0, 10.0], 30_000, {"b2": [0.01, 0.9]}, shard=False)
    >>> [(r["C"], r["b2"], round(r["x_final"])) for r in synthetic.table_rows(adam)]
    [(3.0, 0.01, 1), (3.0, 0.9, -1), (10.0, 0.01, 1), (10.0, 0.9, -1)]
  """
  c_np = np.atleast_1d(np.asarray(c, dtype=np.float64))
  if c_np.ndim != 1 or c_np.size == 0:
    raise ValueError(f"c must be a non-empty 1-D sequence, got {c!r}")
  for value in c_np.tolist():
    _problems.theorem1(value)  # checks C > 2
  steps = _runner._check_steps(steps, _problems.theorem1())
  grid_np = _check_grid(grid or {})
  if not isinstance(optimizer, str):
    raise TypeError(f"optimizer must be a name in {_optimizers.OPTIMIZERS}, got {optimizer!r}")
  fixed = {"learning_rate": 1e-2, "b1": 0.0, "eps": 1e-8}
  for name, value in (defaults or {}).items():
    if name not in HYPERPARAMETERS:
      raise ValueError(f"defaults keys must be among {HYPERPARAMETERS}, got {name!r}")
    fixed[name] = value
  _check_grid({k: [v] for k, v in fixed.items()})
  _optimizers.make_optimizer(
    optimizer,
    **{**_DEFAULTS, **fixed},
    convention=convention,
    lr_schedule=lr_schedule,
  )
  names = list(grid_np)
  combos = list(itertools.product(c_np, *(grid_np[n] for n in names)))
  columns: dict[str, np.ndarray] = {"C": np.asarray([k[0] for k in combos], np.float64)}
  for name in HYPERPARAMETERS:
    if name in grid_np:
      col = np.asarray([k[1 + names.index(name)] for k in combos], np.float64)
    elif name in fixed:
      col = np.full(len(combos), float(fixed[name]))
    else:  # b2: the theorem's value for each C
      col = 1.0 / (1.0 + columns["C"] ** 2)
    columns[name] = col
  problem = _problems.theorem1(float(c_np[0]))
  if not _fast.fits(problem, steps, len(combos)):
    raise ValueError(f"steps={steps} would run the fast engine past the int32 step index")
  hp = {n: columns[n] for n in HYPERPARAMETERS}
  hp["big"] = columns["C"]
  x_final, regret, residual = _run_configs(
    problem,
    lambda **kw: None,  # unused: the fast engine runs every config
    steps,
    hp,
    np.zeros(len(combos), np.int64),
    shard=shard,
    unroll=DEFAULT_UNROLL,
    fast=(optimizer, convention, lr_schedule),
    progress=progress,
    label=label,
  )
  n = len(combos)
  columns["x_final"] = np.asarray(x_final, np.float64)[:n]
  total = np.asarray(regret, np.float64)[:n] + np.asarray(residual, np.float64)[:n]
  columns["regret"] = total
  columns["avg_regret"] = total / steps
  return columns


def table_rows(table: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
  """Returns the rows of a column table (as :func:`sweep` returns) as a list of dicts.

  Args:
    table: a dict of equal-length arrays.

  Returns:
    One dict of Python scalars per row.

  Examples:
    >>> import numpy as np
    >>> from amsgrad_optax import synthetic
    >>> synthetic.table_rows({"b1": np.array([0.0, 0.9]), "seed": np.array([0, 0])})
    [{'b1': 0.0, 'seed': 0}, {'b1': 0.9, 'seed': 0}]
  """
  n = len(next(iter(table.values()))) if table else 0
  return [{k: np.asarray(v)[i].item() for k, v in table.items()} for i in range(n)]
