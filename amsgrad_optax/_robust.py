"""Skipping steps whose gradients are not finite, without touching the state.

AMSGrad keeps a running maximum of the second moment, which only grows: one
NaN or inf gradient makes ``nu_max`` NaN or inf for the rest of the run, and
every later update NaN (or zero). :func:`skip_nonfinite` drops such a step
whole, so that a run with bad steps ends exactly where the same run without
them would.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from amsgrad_optax import _config, _validation


class SkipNonfiniteState(NamedTuple):
  """State of :func:`skip_nonfinite`.

  Attributes:
    inner_state: the wrapped transformation's state, as it was after the last
      step that was applied.
    total_skipped: the number of steps skipped so far (a saturating int32).
    consecutive_skipped: the number of steps skipped since the last applied
      one; 0 after an applied step.
  """

  inner_state: optax.OptState
  total_skipped: jax.Array
  consecutive_skipped: jax.Array


def _all_finite(*trees: Any) -> jax.Array:
  """Returns a scalar bool: every inexact leaf of every tree is finite."""
  flags = [
    jnp.all(jnp.isfinite(leaf))
    for tree in trees
    for leaf in jax.tree.leaves(tree)
    if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)
  ]
  return functools.reduce(jnp.logical_and, flags, jnp.array(True))


def _keep(ok: jax.Array, new: Any, old: Any) -> Any:
  """Returns ``new`` where ``ok``, else ``old``, leaf by leaf."""

  def one(n, o):
    n = jnp.asarray(n)  # a Python-number leaf, too
    return jnp.where(ok, n, jnp.asarray(o).astype(n.dtype))

  return jax.tree.map(one, new, old)


@jax.custom_jvp
def _value_of(a: jax.Array, b: jax.Array) -> jax.Array:
  """Returns ``a``, whose derivative is taken to be that of ``b``."""
  del b
  return a


@_value_of.defjvp
def _value_of_jvp(primals, tangents):
  return primals[0], tangents[1]


def _values_with_derivatives_of(values: Any, derivatives: Any) -> Any:
  """``values``, leaf by leaf, with the derivatives of the same-shaped ``derivatives``."""

  def one(a, b):
    if jnp.issubdtype(jnp.result_type(a), jnp.inexact):
      return _value_of(a, b)
    return a

  return jax.tree.map(one, values, derivatives)


def _negative_zeros(updates: optax.Updates) -> optax.Updates:
  # p + (-0.0) == p bit for bit for every p, including p = -0.0 (which
  # p + 0.0 would turn into +0.0), so optax.apply_updates leaves params as
  # they are.
  return jax.tree.map(lambda u: -jnp.zeros_like(u), updates)


def skip_nonfinite(tx: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
  r"""Returns ``tx`` made to skip, whole, every step that is not finite.

  A step is applied only when the incoming gradients, the updates ``tx``
  computes from them and its new state are all finite. Otherwise the
  wrapped state is kept exactly as it was (for AMSGrad: ``count``, ``mu``,
  ``nu`` and ``nu_max``; for :func:`amsgrad_optax.amsgrad`, the learning-rate
  schedule's count too), the updates are zeros (negative zeros, so that
  ``optax.apply_updates`` leaves every param bit-identical) and the skip is
  counted. A run with skipped steps therefore ends bit for bit where the same
  run without those steps ends.

  Checking the new state as well as the gradients also catches a finite but
  huge gradient whose square overflows the second moment to inf, which
  would otherwise freeze ``nu_max`` at inf and every later update at zero.

  Compared with ``optax.apply_if_finite(tx, max_consecutive_errors)``, which
  also keeps the inner state on a non-finite gradient:

  - it never gives up: ``apply_if_finite`` applies the step after
    ``max_consecutive_errors`` consecutive non-finite ones, and that step
    writes NaN into ``nu_max`` for ever. Here the counters say how long a
    run has been skipping; stopping it is the caller's decision;
  - it also checks the updates and the new state, not only the gradients;
  - its counters are ``total_skipped`` (``apply_if_finite``'s
    ``total_notfinite``) and ``consecutive_skipped`` (its
    ``notfinite_count``);
  - the rejected step returns ``-0.0`` rather than ``+0.0`` (identical
    params even where a param is ``-0.0``);
  - it selects with ``jnp.where`` rather than ``lax.cond``, so the inner
    update is always computed: this costs a step's work on skipped steps,
    and avoids a device-to-host transfer of the predicate on accelerators;
  - gradients taken through it (d loss / d learning_rate over a run, say)
    stay finite over a step skipped for a non-finite gradient: the inner
    update sees zeros in place of that gradient, and its result is
    discarded. A step skipped because finite gradients overflowed the state
    can still give a NaN meta-gradient: the overflow is in the discarded
    branch itself.

  Args:
    tx: the transformation to protect, e.g. :func:`amsgrad_optax.amsgrad`
      (which takes ``skip_nonfinite=True`` as a shorthand for this), or a
      chain that ends with it.

  Returns:
    An :class:`optax.GradientTransformationExtraArgs` whose state is a
    :class:`SkipNonfiniteState`.

  Raises:
    TypeError: if ``tx`` is not an optax gradient transformation.

  Examples:
    >>> import jax.numpy as jnp, optax
    >>> import amsgrad_optax
    >>> tx = amsgrad_optax.skip_nonfinite(amsgrad_optax.amsgrad(0.1))
    >>> params = jnp.array([1.0, 2.0])
    >>> state = tx.init(params)
    >>> updates, state = tx.update(jnp.array([jnp.nan, 1.0]), state, params)
    >>> optax.apply_updates(params, updates)
    Array([1., 2.], dtype=float32)
    >>> int(state.total_skipped), int(state.inner_state[0].count)
    (1, 0)
  """
  if not isinstance(tx, optax.GradientTransformation):
    raise TypeError(
      "skip_nonfinite(tx) takes an optax GradientTransformation (such as "
      f"amsgrad_optax.amsgrad(1e-3)), got {tx!r}"
    )
  inner = optax.with_extra_args_support(tx)

  def init_fn(params):
    # Two buffers, not one zero shared by both counters: a state whose leaves
    # share a buffer cannot be donated (jax.jit(..., donate_argnums=...)
    # refuses to "donate the same buffer twice").
    return SkipNonfiniteState(
      inner.init(params), jnp.zeros([], jnp.int32), jnp.zeros([], jnp.int32)
    )

  def update_fn(updates, state, params=None, **extra_args):
    _validation.check_state(state, SkipNonfiniteState._fields, "SkipNonfiniteState")
    new_updates, new_inner = inner.update(updates, state.inner_state, params, **extra_args)
    finite_in = _all_finite(updates)
    ok = finite_in & _all_finite(new_updates, new_inner)
    # Derivatives come from the same update run on zeros in place of non-finite
    # gradients: a gradient taken *through* this step (a meta-gradient) would
    # otherwise be NaN, since the discarded branch's zero cotangent times a NaN
    # partial is NaN. The values stay those of the update above, bit for bit;
    # under jit the second update is dead code unless a derivative is taken.
    safe = _keep(finite_in, updates, jax.tree.map(jnp.zeros_like, updates))
    d_updates, d_inner = inner.update(safe, state.inner_state, params, **extra_args)
    new_updates = _values_with_derivatives_of(new_updates, d_updates)
    new_inner = _values_with_derivatives_of(new_inner, d_inner)
    new_state = SkipNonfiniteState(
      inner_state=_keep(ok, new_inner, state.inner_state),
      total_skipped=jnp.where(ok, state.total_skipped, optax.safe_increment(state.total_skipped)),
      consecutive_skipped=jnp.where(
        ok, jnp.zeros([], jnp.int32), optax.safe_increment(state.consecutive_skipped)
      ),
    )
    return _keep(ok, new_updates, _negative_zeros(new_updates)), new_state

  out = optax.GradientTransformationExtraArgs(init_fn, update_fn)
  config = _config.recorded(tx)  # what tx is, skip_nonfinite(tx) is too
  return out if config is None else _config.record(out, config)
