"""AdamX (Tran & Phong, 2019): AMSGrad whose running maximum follows a decaying b1."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from amsgrad_optax import _conventions, _transform


def _nu_max_factor(b1: jax.typing.ArrayLike, b1_decay: jax.typing.ArrayLike):
  """Returns ``count -> ((1 - b1_t) / (1 - b1_{t-1}))**2``, and 1 at the first step."""

  def factor(count: jax.Array) -> jax.Array:
    _, one_minus_now = _transform._decayed_b1(b1, b1_decay, count)
    # At t = 1 there is no b1_0; nu_max is still 0 there, and a factor of 1
    # (b1_prev = b1_t) leaves it so.
    _, one_minus_prev = _transform._decayed_b1(b1, b1_decay, jnp.maximum(count - 1, 1))
    return (one_minus_now / one_minus_prev) ** 2

  return factor


def scale_by_adamx(
  b1: jax.typing.ArrayLike = 0.9,
  b2: jax.typing.ArrayLike = 0.999,
  eps: jax.typing.ArrayLike = 1e-8,
  eps_root: jax.typing.ArrayLike = 0.0,
  *,
  b1_decay: jax.typing.ArrayLike | None = None,
  mu_dtype: Any | None = None,
  nu_dtype: Any | None = None,
) -> optax.GradientTransformation:
  r"""Returns a transformation that rescales updates by AdamX.

  AdamX is Tran & Phong's correction of AMSGrad for a decaying
  :math:`\beta_{1,t} = \beta_1\lambda^{t-1}`: with no bias correction, as in
  the paper's AMSGrad,

  .. math::

    m_t = \beta_{1,t} m_{t-1} + (1-\beta_{1,t}) g_t, \quad
    v_t = \beta_2 v_{t-1} + (1-\beta_2) |g_t|^2,

  .. math::

    \hat v_1 = v_1, \quad
    \hat v_t = \max\Big(\frac{(1-\beta_{1,t})^2}{(1-\beta_{1,t-1})^2}\,\hat v_{t-1},\ v_t\Big),
    \quad u_t = \frac{m_t}{\sqrt{\hat v_t + \bar\epsilon} + \epsilon}.

  The factor keeps :math:`\sqrt{\hat v_t}/(1-\beta_{1,t})` non-decreasing,
  the step that AMSGrad's convergence proof needed and AMSGrad does not
  guarantee once :math:`\beta_{1,t}` decays. With a constant
  :math:`\beta_1` (``b1_decay`` None, the default, or 1) the factor is 1 and AdamX
  is :func:`scale_by_amsgrad` with ``convention="paper"``. The update is
  :func:`scale_by_amsgrad`'s own, with this factor applied to the running
  maximum; the state is a :class:`ScaleByAmsgradState`.

  Args:
    b1: :math:`\beta_1 = \beta_{1,1}`, in [0, 1).
    b2: decay rate of the second moment, in [0, 1).
    eps: added to the denominator outside the square root, >= 0 (the paper
      has none).
    eps_root: added to :math:`\hat v_t` inside the square root, >= 0.
    b1_decay: :math:`\lambda` in :math:`\beta_{1,t} = \beta_1\lambda^{t-1}`,
      in [0, 1]; None (default) keeps :math:`\beta_1` constant.
    mu_dtype: dtype of ``mu``; None for the param's dtype.
    nu_dtype: dtype of ``nu`` and ``nu_max``, as in :func:`scale_by_amsgrad`.

  Returns:
    An :class:`optax.GradientTransformation` whose state is a
    :class:`ScaleByAmsgradState`.

  Raises:
    ValueError: for a concrete hyperparameter out of range.

  Examples:
    >>> import jax.numpy as jnp
    >>> import amsgrad_optax
    >>> tx = amsgrad_optax.scale_by_adamx(b1=0.5, b2=0.5, eps=0.0, b1_decay=0.5)
    >>> state = tx.init(jnp.zeros(1))
    >>> _, state = tx.update(jnp.array([2.0]), state)  # v_1 = 2
    >>> _, state = tx.update(jnp.array([0.0]), state)  # v_2 = 1, b1_2 = 0.25
    >>> state.nu_max  # max((0.75 / 0.5)**2 * 2, 1)
    Array([4.5], dtype=float32)

  References:
    Tran & Phong, `On the Convergence Proof of AMSGrad and a New Version
    <https://arxiv.org/abs/1904.03590>`_, IEEE Access 7, 2019, Algorithm 2.
  """
  # A constant b1 needs no factor; _scale_by_amsgrad checks b1_decay.
  factor = None
  if b1_decay is not None and not _conventions._is_concrete_one(b1_decay):
    factor = _nu_max_factor(b1, b1_decay)
  return _transform._scale_by_amsgrad(
    b1,
    b2,
    eps,
    eps_root,
    convention="paper",
    b1_decay=b1_decay,
    mu_dtype=mu_dtype,
    nu_dtype=nu_dtype,
    state_bits=None,
    block_size=None,
    nu_max_factor=factor,
  )
