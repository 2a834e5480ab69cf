"""AMSGrad and AdamNC as optax gradient transformations."""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from amsgrad_optax import _config, _conventions, _quantize, _validation


class ScaleByAmsgradState(NamedTuple):
  """State of :func:`scale_by_amsgrad`.

  Attributes:
    count: the number of updates applied so far, an int32 scalar that
      saturates at ``2**31 - 1`` instead of wrapping.
    mu: the first moment :math:`m_t`, shaped like the params.
    nu: the second moment :math:`v_t` (never bias-corrected), shaped like the
      params; real-valued for complex params.
    nu_max: the running maximum of :math:`v_t` (or of :math:`v_t / c_2` under
      the ``"optax"`` convention), shaped like the params.
  """

  count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as optax's states do
  mu: optax.Updates
  nu: optax.Updates
  nu_max: optax.Updates


class ScaleByAdamncState(NamedTuple):
  """State of :func:`scale_by_adamnc`.

  Attributes:
    count: the number of updates applied so far (saturating int32 scalar).
    mu: the first moment :math:`m_t`, shaped like the params.
    nu: the plain average :math:`\\frac{1}{t}\\sum_{i\\le t} g_i^2`.
  """

  count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as optax's states do
  mu: optax.Updates
  nu: optax.Updates


# ---------------------------------------------------------------- helpers


def _real_dtype(dtype) -> jnp.dtype:
  return jnp.finfo(dtype).dtype


def _promote(a, b) -> jnp.dtype:
  """Returns the dtype that holds both ``a`` and ``b`` (float16, float32 -> float32).

  Mixing dtypes is deliberate here (float16 params with a float32 second
  moment), so it must not depend on the session's
  ``jax_numpy_dtype_promotion``: under "strict", ``jnp.promote_types`` itself
  refuses float16 with float32.
  """
  with jax.numpy_dtype_promotion("standard"):
    return jnp.promote_types(a, b)


def _default_mu_dtype(param_dtype, mu_dtype):
  if mu_dtype is not None:
    return mu_dtype
  # (1 - b1) g is subnormal in float16 below |g| ~ 6e-4, where it keeps only a
  # few bits: 200 steps of |g| ~ 1e-6 lose 17% of the update. float32 keeps it.
  return jnp.dtype(jnp.float32) if param_dtype == jnp.float16 else jnp.dtype(param_dtype)


def _default_nu_dtype(param_dtype, nu_dtype, complex_nu: bool = False):
  """The dtype of ``nu`` and ``nu_max`` for a param of ``param_dtype``.

  Real unless ``complex_nu`` (the "real_view" and "complex" conventions keep
  a complex param's second moments in a complex array, as PyTorch and optax
  do), with ``nu_dtype`` (or the rule below) as its real dtype.
  """
  if nu_dtype is not None:
    real = jnp.dtype(nu_dtype)
  else:
    real = _real_dtype(param_dtype)
    # g**2 overflows float16 above |g| ~ 256; a float32 second moment is the
    # difference between training on and a run that silently stops.
    real = jnp.dtype(jnp.float32) if real == jnp.float16 else real
  if complex_nu and jnp.issubdtype(param_dtype, jnp.complexfloating):
    return _promote(real, jnp.complex64)
  return real


def _check_common(hyperparams, b1_decay, mu_dtype, nu_dtype):
  """Checks ``hyperparams`` (b1, eps, eps_root, and b2 where there is one) and the dtypes."""
  for name in ("b1", "eps", "eps_root"):
    _validation.check_range(name, hyperparams[name], **_validation.RANGES[name])
  if b1_decay is not None:
    _validation.check_range("b1_decay", b1_decay, **_validation.RANGES["b1_decay"])
  # The widest dtype the arithmetic can run in: float32, or float64 under
  # jax_enable_x64 (then each leaf's dtype is checked again at the update).
  _check_hyperparams(hyperparams, _conventions.default_float_dtype())
  mu_dtype = _validation.canonical_dtype("mu_dtype", mu_dtype)
  nu_dtype = _validation.canonical_dtype("nu_dtype", nu_dtype)
  for name, dt in (("mu_dtype", mu_dtype), ("nu_dtype", nu_dtype)):
    if dt is not None and not jnp.issubdtype(dt, jnp.inexact):
      raise TypeError(f"{name} must be a floating-point dtype, got {dt}")
  if nu_dtype is not None and jnp.issubdtype(nu_dtype, jnp.complexfloating):
    raise TypeError(
      f"nu_dtype must be a real floating-point dtype (the second moment is |g|^2), got {nu_dtype}"
    )
  return mu_dtype, nu_dtype


def _dtype(x) -> jnp.dtype:
  """The dtype of an array, or of a Python scalar leaf as JAX would store it."""
  return x.dtype if hasattr(x, "dtype") else jnp.result_type(x)


def _zeros_like(p, dtype):
  """Zeros shaped like ``p``: with its sharding for an array, plain for a Python number."""
  if isinstance(p, jax.Array):
    return jnp.zeros_like(p, dtype=dtype)
  return jnp.zeros(jnp.shape(p), dtype)


def _init_moments(params, mu_dtype, nu_dtype, n_nu: int, complex_nu: bool = False):
  _validation.check_float_tree(params, "params")
  mu = jax.tree.map(lambda p: _zeros_like(p, _default_mu_dtype(_dtype(p), mu_dtype)), params)
  nus = tuple(
    jax.tree.map(
      lambda p: _zeros_like(p, _default_nu_dtype(_dtype(p), nu_dtype, complex_nu)), params
    )
    for _ in range(n_nu)
  )
  return jnp.zeros([], jnp.int32), mu, nus


def _cast(x, dtype):
  """``x.astype(dtype)``, skipped when it changes nothing: under jit each cast
  is traced once per leaf, and on a model of a thousand leaves no-op casts
  were a third of the update's tracing time."""
  return x if x.dtype == dtype else x.astype(dtype)


class _PerDtype:
  """Memoises ``fn(x, dtype)`` for scalar hyperparameters within one update."""

  def __init__(self):
    self._memo = {}

  def __call__(self, fn, x, dtype):
    key = (fn, id(x), jnp.dtype(dtype))
    if key not in self._memo:
      self._memo[key] = (fn(x, dtype), x)  # keeps x alive, so its id stays unique
    return self._memo[key][0]


def _one_minus(x, dtype):
  del dtype  # x already has it
  return 1 - x


def _opaque_one(x, dtype):
  """An exact 1 of ``dtype`` that XLA cannot fold away (``x`` is unused).

  ``max(v_max, v * 1)`` is ``max(v_max, v)`` bit for bit, but XLA:CPU
  compiles a fusion of a lone ``maximum`` into a loop that runs at about half
  the speed of a two-op one (``benchmarks/lone_op.py``), which made the
  ``"pytorch"`` convention's step 1.15-1.4x ``optax.amsgrad``'s on params that
  fit in the caches (``"keras"`` and ``"paper"`` had the same loop).
  """
  del x
  return jax.lax.optimization_barrier(jnp.ones([], dtype))


def _cast_hp(x, dtype):
  """Casts an array hyperparameter to ``dtype``; Python numbers stay weak."""
  if isinstance(x, (int, float)):
    return x
  return jnp.asarray(x).astype(dtype)


def _mul_hp(h, x):
  """``h * x`` for a real hyperparameter ``h`` (a weak Python number or an array)."""
  if isinstance(h, (int, float)) or not jnp.iscomplexobj(x):
    return h * x
  return jnp.asarray(h).astype(x.dtype) * x


def _check_hyperparams(hyperparams: dict[str, Any], dtype) -> None:
  """Raises if a concrete hyperparameter is invalid once rounded to ``dtype``.

  ``dtype`` is the one the update's arithmetic runs in for some leaf (float32
  for float32, float16 and bfloat16 params; float64 for float64 params): a
  ``b2`` of ``1 - 1e-8`` is valid, but it is 1.0 in float32, where the
  moments would stop moving and a bias correction would divide by zero.
  """
  dtype = _real_dtype(dtype)
  for name, value in hyperparams.items():
    if name in ("b1", "b2"):
      _validation.check_below_one_in(name, value, dtype)
    else:
      _validation.check_finite_in(name, value, dtype)


def _decayed_b1(b1, b1_decay, count):
  """Returns ``(b1_t, 1 - b1_t)``, b1_t = b1 * b1_decay**(t-1), for the step ``count`` (t >= 1).

  ``1 - b1_t`` comes with it so that a constant Python ``b1`` keeps ``1 - b1``
  formed in double precision, and a traced ``b1_decay`` equal to 1 (under
  ``optax.inject_hyperparams``) gives those same values, bit for bit. With a
  decay it is ``(1 - b1) + b1 (1 - b1_decay**(t-1))``: two terms of one sign,
  so nothing cancels where ``b1_t`` is near 1, and at ``t = 1`` it is
  ``1 - b1`` as the bias correction forms it (``1 - b1_t`` rounded after a
  float32 ``b1_t`` had made the first step of ``b1 = 0.99999`` 1.00136 lr).
  """
  if _conventions._is_concrete_one(b1_decay):
    return b1, 1 - b1
  decay = _conventions.as_float(b1_decay)
  b1_t = b1 * jnp.power(decay, jnp.asarray(count - 1).astype(decay.dtype))
  # 1 - decay**(t-1), exact 0 at t = 1 (the clamped exponent keeps decay = 0 free of 0 * inf).
  decayed = _conventions.one_minus_power(decay, jnp.maximum(count - 1, 1), exact=True)
  decayed = jnp.where(count == 1, jnp.zeros((), decayed.dtype), decayed)
  one_minus_b1 = _conventions.one_minus(b1)
  is_one = decay == 1
  return jnp.where(is_one, b1, b1_t), jnp.where(is_one, one_minus_b1, one_minus_b1 + b1 * decayed)


def _wide(*dtypes) -> jnp.dtype:
  """The dtype the arithmetic runs in: the widest of ``dtypes``, at least float32.

  Low-precision state is stored in its own dtype but updated in float32, with
  one rounding per step, as PyTorch does for half and bfloat16 tensors. A
  chain of bfloat16 operations would round after each one, and XLA rounds
  differently when it fuses them, so jitted and eager results would differ.
  """
  out = jnp.dtype(jnp.float32)
  for dt in dtypes:
    out = _promote(out, dt)
  return out


def _first_moment(g, m, rates):
  """``(1 - b1_t) g + b1_t m`` for ``rates = (b1_t, 1 - b1_t)``, in the wide dtype."""
  dt = _wide(g.dtype, m.dtype)
  b1, one_minus_b1 = (_cast_hp(r, dt) for r in rates)
  return one_minus_b1 * _cast(g, dt) + b1 * _cast(m, dt)


def _abs_sq(g, dtype, conj_form: bool = False):
  """``|g|^2`` in the real ``dtype``.

  ``conj_form`` forms it as optax does, ``(conj(g) * g).real``, which XLA
  rounds differently from ``re * re + im * im``.
  """
  if jnp.iscomplexobj(g):
    if conj_form and _real_dtype(g.dtype) == dtype:
      return (jnp.conj(g) * g).real
    # |g|^2 = re^2 + im^2, real-valued, formed in the wide dtype as for real g.
    re, im = jnp.real(g).astype(dtype), jnp.imag(g).astype(dtype)
    return re * re + im * im
  return _cast(g, dtype) ** 2


@jax.custom_jvp
def _sqrt(x: jax.Array) -> jax.Array:
  """``sqrt(x)`` whose derivative at ``x = 0`` is taken as 0, not inf.

  A coordinate whose gradients have all been zero has ``nu_max = 0`` and a
  zero first moment, so its step is 0 whatever ``nu_max`` is near 0; with the
  derivative inf there, its zero cotangent times inf would make every
  gradient *through* the optimizer (a meta-gradient) NaN.
  """
  return jnp.sqrt(x)


@_sqrt.defjvp
def _sqrt_jvp(primals, tangents):
  (x,), (t,) = primals, tangents
  y = jnp.sqrt(x)
  if jnp.iscomplexobj(x):
    return y, t * (0.5 / y)
  slope = jnp.where(x > 0, 0.5 / y, jnp.zeros_like(y))
  return y, t * slope


@jax.custom_jvp
def _guarded_divide(num: jax.Array, den: jax.Array) -> jax.Array:
  """``num / den``, with the step 0 where ``den == 0`` (no gradient history, eps = 0)."""
  return jnp.where(den == 0, jnp.zeros_like(num), num / den)


@_guarded_divide.defjvp
def _guarded_divide_jvp(primals, tangents):
  (num, den), (t_num, t_den) = primals, tangents
  out = _guarded_divide(num, den)
  # The derivative is taken from the residuals alone, so that no inf or NaN
  # of the unselected num / den reaches it (the "double where" pattern).
  inv = jnp.where(den == 0, jnp.zeros_like(den), 1 / jnp.where(den == 0, jnp.ones_like(den), den))
  return out, (t_num - out * t_den) * inv


def _divide(num, den, guard_zero: bool):
  """num / den, with 0/0 defined as 0 when ``guard_zero``."""
  if not guard_zero:
    return num / den
  return _guarded_divide(num, den)


def _by_real(op, x, s, complex_arith: bool = False):
  """Returns ``op(x, s)`` for a real ``s``; componentwise when ``x`` is complex.

  Complex moments are scaled by real factors without a complex division, and
  without mixing complex with real dtypes (which strict promotion refuses).
  With ``complex_arith`` a complex ``x`` is instead combined with ``s`` cast
  to complex, as optax does (a complex division rounds differently).
  """
  if jnp.iscomplexobj(x):
    if complex_arith:
      return op(x, s.astype(x.dtype))
    s = s.astype(_real_dtype(x.dtype))
    return jax.lax.complex(op(jnp.real(x), s), op(jnp.imag(x), s))
  return op(x, _cast(s, x.dtype))


def _may_divide_by_zero(eps, eps_root) -> bool:
  """False when a concrete eps or eps_root keeps every denominator positive."""
  for x in (eps, eps_root):
    arr = _validation.concrete_value(x)
    if arr is not None and bool(np.all(arr > 0)):
      return False
  return True


def _is_zero(x) -> bool:
  return isinstance(x, (int, float)) and x == 0


def _sqrt_plus(nu_max, eps_root):
  if _is_zero(eps_root):
    return _sqrt(nu_max)
  return _sqrt(nu_max + _cast_hp(eps_root, nu_max.dtype))


def _split_complex(leaf_fn, g, *moments):
  """Applies ``leaf_fn`` to the real and the imaginary parts as separate coordinates.

  This is ``torch.view_as_real``: each part has its own moments, stored as
  the real and imaginary parts of complex state arrays.
  """
  re = leaf_fn(jnp.real(g), *(jnp.real(x) for x in moments))
  im = leaf_fn(jnp.imag(g), *(jnp.imag(x) for x in moments))
  out = []
  for r, i, like in zip(re, im, (g, *moments), strict=True):
    out.append(jax.lax.complex(r, i).astype(like.dtype))
  return tuple(out)


def _check_updates(updates, state, state_type):
  _validation.check_state(state, state_type._fields, state_type.__name__)
  _validation.check_same_structure(updates, _quantize.shapes_tree(state.mu), "state.mu")
  _validation.check_float_tree(updates, "updates")
  _validation.check_no_complex_into_real(updates, state.mu)


# ---------------------------------------------------------------- AMSGrad

_MOMENTS = ("mu", "nu", "nu_max")


def scale_by_amsgrad(
  b1: jax.typing.ArrayLike = 0.9,
  b2: jax.typing.ArrayLike = 0.999,
  eps: jax.typing.ArrayLike = 1e-8,
  eps_root: jax.typing.ArrayLike = 0.0,
  *,
  convention: str = "pytorch",
  b1_decay: jax.typing.ArrayLike | None = None,
  mu_dtype: Any | None = None,
  nu_dtype: Any | None = None,
  state_bits: int | None = None,
  block_size: int | None = None,
) -> optax.GradientTransformation:
  r"""Returns a transformation that rescales updates by AMSGrad.

  With :math:`c_1 = 1 - \prod_{i \le t}\beta_{1,i}` and
  :math:`c_2 = 1 - \beta_2^t`, every convention computes

  .. math::

    m_t = \beta_{1,t} m_{t-1} + (1-\beta_{1,t}) g_t, \quad
    v_t = \beta_2 v_{t-1} + (1-\beta_2) |g_t|^2,

  and then, by ``convention`` (the step ``u_t`` is later scaled by
  ``-learning_rate``):

  - ``"pytorch"``: :math:`\hat v_t = \max(\hat v_{t-1}, v_t)`,
    :math:`u_t = \frac{m_t/c_1}{\sqrt{\hat v_t}/\sqrt{c_2} + \epsilon}`.
  - ``"keras"``: :math:`\hat v_t = \max(\hat v_{t-1}, v_t)`,
    :math:`u_t = \frac{\sqrt{c_2}}{c_1}\,\frac{m_t}{\sqrt{\hat v_t} + \epsilon}`.
  - ``"optax"``: :math:`\hat v_t = \max(\hat v_{t-1}, v_t/c_2)`,
    :math:`u_t = \frac{m_t/c_1}{\sqrt{\hat v_t + \bar\epsilon} + \epsilon}`.
  - ``"paper"``: :math:`\hat v_t = \max(\hat v_{t-1}, v_t)`,
    :math:`u_t = \frac{m_t}{\sqrt{\hat v_t + \bar\epsilon} + \epsilon}`.

  ``eps_root`` (:math:`\bar\epsilon`) is added to :math:`\hat v_t` inside the
  square root under every convention. With ``eps = eps_root = 0`` a
  coordinate whose gradients have all been zero gets a zero update, not NaN.

  Dtypes: ``mu`` is kept in ``mu_dtype`` (default: the param's dtype, except
  float32 for float16 params, where :math:`(1-\beta_1) g` is subnormal below
  :math:`|g| \approx 6 \times 10^{-4}`); ``nu`` and ``nu_max`` in
  ``nu_dtype`` (default: the param's real dtype, except float32 for float16
  params, since :math:`g^2` overflows float16 above :math:`|g| \approx 256`).
  Updates come back in the gradient's dtype. The arithmetic runs in at least
  float32; low-precision state is rounded once, when it is stored. A
  hyperparameter is checked in the dtype it is used in: ``b2 = 1 - 1e-8`` is
  1.0 in float32 and raises ValueError there.

  Complex params follow each convention's framework: ``"pytorch"`` treats the
  real and imaginary parts as separate coordinates (``torch.view_as_real``),
  each with its own second moments, held as the real and imaginary parts of
  complex ``nu`` and ``nu_max``; ``"optax"`` keeps :math:`(\bar g g)` in a
  complex ``nu`` and forms the step in complex arithmetic, bit for bit as
  ``optax.amsgrad``; ``"keras"`` and ``"paper"`` keep a real
  :math:`v_t = \mathrm{EMA}(|g|^2)` (Keras itself squares a complex gradient
  as :math:`g^2`, which is no second moment). A complex gradient for a real
  param raises TypeError.

  Gradients through the update (meta-gradients) are finite where the update
  is: the derivative of :math:`\sqrt{\hat v}` at :math:`\hat v = 0` and of the
  step where its denominator is 0 are taken as 0, where the step is
  constant.

  Args:
    b1: decay rate of the first moment, in [0, 1).
    b2: decay rate of the second moment, in [0, 1).
    eps: added to the denominator outside the square root, >= 0.
    eps_root: added to the running max inside the square root, >= 0.
    convention: one of :data:`amsgrad_optax.CONVENTIONS`: ``"pytorch"``
      (default), ``"keras"``, ``"optax"`` or ``"paper"``.
    b1_decay: the paper's :math:`\lambda`: the first-moment rate at step
      :math:`t` is :math:`\beta_{1,t} = \beta_1\lambda^{t-1}`, in (0, 1];
      None (default) or ``1.0`` keeps it constant.
    mu_dtype: dtype of ``mu``; None for the param's dtype (float32 for float16
      params).
    nu_dtype: dtype of ``nu`` and ``nu_max``; None for the rule above.
    state_bits: None (default) for full-precision state; 8 to store ``mu``,
      ``nu`` and ``nu_max`` of every real floating-point leaf of at least
      64 elements as 8-bit codes with a float32 scale per block, about 3
      bytes per parameter instead of 12 (see ``docs/memory.md``). The
      stored ``nu_max`` is rounded towards +inf, so that, dequantized, it
      never decreases and is never below ``nu``: the cap, and the
      non-increasing step, survive. Read a quantized leaf with
      :func:`amsgrad_optax.dequantize`. Smaller and complex leaves keep
      ``mu_dtype`` / ``nu_dtype``.
    block_size: the most elements per block with ``state_bits=8``, a
      positive int; None (default) for 256. Blocks are tiles of the last two
      axes.

  Returns:
    An :class:`optax.GradientTransformation` whose state is a
    :class:`ScaleByAmsgradState`.

  Raises:
    ValueError: for an unknown convention or a concrete hyperparameter out
      of range; at update time, for updates whose tree differs from the
      state's.
    TypeError: for integer params or updates, or a non-float dtype.

  Examples:
    >>> import jax.numpy as jnp
    >>> import amsgrad_optax
    >>> tx = amsgrad_optax.scale_by_amsgrad(convention="paper", eps=0.0)
    >>> state = tx.init(jnp.zeros(2))
    >>> u, state = tx.update(jnp.array([3.0, 0.0]), state)
    >>> u  # m_1 / sqrt(v_1) = 0.1 g / sqrt(0.001) |g|, and 0 where g was 0
    Array([3.1622777, 0.       ], dtype=float32)

  References:
    Reddi, Kale & Kumar, `On the Convergence of Adam and Beyond
    <https://openreview.net/forum?id=ryQu7f-RZ>`_, ICLR 2018.
  """
  return _scale_by_amsgrad(
    b1,
    b2,
    eps,
    eps_root,
    convention=convention,
    b1_decay=b1_decay,
    mu_dtype=mu_dtype,
    nu_dtype=nu_dtype,
    state_bits=state_bits,
    block_size=block_size,
    nu_max_factor=None,
  )


def _scale_by_amsgrad(
  b1: jax.typing.ArrayLike,
  b2: jax.typing.ArrayLike,
  eps: jax.typing.ArrayLike,
  eps_root: jax.typing.ArrayLike,
  *,
  convention: str,
  b1_decay: jax.typing.ArrayLike | None,
  mu_dtype: Any | None,
  nu_dtype: Any | None,
  state_bits: int | None,
  block_size: int | None,
  nu_max_factor: Any,
) -> optax.GradientTransformation:
  r""":func:`scale_by_amsgrad`, with the hook AdamX needs.

  ``nu_max_factor`` is None, or a function of the step count returning a
  scalar that multiplies :math:`\hat v_{t-1}` before the maximum
  (:func:`amsgrad_optax.scale_by_adamx`).
  """
  conv = _conventions.get_convention(convention)
  _validation.check_range("b2", b2, **_validation.RANGES["b2"])
  hyperparams = {"b1": b1, "b2": b2, "eps": eps, "eps_root": eps_root}
  mu_dtype, nu_dtype = _check_common(hyperparams, b1_decay, mu_dtype, nu_dtype)
  if block_size is None:
    block_size = _quantize.DEFAULT_BLOCK_SIZE
  state_bits, block_size = _quantize.check_options(state_bits, block_size)

  divide = functools.partial(_divide, guard_zero=_may_divide_by_zero(eps, eps_root))

  complex_nu = conv.complex_mode != "abs_sq"

  def init_fn(params):
    count, mu, (nu, nu_max) = _init_moments(params, mu_dtype, nu_dtype, 2, complex_nu)
    if state_bits is _quantize.TRACED:
      raise TypeError(
        "state_bits is traced: it sets the layout of the state that init builds. Under "
        "optax.inject_hyperparams, list 'state_bits' and 'block_size' in static_args."
      )
    if state_bits is not None:
      mu, nu, nu_max = _quantize.quantize_moments(params, mu, nu, nu_max, block_size)
    return ScaleByAmsgradState(count=count, mu=mu, nu=nu, nu_max=nu_max)

  def update_fn(updates, state, params=None):
    del params
    _check_updates(updates, state, ScaleByAmsgradState)
    state = state._replace(**{f: _quantize.normalized(getattr(state, f)) for f in _MOMENTS})
    count = optax.safe_increment(state.count)
    b1_rates = _decayed_b1(b1, b1_decay, count)
    bc1, bc2 = conv.bias_corrections(b1, b2, count, b1_decay=b1_decay)

    # The step's scalar factors, built once per dtype rather than once per leaf:
    # the same values, and far fewer operations to trace on a large model.
    scalars = _PerDtype()
    check_in = functools.partial(scalars, _check_hyperparams, hyperparams)
    step_factor = jnp.sqrt(bc2) / bc1 if conv.nu_correction == "step" else None
    nu_max_factor_t = None if nu_max_factor is None else nu_max_factor(count)

    complex_arith = conv.complex_mode == "complex"

    def moments(g, m, v, v_max):
      """The new ``(mu, nu, nu_max)``, the last two in the wide dtype."""
      m = _first_moment(g, m, b1_rates)
      wide = _wide(v.dtype)
      check_in(wide)
      real_wide = _real_dtype(wide)
      b2_ = scalars(_cast_hp, b2, real_wide)
      g_sq = scalars(_one_minus, b2_, real_wide) * _abs_sq(g, real_wide, conj_form=complex_arith)
      v = _cast(g_sq, wide) + _mul_hp(b2_, _cast(v, wide))
      if nu_max_factor_t is not None:  # AdamX rescales the old maximum first
        v_max = _mul_hp(scalars(_cast_hp, nu_max_factor_t, real_wide), _cast(v_max, wide))
      if conv.nu_correction == "max":
        v_max = jnp.maximum(_cast(v_max, wide), _by_real(jnp.divide, v, bc2, complex_arith))
      else:
        one = scalars(_opaque_one, None, _real_dtype(v.dtype))
        v_max = jnp.maximum(_cast(v_max, wide), v * one)
      return m, v, v_max

    def real_leaf(g, stored_m, stored_v, stored_v_max):
      """The step for one leaf: real, or complex under "complex"/"abs_sq"."""
      m, v, v_max = map(_quantize.dequantize, (stored_m, stored_v, stored_v_max))
      v_dtype = v.dtype
      m, v, v_max = moments(g, m, v, v_max)
      u = _cast(step(m, v_max), g.dtype)
      if not _quantize.is_quantized(stored_v_max):
        return u, m, _cast(v, v_dtype), _cast(v_max, v_dtype)
      # The same update on each block's bounds bounds its new values (it is
      # monotone in |g| and in each moment): the new scales, before the values.
      bound_m, _, bound_v_max = moments(
        *_quantize.block_bounds(g, stored_m, stored_v, stored_v_max)
      )
      scales = (_quantize.scale_of_bound(bound_m), _quantize.scale_of_bound(bound_v_max))
      return u, *_quantize.store_moments(
        stored_m, stored_v, stored_v_max, m, v, v_max, g=g, count=count, scales=scales
      )

    def step(m, v_max):
      """The update from the new moments."""
      m_hat = m
      if conv.nu_correction == "step":
        m_hat = _by_real(jnp.multiply, m, step_factor)
      elif bc1 is not None:
        m_hat = _by_real(jnp.divide, m, bc1, complex_arith)
      den = _sqrt_plus(v_max, eps_root)
      if conv.nu_correction == "denominator":
        s2 = _cast(jnp.sqrt(bc2), den.dtype)
        m_hat = _by_real(jnp.multiply, m_hat, s2)
        den = den + scalars(_cast_hp, eps, den.dtype) * s2
      else:
        den = den + scalars(_cast_hp, eps, den.dtype)
      dt = _promote(m_hat.dtype, den.dtype)
      if jnp.iscomplexobj(den):
        return divide(_cast(m_hat, dt), den)
      return _by_real(divide, _cast(m_hat, dt), den)

    def leaf(g, m, v, v_max):
      g = jnp.asarray(g)
      if jnp.iscomplexobj(g) and conv.complex_mode == "real_view":
        return _split_complex(real_leaf, g, m, v, v_max)
      return real_leaf(g, m, v, v_max)

    out = jax.tree.map(leaf, updates, state.mu, state.nu, state.nu_max)
    treedef = jax.tree.structure(updates)
    u, mu, nu, nu_max = _unzip(out, treedef, 4)
    mu = jax.tree.map(lambda m, old: _cast(m, old.dtype), mu, state.mu)
    return u, ScaleByAmsgradState(count=count, mu=mu, nu=nu, nu_max=nu_max)

  config = _config.AmsgradConfig(convention, None, b1, b2, eps, eps_root, b1_decay)
  return _config.record(optax.GradientTransformation(init_fn, update_fn), config)


def _unzip(tree_of_tuples, treedef, n):
  leaves = treedef.flatten_up_to(tree_of_tuples)
  return tuple(treedef.unflatten([lf[i] for lf in leaves]) for i in range(n))


# ---------------------------------------------------------------- AdamNC


def scale_by_adamnc(
  b1: jax.typing.ArrayLike = 0.9,
  eps: jax.typing.ArrayLike = 1e-8,
  eps_root: jax.typing.ArrayLike = 0.0,
  *,
  b1_decay: jax.typing.ArrayLike | None = None,
  mu_dtype: Any | None = None,
  nu_dtype: Any | None = None,
) -> optax.GradientTransformation:
  r"""Returns a transformation that rescales updates by the paper's AdamNC.

  AdamNC is Adam with the non-constant rate :math:`\beta_{2,t} = 1 - 1/t`,
  so that :math:`v_t` is the plain average of the squared gradients, and no
  bias correction:

  .. math::

    m_t = \beta_{1,t} m_{t-1} + (1-\beta_{1,t}) g_t, \quad
    v_t = v_{t-1} + \frac{|g_t|^2 - v_{t-1}}{t}, \quad
    u_t = \frac{m_t}{\sqrt{v_t + \bar\epsilon} + \epsilon}.

  The average is kept in the running-mean form above, which stays exact
  when :math:`1 - 1/t` rounds to 1 in float32 (beyond :math:`t = 2^{24}`).

  Args:
    b1: decay rate of the first moment, in [0, 1).
    eps: added to the denominator outside the square root, >= 0.
    eps_root: added to :math:`v_t` inside the square root, >= 0.
    b1_decay: the paper's :math:`\lambda` in :math:`\beta_{1,t} =
      \beta_1\lambda^{t-1}`, in (0, 1]; None (default) keeps it constant.
    mu_dtype: dtype of ``mu``; None for the param's dtype (float32 for float16
      params).
    nu_dtype: dtype of ``nu``; None for the param's real dtype (float32 for
      float16 params).

  Returns:
    An :class:`optax.GradientTransformation` whose state is a
    :class:`ScaleByAdamncState`.

  Examples:
    >>> import jax.numpy as jnp
    >>> import amsgrad_optax
    >>> tx = amsgrad_optax.scale_by_adamnc(b1=0.0, eps=0.0)
    >>> state = tx.init(jnp.zeros(1))
    >>> _, state = tx.update(jnp.array([3.0]), state)
    >>> _, state = tx.update(jnp.array([1.0]), state)
    >>> state.nu  # (9 + 1) / 2
    Array([5.], dtype=float32)

  References:
    Reddi, Kale & Kumar, `On the Convergence of Adam and Beyond
    <https://openreview.net/forum?id=ryQu7f-RZ>`_, ICLR 2018, Section 4.
  """
  hyperparams = {"b1": b1, "eps": eps, "eps_root": eps_root}
  mu_dtype, nu_dtype = _check_common(hyperparams, b1_decay, mu_dtype, nu_dtype)

  divide = functools.partial(_divide, guard_zero=_may_divide_by_zero(eps, eps_root))

  def init_fn(params):
    count, mu, (nu,) = _init_moments(params, mu_dtype, nu_dtype, 1)
    return ScaleByAdamncState(count=count, mu=mu, nu=nu)

  def update_fn(updates, state, params=None):
    del params
    _check_updates(updates, state, ScaleByAdamncState)
    count = optax.safe_increment(state.count)
    b1_rates = _decayed_b1(b1, b1_decay, count)

    scalars = _PerDtype()

    def leaf(g, m, v):
      g = jnp.asarray(g)
      m = _first_moment(g, m, b1_rates)
      # The running mean in at least float32: 1/t rounds badly in bf16.
      v_dtype, wide = v.dtype, _wide(v.dtype)
      scalars(_check_hyperparams, hyperparams, wide)
      v_w = v.astype(wide)
      v = v_w + (_abs_sq(g, wide) - v_w) / count.astype(wide)
      den = _sqrt_plus(v, eps_root) + _cast_hp(eps, v.dtype)
      dt = _promote(m.dtype, den.dtype)
      u = _by_real(divide, m.astype(dt), den)
      return u.astype(g.dtype), m, v.astype(v_dtype)

    out = jax.tree.map(leaf, updates, state.mu, state.nu)
    u, mu, nu = _unzip(out, jax.tree.structure(updates), 3)
    mu = jax.tree.map(lambda m, old: _cast(m, old.dtype), mu, state.mu)
    return u, ScaleByAdamncState(count=count, mu=mu, nu=nu)

  return optax.GradientTransformation(init_fn, update_fn)
