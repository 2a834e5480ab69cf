"""Figures worth logging from an AMSGrad state: momentum size, cap activity, step sizes."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from amsgrad_optax import _config, _conventions, _quantize, _transform, _validation

_STATE_CLASSES = (_transform.ScaleByAmsgradState, optax.ScaleByAmsgradState)
_INJECT_CLASSES = (optax.InjectHyperparamsState, optax.InjectStatefulHyperparamsState)
_NODES = _STATE_CLASSES + _INJECT_CLASSES


def _walk(node: Any, path: str, hyperparams: tuple) -> Any:
  """Yields (path, AMSGrad state, hyperparams dicts of the inject states around it)."""
  if isinstance(node, _STATE_CLASSES):
    yield path, node, hyperparams
    return
  if isinstance(node, _INJECT_CLASSES):
    inner = (*hyperparams, node.hyperparams)
    yield from _walk(node.inner_state, f"{path}.inner_state", inner)
    return
  found = jax.tree_util.tree_flatten_with_path(
    node, is_leaf=lambda x: x is not node and isinstance(x, _NODES)
  )[0]
  for sub, leaf in found:
    if isinstance(leaf, _NODES):
      yield from _walk(leaf, path + jax.tree_util.keystr(sub), hyperparams)


def _find_state(state: Any) -> tuple[Any, tuple]:
  """Returns the one AMSGrad state in ``state`` and the hyperparams injected around it."""
  found = list(_walk(state, "", ()))
  if not found:
    raise ValueError(
      "state must be a ScaleByAmsgradState or an optax state tree holding "
      f"one (as amsgrad_optax.amsgrad or optax.amsgrad builds), got a "
      f"{type(state).__name__} without one. For a Flax nnx.Optimizer pass "
      "optimizer.opt_state; for a Linen TrainState, state.opt_state."
    )
  if len(found) > 1:
    paths = ", ".join(p or "<root>" for p, _, _ in found)
    raise ValueError(
      f"state holds {len(found)} AMSGrad states (at {paths}); diagnostics "
      "describes one optimizer: pass the one you mean, e.g. "
      "optax.tree_utils.tree_get_all_with_path(state, 'ScaleByAmsgradState')[i][1]."
    )
  _, amsgrad_state, hyperparams = found[0]
  return amsgrad_state, hyperparams


def _leaves(tree: Any) -> list[jax.Array]:
  # Flax nnx wraps state leaves in Variables; flattening unwraps them.
  # 8-bit leaves (state_bits=8) are read as the float32 values they encode.
  return [jnp.asarray(x) for x in jax.tree.leaves(_quantize.dequantize_tree(tree))]


def _f32(x: jax.typing.ArrayLike) -> jax.Array:
  return jnp.asarray(x).astype(jnp.float32)


def _coordinates(x: jax.Array, conv: _conventions.Convention) -> jax.Array:
  """A second-moment leaf as real coordinates.

  A complex ``nu`` holds, under ``"pytorch"`` (``torch.view_as_real``), the
  real and the imaginary part's moments, two coordinates each; under
  ``"optax"`` a real value in a complex array.
  """
  if not jnp.iscomplexobj(x):
    return x
  if conv.complex_mode == "real_view":
    return jnp.stack([jnp.real(x), jnp.imag(x)])
  return jnp.real(x)


# What each convention needs beyond learning_rate, eps and eps_root.
def _needed(conv: _conventions.Convention) -> tuple[str, ...]:
  names = ["learning_rate", "eps", "eps_root"]
  if conv.correct_mu:
    names += ["b1", "b1_decay"]
  if conv.nu_correction != "none":
    names.append("b2")
  return tuple(names)


def _hyperparameter(name: str, sources: list[tuple[str, Any]]) -> Any:
  """Returns the one value the sources that have one agree on, or None; raises on a conflict."""
  given = [(where, value) for where, value in sources if value is not None]
  for where, value in given[1:]:
    if not _config.same_value(given[0][1], value):
      raise ValueError(
        f"diagnostics: {name} is {_config.show(given[0][1])} in {given[0][0]} but "
        f"{_config.show(value)} in {where}: one of them is not what the state was "
        "built with. Pass the optimizer's value, or leave the argument out."
      )
  return given[0][1] if given else None


def diagnostics(
  state: Any,
  tx: optax.GradientTransformation | _config.AmsgradConfig | None = None,
  *,
  learning_rate: optax.ScalarOrSchedule | None = None,
  b1: jax.typing.ArrayLike | None = None,
  b2: jax.typing.ArrayLike | None = None,
  eps: jax.typing.ArrayLike | None = None,
  eps_root: jax.typing.ArrayLike | None = None,
  convention: str | None = None,
  b1_decay: jax.typing.ArrayLike | None = None,
) -> dict[str, jax.Array]:
  r"""Returns scalars worth logging about an AMSGrad state: momentum, cap, step sizes.

  ``state`` is a :class:`~amsgrad_optax.ScaleByAmsgradState` (or optax's
  class of that name), or any optax state tree holding exactly one: the
  state of :func:`amsgrad_optax.amsgrad` or of an ``optax.chain`` around it,
  a Flax ``nnx.Optimizer``'s ``opt_state``, a Linen ``TrainState``'s
  ``opt_state``.

  The figures depend on the optimizer's convention and hyperparameters, and
  nothing is assumed: each is taken from where it is known, and it is an
  error if it is known nowhere, or known twice with two values.

  * The state: an ``optax.inject_hyperparams`` state around the AMSGrad
    state holds every numeric hyperparameter (``learning_rate`` as the value
    the last update used); an ``optax.ScaleByAmsgradState`` is
    ``convention="optax"`` with a constant ``b1``.
  * ``tx``: the transformation :func:`amsgrad_optax.amsgrad` or
    :func:`amsgrad_optax.scale_by_amsgrad` returned (or
    :func:`amsgrad_optax.skip_nonfinite` around one), which records its
    convention and hyperparameters; or an :class:`~amsgrad_optax.AmsgradConfig`
    (for ``optax.amsgrad``, or a transformation that was wrapped).
  * The keyword arguments.

  Which are needed depends on the convention: ``learning_rate``, ``eps``
  and ``eps_root`` always; ``b1`` and ``b1_decay`` where :math:`m_t` is bias
  corrected; ``b2`` where :math:`v_t` is (not under ``"paper"``).

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

  A state without coordinates (every param zero-size, or none) has
  ``mu_norm = 0`` and ``cap_active = 0``, and NaN for the figures that are
  a fraction or an order statistic of no coordinates.

  The median sorts every coordinate: on large models log it every few
  hundred steps, not every step. Everything is computed in float32 and the
  function is pure and jittable (close over ``tx`` and the keyword
  arguments, e.g. ``jax.jit(functools.partial(diagnostics, tx=tx))``).

  Args:
    state: an AMSGrad state, or an optax state tree holding one.
    tx: the optimizer (as :func:`amsgrad_optax.amsgrad` returned it) or an
      :class:`~amsgrad_optax.AmsgradConfig`; None to rely on the state and
      the keyword arguments.
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
    ValueError: if ``state`` holds no AMSGrad state or more than one; for
      an unknown convention; if a hyperparameter the convention needs was
      neither passed nor found, or was found with two values, or is out of
      range (``b2 = 1``, say); if ``tx`` carries no recorded config.

  Examples:
    >>> import jax.numpy as jnp
    >>> import amsgrad_optax
    >>> tx = amsgrad_optax.amsgrad(0.1, b1=0.0, b2=0.5, eps=0.0)
    >>> state = tx.init(jnp.zeros(2))
    >>> _, state = tx.update(jnp.array([4.0, 1.0]), state)
    >>> _, state = tx.update(jnp.array([2.0, 1.0]), state)
    >>> d = amsgrad_optax.diagnostics(state, tx)
    >>> int(d["cap_active"])  # nu = (6, 0.75) is below nu_max = (8, 0.75) once
    1
    >>> float(d["step_max"])  # 0.1 / (sqrt(0.75) / sqrt(c2)), c2 = 1 - 0.5**2
    0.1...
    >>> round(float(d["step_min"]), 6)  # 0.1 / (sqrt(8) / sqrt(c2))
    0.030619
    >>> amsgrad_optax.diagnostics(state, learning_rate=0.1)
    Traceback (most recent call last):
    ...
    ValueError: diagnostics needs the convention, ...
  """
  amsgrad_state, injected = _find_state(state)
  recorded = None if tx is None else _config.amsgrad_config(tx)
  (count,) = _leaves(amsgrad_state.count)
  t = jnp.maximum(count, jnp.ones_like(count))

  def sources(name: str, given: Any) -> list[tuple[str, Any]]:
    out = [(f"the argument {name}=", given)]
    # Innermost first: the hyperparameters the AMSGrad state was updated with.
    for hp in reversed(injected):
      if name in hp:
        (value,) = _leaves(hp[name])
        out.append(("the inject_hyperparams state", value))
      elif name == "b1_decay" and "b1" in hp:
        # Injected hyperparameters without b1_decay: amsgrad_optax.amsgrad's
        # default (None) and optax.amsgrad both keep b1 constant.
        out.append(("the inject_hyperparams state (no b1_decay: constant b1)", 1.0))
    if recorded is not None:
      out.append(("tx's config", getattr(recorded, name)))
    if isinstance(amsgrad_state, optax.ScaleByAmsgradState):
      # optax.scale_by_amsgrad: the "optax" convention, with a constant b1.
      out.append(
        ("optax's ScaleByAmsgradState", {"convention": "optax", "b1_decay": 1.0}.get(name))
      )
    if name == "learning_rate":
      # Compared, and used, as the rate the last update took.
      out = [(where, _f32(v(t - 1)) if callable(v) else v) for where, v in out]
    return out

  conv_name = _hyperparameter("convention", sources("convention", convention))
  if conv_name is None:
    raise ValueError(
      "diagnostics needs the convention, and neither the state nor an argument "
      "gives it: pass tx= (the transformation amsgrad_optax.amsgrad returned), "
      f"or convention= (one of {_conventions.CONVENTIONS}; 'optax' for optax.amsgrad)."
    )
  conv = _conventions.get_convention(conv_name)
  given = {
    "learning_rate": learning_rate,
    "b1": b1,
    "b2": b2,
    "eps": eps,
    "eps_root": eps_root,
    "b1_decay": b1_decay,
  }
  hp = {name: _hyperparameter(name, sources(name, value)) for name, value in given.items()}
  missing = [name for name in _needed(conv) if hp[name] is None]
  if missing:
    raise ValueError(
      f"diagnostics needs {', '.join(missing)} for the {conv.name!r} convention, "
      "and neither the state nor an argument gives them: pass tx= (the "
      "transformation amsgrad_optax.amsgrad returned, or an "
      "amsgrad_optax.AmsgradConfig), or the keyword arguments. Nothing is "
      "assumed: a default that differs from the optimizer's would give wrong figures."
    )
  for name, value in hp.items():
    if value is not None:
      _validation.check_range(name, value, **_validation.RANGES[name])
  lr = _f32(hp["learning_rate"])

  c1, c2 = conv.bias_corrections(hp["b1"], hp["b2"], t, b1_decay=hp["b1_decay"])
  factor = lr if c1 is None else lr / _f32(c1)
  sqrt_c2 = None if c2 is None else jnp.sqrt(_f32(c2))
  if conv.nu_correction == "step":
    assert sqrt_c2 is not None  # every convention that corrects nu has a c2
    factor = factor * sqrt_c2
  eps, eps_root = _f32(hp["eps"]), _f32(hp["eps_root"])

  mus = _leaves(amsgrad_state.mu)
  nus = _leaves(amsgrad_state.nu)
  nu_maxes = _leaves(amsgrad_state.nu_max)

  steps, capped = [jnp.zeros([0], jnp.float32)], [jnp.zeros([0], bool)]
  for nu, nu_max in zip(nus, nu_maxes, strict=True):
    nu, nu_max = _coordinates(nu, conv), _coordinates(nu_max, conv)
    # Compare against the quantity the maximum is taken over, in its own
    # dtype, so an inactive cap compares equal bit for bit.
    if conv.nu_correction == "max":
      assert c2 is not None
      capped_over = nu / c2.astype(nu.dtype)
    else:
      capped_over = nu
    capped.append(jnp.ravel(nu_max > capped_over))
    den = jnp.sqrt(_f32(nu_max) + eps_root)
    if conv.nu_correction == "denominator":
      assert sqrt_c2 is not None
      den = den / sqrt_c2
    steps.append(jnp.ravel(factor / (den + eps)))
  step = jnp.concatenate(steps)
  cap = jnp.concatenate(capped)
  cap_active = jnp.sum(cap, dtype=jnp.int32)
  mu_sq = sum((jnp.sum(_f32(jnp.abs(m)) ** 2) for m in mus), jnp.float32(0))
  if step.size == 0:
    nan = jnp.float32(jnp.nan)
    stats = {"cap_active_fraction": nan, "step_min": nan, "step_median": nan, "step_max": nan}
  else:
    stats = {
      "cap_active_fraction": cap_active.astype(jnp.float32) / jnp.float32(cap.size),
      "step_min": jnp.min(step),
      "step_median": jnp.median(step),
      "step_max": jnp.max(step),
    }
  return {"mu_norm": jnp.sqrt(mu_sq), "cap_active": cap_active, **stats}
