"""The paper's step-size schedule."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from amsgrad_optax import _conventions, _validation


def inverse_sqrt_schedule(init_value: jax.typing.ArrayLike) -> optax.Schedule:
  r"""Returns the schedule :math:`\alpha_t = \alpha / \sqrt{t}` of the paper's theory.

  optax counts steps from 0, the paper from 1: the schedule maps optax's
  ``count`` to ``init_value / sqrt(count + 1)``, so the first update uses
  :math:`\alpha` itself.

  Args:
    init_value: :math:`\alpha`, >= 0.

  Returns:
    An :class:`optax.Schedule`, to pass as ``learning_rate``.

  Examples:
    >>> import amsgrad_optax
    >>> sched = amsgrad_optax.inverse_sqrt_schedule(0.5)
    >>> [round(float(sched(c)), 4) for c in range(4)]
    [0.5, 0.3536, 0.2887, 0.25]
  """
  _validation.check_range("init_value", init_value, low=0.0)

  def schedule(count: jax.typing.ArrayLike) -> jax.Array:
    # float64 under jax_enable_x64, so that float64 runs keep their accuracy.
    dtype = _conventions.default_float_dtype()
    return jnp.divide(init_value, jnp.sqrt(jnp.asarray(count).astype(dtype) + 1.0))

  return schedule
