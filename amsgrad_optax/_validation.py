"""Checks on hyperparameters and trees that fail early with a clear message.

A range check runs only on concrete values: under ``jax.jit``, ``jax.vmap``
or ``optax.inject_hyperparams`` a hyperparameter may be a tracer, and then its
value passes through unchecked, as in optax. Shapes and dtypes are known even
for tracers, so those checks always run.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax


def concrete_value(x: Any) -> np.ndarray | None:
  """Returns ``x`` as a NumPy array, or None if it is traced or a schedule."""
  if x is None or callable(x) or isinstance(x, jax.core.Tracer):
    return None
  try:
    return np.asarray(x)
  except (TypeError, jax.errors.ConcretizationTypeError):
    return None


#: Each hyperparameter's allowed range, for the factories and for diagnostics alike.
RANGES: dict[str, dict[str, Any]] = {
  "learning_rate": {"low": 0.0},
  "b1": {"low": 0.0, "high": 1.0},
  "b2": {"low": 0.0, "high": 1.0},
  "eps": {"low": 0.0},
  "eps_root": {"low": 0.0},
  "b1_decay": {"low": 0.0, "high": 1.0, "high_inclusive": True},
}


def check_range(
  name: str,
  value: Any,
  *,
  low: float,
  high: float = np.inf,
  high_inclusive: bool = False,
) -> None:
  """Raises ValueError unless ``value`` is a scalar, and in range if concrete."""
  check_scalar(name, value)
  arr = concrete_value(value)
  if arr is None:
    return
  # jnp.issubdtype, not np's: NumPy does not count bfloat16 or the float8
  # types (ml_dtypes) as numbers.
  if not (jnp.issubdtype(arr.dtype, jnp.number) or arr.dtype == np.bool_):
    raise TypeError(f"{name} must be a real number, got {value!r}")
  if jnp.issubdtype(arr.dtype, jnp.complexfloating):
    hint = _inject_hint(value, arr.dtype)
    raise TypeError(f"{name} must be a real number, got {value!r}{hint}")
  wide = arr.astype(np.float64)
  upper_ok = wide <= high if high_inclusive else wide < high
  if not np.all((wide >= low) & upper_ok):
    bracket = "]" if high_inclusive else ")"
    upper = "inf" if high == np.inf else f"{high:g}"
    hint = _inject_hint(value, arr.dtype)
    raise ValueError(f"{name} must be in [{low:g}, {upper}{bracket}, got {value!r}{hint}")


def _inject_hint(value: Any, dtype) -> str:
  """The likely origin of a complex or sub-float32 hyperparameter array, and the cure.

  ``optax.inject_hyperparams`` casts numeric hyperparameters to the dtype of
  the first param leaf unless ``hyperparam_dtype`` is given: bfloat16 params
  turn ``b2=0.999`` into 1, complex params make every hyperparameter complex.
  """
  if isinstance(value, (int, float, complex)):
    return ""
  narrow = jnp.issubdtype(dtype, jnp.floating) and jnp.finfo(dtype).bits < 32
  if not (narrow or jnp.issubdtype(dtype, jnp.complexfloating)):
    return ""
  return (
    f". A {jnp.dtype(dtype).name} hyperparameter usually comes from optax.inject_hyperparams, "
    "which casts them to the first param's dtype: pass hyperparam_dtype=jnp.float32 there"
  )


def check_scalar(name: str, value: Any) -> None:
  """Raises unless ``value`` is a number or a scalar array (traced or not)."""
  if value is None or isinstance(value, (str, bytes)):
    raise TypeError(f"{name} must be a real number or a scalar array, got {value!r}")
  if callable(value):
    what = getattr(value, "__qualname__", type(value).__name__)
    raise TypeError(
      f"{name} must be a real number or a scalar array, got the callable "
      f"{what}. To schedule {name}, wrap the optimizer in "
      "optax.inject_hyperparams and pass the schedule there."
    )
  ndim = getattr(value, "ndim", None)
  if ndim is None:
    ndim = np.ndim(value)
  if ndim != 0:
    raise ValueError(
      f"{name} must be a scalar (one value for every parameter), got "
      f"{value!r} of shape {np.shape(value)}. For per-parameter values, "
      "use optax.multi_transform."
    )


def check_learning_rate(learning_rate: Any) -> None:
  """Raises unless ``learning_rate`` is a non-negative number or a schedule."""
  if callable(learning_rate):
    return
  if isinstance(learning_rate, (str, bytes)) or learning_rate is None:
    raise TypeError(
      "learning_rate must be a float, a JAX array or an optax schedule "
      f"(a callable of the step count), got {learning_rate!r}"
    )
  check_range("learning_rate", learning_rate, low=0.0)


def check_float_tree(tree: Any, what: str) -> None:
  """Raises TypeError if a leaf of ``tree`` is not floating point or complex."""
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  for path, leaf in leaves:
    dtype = getattr(leaf, "dtype", None)
    if dtype is None:
      try:
        dtype = jnp.result_type(leaf)
      except TypeError:
        raise TypeError(
          f"{what} must be a pytree of arrays; the leaf at "
          f"{jax.tree_util.keystr(path) or '<root>'} is {leaf!r} "
          f"({type(leaf).__name__})."
        ) from None
    if not jnp.issubdtype(dtype, jnp.inexact):
      raise TypeError(
        f"{what} must be floating point; the leaf at "
        f"{jax.tree_util.keystr(path) or '<root>'} has dtype {dtype}. "
        "AMSGrad cannot update integer or boolean arrays: cast them to a "
        "float dtype, or exclude them with optax.masked or "
        "optax.multi_transform."
      )


def check_same_structure(updates: Any, reference: Any, state_name: str) -> None:
  """Raises ValueError if ``updates`` and the state's moments differ in shape."""
  u_def = jax.tree.structure(updates)
  r_def = jax.tree.structure(reference)
  if u_def != r_def:  # type: ignore[operator]  # jax types PyTreeDef loosely
    raise ValueError(
      "updates must have the tree structure of the params the state was "
      f"initialised with.\n  updates: {u_def}\n  {state_name}: {r_def}\n"
      "Did you pass params where updates belong, or reuse an optimizer "
      "state across models?"
    )
  for u, r in zip(jax.tree.leaves(updates), jax.tree.leaves(reference), strict=True):
    if jnp.shape(u) != jnp.shape(r):
      raise ValueError(
        f"updates must have the shapes of the params the state was "
        f"initialised with: got a leaf of shape {jnp.shape(u)} where "
        f"{state_name} has {jnp.shape(r)}."
      )


def canonical_dtype(name: str, dtype: Any) -> jnp.dtype | None:
  """Returns ``dtype`` canonicalised, or None; raises naming ``name`` if invalid."""
  if dtype is None:
    return None
  try:
    dt = jax.dtypes.canonicalize_dtype(np.dtype(dtype))
  except TypeError:
    raise TypeError(
      f"{name} must be None or a floating-point dtype such as jnp.float32 or "
      f"jnp.bfloat16, got {dtype!r}"
    ) from None
  if not jnp.issubdtype(dt, jnp.inexact):
    raise TypeError(f"{name} must be a floating-point dtype, got {dt}")
  return jnp.dtype(dt)


def check_state(state: Any, fields: tuple[str, ...], expected: str) -> None:
  """Raises TypeError unless ``state`` has the attributes ``fields``.

  The check is by attribute rather than by class, so that a state restored
  into another NamedTuple of the same fields still works.
  """
  if not all(hasattr(state, f) for f in fields):
    raise TypeError(
      f"state must be the {expected} that tx.init(params) returned, got "
      f"{type(state).__name__}. The call is tx.update(grads, state, params): "
      "were grads and state swapped, or params passed as the state?"
    )


def check_chain_state(state: Any, n_parts: int, expected: str) -> None:
  """Raises TypeError unless ``state`` is a tuple of ``n_parts`` entries."""
  if not isinstance(state, (tuple, list)) or len(state) != n_parts:
    what = type(state).__name__
    if isinstance(state, tuple):
      what = f"a tuple of {len(state)}"
    raise TypeError(
      f"state must be the state that tx.init(params) returned for this "
      f"{expected} (a tuple of {n_parts}), got {what}. The call is "
      "tx.update(grads, state, params): were grads and state swapped, or "
      "params passed as the state?"
    )


def check_schedule_value(value: Any) -> None:
  """Raises unless a learning-rate schedule's output is a real scalar."""
  if value is None or isinstance(value, (str, bytes)):
    raise TypeError(
      f"learning_rate: the schedule returned {value!r}; it must return a "
      "real scalar (a float or a 0-d array)."
    )
  shape = np.shape(value)
  if shape != ():
    raise ValueError(
      f"learning_rate: the schedule returned an array of shape {shape}; it "
      "must return a scalar (one step size for every parameter). For "
      "per-parameter rates, use optax.multi_transform."
    )
  dtype = getattr(value, "dtype", None)
  if dtype is None:
    dtype = np.asarray(value).dtype
  if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
    raise TypeError(
      f"learning_rate: the schedule returned a value of dtype {dtype}; it "
      "must return a real scalar."
    )


def checked_schedule(schedule: Any) -> Any:
  """Returns ``schedule`` with its output checked by :func:`check_schedule_value`."""

  def checked(count):
    value = schedule(count)
    check_schedule_value(value)
    return value

  return checked


def with_chain_state_check(
  tx: optax.GradientTransformation, n_parts: int
) -> optax.GradientTransformationExtraArgs:
  """Returns ``tx`` (a chain of ``n_parts``) with its state checked first.

  ``optax.chain`` would otherwise pass each entry of a wrong state (a dict of
  grads, say) to its parts, whose errors then speak of strings or keys.
  """
  inner = optax.with_extra_args_support(tx)

  def update_fn(updates, state, params=None, **extra_args):
    check_chain_state(state, n_parts, "optimizer")
    return inner.update(updates, state, params, **extra_args)

  return optax.GradientTransformationExtraArgs(inner.init, update_fn)


def check_mask(mask: Any, params: Any) -> None:
  """Raises ValueError unless a mask tree is a prefix of the params' tree."""
  if mask is None or callable(mask):
    return
  try:
    jax.tree.map(lambda *_: None, mask, params)
  except ValueError:
    raise ValueError(
      "mask must have the tree structure of the params (or a prefix of "
      "it), with a bool for each leaf or subtree to decay, or be a "
      f"function of the params returning one.\n  mask: "
      f"{jax.tree.structure(mask)}\n  params: {jax.tree.structure(params)}"
    ) from None


def _rounded(value: Any, dtype) -> tuple[np.ndarray, np.ndarray] | None:
  """Returns ``(value, value rounded to dtype)`` as arrays, or None if not concrete."""
  arr = concrete_value(value)
  if arr is None or not jnp.issubdtype(arr.dtype, jnp.number):
    return None
  wide = arr.astype(np.float64)
  with np.errstate(over="ignore"):
    return wide, wide.astype(jnp.dtype(dtype))


def _x64_hint(dtype) -> str:
  if jnp.dtype(dtype) == jnp.float64:
    return ""
  return " (or run in float64: jax_enable_x64 with float64 params)"


def check_below_one_in(name: str, value: Any, dtype) -> None:
  """Raises ValueError if a concrete ``value`` in [0, 1) rounds to 1 in ``dtype``.

  Validation in float64 alone would pass ``b2 = 0.99999999``, which is 1.0 in
  float32: its moment then never moves (Keras) or its bias correction is
  0/0 (optax). The error names the dtype and the largest valid value there.
  """
  pair = _rounded(value, dtype)
  if pair is None:
    return
  wide, rounded = pair
  if np.all(rounded.astype(np.float64) < 1):
    return
  dt = jnp.dtype(dtype)
  largest = np.asarray(jnp.nextafter(jnp.asarray(1, dt), jnp.asarray(0, dt)))[()]
  raise ValueError(
    f"{name}={float(wide)!r} rounds to 1.0 in {dt.name}, the dtype the update computes in, "
    f"and {name} must be below 1 there (the moment would stop moving and its bias "
    f"correction divide by zero). The largest valid {name} in {dt.name} is "
    f"{largest!s}{_x64_hint(dt)}."
  )


def check_finite_in(name: str, value: Any, dtype) -> None:
  """Raises ValueError if a concrete finite ``value`` overflows to inf in ``dtype``."""
  pair = _rounded(value, dtype)
  if pair is None:
    return
  wide, rounded = pair
  if np.all(np.isfinite(rounded.astype(np.float64))):
    return
  dt = jnp.dtype(dtype)
  largest = float(jnp.finfo(dt).max)
  raise ValueError(
    f"{name}={float(wide)!r} overflows to inf in {dt.name}, the dtype the update computes "
    f"in; {name} must be at most {largest:.9g} there{_x64_hint(dt)}."
  )


def check_no_complex_into_real(updates: Any, moments: Any) -> None:
  """Raises TypeError for a complex update of a real param (its imaginary part would be lost)."""
  leaves, treedef = jax.tree_util.tree_flatten_with_path(updates)
  # A moment may be a subtree (an 8-bit leaf's codes and scales: never complex).
  subtrees = treedef.flatten_up_to(moments)  # type: ignore[attr-defined]  # loose PyTreeDef stubs
  for (path, u), m in zip(leaves, subtrees, strict=True):
    m = jax.tree.leaves(m)[0]
    u_dtype = getattr(u, "dtype", None) or jnp.result_type(u)
    m_dtype = getattr(m, "dtype", None) or jnp.result_type(m)
    if jnp.issubdtype(u_dtype, jnp.complexfloating) and not jnp.issubdtype(
      m_dtype, jnp.complexfloating
    ):
      raise TypeError(
        f"updates: the leaf at {jax.tree_util.keystr(path) or '<root>'} is complex ({u_dtype}) "
        f"but its param and state are real ({m_dtype}); the imaginary part would be dropped. "
        "Take the real part yourself if that is meant (jnp.real(g)), or make the param complex."
      )
