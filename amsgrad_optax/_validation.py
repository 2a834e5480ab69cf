"""Checks on hyperparameters and trees that fail early with a clear message.

A check runs only on concrete values: under ``jax.jit``, ``jax.vmap`` or
``optax.inject_hyperparams`` a hyperparameter may be a tracer, and then it
passes through unchecked, as in optax.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def concrete_value(x: Any) -> np.ndarray | None:
  """Returns ``x`` as a NumPy array, or None if it is traced or a schedule."""
  if x is None or callable(x) or isinstance(x, jax.core.Tracer):
    return None
  try:
    return np.asarray(x)
  except (TypeError, jax.errors.ConcretizationTypeError):
    return None


def check_range(
    name: str,
    value: Any,
    *,
    low: float,
    high: float = np.inf,
    high_inclusive: bool = False,
) -> None:
  """Raises ValueError unless every concrete entry of ``value`` is in range."""
  arr = concrete_value(value)
  if arr is None:
    return
  if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
    raise TypeError(f"{name} must be a real number, got {value!r}")
  if np.iscomplexobj(arr):
    raise TypeError(f"{name} must be a real number, got {value!r}")
  arr = arr.astype(np.float64)
  upper_ok = arr <= high if high_inclusive else arr < high
  if not np.all((arr >= low) & upper_ok):
    bracket = "]" if high_inclusive else ")"
    upper = "inf" if high == np.inf else f"{high:g}"
    raise ValueError(f"{name} must be in [{low:g}, {upper}{bracket}, got {value!r}")


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
      dtype = jnp.result_type(leaf)
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
  if u_def != r_def:
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
