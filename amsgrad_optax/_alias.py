"""Complete optimizers: the AMSGrad, AdamNC and AdamX steps with weight decay and a learning rate."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from amsgrad_optax import _adamx, _config, _conventions, _robust, _transform, _validation

MaskOrFn = Any


def _finish(
  scaler: optax.GradientTransformation,
  learning_rate: optax.ScalarOrSchedule,
  weight_decay: jax.typing.ArrayLike | None,
  decoupled_weight_decay: bool,
  mask: MaskOrFn,
  skip_nonfinite: bool = False,
) -> optax.GradientTransformationExtraArgs:
  """Returns ``chain(scaler with weight decay, scale_by_learning_rate)``.

  The chain has two parts whatever the hyperparameters are: the weight decay
  is folded into the first, whose state is the scaler's. So the state's
  structure is the same for a number, an array or a traced value (under
  ``optax.inject_hyperparams``), and the same as ``optax.amsgrad``'s.
  """
  _validation.check_learning_rate(learning_rate)
  if callable(learning_rate):
    learning_rate = _validation.checked_schedule(learning_rate)
  else:
    _validation.check_finite_in("learning_rate", learning_rate, _conventions.default_float_dtype())
  if not isinstance(skip_nonfinite, bool):
    raise TypeError(f"skip_nonfinite must be a bool, got {skip_nonfinite!r}")
  if weight_decay is not None:
    _validation.check_range("weight_decay", weight_decay, low=0.0)
    _validation.check_finite_in("weight_decay", weight_decay, _conventions.default_float_dtype())
  if not isinstance(decoupled_weight_decay, bool):
    raise TypeError(f"decoupled_weight_decay must be a bool, got {decoupled_weight_decay!r}")
  parts = [
    _with_weight_decay(scaler, weight_decay, decoupled_weight_decay, mask),
    _scale_by_learning_rate(learning_rate),
  ]
  tx = _validation.with_chain_state_check(optax.chain(*parts), len(parts))
  return _robust.skip_nonfinite(tx) if skip_nonfinite else tx


def _scale_by_learning_rate(learning_rate: optax.ScalarOrSchedule) -> optax.GradientTransformation:
  """``optax.scale_by_learning_rate`` that checks a concrete rate in each update's dtype."""
  inner = optax.scale_by_learning_rate(learning_rate)
  if callable(learning_rate):
    return inner

  def update_fn(updates, state, params=None):
    for dtype in {_transform._real_dtype(jnp.result_type(u)) for u in jax.tree.leaves(updates)}:
      # -lr * u is formed in the update's dtype: lr = 1e5 is inf in float16.
      _validation.check_finite_in("learning_rate", learning_rate, dtype)
    if isinstance(learning_rate, (int, float)):
      return inner.update(updates, state, params)
    # An array rate is cast to each update's dtype, as optax does for a
    # schedule's value (a bfloat16 rate times float32 updates is refused under
    # strict promotion); a float32 rate with float32 updates is unchanged.
    step = -jnp.asarray(learning_rate)
    return jax.tree.map(lambda u: step.astype(jnp.result_type(u)) * u, updates), state

  return optax.GradientTransformation(inner.init, update_fn)


def _with_weight_decay(
  scaler: optax.GradientTransformation,
  weight_decay: jax.typing.ArrayLike | None,
  decoupled: bool,
  mask: MaskOrFn,
) -> optax.GradientTransformation:
  """Returns ``scaler`` with weight decay before it (coupled) or after it (decoupled).

  Coupled: ``g + wd * p`` enters the moments (``torch.optim.Adam(weight_decay=..)``).
  Decoupled: ``wd * p`` is added to the step (``torch.optim.AdamW``), which the
  learning rate then scales. The state is the scaler's own.
  """
  if weight_decay is None:
    return scaler
  decay = optax.add_decayed_weights(weight_decay, mask)

  def apply_decay(updates, params):
    wd = _validation.concrete_value(weight_decay)
    if wd is not None and not wd.any():
      return updates  # a concrete zero: nothing to add, bit for bit
    if params is None:
      if not jax.tree.leaves(updates):
        return updates  # nothing to decay: an empty tree (or None) of params
      shown = "traced" if wd is None else repr(weight_decay)
      raise ValueError(
        f"params must be passed to update() when weight_decay is set (it is "
        f"{shown}): the decay is weight_decay * params. Call "
        "tx.update(grads, state, params). Under optax.inject_hyperparams "
        "inside jit, weight_decay is traced: pass params, or list "
        "'weight_decay' in static_args."
      )
    _validation.check_mask(mask, params)
    decayed, _ = decay.update(updates, decay.init(params), params)
    if wd is not None:
      return decayed
    # Traced (optax.inject_hyperparams): a zero rate must leave the updates
    # exactly as they are (g + 0 * p turns -0.0 into +0.0, and inf params into NaN).
    return jax.tree.map(
      lambda d, u: None if u is None else jnp.where(weight_decay == 0, u, d),
      decayed,
      updates,
      is_leaf=lambda x: x is None,
    )

  def init_fn(params):
    _validation.check_mask(mask, params)
    return scaler.init(params)

  def update_fn(updates, state, params=None):
    if not decoupled:
      updates = apply_decay(updates, params)
    updates, state = scaler.update(updates, state, params)
    if decoupled:
      updates = apply_decay(updates, params)
    return updates, state

  return optax.GradientTransformation(init_fn, update_fn)


def amsgrad(
  learning_rate: optax.ScalarOrSchedule,
  b1: jax.typing.ArrayLike = 0.9,
  b2: jax.typing.ArrayLike = 0.999,
  eps: jax.typing.ArrayLike = 1e-8,
  eps_root: jax.typing.ArrayLike = 0.0,
  *,
  weight_decay: jax.typing.ArrayLike | None = None,
  decoupled_weight_decay: bool = True,
  mask: MaskOrFn = None,
  convention: str = "pytorch",
  b1_decay: jax.typing.ArrayLike | None = None,
  mu_dtype: Any | None = None,
  nu_dtype: Any | None = None,
  skip_nonfinite: bool = False,
  state_bits: int | None = None,
  block_size: int | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Returns the AMSGrad optimizer, in any framework's convention.

  The step is :func:`scale_by_amsgrad` (see there for each convention's
  formula) scaled by ``-learning_rate``. With ``weight_decay > 0`` it is
  either decoupled, :math:`p \leftarrow p - \eta(u_t + \lambda p)`, as
  ``torch.optim.AdamW(amsgrad=True)``; or, with
  ``decoupled_weight_decay=False``, coupled: :math:`g_t + \lambda p` enters
  the moments, as ``torch.optim.Adam(amsgrad=True, weight_decay=...)``.

  Switching from ``optax.amsgrad(lr, b1, b2, eps, eps_root)`` is the same
  call with ``convention="optax"``; from ``torch.optim.Adam(params, lr,
  betas=(b1, b2), eps=eps, amsgrad=True)`` it is ``amsgrad(lr, b1, b2, eps)``;
  from Keras ``Adam(lr, b1, b2, epsilon, amsgrad=True)`` it is
  ``amsgrad(lr, b1, b2, epsilon, convention="keras")`` (Keras's default
  epsilon is 1e-7).

  The paper's step size :math:`\alpha_t = \alpha/\sqrt{t}` is the schedule
  :func:`amsgrad_optax.inverse_sqrt_schedule`.

  Args:
    learning_rate: a non-negative float or array, or an optax schedule.
    b1: decay rate of the first moment, in [0, 1).
    b2: decay rate of the second moment, in [0, 1).
    eps: added to the denominator outside the square root, >= 0.
    eps_root: added to the running max inside the square root, >= 0.
    weight_decay: the weight-decay rate :math:`\lambda`, >= 0; None
      (default) for none. The state has the same structure either way.
    decoupled_weight_decay: decoupled (AdamW) when True, coupled L2 when
      False.
    mask: a tree of booleans, or a function of the params returning one,
      choosing the leaves that are decayed (as in :func:`optax.adamw`).
    convention: one of :data:`amsgrad_optax.CONVENTIONS`.
    b1_decay: the paper's :math:`\lambda` for :math:`\beta_{1,t} =
      \beta_1\lambda^{t-1}`; None (default) or 1.0 keeps :math:`\beta_1`
      constant.
    mu_dtype: dtype of ``mu``; None for the param's dtype (float32 for
      float16 params).
    nu_dtype: dtype of ``nu`` and ``nu_max``; None for the param's dtype,
      float32 for float16 params.
    skip_nonfinite: if True, a step whose gradients, updates or new state
      hold a NaN or inf is skipped whole and counted, as by
      :func:`amsgrad_optax.skip_nonfinite` (whose state then wraps this
      optimizer's). If False, such a step goes through: one NaN gradient
      makes ``nu_max``, and so every later update of that parameter, NaN
      for the rest of the run.
    state_bits: None for full-precision state, or 8 for block-wise 8-bit
      ``mu``, ``nu`` and ``nu_max`` (about 3 bytes per parameter), with
      ``nu_max`` rounded up so that the cap holds; see
      :func:`scale_by_amsgrad`.
    block_size: the most elements per quantization block, with
      ``state_bits=8``; None (default) for 256. (None, so that
      ``optax.inject_hyperparams`` does not inject it.)

  Returns:
    An :class:`optax.GradientTransformationExtraArgs`.

  Examples:
    >>> import jax, jax.numpy as jnp, optax
    >>> import amsgrad_optax
    >>> tx = optax.chain(
    ...     optax.clip_by_global_norm(1.0),
    ...     amsgrad_optax.amsgrad(learning_rate=0.1),
    ... )
    >>> params = {"w": jnp.array([1.0, -2.0])}
    >>> loss = lambda p: jnp.sum(p["w"] ** 2)
    >>> state = tx.init(params)
    >>> for _ in range(100):
    ...   grads = jax.grad(loss)(params)
    ...   updates, state = tx.update(grads, state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> bool(loss(params) < 1e-2)
    True

  References:
    Reddi, Kale & Kumar, `On the Convergence of Adam and Beyond
    <https://openreview.net/forum?id=ryQu7f-RZ>`_, ICLR 2018.
    Loshchilov & Hutter, `Decoupled Weight Decay Regularization
    <https://arxiv.org/abs/1711.05101>`_, ICLR 2019.
  """
  scaler = _transform.scale_by_amsgrad(
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
  )
  tx = _finish(scaler, learning_rate, weight_decay, decoupled_weight_decay, mask, skip_nonfinite)
  # For diagnostics and checkpoints: the state alone does not say what it belongs to.
  config = (convention, learning_rate, b1, b2, eps, eps_root, b1_decay, weight_decay)
  return _config.record(tx, _config.AmsgradConfig(*config))


def adamnc(
  learning_rate: optax.ScalarOrSchedule,
  b1: jax.typing.ArrayLike = 0.9,
  eps: jax.typing.ArrayLike = 1e-8,
  eps_root: jax.typing.ArrayLike = 0.0,
  *,
  weight_decay: jax.typing.ArrayLike | None = None,
  decoupled_weight_decay: bool = True,
  mask: MaskOrFn = None,
  b1_decay: jax.typing.ArrayLike | None = None,
  mu_dtype: Any | None = None,
  nu_dtype: Any | None = None,
  skip_nonfinite: bool = False,
) -> optax.GradientTransformationExtraArgs:
  r"""Returns the paper's AdamNC optimizer: Adam with :math:`\beta_{2,t} = 1 - 1/t`.

  The step is :func:`scale_by_adamnc` scaled by ``-learning_rate``; weight
  decay works as in :func:`amsgrad`. The paper's theory pairs it with
  :math:`\alpha_t = \alpha/\sqrt{t}` (:func:`inverse_sqrt_schedule`) and a
  decaying :math:`\beta_{1,t}` (``b1_decay < 1``).

  Args:
    learning_rate: a non-negative float or array, or an optax schedule.
    b1: decay rate of the first moment, in [0, 1).
    eps: added to the denominator outside the square root, >= 0.
    eps_root: added to :math:`v_t` inside the square root, >= 0.
    weight_decay: the weight-decay rate, >= 0; None (default) for none.
    decoupled_weight_decay: decoupled (AdamW) when True, coupled when False.
    mask: the leaves that are decayed, as in :func:`optax.adamw`.
    b1_decay: :math:`\lambda` in :math:`\beta_{1,t} = \beta_1\lambda^{t-1}`.
    mu_dtype: dtype of ``mu``.
    nu_dtype: dtype of ``nu``.
    skip_nonfinite: skip and count non-finite steps, as in :func:`amsgrad`.

  Returns:
    An :class:`optax.GradientTransformationExtraArgs`.

  Examples:
    >>> import jax.numpy as jnp, optax
    >>> import amsgrad_optax
    >>> tx = amsgrad_optax.adamnc(amsgrad_optax.inverse_sqrt_schedule(0.1), b1_decay=0.99)
    >>> params = jnp.array([1.0])
    >>> state = tx.init(params)
    >>> updates, state = tx.update(jnp.array([2.0]), state)
    >>> updates  # -0.1/sqrt(1) * (0.1*2) / sqrt(4)
    Array([-0.01], dtype=float32)

  References:
    Reddi, Kale & Kumar, `On the Convergence of Adam and Beyond
    <https://openreview.net/forum?id=ryQu7f-RZ>`_, ICLR 2018, Section 4.
  """
  scaler = _transform.scale_by_adamnc(
    b1, eps, eps_root, b1_decay=b1_decay, mu_dtype=mu_dtype, nu_dtype=nu_dtype
  )
  return _finish(scaler, learning_rate, weight_decay, decoupled_weight_decay, mask, skip_nonfinite)


def adamx(
  learning_rate: optax.ScalarOrSchedule,
  b1: jax.typing.ArrayLike = 0.9,
  b2: jax.typing.ArrayLike = 0.999,
  eps: jax.typing.ArrayLike = 1e-8,
  eps_root: jax.typing.ArrayLike = 0.0,
  *,
  weight_decay: jax.typing.ArrayLike | None = None,
  decoupled_weight_decay: bool = True,
  mask: MaskOrFn = None,
  b1_decay: jax.typing.ArrayLike | None = None,
  mu_dtype: Any | None = None,
  nu_dtype: Any | None = None,
  skip_nonfinite: bool = False,
) -> optax.GradientTransformationExtraArgs:
  r"""Returns Tran & Phong's AdamX optimizer: AMSGrad corrected for a decaying :math:`\beta_{1,t}`.

  The step is :func:`scale_by_adamx` (see there for the formula) scaled by
  ``-learning_rate``; weight decay works as in :func:`amsgrad`. Tran &
  Phong's analysis uses :math:`\alpha_t = \alpha/\sqrt{t}`
  (:func:`inverse_sqrt_schedule`) and :math:`\beta_{1,t} =
  \beta_1\lambda^{t-1}` (``b1_decay < 1``); with a constant :math:`\beta_1` AdamX is
  ``amsgrad(..., convention="paper")``.

  Args:
    learning_rate: a non-negative float or array, or an optax schedule.
    b1: :math:`\beta_1 = \beta_{1,1}`, in [0, 1).
    b2: decay rate of the second moment, in [0, 1).
    eps: added to the denominator outside the square root, >= 0.
    eps_root: added to the running max inside the square root, >= 0.
    weight_decay: the weight-decay rate, >= 0.
    decoupled_weight_decay: decoupled (AdamW) when True, coupled when False.
    mask: the leaves that are decayed, as in :func:`optax.adamw`.
    b1_decay: :math:`\lambda` in :math:`\beta_{1,t} = \beta_1\lambda^{t-1}`.
    mu_dtype: dtype of ``mu``.
    nu_dtype: dtype of ``nu`` and ``nu_max``.
    skip_nonfinite: skip and count non-finite steps, as in :func:`amsgrad`.

  Returns:
    An :class:`optax.GradientTransformationExtraArgs`.

  Examples:
    >>> import jax.numpy as jnp
    >>> import amsgrad_optax
    >>> tx = amsgrad_optax.adamx(amsgrad_optax.inverse_sqrt_schedule(0.1), b1_decay=0.5)
    >>> state = tx.init(jnp.zeros(1))
    >>> updates, state = tx.update(jnp.array([2.0]), state)
    >>> round(float(updates[0]), 6)  # -0.1 * (0.1*2) / sqrt(0.001*4), to float32 round-off
    -0.316228

  References:
    Tran & Phong, `On the Convergence Proof of AMSGrad and a New Version
    <https://arxiv.org/abs/1904.03590>`_, IEEE Access 7, 2019, Algorithm 2.
  """
  scaler = _adamx.scale_by_adamx(
    b1, b2, eps, eps_root, b1_decay=b1_decay, mu_dtype=mu_dtype, nu_dtype=nu_dtype
  )
  tx = _finish(scaler, learning_rate, weight_decay, decoupled_weight_decay, mask, skip_nonfinite)
  # Its step from nu_max is the "paper" convention's, so diagnostics read it as that.
  config = ("paper", learning_rate, b1, b2, eps, eps_root, b1_decay, weight_decay)
  return _config.record(tx, _config.AmsgradConfig(*config))
