"""The AMSGrad conventions: one table, one formula.

Every framework's AMSGrad is the same recurrence on the moments,

.. math::

  m_t = \\beta_{1,t} m_{t-1} + (1 - \\beta_{1,t}) g_t, \\qquad
  v_t = \\beta_2 v_{t-1} + (1 - \\beta_2) g_t^2,

followed by a running maximum and a step. They differ only in *which* second
moment the maximum is taken over and *where* the bias corrections
:math:`c_1 = 1 - \\beta_1^t` and :math:`c_2 = 1 - \\beta_2^t` enter. A
:class:`Convention` records exactly those choices as data, and
:func:`amsgrad_optax.scale_by_amsgrad` reads them; there is one update, not four.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

NuCorrection = Literal["none", "denominator", "step", "max"]
ComplexMode = Literal["real_view", "complex", "abs_sq"]


@dataclasses.dataclass(frozen=True)
class Convention:
  """How one framework places the bias corrections of AMSGrad.

  Attributes:
    name: the name accepted by ``convention=``.
    correct_mu: whether the first moment is divided by :math:`c_1`.
    nu_correction: where :math:`c_2` enters: ``"none"`` (never), ``"max"``
      (the maximum is taken over :math:`v_t / c_2`), ``"denominator"``
      (:math:`\\sqrt{\\hat v^{max}_t} / \\sqrt{c_2} + \\epsilon`) or ``"step"``
      (the step size is multiplied by :math:`\\sqrt{c_2}`, outside epsilon).
    exact_powers: whether :math:`1 - \\beta^t` is evaluated to working
      accuracy by the library's own branch-free expression (within an ulp), or
      as optax's expression ``1 - b**t``, bit for bit (XLA's power; on CPU a
      call to the C library's ``powf``).
    complex_mode: how complex params are updated, as the framework does it:
      ``"real_view"`` (PyTorch: the real and imaginary parts are separate
      coordinates, each with its own moments, as ``torch.view_as_real``),
      ``"complex"`` (optax: ``nu = EMA((conj(g) g).real)`` held in a complex
      array and every step formed in complex arithmetic), or ``"abs_sq"``
      (a real ``nu = EMA(|g|^2)`` and real scale factors; Keras itself
      squares a complex gradient as ``g * g``, which is not a second moment,
      so the ``"keras"`` convention does not follow it there).
    formula: the step, for documentation.
    matches: the reference implementations this convention reproduces.
    rounded_beta: whether :math:`\\beta` is first rounded to the working dtype
      (Keras and optax hold it in the variables' dtype; in float32 that shifts
      :math:`c_2` by up to about 1e-5 relative) or kept in double precision (as
      PyTorch computes ``beta ** step`` in Python floats). A float32-power
      convention always rounds it. Defaults to False.
  """

  name: str
  correct_mu: bool
  nu_correction: NuCorrection
  exact_powers: bool
  complex_mode: ComplexMode
  formula: str
  matches: str
  rounded_beta: bool = False

  def bias_corrections(
    self,
    b1: jax.typing.ArrayLike,
    b2: jax.typing.ArrayLike,
    t: jax.Array,
    *,
    b1_decay: jax.typing.ArrayLike = 1.0,
  ) -> tuple[jax.Array | None, jax.Array | None]:
    """Returns ``(c1, c2)`` at step ``t``, each None where this convention has none.

    Evaluated as the convention's framework evaluates them (see
    ``exact_powers``); the transform and :func:`amsgrad_optax.diagnostics`
    both read them here, so the two cannot drift apart.

    Examples:
      >>> import jax.numpy as jnp
      >>> from amsgrad_optax import get_convention
      >>> c1, c2 = get_convention("paper").bias_corrections(0.9, 0.999, jnp.int32(1))
      >>> c1 is None and c2 is None
      True
      >>> c1, c2 = get_convention("pytorch").bias_corrections(0.5, 0.75, jnp.int32(2))
      >>> float(c1), float(c2)  # 1 - 0.5**2, 1 - 0.75**2
      (0.75, 0.4375)
    """
    c1 = c2 = None
    if self.correct_mu:
      c1 = one_minus_power(
        b1, t, exact=self.exact_powers, decay=b1_decay, rounded_b=self.rounded_beta
      )
    if self.nu_correction != "none":
      c2 = one_minus_power(b2, t, exact=self.exact_powers, rounded_b=self.rounded_beta)
    return c1, c2


_TABLE = (
  Convention(
    name="pytorch",
    correct_mu=True,
    nu_correction="denominator",
    exact_powers=True,
    rounded_beta=False,
    complex_mode="real_view",
    formula="lr/(1-b1^t) * mu / (sqrt(nu_max)/sqrt(1-b2^t) + eps), nu_max = max(nu_max, nu)",
    matches="torch.optim.Adam(amsgrad=True), torch.optim.AdamW(amsgrad=True); "
    "labml AMSGrad(optimized_update=False)",
  ),
  Convention(
    name="keras",
    correct_mu=True,
    nu_correction="step",
    exact_powers=True,
    rounded_beta=True,
    complex_mode="abs_sq",
    formula="lr*sqrt(1-b2^t)/(1-b1^t) * mu / (sqrt(nu_max) + eps), nu_max = max(nu_max, nu)",
    matches="keras.optimizers.Adam(amsgrad=True) (Keras 3, TF); "
    "labml AMSGrad(optimized_update=True)",
  ),
  Convention(
    name="optax",
    correct_mu=True,
    nu_correction="max",
    exact_powers=False,
    rounded_beta=True,
    complex_mode="complex",
    formula="lr * (mu/(1-b1^t)) / (sqrt(nu_max + eps_root) + eps), "
    "nu_max = max(nu_max, nu/(1-b2^t))",
    matches="optax.amsgrad, optax.scale_by_amsgrad (default flags)",
  ),
  Convention(
    name="paper",
    correct_mu=False,
    nu_correction="none",
    exact_powers=True,
    rounded_beta=False,
    complex_mode="abs_sq",
    formula="lr * mu / (sqrt(nu_max + eps_root) + eps), nu_max = max(nu_max, nu)",
    matches="Reddi, Kale & Kumar (2018), Algorithm 2 (with eps=0); "
    "optax.scale_by_amsgrad(bias_correction_mu=False, bias_correction_nu=False)",
  ),
)

_BY_NAME = {c.name: c for c in _TABLE}

#: The names accepted by ``convention=``, in documentation order.
CONVENTIONS: tuple[str, ...] = tuple(c.name for c in _TABLE)


def get_convention(name: str) -> Convention:
  """Returns the :class:`Convention` called ``name``.

  Args:
    name: one of :data:`CONVENTIONS`.

  Returns:
    The convention's record.

  Raises:
    ValueError: if ``name`` is not a known convention.

  Examples:
    >>> from amsgrad_optax import get_convention
    >>> get_convention("keras").nu_correction
    'step'
  """
  if isinstance(name, Convention):
    return name
  try:
    return _BY_NAME[name]
  except (KeyError, TypeError):
    raise ValueError(f"convention must be one of {CONVENTIONS}, got {name!r}") from None


def _is_concrete_one(x) -> bool:
  """True for a number, or a concrete (untraced) scalar array, equal to 1."""
  if x is None:
    return True  # an unset rate: constant
  if isinstance(x, (int, float)):
    return x == 1
  if isinstance(x, jax.core.Tracer):
    return False
  try:
    return bool(np.asarray(x) == 1)
  except (TypeError, ValueError):
    return False


def default_float_dtype() -> jnp.dtype:
  """Returns float64 when ``jax_enable_x64`` is on, else float32.

  Step-count arithmetic is done in this dtype, so that float64 runs keep
  float64 accuracy in their bias corrections.
  """
  return jnp.dtype(jax.dtypes.canonicalize_dtype(jnp.float64))


def as_float(x: jax.typing.ArrayLike) -> jax.Array:
  """Returns ``x`` as a float array: its own float dtype, or the default one.

  A Python number or an integer array takes :func:`default_float_dtype`; the
  explicit cast keeps the arithmetic valid under
  ``jax_numpy_dtype_promotion="strict"``.
  """
  arr = jnp.asarray(x)
  if isinstance(x, (int, float)) or not jnp.issubdtype(arr.dtype, jnp.floating):
    return arr.astype(default_float_dtype())
  return arr


def one_minus(b: jax.typing.ArrayLike) -> jax.typing.ArrayLike:
  """Returns ``1 - b``: in double precision for a Python number, else in ``b``'s float dtype."""
  return (1.0 - b) if isinstance(b, (int, float)) else 1 - as_float(b)


def one_minus_power(
  b: jax.typing.ArrayLike,
  t: jax.Array,
  *,
  exact: bool,
  decay: jax.typing.ArrayLike = 1.0,
  rounded_b: bool = False,
) -> jax.Array:
  """Returns ``1 - prod_{i=1..t} b * decay**(i-1)``, the bias correction.

  With ``decay == 1`` this is the familiar ``1 - b**t``.

  Args:
    b: the decay rate, in [0, 1).
    t: the step count (t >= 1), an integer array.
    exact: evaluate to working accuracy through ``-expm1(t * log(b))`` (with
      ``log(b)`` taken in double precision when ``b`` is a Python number),
      and exactly ``1 - b`` at ``t == 1``, rather than as a power.
    decay: the factor ``lambda`` of a decaying rate ``b_t = b lambda^(t-1)``.
    rounded_b: on the exact path, raise ``b`` rounded to the result's dtype
      (as Keras does) rather than the Python number itself; an array ``b`` is
      already in its dtype.

  Returns:
    A scalar in (0, 1], in float32 (float64 under ``jax_enable_x64``, or the
    dtype of an array ``b``).

  Examples:
    >>> import jax.numpy as jnp
    >>> from amsgrad_optax._conventions import one_minus_power
    >>> float(one_minus_power(0.9, jnp.int32(1), exact=True)) == float(jnp.float32(0.1))
    True
    >>> float(one_minus_power(0.999, jnp.int32(2**31 - 1), exact=True))
    1.0
  """
  if not exact and _is_concrete_one(decay):
    return _plain_one_minus_power(b, t)
  dtype = as_float(b).dtype
  if rounded_b and isinstance(b, (int, float)):
    b = float(np.asarray(b, dtype))
  tf = jnp.asarray(t).astype(dtype)
  log_b = _log(b, dtype)
  exponent = tf * log_b
  if not _is_concrete_one(decay):
    # prod b lambda^(i-1) = b^t lambda^(t(t-1)/2).
    exponent = exponent + (0.5 * tf * (tf - 1.0)) * _log(decay, dtype)
  # At t = 1 the value is 1 - b itself; 1 - exp(log b) would be an ulp or two
  # off, since log b is rounded first.
  first = one_minus(b)
  out = jnp.where(jnp.asarray(t) == 1, jnp.asarray(first, dtype), _one_minus_exp(exponent))
  if not exact:
    # A traced decay (under optax.inject_hyperparams) that is 1 gives the
    # constant-rate expression, bit for bit, as the number 1 would.
    out = jnp.where(as_float(decay) == 1, _plain_one_minus_power(b, t).astype(dtype), out)
  return out


def _plain_one_minus_power(b: jax.typing.ArrayLike, t: jax.Array) -> jax.Array:
  """``1 - b**t``, the expression optax and Keras evaluate.

  The int32 count is cast explicitly so that this also holds under strict
  dtype promotion.
  """
  b_arr = as_float(b)
  return 1 - b_arr ** jnp.asarray(t).astype(b_arr.dtype)


#: 1/n! for n = 7, ..., 2: Taylor coefficients of (e^r - 1 - r)/r^2, Horner order.
_EXPM1_TAYLOR = tuple(1.0 / math.factorial(n) for n in range(7, 1, -1))
#: Below this exponent 1 - e^x is 1 in float32 (e^-21 < 2^-30): x is clamped to it.
_EXP_FLOOR = -21.0


def _one_minus_exp(x: jax.Array) -> jax.Array:
  """Returns ``1 - exp(x)`` for ``x <= 0``, as ``-expm1(x)`` but cheaper in float32.

  In float32 it splits ``x = k ln 2 + r`` with an integer ``k`` and
  ``|r| <= ln(2)/2``, so ``1 - e^x = (1 - 2^k) - 2^k (e^r - 1)``: ``1 - 2^k``
  is exact, and ``e^r - 1`` is a degree-7 Taylor polynomial (remainder
  under 1.5e-8 of it), so nothing cancels near 0 (``k = 0`` leaves
  ``-(e^r - 1)`` alone) and the result is within about one ulp of the exact
  value of the rounded ``x`` (``tests/test_bias_correction.py``). It is
  branch-free: one polynomial, a rounding and an exponent built from ``k``'s
  bits, where XLA's CPU ``expm1`` is an out-of-line call and its ``exp``
  carries range checks this domain does not need. In the step-by-step scan
  of the synthetic runner that made the exact-power conventions' step 20%
  cheaper than ``exp`` with a separate near-0 polynomial
  (``benchmarks/synthetic_scan.py``). ``x`` is clamped to [-21, 0]: below,
  the result is 1 in float32 anyway; above (a traced rate over 1, which the
  hyperparameter checks cannot see) it gives 0, as a rate of exactly 1 does,
  so the bias correction divides by zero loudly instead of flipping the
  step's sign. NaN stays NaN. Wider dtypes keep ``expm1``.
  """
  if x.dtype != jnp.float32:
    return -jnp.expm1(x)
  x = jnp.clip(x, jnp.float32(_EXP_FLOOR), jnp.float32(0.0))
  k = jnp.round(x * jnp.float32(1.0 / math.log(2.0)))
  # Exact for k = 0; otherwise the rounding of k ln 2 costs a relative
  # error of e^x no larger than its own ulp, where the result is >= 0.29.
  r = x - k * jnp.float32(math.log(2.0))
  q = jnp.asarray(_EXPM1_TAYLOR[0], x.dtype)
  for c in _EXPM1_TAYLOR[1:]:
    q = q * r + jnp.asarray(c, x.dtype)
  expm1_r = r + (r * r) * q
  # 2^k for k in [-31, 0], from its exponent bits.
  two_k = jax.lax.bitcast_convert_type((k.astype(jnp.int32) + 127) << 23, jnp.float32)
  return (1.0 - two_k) - two_k * expm1_r


def _log(x: jax.typing.ArrayLike, dtype) -> jax.Array:
  if isinstance(x, (int, float)):
    return jnp.asarray(math.log(x) if x > 0 else -math.inf, dtype)
  return jnp.log(as_float(x)).astype(dtype)
