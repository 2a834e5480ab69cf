"""The optimizers the experiments compare, by name, with one set of hyperparameters."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from amsgrad_optax import _alias, _conventions, _schedules, _validation
from amsgrad_optax.synthetic import _fast

#: The optimizer names accepted by :func:`make_optimizer` and the command line.
OPTIMIZERS: tuple[str, ...] = ("adam", "amsgrad", "adamnc", "sgd", "adamx")

#: The named optimizers the fast engine computes in closed form (AdamX runs as a scan).
FAST_OPTIMIZERS: tuple[str, ...] = ("adam", "amsgrad", "adamnc", "sgd")

#: The learning-rate schedules accepted by :func:`make_optimizer`.
LR_SCHEDULES: tuple[str, ...] = ("constant", "inverse-sqrt")


class SyntheticOptimizer(optax.GradientTransformation):
  """An optax transformation built by :func:`make_optimizer`, carrying what built it.

  It is an ordinary :class:`optax.GradientTransformation` (``init`` and
  ``update``); the attribute ``spec`` records the name, hyperparameters,
  convention and schedule, so that :func:`run` and :func:`sweep` can
  recognise an optimizer whose steps they can compute in closed form
  (None for a learning rate given as a schedule callable).
  """

  spec: _fast.OptimizerSpec | None


def _with_standard_promotion(
  tx: optax.GradientTransformation, spec: _fast.OptimizerSpec | None
) -> SyntheticOptimizer:
  """Returns ``tx`` with its update traced under standard dtype promotion.

  The bias corrections of ``optax.adam`` (and of the ``"optax"`` AMSGrad
  convention, which evaluates optax's expression) raise a float ``b`` to the
  int32 step count, which
  ``jax_numpy_dtype_promotion="strict"`` rejects; standard promotion gives
  the float32 power those libraries compute. The problem's own arithmetic,
  outside the update, stays under the caller's promotion rules.
  """

  def update_fn(updates, state, params=None):
    with jax.numpy_dtype_promotion("standard"):
      return tx.update(updates, state, params)

  out = SyntheticOptimizer(tx.init, update_fn)
  out.spec = spec
  return out


def make_optimizer(
  name: str,
  learning_rate: jax.typing.ArrayLike = 1e-2,
  b1: jax.typing.ArrayLike = 0.9,
  b2: jax.typing.ArrayLike = 0.99,
  eps: jax.typing.ArrayLike = 1e-8,
  *,
  convention: str = "pytorch",
  lr_schedule: str = "constant",
  b1_decay: jax.typing.ArrayLike | None = None,
) -> optax.GradientTransformation:
  r"""Returns the optimizer called ``name`` with the given hyperparameters.

  ========== ================================================================
  ``name``   optimizer
  ========== ================================================================
  adam       ``optax.adam(learning_rate, b1, b2, eps)``
  amsgrad    ``amsgrad_optax.amsgrad(learning_rate, b1, b2, eps, convention=convention)``
  adamnc     ``amsgrad_optax.adamnc(learning_rate, b1, eps)`` (``b2`` unused)
  sgd        ``optax.sgd(learning_rate)`` (``b1``, ``b2``, ``eps`` unused)
  adamx      ``amsgrad_optax.adamx(learning_rate, b1, b2, eps, b1_decay=b1_decay)``
  ========== ================================================================

  Hyperparameters may be JAX arrays (so that :func:`jax.vmap` can sweep
  them); concrete values are checked.

  Args:
    name: one of :data:`OPTIMIZERS`.
    learning_rate: the step size :math:`\alpha`, >= 0.
    b1: the first-moment decay, in [0, 1).
    b2: the second-moment decay, in [0, 1).
    eps: the denominator's epsilon, >= 0.
    convention: the AMSGrad convention, one of
      :data:`amsgrad_optax.CONVENTIONS` (used by ``"amsgrad"`` only, but
      always checked).
    lr_schedule: ``"constant"``, or ``"inverse-sqrt"`` for the paper's
      :math:`\alpha_t = \alpha/\sqrt{t}`.
    b1_decay: :math:`\lambda` of a decaying :math:`\beta_{1,t} =
      \beta_1\lambda^{t-1}`, for ``"amsgrad"``, ``"adamnc"`` and
      ``"adamx"``; None (default) keeps :math:`\beta_1` constant. A value
      other than 1 runs as a scan, not the fast engine.

  Returns:
    A :class:`SyntheticOptimizer` (an :class:`optax.GradientTransformation`
    whose ``spec`` lets :func:`run` and :func:`sweep` take their fast path).

  Raises:
    ValueError: for an unknown name, convention or schedule, or a
      hyperparameter out of range.

  Examples:
    >>> import jax.numpy as jnp
    >>> from amsgrad_optax import synthetic
    >>> tx = synthetic.make_optimizer("sgd", learning_rate=0.5)
    >>> u, _ = tx.update(jnp.float32(2.0), tx.init(jnp.float32(0.0)))
    >>> float(u)
    -1.0
  """
  if name not in OPTIMIZERS:
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
  _conventions.get_convention(convention)
  if lr_schedule not in LR_SCHEDULES:
    raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}")
  _validation.check_learning_rate(learning_rate)
  _validation.check_range("b1", b1, low=0.0, high=1.0)
  _validation.check_range("b2", b2, low=0.0, high=1.0)
  _validation.check_range("eps", eps, low=0.0)
  if b1_decay is not None:
    _validation.check_range("b1_decay", b1_decay, low=0.0, high=1.0, high_inclusive=True)
  lr = learning_rate
  if lr_schedule == "inverse-sqrt":
    lr = _schedules.inverse_sqrt_schedule(learning_rate)
  if name == "adam":
    tx = optax.adam(lr, b1, b2, eps)
  elif name == "amsgrad":
    tx = _alias.amsgrad(lr, b1, b2, eps, convention=convention, b1_decay=b1_decay)
  elif name == "adamnc":
    tx = _alias.adamnc(lr, b1, eps, b1_decay=b1_decay)
  elif name == "adamx":
    tx = _alias.adamx(lr, b1, b2, eps, b1_decay=b1_decay)
  else:
    tx = optax.sgd(lr)
  spec = None
  hyperparameters = (learning_rate, b1, b2, eps)
  constant_b1 = b1_decay is None or (isinstance(b1_decay, (int, float)) and b1_decay == 1)
  closed_form = name in FAST_OPTIMIZERS and constant_b1
  if closed_form and not callable(learning_rate) and all(jnp.ndim(h) == 0 for h in hyperparameters):
    # A closed form the fast engine knows; an arbitrary schedule it does not.
    spec = _fast.OptimizerSpec(name, learning_rate, b1, b2, eps, convention, lr_schedule)
  return _with_standard_promotion(tx, spec)
