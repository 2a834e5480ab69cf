"""Checked restoring of optimizer states from checkpoints."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def _key_name(key: Any) -> str:
  """Returns a path entry as a string, whatever container it indexed."""
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def _named_leaves(tree: Any, what: str) -> dict[tuple[str, ...], Any]:
  out: dict[tuple[str, ...], Any] = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    name = tuple(_key_name(k) for k in path)
    if name in out:
      raise ValueError(
        f"{what} has two leaves at the path {_show(name)}: restore_state "
        "matches leaves by path and cannot tell them apart."
      )
    out[name] = leaf
  return out


def _show(name: tuple[str, ...]) -> str:
  return "/".join(name) or "<root>"


def _dtype(x: Any) -> np.dtype:
  dtype = getattr(x, "dtype", None)
  return np.dtype(dtype if dtype is not None else jnp.result_type(x))


def restore_state(target: Any, restored: Any) -> Any:
  """Returns ``restored``'s arrays in ``target``'s tree, after checking they fit.

  Checkpointers are forgiving in ways that hide bugs:
  ``flax.serialization.from_bytes(target, data)`` silently drops entries
  the target lacks and keeps stored shapes that differ from the target's,
  and ``orbax`` casts to the target's dtype on restore. Restore the raw
  tree instead (``flax.serialization.msgpack_restore(data)``, or orbax's
  ``restore(path)`` without a target) and pass it here with a freshly
  initialised state: this checks that both have the same leaves at the same
  paths, with the same shapes and dtypes, and rebuilds ``target``'s
  structure (NamedTuples, ``optax.EmptyState``, Flax ``nnx`` containers)
  around the restored arrays.

  Paths are compared by their entries' names, so the plain dicts and lists
  a checkpointer returns match the NamedTuples and tuples they came from
  (``ScaleByAmsgradState.nu_max`` matches ``{"nu_max": ...}``; a tuple's
  element 1 matches a list's element 1 or a dict's key ``"1"``). Nodes
  without arrays (``optax.EmptyState()``, ``None``) are not compared.

  Args:
    target: the state to restore into, e.g. ``tx.init(params)``; its leaves
      may be arrays or ``jax.ShapeDtypeStruct``.
    restored: the tree read from a checkpoint.

  Returns:
    A tree with ``target``'s structure and ``restored``'s values (NumPy
    leaves become JAX arrays, with unchanged dtype).

  Raises:
    ValueError: naming the first path (in ``target``'s leaf order) that is
      missing from ``restored``, or whose shape or dtype differs, or the
      first path of ``restored`` that ``target`` lacks.

  Examples:
    >>> import jax.numpy as jnp, optax
    >>> from flax import serialization
    >>> import amsgrad_optax
    >>> tx = amsgrad_optax.amsgrad(1e-3)
    >>> state = tx.init({"w": jnp.ones(3)})
    >>> data = serialization.to_bytes(state)
    >>> raw = serialization.msgpack_restore(data)
    >>> back = amsgrad_optax.restore_state(tx.init({"w": jnp.zeros(3)}), raw)
    >>> type(back[0]).__name__
    'ScaleByAmsgradState'
    >>> amsgrad_optax.restore_state(tx.init({"w": jnp.zeros(4)}), raw)
    Traceback (most recent call last):
    ...
    ValueError: restored leaf 0/mu/w has shape (3,), but the target has (4,)...
  """
  target_leaves = _named_leaves(target, "target")
  restored_leaves = _named_leaves(restored, "restored")
  values = []
  for name, want in target_leaves.items():
    if name not in restored_leaves:
      raise ValueError(
        f"restored has no leaf at {_show(name)}, which the target has "
        f"(shape {np.shape(want)}, dtype {_dtype(want)}). The checkpoint "
        "was written for a different model or optimizer: rebuild the "
        "target with the params and optimizer the checkpoint was saved with."
      )
    got = restored_leaves[name]
    if np.shape(got) != np.shape(want):
      raise ValueError(
        f"restored leaf {_show(name)} has shape {np.shape(got)}, but the "
        f"target has {np.shape(want)}. The checkpoint was written for "
        "params of other shapes."
      )
    if _dtype(got) != _dtype(want):
      raise ValueError(
        f"restored leaf {_show(name)} has dtype {_dtype(got)}, but the "
        f"target has {_dtype(want)}. Build the target with the dtypes the "
        "checkpoint was saved with (params dtype, mu_dtype, nu_dtype), or "
        "cast the restored tree explicitly before restoring."
      )
    values.append(got if isinstance(got, jax.Array) else jnp.asarray(got))
  extra = [name for name in restored_leaves if name not in target_leaves]
  if extra:
    raise ValueError(
      f"restored has a leaf at {_show(extra[0])} that the target lacks "
      f"({len(extra)} such leaves in all). The checkpoint was written for a "
      "different model or optimizer."
    )
  return jax.tree.unflatten(jax.tree.structure(target), values)
