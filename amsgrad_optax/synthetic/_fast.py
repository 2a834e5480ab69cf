"""A blocked, time-parallel run for the optimizers whose step does not depend on x.

On the paper's problems the gradient :math:`g_t = c_t` does not depend on
:math:`x`, so neither do the optimizer's moments nor its step
:math:`d_t = \\mathrm{tx}(g_t)`; only the projected walk
:math:`x_{t+1} = \\Pi_{[l, u]}(x_t + d_t)` and the regret do. A plain scan
pays a loop iteration, two powers, a square root and a division per step,
one after the other. This engine cuts time into chunks of ``K * L`` steps,
seen as ``L`` lanes of ``K`` consecutive steps each, and runs every chunk as a
few passes whose loop bodies work on all ``L`` lanes at once:

1. each lane's moments from zero (a ``K``-step scan with vector state);
2. the lanes' true starting moments, by composing the lanes' affine maps
   :math:`m \\mapsto \\beta^K m + m^{loc}` (a prefix scan over ``L``);
3. the moments of every step from those starts (the optimizer's own
   recurrence again), with each lane's running maximum of the second moment,
   joined across lanes by a prefix maximum;
4. the steps :math:`d_t`, bias corrections included, as one elementwise
   expression over the whole chunk;
5. each lane's walk as one clamp-shift map: :math:`x \\mapsto
   \\mathrm{clip}(x + a, p, q)` composed with another is again one, so the
   lanes' starting points come from a prefix scan over ``L``;
6. the walk of every step from those starts, with the regret
   :math:`c_t (x_t - x^*)` summed per lane with TwoSum and the lanes' pairs
   joined as double-word numbers, as the sequential runner does.

Within a lane every step repeats the sequential optimizer's arithmetic; only
the lane starts come from the closed forms, so the result matches the
sequential run to a few float32 roundings of the moments.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from amsgrad_optax import _conventions
from amsgrad_optax.synthetic import _problems

#: Elements (steps x runs) per chunk: the fastest of 2^14, 2^16 and 2^18
#: measured on CPU for one run.
_CHUNK_ELEMENTS = 1 << 18
#: Elements (lanes x runs) per row of the chunk's scans.
_ROW_ELEMENTS = 512


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
  """What the fast engine needs to know of an optimizer built by :func:`make_optimizer`.

  Attributes:
    name: one of ``"adam"``, ``"amsgrad"``, ``"adamnc"``, ``"sgd"``.
    learning_rate: :math:`\\alpha` (a number or a scalar array).
    b1: the first-moment decay.
    b2: the second-moment decay.
    eps: the denominator's epsilon.
    convention: the AMSGrad convention.
    lr_schedule: ``"constant"`` or ``"inverse-sqrt"``.
  """

  name: str
  learning_rate: Any
  b1: Any
  b2: Any
  eps: Any
  convention: str = "pytorch"
  lr_schedule: str = "constant"


class FastState(NamedTuple):
  """The carry between chunks: moments, point, regret pair, steps done."""

  m: jax.Array
  v: jax.Array
  nu_max: jax.Array
  x: jax.Array
  regret: jax.Array
  compensation: jax.Array


def layout(steps: int, batch: int = 1) -> tuple[int, int]:
  """Returns ``(K, L)``: steps per lane and lanes per chunk, for ``batch`` runs of ``steps``.

  A scan's row holds ``L * batch`` elements, enough to hide the loop's
  overhead (``L * batch`` about ``_ROW_ELEMENTS``); a chunk holds about
  ``_CHUNK_ELEMENTS`` elements in all, and no more steps than ``steps``
  rounded up to a power of 2.
  """
  n_lanes = max(1, _ROW_ELEMENTS // max(1, batch))
  per_run = max(_CHUNK_ELEMENTS // max(1, batch), n_lanes * 16)
  per_run = min(per_run, 1 << max(4, math.ceil(math.log2(steps))))
  n_lanes = 1 << int(math.log2(min(n_lanes, max(1, per_run // 16))))
  return per_run // n_lanes, n_lanes


def fits(problem: _problems.Problem, steps: int, batch: int = 1) -> bool:
  """Returns whether the run's last chunk, padded to whole lanes, keeps the step index within int32."""
  k_len, n_lanes = layout(steps, batch)
  chunk = k_len * n_lanes
  padded = -(-steps // chunk) * chunk
  return problem.first_step + padded <= 2**31 - 1


# ------------------------------------------------------------------ helpers


def _two_sum(a, b):
  s = a + b
  b_part = s - a
  return s, (a - (s - b_part)) + (b - b_part)


def _add_double(hi, lo, b_hi, b_lo):
  s, err = _two_sum(hi, b_hi)
  err = err + (lo + b_lo)
  new_hi = s + err
  return new_hi, err - (new_hi - s)


# The lanes are joined in order by short sequential scans over L (rows of B):
# a few microseconds per chunk, and far less to compile than log-depth
# associative scans.


def _sum_double(hi: jax.Array, lo: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Returns the double-word sum of the lanes' pairs ``(hi[l], lo[l])``."""

  def add(c, pair):
    return _add_double(*c, *pair), None

  zero = jnp.zeros_like(hi[0])
  out, _ = jax.lax.scan(add, (zero, zero), (hi, lo))
  return out


def _exclusive_max(lane_max: jax.Array, start: jax.Array) -> jax.Array:
  """Returns, for each lane, the maximum of ``start`` and the lanes before it."""

  def step(c, x):
    return jnp.maximum(c, x), c

  _, out = jax.lax.scan(step, start, lane_max)
  return out


def _affine_starts(a: jax.Array, local_end: jax.Array, start: jax.Array) -> jax.Array:
  """Returns each lane's starting value of ``y -> a * y + local_end[l]``, lanes in order from ``start``."""

  def step(y, end):
    return a * y + end, y

  _, out = jax.lax.scan(step, start, local_end)
  return out


def _clip_starts(shift: jax.Array, low: jax.Array, high: jax.Array, start: jax.Array) -> jax.Array:
  """Returns each lane's starting point, the lanes' clamp-shift maps applied in order from ``start``."""

  def step(x, lane):
    a, lo, hi = lane
    return jnp.clip(x + a, lo, hi), x

  _, out = jax.lax.scan(step, start, (shift, low, high))
  return out


def _expm1_table(b: jax.Array, k_len: int) -> jax.Array:
  r"""Returns :math:`b^{k} - 1` for :math:`k = 1, \dots, K`, shape (K, 1, B), with :math:`b^1 - 1` exactly ``b - 1``."""
  k = jnp.arange(1, k_len + 1, dtype=jnp.int32).astype(b.dtype)[:, None]
  table = jnp.expm1(k * jnp.log(b)[None, :])
  return table.at[0].set(b - jnp.ones((), b.dtype))[:, None, :]


def _one_minus_powers(b: jax.Array, base: jax.Array, table: jax.Array) -> jax.Array:
  r"""Returns :math:`1 - b^{a_l + k}` for the lanes' bases :math:`a_l` and :math:`k = 1..K`, shape (K, L, B).

  With :math:`e(x) = b^x - 1`, :math:`e(a + k) = e(a) + e(k) + e(a) e(k)`:
  the terms have one sign and the product is the smallest, so the sum is
  accurate to a few roundings even where :math:`1 - b^t` is tiny, at two
  multiplies and two adds per step instead of a power.
  """
  exponent = base.astype(b.dtype)[:, None] * jnp.log(b)[None, :]
  # b^0 = 1 also for b = 0, where 0 * log(0) would be nan.
  e_base = jnp.where(base[:, None] > 0, jnp.expm1(exponent), 0)[None]
  return -(e_base + table + e_base * table)


# ------------------------------------------------------------------ one chunk


def _chunk(state: FastState, t0: jax.Array, hp: dict[str, jax.Array], ctx) -> FastState:
  """Returns the state after the chunk of steps ``t0 .. t0 + K L - 1`` of every run.

  Arrays are laid out (K, L, B): step within lane, lane, run; the scans run
  over K with rows of shape (L, B). Hyperparameters and state are (B,).
  """
  problem, spec, k_len, n_lanes, steps, keys, tables = ctx
  dtype = state.x.dtype
  name = spec.name
  batch = state.x.shape[0]
  n = t0 + (
    jnp.arange(n_lanes, dtype=jnp.int32)[None, :, None] * k_len
    + jnp.arange(k_len, dtype=jnp.int32)[:, None, None]
  )
  valid = n < steps
  t = n + jnp.int32(problem.first_step)
  if problem.stochastic:
    # The coins depend on each run's key: (B, K L), laid out as (K, L, B).
    def coins(key):
      return jax.vmap(lambda s: problem.coefficient(s, key, dtype))(t.ravel())

    g = jnp.transpose(jax.vmap(coins)(keys)).reshape(k_len, n_lanes, batch)
  elif "big" in hp:
    # A large coefficient per run (Theorem 1's C over a grid): (K, L, B).
    small = jnp.asarray(problem.small, dtype)
    g = jnp.where(t % problem.period == 1, hp["big"][None, None, :], small)
  else:
    g = problem.coefficient(t, None, dtype) * jnp.ones((1, 1, 1), dtype)
    g = jnp.broadcast_to(g, (k_len, n_lanes, 1))
  full = (k_len, n_lanes, batch)
  count = n + 1
  base = t0 + jnp.arange(n_lanes, dtype=jnp.int32) * k_len
  b1, b2, eps, lr = (hp[k][None, None, :] for k in ("b1", "b2", "eps", "learning_rate"))
  one = jnp.ones((), dtype)
  conv = _conventions.get_convention(spec.convention)
  zeros = jnp.zeros((n_lanes, batch), dtype)

  if name == "sgd":
    u = jnp.broadcast_to(g, full)
  else:
    # 1. Each lane's moments from zero.
    def local(c, g_row):
      m, v = c
      m = (one - b1[0]) * g_row + b1[0] * m
      if name == "adamnc":
        v = v + g_row * g_row
      else:
        v = (one - b2[0]) * g_row * g_row + b2[0] * v
      return (m, v), None

    (m_end, v_end), _ = jax.lax.scan(local, (zeros, zeros), g)
    # 2. The lanes' true starting moments.
    m_in = _affine_starts(b1[0, 0] ** k_len, m_end, state.m)
    if name == "adamnc":
      # v is the running mean of g^2: lanes start from the running sum.
      done = base.astype(dtype)[:, None]
      sums = _affine_starts(one, v_end, state.v * t0.astype(dtype))
      v_in = jnp.where(done > 0, sums / jnp.maximum(done, one), jnp.zeros_like(sums))
    else:
      v_in = _affine_starts(b2[0, 0] ** k_len, v_end, state.v)
    bc1 = _one_minus_powers(hp["b1"], base, tables[0]) if tables else None
    bc2 = _one_minus_powers(hp["b2"], base, tables[1]) if tables else None

    # 3. Every step's moments, and each lane's running maximum.
    def moments(c, row):
      m, v, q_max = c
      g_row, cnt, bc2_row = row
      m = (one - b1[0]) * g_row + b1[0] * m
      if name == "adamnc":
        v = v + (g_row * g_row - v) / cnt.astype(dtype)
      else:
        v = (one - b2[0]) * g_row * g_row + b2[0] * v
      q = v
      if name == "amsgrad" and conv.nu_correction == "max":
        q = v / bc2_row
      q_max = jnp.maximum(q_max, q)
      return (m, v, q_max), (m, v, q_max)

    rows = (g, count, bc2 if bc2 is not None else g)
    _, (m, v, q_max) = jax.lax.scan(moments, (m_in, v_in, zeros), rows)
    nu_max = jnp.maximum(q_max, _exclusive_max(q_max[-1], state.nu_max)[None])

    # 4. The steps, as the optimizer computes them.
    if name == "adamnc":
      u = m / (jnp.sqrt(v) + eps)
    else:
      assert bc1 is not None and bc2 is not None  # adam and amsgrad have their tables
      if name == "adam":
        u = (m / bc1) / (jnp.sqrt(v / bc2) + eps)
      else:
        m_hat = m
        # (Every convention that corrects nu in the step corrects mu too.)
        if conv.nu_correction == "step":
          m_hat = m * (jnp.sqrt(bc2) / bc1)
        elif conv.correct_mu:
          m_hat = m / bc1
        den = jnp.sqrt(nu_max)
        if conv.nu_correction == "denominator":
          den = den / jnp.sqrt(bc2)
        den = den + eps
        u = jnp.where(den == 0, jnp.zeros_like(m_hat), m_hat / den)
    # Only AMSGrad has a running maximum: carrying one for Adam out of the call
    # would make XLA compute it (some 7% of Adam's run) where it was dead code.
    nu_max_out = nu_max[-1, -1] if name == "amsgrad" else state.nu_max
    state = state._replace(m=m[-1, -1], v=v[-1, -1], nu_max=nu_max_out)
  if spec.lr_schedule == "inverse-sqrt":
    lr = lr / jnp.sqrt(count.astype(dtype))
  d = jnp.where(valid, -lr * u, jnp.zeros_like(u))

  # 5. The lanes' starting points.
  low = jnp.asarray(problem.lower, dtype)
  high = jnp.asarray(problem.upper, dtype)

  def lane_map(c, d_row):
    a, lo, hi = c
    return (a + d_row, jnp.clip(lo + d_row, low, high), jnp.clip(hi + d_row, low, high)), None

  inf = jnp.full((n_lanes, batch), jnp.inf, dtype)
  (a, lo, hi), _ = jax.lax.scan(lane_map, (zeros, -inf, inf), d)
  x_in = _clip_starts(a, lo, hi, state.x)

  # 6. The walk and the regret.
  x_star = jnp.asarray(problem.x_star, dtype)

  def walk(c, row):
    x, total, comp = c
    g_row, d_row, ok = row
    r = jnp.where(ok, g_row * x - g_row * x_star, jnp.zeros_like(x))
    total, err = _two_sum(total, r)
    x = jnp.clip(x + d_row, low, high)
    return (x, total, comp + err), None

  (x_out, total, comp), _ = jax.lax.scan(walk, (x_in, zeros, zeros), (g, d, valid))
  hi_sum, lo_sum = _sum_double(total, comp)
  regret, compensation = _add_double(state.regret, state.compensation, hi_sum, lo_sum)
  return state._replace(x=x_out[-1], regret=regret, compensation=compensation)


def _prepare(problem, spec, steps, keys, dtype, big=None):
  """Returns ``(hp, ctx, chunk, n_chunks)``: what every chunk of a batch of runs needs."""
  batch = keys.shape[0]
  hp = {
    n: jnp.broadcast_to(jnp.asarray(getattr(spec, n)).astype(dtype), (batch,))
    for n in ("learning_rate", "b1", "b2", "eps")
  }
  if big is not None:
    if problem.stochastic:
      raise ValueError("big applies to an OnlineProblem, not a stochastic one")
    hp["big"] = jnp.broadcast_to(jnp.asarray(big).astype(dtype), (batch,))
  k_len, n_lanes = layout(steps, batch)
  chunk = k_len * n_lanes
  tables = ()
  if spec.name in ("adam", "amsgrad"):
    tables = (_expm1_table(hp["b1"], k_len), _expm1_table(hp["b2"], k_len))
  ctx = (problem, spec, k_len, n_lanes, steps, keys, tables)
  return hp, ctx, chunk, -(-steps // chunk)


def initial_state(problem: _problems.Problem, batch: int, dtype: Any = jnp.float32) -> FastState:
  """Returns the state of ``batch`` runs before their first step."""
  dtype = jnp.dtype(jax.dtypes.canonicalize_dtype(dtype))
  # A buffer per field: the host loop donates the state, and no buffer may be donated twice.
  zeros = [jnp.zeros((batch,), dtype) for _ in range(5)]
  m, v, nu_max, regret, compensation = zeros
  return FastState(m, v, nu_max, jnp.full((batch,), problem.x0, dtype), regret, compensation)


def num_chunks(steps: int, batch: int = 1) -> int:
  """Returns how many chunks a run of ``steps`` (``batch`` runs at once) takes."""
  k_len, n_lanes = layout(steps, batch)
  return -(-steps // (k_len * n_lanes))


def chunk_steps(steps: int, batch: int = 1) -> int:
  """Returns the steps of one chunk of a run of ``steps`` (``batch`` runs at once)."""
  k_len, n_lanes = layout(steps, batch)
  return k_len * n_lanes


def advance_batch(
  problem: _problems.Problem,
  spec: OptimizerSpec,
  steps: int,
  keys: jax.Array,
  state: FastState,
  first: jax.Array,
  count: jax.Array,
  *,
  big: jax.Array | None = None,
) -> FastState:
  """Returns ``state`` after the chunks ``first .. first + count - 1`` of a batch of runs.

  The host can run a long run as several calls of this (``first`` and
  ``count`` may be traced, so one compilation serves them all), to report
  progress and to stop between calls; the chunks are those of
  :func:`simulate_batch`, so the result is the same.

  Args:
    problem: an :class:`OnlineProblem` or :class:`StochasticProblem`.
    spec: the optimizer; each hyperparameter a scalar or an array of shape (B,).
    steps: :math:`T` of the whole run, static.
    keys: ``B`` typed ``jax.random`` keys, shape (B,).
    state: the state after chunk ``first - 1`` (:func:`initial_state` for 0).
    first: the index of the first chunk to run, int32.
    count: how many chunks to run, int32.
    big: as for :func:`simulate_batch`.

  Returns:
    The state after the last chunk run.
  """
  hp, ctx, chunk, _ = _prepare(problem, spec, steps, keys, state.x.dtype, big)

  def body(i, s):
    return _chunk(s, i * jnp.int32(chunk), hp, ctx)

  return jax.lax.fori_loop(first, first + count, body, state)


def result(state: FastState) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Returns ``(x_final, regret, regret_residual)`` of a finished state."""
  total = state.regret + state.compensation
  residual = state.compensation - (total - state.regret)
  return state.x, total, residual


def simulate_batch(
  problem: _problems.Problem,
  spec: OptimizerSpec,
  steps: int,
  keys: jax.Array,
  dtype: Any = jnp.float32,
  *,
  big: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Returns ``(x_final, regret, regret_residual)`` of ``B`` runs at once, each of shape (B,).

  Args:
    problem: an :class:`OnlineProblem` or :class:`StochasticProblem`.
    spec: the optimizer; each hyperparameter a scalar or an array of shape (B,).
    steps: :math:`T`, static.
    keys: ``B`` typed ``jax.random`` keys, shape (B,).
    dtype: the dtype of the runs.
    big: for an :class:`OnlineProblem`, each run's own large coefficient
      (shape (B,)) in place of ``problem.big``; the regret is still taken
      against ``problem.x_star``, so every value must give the same optimum.

  Returns:
    The final points and the regrets as double-word pairs.
  """
  dtype = jnp.dtype(jax.dtypes.canonicalize_dtype(dtype))
  state = initial_state(problem, keys.shape[0], dtype)
  hp, ctx, chunk, n_chunks = _prepare(problem, spec, steps, keys, dtype, big)

  def body(s, i):
    return _chunk(s, i * jnp.int32(chunk), hp, ctx), None

  state, _ = jax.lax.scan(body, state, jnp.arange(n_chunks, dtype=jnp.int32))
  return result(state)


def simulate(
  problem: _problems.Problem,
  spec: OptimizerSpec,
  steps: int,
  key: jax.Array,
  dtype: Any = jnp.float32,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Returns ``(x_final, regret, regret_residual)`` of one run, scalars; traceable and vmappable.

  Args:
    problem: an :class:`OnlineProblem` or :class:`StochasticProblem`.
    spec: the optimizer; its hyperparameters may be traced scalars.
    steps: :math:`T`, static.
    key: a typed ``jax.random`` key.
    dtype: the dtype of the run.

  Returns:
    The final point and the regret as a double-word pair.
  """
  x, regret, residual = simulate_batch(problem, spec, steps, key[None], dtype)
  return x[0], regret[0], residual[0]
