"""Runs an optimizer on a synthetic problem as one compiled ``lax.scan``.

Every step does what the paper's reference loop does: it adds the regret
:math:`f_t(x_t) - f_t(x^*)` to the running total, takes the gradient, applies
the optimizer's update and projects :math:`x` back onto the feasible
interval. The whole run is a nested scan inside ``jax.jit`` (outer over
blocks of ``trace_every`` steps, inner over the steps of a block), so there
is no host round-trip per step and the trace costs one entry per block.

The regret total is a compensated float32 sum, exact to about twice float32
precision: ten million plain float32 additions of numbers near 10 into a
total near 10^6 lose over 1% of it.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import time
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np
import optax

from amsgrad_optax.synthetic import _fast, _problems

#: Steps per block when no trace is asked for.
_DEFAULT_BLOCK = 4096
#: Steps per compiled call of the scan engine (about 25 ms each on CPU).
_DEFAULT_CHUNK = 1 << 20
#: Wall time the fast engine aims at per compiled call: the progress bar moves
#: and Ctrl-C takes effect between calls.
_TARGET_CALL_SECONDS = 0.1
#: Chunks in the fast engine's first call (about 1.7e7 steps, some 50 ms on
#: one CPU core); later calls are sized from its time. Each call costs a
#: dispatch and a wait, so a run of 10^7 steps is still one call.
_FIRST_CALL_CHUNKS = 64
_MAX_STEP_INDEX = np.iinfo(np.int32).max
#: The engines accepted by ``engine=``: ``"fast"`` is the blocked,
#: time-parallel run of :mod:`amsgrad_optax.synthetic._fast`, ``"scan"`` the
#: step-by-step ``lax.scan``, ``"auto"`` the first where it applies.
ENGINES: tuple[str, ...] = ("auto", "fast", "scan")
#: Steps whose regret is summed locally before joining the total, and whose
#: random coefficients are drawn at once, vectorized.
_SUB_BLOCK = 4096
#: The inner scan's unroll factor: on CPU 3-4 hide the compensated sum's
#: cost; 8 leaves XLA's fast path for small loops and runs several times slower.
DEFAULT_UNROLL = 4


class Trace(NamedTuple):
  """A downsampled record of a run, one entry every ``trace_every`` steps and one at the end.

  Attributes:
    t: the number of steps done, int64.
    x: the point after those steps (the next one to be played).
    avg_regret: :math:`R(t)/t`, the average regret of the first ``t`` steps.
  """

  t: np.ndarray
  x: np.ndarray
  avg_regret: np.ndarray


class RunResult(NamedTuple):
  """The outcome of :func:`run`.

  Attributes:
    x_final: the point after the last step.
    avg_regret: :math:`R(T)/T`, computed in float64 from the compensated sum.
    regret: :math:`R(T) = \\sum_t f_t(x_t) - f_t(x^*)`.
    steps: :math:`T`.
    seconds: wall time of the run, after compilation.
    compile_seconds: wall time of tracing and compiling (0 when cached).
    trace: the :class:`Trace`, or None if ``trace_every`` was None.
  """

  x_final: float
  avg_regret: float
  regret: float
  steps: int
  seconds: float
  compile_seconds: float
  trace: Trace | None


class Simulation(NamedTuple):
  """The outcome of :func:`simulate`, as JAX arrays (batched under ``vmap``).

  Attributes:
    x_final: the point after the last step.
    regret: :math:`R(T)`, the compensated sum rounded to one float.
    regret_residual: the rest: ``regret + regret_residual`` (added in
      float64) is :math:`R(T)` to about twice working precision.
    avg_regret: :math:`R(T)/T`.
    trace_x: the point after every ``trace_every`` steps, shape
      ``(steps // trace_every,)``.
    trace_avg_regret: :math:`R(t)/t` at the same steps.
  """

  x_final: jax.Array
  regret: jax.Array
  regret_residual: jax.Array
  avg_regret: jax.Array
  trace_x: jax.Array
  trace_avg_regret: jax.Array


class _Carry(NamedTuple):
  x: jax.Array
  opt_state: Any
  t: jax.Array
  regret: jax.Array
  compensation: jax.Array


# ------------------------------------------------------------------ checks


def _check_steps(steps: int, problem: _problems.Problem) -> int:
  if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
    raise TypeError(f"steps must be an int, got {steps!r}")
  steps = int(steps)
  if steps < 1:
    raise ValueError(f"steps must be >= 1, got {steps!r}")
  if problem.first_step + steps - 1 > _MAX_STEP_INDEX:
    raise ValueError(
      f"steps must keep the step index within int32: first_step + steps - 1 = "
      f"{problem.first_step + steps - 1} > {_MAX_STEP_INDEX}"
    )
  return steps


def _check_trace_every(trace_every: int | None) -> None:
  if trace_every is None:
    return
  if (
    isinstance(trace_every, bool)
    or not isinstance(trace_every, (int, np.integer))
    or trace_every < 1
  ):
    raise ValueError(f"trace_every must be a positive int or None, got {trace_every!r}")


def _check_problem(problem: Any) -> None:
  if not isinstance(problem, (_problems.OnlineProblem, _problems.StochasticProblem)):
    raise TypeError(
      "problem must be an OnlineProblem or StochasticProblem (see "
      f"amsgrad_optax.synthetic.online/stochastic/theorem1), got {problem!r}"
    )


def _check_tx(tx: Any) -> None:
  if not (hasattr(tx, "init") and hasattr(tx, "update")):
    raise TypeError(f"tx must be an optax.GradientTransformation, got {tx!r}")


def fast_spec(tx: Any) -> _fast.OptimizerSpec | None:
  """Returns the closed-form description of ``tx``, or None if the fast engine cannot run it.

  Only the optimizers :func:`make_optimizer` builds by name carry one; any
  other transformation (a chain, a wrapper, a hand-built optax optimizer)
  may do anything per step, and runs as a plain scan.
  """
  spec = getattr(tx, "spec", None)
  return spec if isinstance(spec, _fast.OptimizerSpec) else None


def _pick_engine(
  engine: str, tx: Any, trace_every: int | None, problem: _problems.Problem, steps: int
) -> _fast.OptimizerSpec | None:
  """Returns the spec to run fast with, or None for the scan; checks ``engine``."""
  if engine not in ENGINES:
    raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
  if engine == "scan":
    return None
  spec = fast_spec(tx)
  why = None
  if spec is None:
    why = "tx was not built by amsgrad_optax.synthetic.make_optimizer"
  elif trace_every is not None:
    why = "it keeps no trace (trace_every must be None)"
  elif not _fast.fits(problem, steps):
    why = "its padded last chunk would run past the int32 step index"
  if why is None:
    return spec
  if engine == "fast":
    raise ValueError(f"engine='fast' cannot run this: {why}; use engine='auto' or 'scan'")
  return None


def _as_key(seed: int | None, key: jax.Array | None) -> jax.Array:
  """Returns a typed ``jax.random`` key: ``key`` (a legacy uint32 key is wrapped), or one from ``seed``."""
  if key is None:
    return jax.random.key(0 if seed is None else seed)
  if not jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    return jax.random.wrap_key_data(key)
  return key


@contextlib.contextmanager
def deferred_interrupt():
  """Holds back Ctrl-C (SIGINT) inside the block, and raises KeyboardInterrupt when it ends.

  XLA's tracing and compilation must not be cut short: a KeyboardInterrupt
  raised inside them leaves the process to crash at exit. A second Ctrl-C
  inside the block raises at once (the user insists). Outside the main
  thread, or where SIGINT is not Python's default handler, it does nothing.
  """
  import signal
  import threading

  if (
    threading.current_thread() is not threading.main_thread()
    or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
  ):
    yield
    return
  received = []

  def hold(signum, frame):
    if received:
      raise KeyboardInterrupt
    received.append(signum)

  previous = signal.signal(signal.SIGINT, hold)
  try:
    yield
  finally:
    signal.signal(signal.SIGINT, previous)
  if received:
    raise KeyboardInterrupt


# ------------------------------------------------------------------ the step


def _two_sum(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Returns ``(a + b, err)`` with ``err`` the exact rounding error (Knuth's TwoSum)."""
  s = a + b
  b_part = s - a
  return s, (a - (s - b_part)) + (b - b_part)


def _add_double(
  hi: jax.Array, lo: jax.Array, b_hi: jax.Array, b_lo: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """Returns ``(hi', lo')``, the double-word sum of two double-word numbers, renormalised."""
  s, err = _two_sum(hi, b_hi)
  err = err + (lo + b_lo)
  new_hi = s + err
  return new_hi, err - (new_hi - s)


class _Stepper:
  """The steps of one run: single, a static number, or a traced number of them.

  The regret is summed in sub-blocks of at most ``_SUB_BLOCK`` steps: within
  one, each step adds to a local sum with TwoSum and collects the exact
  rounding errors in a local float32 (two adds on the loop's critical path,
  as cheap as a plain sum); at its end the local pair joins the run's
  renormalised double-word total. A sub-block is short enough that its error
  sum stays exact to about float32 precision even when the errors all have
  one sign; a single running error sum over 10^7 steps does not.

  An online problem's coefficient is a few integer ops, computed inside the
  loop. A stochastic one costs a hash, far cheaper drawn for a sub-block at
  once, vectorized: its coins depend on :math:`t` alone, so how the steps are
  grouped changes nothing.
  """

  def __init__(self, problem, tx, key, unroll: int):
    self.problem, self.tx, self.key, self.unroll = problem, tx, key, unroll

  def step(self, carry: _Carry, coef: jax.Array | None = None) -> _Carry:
    """Returns the carry after one step; ``regret``/``compensation`` are the local pair."""
    problem = self.problem
    x = carry.x
    dtype = x.dtype
    if coef is None:
      coef = problem.coefficient(carry.t, self.key, dtype)
    # As the reference: regret_t = f_t(x_t) - f_t(x*), in working precision.
    r = coef * x - coef * jnp.asarray(problem.x_star, dtype)
    total, err = _two_sum(carry.regret, r)
    updates, opt_state = self.tx.update(coef, carry.opt_state, x)
    x = jnp.clip(x + jnp.asarray(updates, dtype), problem.lower, problem.upper).astype(dtype)
    return _Carry(x, opt_state, carry.t + 1, total, carry.compensation + err)

  def _coefs(self, t0: jax.Array, n: int, dtype) -> jax.Array | None:
    if not self.problem.stochastic:
      return None
    ts = t0 + jnp.arange(n, dtype=jnp.int32)
    return jax.vmap(lambda t: self.problem.coefficient(t, self.key, dtype))(ts)

  def _local(self, carry: _Carry, run_steps) -> _Carry:
    """Runs ``run_steps`` on a zeroed local sum, then folds it into the total."""
    zero = jnp.zeros_like(carry.regret)
    local = run_steps(carry._replace(regret=zero, compensation=zero))
    hi, lo = _add_double(carry.regret, carry.compensation, local.regret, local.compensation)
    return local._replace(regret=hi, compensation=lo)

  def _sub_block(self, carry: _Carry, length: int) -> _Carry:
    def run_steps(c):
      coefs = self._coefs(c.t, length, c.x.dtype)
      c, _ = jax.lax.scan(
        lambda c, g: (self.step(c, g), None),
        c,
        coefs,
        length=length,
        unroll=max(1, min(self.unroll, length)),
      )
      return c

    return self._local(carry, run_steps)

  def steps(self, carry: _Carry, length: int) -> _Carry:
    """Returns the carry after ``length`` (static) steps."""
    n_sub, rem = divmod(length, _SUB_BLOCK)
    if n_sub == 1:
      carry = self._sub_block(carry, _SUB_BLOCK)
    elif n_sub > 1:
      carry, _ = jax.lax.scan(
        lambda c, _: (self._sub_block(c, _SUB_BLOCK), None), carry, None, length=n_sub
      )
    if rem:
      carry = self._sub_block(carry, rem)
    return carry

  def dynamic_steps(self, carry: _Carry, n: jax.Array, max_n: int) -> _Carry:
    """Returns the carry after ``n`` (traced, at most ``max_n``) steps."""
    if max_n >= _SUB_BLOCK:
      carry = jax.lax.fori_loop(
        0, n // _SUB_BLOCK, lambda _, c: self._sub_block(c, _SUB_BLOCK), carry
      )

    def run_steps(c):
      # The last steps take their coins from one more sub-block drawn at once.
      coefs = self._coefs(c.t, _SUB_BLOCK, c.x.dtype)
      if coefs is None:
        return jax.lax.fori_loop(0, n % _SUB_BLOCK, lambda _, c: self.step(c), c)
      return jax.lax.fori_loop(0, n % _SUB_BLOCK, lambda i, c: self.step(c, coefs[i]), c)

    return self._local(carry, run_steps)


def _init_carry(problem: _problems.Problem, tx: optax.GradientTransformation, dtype) -> _Carry:
  x0 = jnp.asarray(problem.x0, dtype)
  zero = jnp.zeros((), dtype)
  carry = _Carry(x0, tx.init(x0), jnp.asarray(problem.first_step, jnp.int32), zero, zero)
  # Fresh buffers: the carry is donated, and no buffer may be donated twice.
  return jax.tree.map(lambda a: jnp.array(a, copy=True), carry)


def _avg(carry: _Carry, first_step: int) -> jax.Array:
  done = (carry.t - first_step).astype(carry.regret.dtype)
  return (carry.regret + carry.compensation) / done


# ------------------------------------------------------------------ pure API


def simulate(
  problem: _problems.Problem,
  tx: optax.GradientTransformation,
  steps: int,
  *,
  key: jax.Array | None = None,
  trace_every: int | None = None,
  dtype: Any = jnp.float32,
  unroll: int = DEFAULT_UNROLL,
  engine: str = "auto",
) -> Simulation:
  r"""Returns the outcome of ``steps`` steps of ``tx`` on ``problem``, as a pure JAX function.

  Traceable: call it under :func:`jax.jit` or :func:`jax.vmap` (over a key,
  or over hyperparameters by building ``tx`` inside the mapped function).
  ``steps``, ``trace_every`` and ``problem`` must be static. Each step
  :math:`t` adds :math:`f_t(x_t) - f_t(x^*)` to the regret, then updates
  :math:`x_{t+1} = \Pi_{[l, u]}(x_t + \mathrm{tx}(c_t))`.

  Args:
    problem: an :class:`OnlineProblem` or :class:`StochasticProblem`.
    tx: any optax gradient transformation; its params are a scalar array.
    steps: :math:`T`, a positive int.
    key: a ``jax.random`` key (the stochastic problem's coins); None for
      ``jax.random.key(0)``.
    trace_every: record :math:`x` and :math:`R(t)/t` every this many steps;
      None for no trace (the trace arrays then have length 0).
    dtype: the dtype of :math:`x` and of the regret sums.
    unroll: the inner scan's unroll factor; the default 4 is the fastest
      measured on CPU.
    engine: ``"auto"`` (the fast engine when ``tx`` comes from
      :func:`make_optimizer` and no trace is asked for, else the scan),
      ``"fast"`` or ``"scan"``; see :data:`ENGINES`.

  Returns:
    A :class:`Simulation`.

  Examples:
    >>> import jax, optax
    >>> from amsgrad_optax import synthetic
    >>> sim = jax.jit(synthetic.simulate, static_argnums=(0, 1, 2))(
    ...     synthetic.online(), optax.sgd(0.0), 202)
    >>> float(sim.x_final), float(sim.regret)  # x stays 0: 2 * 1010 - 200 * 10
    (0.0, 20.0)
  """
  _check_problem(problem)
  _check_tx(tx)
  steps = _check_steps(steps, problem)
  _check_trace_every(trace_every)
  spec = _pick_engine(engine, tx, trace_every, problem, steps)
  key = _as_key(0, key)
  if spec is not None:
    x, total, residual = _fast.simulate(problem, spec, steps, key, dtype)
    empty = jnp.zeros((0,), x.dtype)
    return Simulation(x, total, residual, total / jnp.asarray(steps, total.dtype), empty, empty)
  block = trace_every if trace_every is not None else min(steps, _DEFAULT_BLOCK)
  stepper = _Stepper(problem, tx, key, unroll)
  carry = _init_carry(problem, tx, dtype)
  n_blocks, extra = divmod(steps, block)

  def one_block(c, _):
    c = stepper.steps(c, block)
    return c, (c.x, _avg(c, problem.first_step))

  carry, (xs, avgs) = jax.lax.scan(one_block, carry, None, length=n_blocks)
  carry = stepper.steps(carry, extra)
  if trace_every is None:
    xs, avgs = xs[:0], avgs[:0]
  total = carry.regret + carry.compensation
  residual = carry.compensation - (total - carry.regret)
  avg = total / jnp.asarray(steps, total.dtype)
  return Simulation(carry.x, total, residual, avg, xs, avgs)


# ------------------------------------------------------------------ host API


def _advance_fn(problem, tx, block: int, max_blocks: int, unroll: int):
  """Returns a jitted ``(carry, key, n_blocks, n_extra) -> (carry, xs, avgs)``.

  ``n_blocks <= max_blocks`` and ``n_extra < block`` are traced, so every
  chunk of a run, the last one included, reuses one compilation.
  """

  def advance(carry: _Carry, key, n_blocks, n_extra):
    stepper = _Stepper(problem, tx, key, unroll)
    dtype = carry.x.dtype
    xs = jnp.full((max_blocks,), jnp.nan, dtype)
    avgs = jnp.full((max_blocks,), jnp.nan, dtype)

    def one_block(j, val):
      c, xs, avgs = val
      c = stepper.steps(c, block)
      return c, xs.at[j].set(c.x), avgs.at[j].set(_avg(c, problem.first_step))

    carry, xs, avgs = jax.lax.fori_loop(0, n_blocks, one_block, (carry, xs, avgs))
    carry = stepper.dynamic_steps(carry, n_extra, block - 1)
    return carry, xs, avgs

  return jax.jit(advance, donate_argnums=0)


@functools.lru_cache(maxsize=32)
def _compiled_advance(
  problem, tx, block: int, max_blocks: int, unroll: int, dtype, key_shape, key_dtype
):
  """Returns :func:`_advance_fn` compiled ahead of time for a carry of ``dtype``."""
  carry = jax.eval_shape(lambda: _init_carry(problem, tx, dtype))
  key = jax.ShapeDtypeStruct(key_shape, key_dtype)
  i32 = jax.ShapeDtypeStruct((), jnp.int32)
  return _advance_fn(problem, tx, block, max_blocks, unroll).lower(carry, key, i32, i32).compile()


def _progress_bar(total: int, label: str | None, enabled: bool):
  if not enabled:
    return contextlib.nullcontext(None)
  try:
    from tqdm.auto import tqdm
  except ImportError:  # tqdm is a dependency, but a bar is not worth failing over.
    return contextlib.nullcontext(None)
  return tqdm(
    total=total,
    desc=label,
    unit="step",
    unit_scale=True,
    leave=False,
    file=sys.stderr,
    dynamic_ncols=True,
  )


_HYPERPARAMETERS = ("learning_rate", "b1", "b2", "eps")


@functools.lru_cache(maxsize=32)
def _compiled_fast(problem, name, convention, lr_schedule, steps, dtype, key_shape, key_dtype):
  """Returns the fast engine's ``(hp, key, state, first, count) -> state``, compiled.

  The hyperparameters are arrays, so one compilation serves every value; the
  chunk range is traced, so one serves every call of a run.
  """

  def fn(hp, key, state, first, count):
    spec = _fast.OptimizerSpec(name, **hp, convention=convention, lr_schedule=lr_schedule)
    return _fast.advance_batch(problem, spec, steps, key[None], state, first, count)

  hp = {n: jax.ShapeDtypeStruct((), dtype) for n in _HYPERPARAMETERS}
  state = jax.eval_shape(lambda: _fast.initial_state(problem, 1, dtype))
  i32 = jax.ShapeDtypeStruct((), jnp.int32)
  key = jax.ShapeDtypeStruct(key_shape, key_dtype)
  return jax.jit(fn, donate_argnums=2).lower(hp, key, state, i32, i32).compile()


def _next_call_size(count: int, seconds: float) -> int:
  """Returns how many chunks the next call should run, from the last call's ``count`` and time.

  Aims at :data:`_TARGET_CALL_SECONDS` per call, growing at most 4x a call.
  """
  if seconds <= 0:
    return count * 4
  return max(1, min(count * 4, int(count * _TARGET_CALL_SECONDS / seconds)))


def _drive_chunks(
  advance: Any,
  state: Any,
  n_chunks: int,
  per_chunk: int,
  steps: int,
  progress: bool,
  label: str | None,
) -> tuple[Any, float]:
  """Runs the fast engine's chunks from the host, in calls of about :data:`_TARGET_CALL_SECONDS`.

  Between calls the progress bar moves and an interrupt (KeyboardInterrupt)
  takes effect; the chunks, and so the result, are those of one call.

  Args:
    advance: ``(state, first, count) -> state``, a compiled call of
      :func:`_fast.advance_batch` (the state donated).
    state: the state before chunk 0.
    n_chunks: the chunks of the run.
    per_chunk: the steps of one chunk (of every run of a batch).
    steps: :math:`T`, the bar's total.
    progress: show a tqdm bar on stderr.
    label: the bar's description.

  Returns:
    ``(state, seconds)``: the state after the last chunk, and the wall time.
  """
  t0 = time.perf_counter()
  with _progress_bar(steps, label, progress) as bar:
    done, count = 0, _FIRST_CALL_CHUNKS
    while done < n_chunks:
      count = min(count, n_chunks - done)
      t_call = time.perf_counter()
      state = advance(state, np.int32(done), np.int32(count))
      jax.block_until_ready(state)
      done += count
      if bar is not None:
        bar.update(min(done * per_chunk, steps) - bar.n)
      count = _next_call_size(count, time.perf_counter() - t_call)
  return state, time.perf_counter() - t0


def _run_fast(problem, spec, steps, key, dtype, progress, label) -> RunResult:
  dtype = jnp.dtype(jax.dtypes.canonicalize_dtype(dtype))
  hp = {n: jnp.asarray(getattr(spec, n)).astype(dtype) for n in _HYPERPARAMETERS}
  t0 = time.perf_counter()
  with deferred_interrupt():
    compiled = _compiled_fast(
      problem, spec.name, spec.convention, spec.lr_schedule, steps, dtype, key.shape, key.dtype
    )
  compile_seconds = time.perf_counter() - t0
  # Host arrays: the first call takes them in, with no device op to dispatch first.
  # (Typed as the device arrays the compiled call returns in their place.)
  zeros = [cast(jax.Array, np.zeros((1,), dtype)) for _ in range(5)]
  x0 = cast(jax.Array, np.full((1,), problem.x0, dtype))
  state = _fast.FastState(
    m=zeros[0], v=zeros[1], nu_max=zeros[2], x=x0, regret=zeros[3], compensation=zeros[4]
  )
  state, seconds = _drive_chunks(
    lambda s, first, count: compiled(hp, key, s, first, count),
    state,
    _fast.num_chunks(steps),
    _fast.chunk_steps(steps),
    steps,
    progress,
    label,
  )
  # One transfer, and the double-word sum joined on the host as _fast.result does.
  host = jax.device_get(state)
  total = host.regret + host.compensation
  residual = host.compensation - (total - host.regret)
  regret = float(total[0]) + float(residual[0])
  return RunResult(
    x_final=float(host.x[0]),
    avg_regret=regret / steps,
    regret=regret,
    steps=steps,
    seconds=seconds,
    compile_seconds=compile_seconds,
    trace=None,
  )


def run(
  problem: _problems.Problem,
  tx: optax.GradientTransformation,
  steps: int,
  *,
  seed: int = 0,
  key: jax.Array | None = None,
  trace_every: int | None = None,
  progress: bool = False,
  label: str | None = None,
  chunk_steps: int | None = None,
  dtype: Any = jnp.float32,
  unroll: int = DEFAULT_UNROLL,
  engine: str = "auto",
) -> RunResult:
  r"""Returns the outcome of ``steps`` steps of ``tx`` on ``problem``, run compiled.

  The run is a sequence of compiled calls, with the state donated from call
  to call, so that a progress bar moves and an interrupt (Ctrl-C,
  ``KeyboardInterrupt``) takes effect between calls: the scan engine runs
  chunks of about ``chunk_steps`` steps, the next one queued while the bar
  waits for the last; the fast engine sizes its calls to about 0.1 s each.
  One compilation serves all the calls, and is cached for a later run of the
  same problem and ``tx`` object.

  Args:
    problem: an :class:`OnlineProblem` or :class:`StochasticProblem`.
    tx: any optax gradient transformation.
    steps: :math:`T`, a positive int.
    seed: the seed of ``jax.random.key`` (the stochastic problem's coins).
    key: a ``jax.random`` key, used instead of ``seed`` if given.
    trace_every: record :math:`x` and :math:`R(t)/t` every this many steps
      (and at the end); None for no trace.
    progress: show a tqdm progress bar on stderr.
    label: the bar's description.
    chunk_steps: steps per compiled call of the scan engine (default
      :math:`2^{20}`, rounded to whole blocks).
    dtype: the dtype of :math:`x` and the regret sums (float64 needs
      ``jax_enable_x64``).
    unroll: the inner scan's unroll factor; the default 4 is the fastest
      measured on CPU.
    engine: ``"auto"`` (the fast engine when ``tx`` comes from
      :func:`make_optimizer` and no trace is asked for, else the scan),
      ``"fast"`` or ``"scan"``; see :data:`ENGINES`.

  Returns:
    A :class:`RunResult`.

  Examples:
    >>> from amsgrad_optax import synthetic
    >>> problem = synthetic.online()
    >>> adam = synthetic.run(problem, synthetic.make_optimizer("adam"), 20_200)
    >>> ams = synthetic.run(problem, synthetic.make_optimizer("amsgrad"), 20_200, trace_every=4040)
    >>> adam.x_final, round(ams.x_final, 2)  # Adam at the worst point; AMSGrad heading to -1
    (1.0, -0.14)
    >>> ams.trace.t.tolist()
    [4040, 8080, 12120, 16160, 20200]
    >>> [round(float(x), 2) for x in ams.trace.x]
    [-0.01, -0.04, -0.07, -0.1, -0.14]
  """
  _check_problem(problem)
  _check_tx(tx)
  steps = _check_steps(steps, problem)
  _check_trace_every(trace_every)
  if chunk_steps is not None and (isinstance(chunk_steps, bool) or int(chunk_steps) < 1):
    raise ValueError(f"chunk_steps must be a positive int, got {chunk_steps!r}")
  spec = _pick_engine(engine, tx, trace_every, problem, steps)
  if spec is not None:
    return _run_fast(problem, spec, steps, _as_key(seed, key), dtype, progress, label)
  block = trace_every if trace_every is not None else min(steps, _DEFAULT_BLOCK)
  total_blocks, extra = divmod(steps, block)
  # Chunked with or without a bar: Ctrl-C takes effect between chunks.
  chunk_blocks = max(1, min((chunk_steps or _DEFAULT_CHUNK) // block, total_blocks))

  key = _as_key(seed, key)
  carry = _init_carry(problem, tx, dtype)
  t0 = time.perf_counter()
  with deferred_interrupt():
    compiled = _compiled_advance(
      problem, tx, block, chunk_blocks, unroll, carry.x.dtype, key.shape, key.dtype
    )
  compile_seconds = time.perf_counter() - t0

  chunks: list[tuple[int, int, jax.Array, jax.Array]] = []
  remaining = total_blocks
  t0 = time.perf_counter()
  with _progress_bar(steps, label, progress) as bar:
    while True:
      nb = min(chunk_blocks, remaining)
      remaining -= nb
      ne = extra if remaining == 0 else 0
      carry, xs, avgs = compiled(carry, key, np.int32(nb), np.int32(ne))
      chunks.append((nb, ne, xs, avgs))
      if bar is not None and len(chunks) >= 2:
        # Wait for the previous chunk only: the current one is already queued.
        prev = chunks[-2]
        prev[2].block_until_ready()
        bar.update(prev[0] * block + prev[1])
      if remaining == 0:
        break
    jax.block_until_ready(carry)
    if bar is not None:
      bar.update(chunks[-1][0] * block + chunks[-1][1])
  seconds = time.perf_counter() - t0

  regret = float(carry.regret) + float(carry.compensation)
  x_final = float(carry.x)
  trace = None
  if trace_every is not None:
    xs = np.concatenate([np.asarray(c[2])[: c[0]] for c in chunks])
    avgs = np.concatenate([np.asarray(c[3])[: c[0]] for c in chunks])
    ts = np.arange(1, total_blocks + 1, dtype=np.int64) * block
    if extra:
      ts = np.append(ts, steps)
      xs = np.append(xs, np.asarray(x_final, xs.dtype))
      avgs = np.append(avgs, np.asarray(regret / steps, avgs.dtype))
    trace = Trace(ts, xs, avgs)
  return RunResult(
    x_final=x_final,
    avg_regret=regret / steps,
    regret=regret,
    steps=steps,
    seconds=seconds,
    compile_seconds=compile_seconds,
    trace=trace,
  )
