"""The paper's linear online problems, on which Adam provably fails.

Each problem is a sequence of linear losses :math:`f_t(x) = c_t x` on an
interval :math:`[l, u]`. The gradient is the coefficient :math:`c_t` itself,
so a step never has to differentiate anything, and the regret against the
long-run optimum :math:`x^*` is :math:`c_t (x_t - x^*)`.

Problems are frozen dataclasses: hashable, so they can be static arguments of
``jax.jit``, and checked when they are built.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp


def _check_finite(name: str, value: float) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise TypeError(f"{name} must be a real number, got {value!r}")
  if not math.isfinite(value):
    raise ValueError(f"{name} must be finite, got {value!r}")


def _check_interval(lower: float, upper: float, x0: float) -> None:
  _check_finite("lower", lower)
  _check_finite("upper", upper)
  _check_finite("x0", x0)
  if not lower < upper:
    raise ValueError(f"lower must be below upper, got lower={lower!r}, upper={upper!r}")
  if not lower <= x0 <= upper:
    raise ValueError(f"x0 must lie in [lower, upper] = [{lower!r}, {upper!r}], got {x0!r}")


def _check_first_step(first_step: int) -> None:
  if isinstance(first_step, bool) or not isinstance(first_step, int) or first_step < 0:
    raise ValueError(f"first_step must be a non-negative int, got {first_step!r}")


@dataclasses.dataclass(frozen=True)
class OnlineProblem:
  r"""A periodic linear problem: :math:`f_t(x) = c_{big} x` if :math:`t \bmod p = 1`, else :math:`c_{small} x`.

  Steps are counted :math:`t = t_0, t_0 + 1, \dots` with :math:`t_0` =
  ``first_step``. The Section 5 experiment of the paper, as its reference
  PyTorch code runs it, counts from 0, so the large gradient first comes at
  the second step.

  Attributes:
    big: the coefficient at steps with :math:`t \bmod p = 1`.
    small: the coefficient at every other step.
    period: :math:`p`, a positive int.
    lower: the left end of the feasible interval.
    upper: the right end of the feasible interval.
    x0: the starting point, in ``[lower, upper]``.
    first_step: :math:`t_0`, the index of the first step.
    name: a label for tables and plots.
  """

  big: float = 1010.0
  small: float = -10.0
  period: int = 101
  lower: float = -1.0
  upper: float = 1.0
  x0: float = 0.0
  first_step: int = 0
  name: str = "online"

  def __post_init__(self):
    _check_finite("big", self.big)
    _check_finite("small", self.small)
    if isinstance(self.period, bool) or not isinstance(self.period, int) or self.period < 1:
      raise ValueError(f"period must be a positive int, got {self.period!r}")
    _check_interval(self.lower, self.upper, self.x0)
    _check_first_step(self.first_step)

  @property
  def mean_coefficient(self) -> float:
    """Returns the average of :math:`c_t` over one period."""
    if self.period == 1:
      return float(self.small)  # t mod 1 is never 1
    return (self.big + (self.period - 1) * self.small) / self.period

  @property
  def x_star(self) -> float:
    """Returns the long-run optimum: ``lower`` if the mean coefficient is >= 0, else ``upper``."""
    return self.lower if self.mean_coefficient >= 0 else self.upper

  @property
  def stochastic(self) -> bool:
    """Returns False: the sequence of losses is fixed."""
    return False

  def coefficient(self, t: jax.Array, key: jax.Array | None, dtype=jnp.float32) -> jax.Array:
    """Returns :math:`c_t`, the gradient of :math:`f_t`, as a scalar of ``dtype``.

    Args:
      t: the step index, an int32 scalar.
      key: unused (the problem is deterministic).
      dtype: the floating-point dtype of the result.

    Returns:
      ``big`` where ``t % period == 1``, else ``small``.
    """
    del key
    if self.period == 1:
      # t mod 1 is always 0: the "big" step never comes.
      return jnp.asarray(self.small, dtype)
    # The period is a compile-time constant, so the remainder is a multiply
    # and a shift, not a division.
    return jnp.where(
      t % self.period == 1, jnp.asarray(self.big, dtype), jnp.asarray(self.small, dtype)
    )

  def describe(self) -> str:
    """Returns a one-line description of the losses and the feasible set."""
    return (
      f"f_t(x) = {_num(self.big)} x if t mod {self.period} = 1, else {_num(self.small)} x; "
      f"x in [{_num(self.lower)}, {_num(self.upper)}], x0 = {_num(self.x0)}, "
      f"x* = {_num(self.x_star)}; t = {self.first_step}, {self.first_step + 1}, ..."
    )


@dataclasses.dataclass(frozen=True)
class StochasticProblem:
  r"""A random linear problem: :math:`f_t(x) = c_{big} x` with probability :math:`q`, else :math:`c_{small} x`.

  The coin of step :math:`t` is one counter-based hash of the key and
  :math:`t`: with ``w`` the first 32-bit word of
  ``jax.random.key_data(jax.random.fold_in(key, t))``, the large coefficient
  comes when ``w < floor(probability * 2**32)`` (always when
  ``probability == 1``). A coin depends on the key and :math:`t` only, so a
  run is reproducible from its seed whatever the chunking, tracing or
  batching, and the runner draws a block of coins at once, vectorized, at
  one hash per step.

  Attributes:
    big: the coefficient drawn with probability ``probability``.
    small: the coefficient drawn otherwise.
    probability: :math:`q`, in [0, 1].
    lower: the left end of the feasible interval.
    upper: the right end of the feasible interval.
    x0: the starting point, in ``[lower, upper]``.
    first_step: the index of the first step (the coins are folded over it).
    name: a label for tables and plots.
  """

  big: float = 1010.0
  small: float = -10.0
  probability: float = 0.01
  lower: float = -1.0
  upper: float = 1.0
  x0: float = 0.0
  first_step: int = 0
  name: str = "stochastic"

  def __post_init__(self):
    _check_finite("big", self.big)
    _check_finite("small", self.small)
    _check_finite("probability", self.probability)
    if not 0.0 <= self.probability <= 1.0:
      raise ValueError(f"probability must be in [0, 1], got {self.probability!r}")
    _check_interval(self.lower, self.upper, self.x0)
    _check_first_step(self.first_step)

  @property
  def mean_coefficient(self) -> float:
    """Returns the expected coefficient :math:`q c_{big} + (1 - q) c_{small}`."""
    return self.probability * self.big + (1.0 - self.probability) * self.small

  @property
  def x_star(self) -> float:
    """Returns the minimiser of the expected loss (``lower`` on a tie)."""
    return self.lower if self.mean_coefficient >= 0 else self.upper

  @property
  def stochastic(self) -> bool:
    """Returns True: the losses depend on the key."""
    return True

  def coefficient(self, t: jax.Array, key: jax.Array, dtype=jnp.float32) -> jax.Array:
    """Returns the random :math:`c_t` for step ``t`` under ``key``.

    Args:
      t: the step index, an int32 scalar.
      key: a ``jax.random`` key.
      dtype: the floating-point dtype of the result.

    Returns:
      ``big`` if the step's coin comes up (see the class), else ``small``.
    """
    word = jax.random.key_data(jax.random.fold_in(key, t)).ravel()[0]
    if self.probability >= 1.0:
      heads = jnp.ones((), jnp.bool_)
    else:
      threshold = jnp.uint32(math.floor(self.probability * 2.0**32))
      heads = word.astype(jnp.uint32) < threshold
    return jnp.where(heads, jnp.asarray(self.big, dtype), jnp.asarray(self.small, dtype))

  def describe(self) -> str:
    """Returns a one-line description of the losses and the feasible set."""
    return (
      f"f_t(x) = {_num(self.big)} x with probability {self.probability:g}, "
      f"else {_num(self.small)} x; x in [{_num(self.lower)}, {_num(self.upper)}], "
      f"x0 = {_num(self.x0)}, x* = {_num(self.x_star)}"
    )


Problem = OnlineProblem | StochasticProblem


def _num(v: float) -> str:
  return f"{v:g}"


def online(
  big: float = 1010.0,
  small: float = -10.0,
  period: int = 101,
  *,
  lower: float = -1.0,
  upper: float = 1.0,
  x0: float = 0.0,
  first_step: int = 0,
) -> OnlineProblem:
  r"""Returns the paper's online problem (Section 5): :math:`1010x` once every 101 steps, else :math:`-10x`.

  The defaults are those of the reference experiment: :math:`x \in [-1, 1]`,
  :math:`x_0 = 0`, steps counted from 0 (the large gradient first comes at
  :math:`t = 1`), and :math:`x^* = -1`.

  Args:
    big: the coefficient at steps with ``t % period == 1``.
    small: the coefficient at the other steps.
    period: a positive int.
    lower: the left end of the feasible interval.
    upper: the right end of the feasible interval.
    x0: the starting point.
    first_step: the index of the first step.

  Returns:
    An :class:`OnlineProblem`.

  Examples:
    >>> from amsgrad_optax import synthetic
    >>> p = synthetic.online()
    >>> p.x_star, round(p.mean_coefficient, 6)
    (-1.0, 0.09901)
    >>> [float(p.coefficient(t, None)) for t in range(3)]
    [-10.0, 1010.0, -10.0]
  """
  return OnlineProblem(big, small, period, lower, upper, x0, first_step)


def stochastic(
  big: float = 1010.0,
  small: float = -10.0,
  probability: float = 0.01,
  *,
  lower: float = -1.0,
  upper: float = 1.0,
  x0: float = 0.0,
  first_step: int = 0,
) -> StochasticProblem:
  r"""Returns the paper's stochastic problem: :math:`1010x` with probability 0.01, else :math:`-10x`.

  The expected loss is :math:`0.2x`, so :math:`x^* = -1`.

  Args:
    big: the coefficient drawn with probability ``probability``.
    small: the coefficient drawn otherwise.
    probability: in [0, 1].
    lower: the left end of the feasible interval.
    upper: the right end of the feasible interval.
    x0: the starting point.
    first_step: the index of the first step.

  Returns:
    A :class:`StochasticProblem`.

  Examples:
    >>> from amsgrad_optax import synthetic
    >>> p = synthetic.stochastic()
    >>> p.x_star, round(p.mean_coefficient, 6)
    (-1.0, 0.2)
  """
  return StochasticProblem(big, small, probability, lower, upper, x0, first_step)


def theorem1(c: float = 3.0, *, x0: float = 1.0, first_step: int = 1) -> OnlineProblem:
  r"""Returns the construction of Theorem 1: :math:`C x` for :math:`t \bmod 3 = 1`, else :math:`-x`.

  On :math:`[-1, 1]`, with :math:`C > 2` the optimum is :math:`x^* = -1`,
  yet Adam with :math:`\beta_1 = 0` and :math:`\beta_2 = 1/(1 + C^2)`
  (:func:`theorem1_betas`) converges to :math:`+1`. The proof counts steps
  from 1 (so the first gradient is :math:`C`) and starts at :math:`x_1 = 1`;
  those are the defaults.

  Args:
    c: :math:`C`, > 2.
    x0: the starting point, in [-1, 1].
    first_step: the index of the first step.

  Returns:
    An :class:`OnlineProblem` with period 3.

  Examples:
    >>> from amsgrad_optax import synthetic
    >>> p = synthetic.theorem1(3.0)
    >>> [float(p.coefficient(t, None)) for t in (1, 2, 3)]
    [3.0, -1.0, -1.0]
  """
  _check_finite("c", c)
  if not c > 2:
    raise ValueError(f"c must be > 2 (the optimum is -1 only when C > 2), got {c!r}")
  return OnlineProblem(
    big=float(c), small=-1.0, period=3, x0=x0, first_step=first_step, name="theorem1"
  )


def theorem1_betas(c: float = 3.0) -> dict[str, float]:
  r"""Returns the Adam decay rates of Theorem 1: :math:`\beta_1 = 0`, :math:`\beta_2 = 1/(1 + C^2)`.

  Args:
    c: :math:`C`, > 2.

  Returns:
    ``{"b1": 0.0, "b2": 1 / (1 + c**2)}``.

  Examples:
    >>> from amsgrad_optax import synthetic
    >>> synthetic.theorem1_betas(3.0)
    {'b1': 0.0, 'b2': 0.1}
  """
  _check_finite("c", c)
  if not c > 2:
    raise ValueError(f"c must be > 2, got {c!r}")
  return {"b1": 0.0, "b2": 1.0 / (1.0 + float(c) ** 2)}


#: The problem names accepted by :func:`make_problem` and the command line.
PROBLEMS: tuple[str, ...] = ("online", "stochastic", "theorem1")


def make_problem(name: str, **kwargs) -> Problem:
  """Returns the problem called ``name`` (one of :data:`PROBLEMS`), built with ``kwargs``.

  Args:
    name: ``"online"``, ``"stochastic"`` or ``"theorem1"``.
    **kwargs: passed to :func:`online`, :func:`stochastic` or :func:`theorem1`.

  Returns:
    The problem.

  Raises:
    ValueError: for an unknown name.

  Examples:
    >>> from amsgrad_optax import synthetic
    >>> synthetic.make_problem("theorem1", c=4.0).big
    4.0
  """
  factories: dict[str, Callable[..., Problem]] = {
    "online": online,
    "stochastic": stochastic,
    "theorem1": theorem1,
  }
  if name not in factories:
    raise ValueError(f"problem must be one of {PROBLEMS}, got {name!r}")
  return factories[name](**kwargs)
