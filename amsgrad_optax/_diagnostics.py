"""Figures worth logging from an AMSGrad state: momentum size, cap activity, step sizes."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from amsgrad_optax import _conventions, _quantize, _transform

_STATE_CLASSES = (_transform.ScaleByAmsgradState, optax.ScaleByAmsgradState)
_STATE_NAME = "ScaleByAmsgradState"


def _find_state(state: Any) -> Any:
  """Returns the one AMSGrad state inside ``state``, or raises a ValueError."""
  if isinstance(state, _STATE_CLASSES):
    return state
  found = optax.tree_utils.tree_get_all_with_path(
    state, _STATE_NAME, filtering=lambda _, v: isinstance(v, _STATE_CLASSES)
  )
  if not found:
    raise ValueError(
      "state must be a ScaleByAmsgradState or an optax state tree holding "
      f"one (as amsgrad_optax.amsgrad or optax.amsgrad builds), got a "
      f"{type(state).__name__} without one. For a Flax nnx.Optimizer pass "
      "optimizer.opt_state; for a Linen TrainState, state.opt_state."
    )
  if len(found) > 1:
    paths = ", ".join(jax.tree_util.keystr(p) for p, _ in found)
    raise ValueError(
      f"state holds {len(found)} AMSGrad states (at {paths}); diagnostics "
      "describes one optimizer: pass the one you mean, e.g. "
      "optax.tree_utils.tree_get_all_with_path(state, 'ScaleByAmsgradState')[i][1]."
    )
  return found[0][1]


def _leaves(tree: Any) -> list[jax.Array]:
  # Flax nnx wraps state leaves in Variables; flattening unwraps them.
  # 8-bit leaves (state_bits=8) are read as the float32 values they encode.
  return [jnp.asarray(x) for x in jax.tree.leaves(_quantize.dequantize_tree(tree))]


def _f32(x: jax.typing.ArrayLike) -> jax.Array:
  return jnp.asarray(x).astype(jnp.float32)


def diagnostics(
  state: Any,
  *,
  learning_rate: optax.ScalarOrSchedule,
  b1: jax.typing.ArrayLike = 0.9,
  b2: jax.typing.ArrayLike = 0.999,
  eps: jax.typing.ArrayLike = 1e-8,
  eps_root: jax.typing.ArrayLike = 0.0,
  convention: str = "pytorch",
  b1_decay: jax.typing.ArrayLike = 1.0,
) -> dict[str, jax.Array]:
  r"""Returns scalars worth logging about an AMSGrad state: momentum, cap, step sizes.

  ``state`` is a :class:`~amsgrad_optax.ScaleByAmsgradState` (or optax's
  class of that name), or any optax state tree holding exactly one: the
  state of :func:`amsgrad_optax.amsgrad` or of an ``optax.chain`` around it,
  a Flax ``nnx.Optimizer``'s ``opt_state``, a Linen ``TrainState``'s
  ``opt_state``. It is found with
  :func:`optax.tree_utils.tree_get_all_with_path` by its class name. Pass
  the hyperparameters the optimizer was built with: they are not stored in
  the state.

  After :math:`t` updates (``count``), with :math:`c_1 = 1 - \prod_{i\le t}
  \beta_{1,i}` and :math:`c_2 = 1 - \beta_2^t` (evaluated exactly as the
  transform does), the last update was :math:`-s \odot m_t`, where the
  effective per-coordinate step :math:`s` is, by convention,

  ============  =================================================================
  convention    step :math:`s`
  ============  =================================================================
  ``pytorch``   :math:`\frac{\eta_t / c_1}{\sqrt{\hat v_t + \bar\epsilon}/\sqrt{c_2} + \epsilon}`
  ``keras``     :math:`\frac{\eta_t \sqrt{c_2} / c_1}{\sqrt{\hat v_t + \bar\epsilon} + \epsilon}`
  ``optax``     :math:`\frac{\eta_t / c_1}{\sqrt{\hat v_t + \bar\epsilon} + \epsilon}`
  ``paper``     :math:`\frac{\eta_t}{\sqrt{\hat v_t + \bar\epsilon} + \epsilon}`
  ============  =================================================================

  (:math:`\hat v_t` is ``nu_max``, :math:`\bar\epsilon` is ``eps_root``;
  weight decay is not part of :math:`s`). A schedule ``learning_rate`` is
  evaluated at ``count - 1``, the index optax's
  ``scale_by_learning_rate`` used for the last update. Before the first
  update (``count == 0``) the corrections are taken at :math:`t = 1`.

  The figures, and when they signal trouble:

  * ``mu_norm``: the global L2 norm of the first moment :math:`m_t`, the
    smoothed gradient. It should shrink as training converges; a sudden
    jump is a gradient spike (AMSGrad's cap then keeps the larger
    :math:`\hat v` for good, slowing those coordinates from then on).
  * ``cap_active`` / ``cap_active_fraction``: how many coordinates (and
    what fraction) have ``nu_max`` strictly above the second moment the
    maximum is taken over (:math:`v_t`, or :math:`v_t / c_2` under
    ``"optax"``): where AMSGrad's step differs from Adam's. Zero means the
    run is Adam so far. A fraction near 1 early on means one large early
    gradient froze the denominators: check the initial learning-rate
    warm-up or gradient clipping. A fraction that grows over training is
    expected as :math:`v_t` decays while gradients shrink.
  * ``step_min`` / ``step_median`` / ``step_max``: the order statistics of
    :math:`s` over all coordinates. ``step_max`` near
    :math:`\eta_t / \epsilon` flags coordinates whose gradients have all
    been (near) zero: they would take a huge step on the next nonzero
    gradient; raise ``eps``. A median that collapses while the loss still
    falls slowly means the cap is holding every coordinate back: a larger
    learning rate, or Adam, may train faster.

  The median sorts every coordinate: on large models log it every few
  hundred steps, not every step. Everything is computed in float32 and the
  function is pure and jittable (close over the keyword arguments, e.g.
  ``jax.jit(functools.partial(diagnostics, learning_rate=...))``).

  Args:
    state: an AMSGrad state, or an optax state tree holding one.
    learning_rate: the learning rate :math:`\eta`: a float, an array or an
      optax schedule.
    b1: the optimizer's ``b1``.
    b2: the optimizer's ``b2``.
    eps: the optimizer's ``eps``.
    eps_root: the optimizer's ``eps_root``.
    convention: the optimizer's convention, one of
      :data:`amsgrad_optax.CONVENTIONS` (``"optax"`` for ``optax.amsgrad``).
    b1_decay: the optimizer's ``b1_decay``.

  Returns:
    A dict of float32 JAX scalars (``cap_active`` is int32): ``mu_norm``,
    ``cap_active``, ``cap_active_fraction``, ``step_min``, ``step_median``,
    ``step_max``.

  Raises:
    ValueError: if ``state`` holds no AMSGrad state or more than one, or
      for an unknown convention.

  Examples:
    >>> import jax.numpy as jnp
    >>> import amsgrad_optax
    >>> tx = amsgrad_optax.amsgrad(0.1, b1=0.0, b2=0.5, eps=0.0)
    >>> state = tx.init(jnp.zeros(2))
    >>> _, state = tx.update(jnp.array([4.0, 1.0]), state)
    >>> _, state = tx.update(jnp.array([2.0, 1.0]), state)
    >>> d = amsgrad_optax.diagnostics(state, learning_rate=0.1, b1=0.0, b2=0.5, eps=0.0)
    >>> int(d["cap_active"])  # nu = (6, 0.75) is below nu_max = (8, 0.75) once
    1
    >>> float(d["step_max"])  # 0.1 / (sqrt(0.75) / sqrt(c2)), c2 = 1 - 0.5**2
    0.1...
    >>> round(float(d["step_min"]), 6)  # 0.1 / (sqrt(8) / sqrt(c2))
    0.030619
  """
  conv = _conventions.get_convention(convention)
  amsgrad_state = _find_state(state)
  (count,) = _leaves(amsgrad_state.count)
  t = jnp.maximum(count, jnp.ones_like(count))
  if callable(learning_rate):
    lr = _f32(learning_rate(t - 1))
  else:
    lr = _f32(learning_rate)

  c1, c2 = conv.bias_corrections(b1, b2, t, b1_decay=b1_decay)
  factor = lr if c1 is None else lr / _f32(c1)
  sqrt_c2 = None if c2 is None else jnp.sqrt(_f32(c2))
  if conv.nu_correction == "step":
    factor = factor * sqrt_c2

  mus = _leaves(amsgrad_state.mu)
  nus = _leaves(amsgrad_state.nu)
  nu_maxes = _leaves(amsgrad_state.nu_max)
  if not nu_maxes:
    raise ValueError("state has no coordinates: the params tree it was initialised with is empty")

  steps, capped = [], []
  for nu, nu_max in zip(nus, nu_maxes, strict=True):
    # Compare against the quantity the maximum is taken over, in its own
    # dtype, so an inactive cap compares equal bit for bit.
    capped_over = nu / c2.astype(nu.dtype) if conv.nu_correction == "max" else nu
    capped.append(jnp.ravel(nu_max > capped_over))
    den = jnp.sqrt(_f32(nu_max) + _f32(eps_root))
    if conv.nu_correction == "denominator":
      den = den / sqrt_c2
    steps.append(jnp.ravel(factor / (den + _f32(eps))))
  step = jnp.concatenate(steps)
  cap = jnp.concatenate(capped)
  cap_active = jnp.sum(cap, dtype=jnp.int32)
  mu_sq = sum(jnp.sum(_f32(jnp.abs(m)) ** 2) for m in mus)
  return {
    "mu_norm": jnp.sqrt(mu_sq),
    "cap_active": cap_active,
    "cap_active_fraction": cap_active.astype(jnp.float32) / jnp.float32(cap.size),
    "step_min": jnp.min(step),
    "step_median": jnp.median(step),
    "step_max": jnp.max(step),
  }
