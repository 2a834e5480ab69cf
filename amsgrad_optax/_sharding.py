"""Optimizer state sharded over a data-parallel mesh axis (ZeRO stage 1)."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from amsgrad_optax import _quantize


def state_sharding(state: Any, mesh: Mesh, axis: str = "data") -> Any:
  """Returns a tree of shardings that splits an optimizer state over ``axis``.

  Data-parallel training keeps a full copy of the params and of the optimizer
  state on every device; AMSGrad's state (``mu``, ``nu``, ``nu_max``) is three
  times the params. Sharding the state over the data-parallel axis (ZeRO stage
  1, Rajbhandari et al., 2020) keeps ``1/n`` of it per device: each device
  updates its slice of the moments, and the new params are gathered. Pass the
  result as ``out_shardings`` of the jitted step (and of ``tx.init``), or use
  :func:`shard_state` to place an existing state.

  Each array leaf is split along its first dimension that ``axis`` does not
  already split and whose length is a multiple of the axis size, keeping any
  sharding the leaf already has on the same mesh (a model-parallel axis, say).
  Scalars, such as the step count, and leaves with no such dimension are
  replicated. The result is the same whichever way the state is sharded:
  AMSGrad is elementwise.

  Args:
    state: an optimizer state, or its ``jax.eval_shape``.
    mesh: the device mesh.
    axis: the name of the data-parallel axis of ``mesh``.

  Returns:
    A tree of :class:`jax.sharding.NamedSharding` shaped like ``state``.

  Raises:
    ValueError: if ``axis`` is not an axis of ``mesh``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> import amsgrad_optax
    >>> mesh = jax.make_mesh((1,), ("data",))
    >>> tx = amsgrad_optax.amsgrad(1e-3)
    >>> state = tx.init({"w": jnp.zeros((4, 3))})
    >>> tuple(amsgrad_optax.state_sharding(state, mesh)[0].mu["w"].spec)
    ('data', None)

  References:
    Rajbhandari, Rasley, Ruwase & He, `ZeRO: Memory Optimizations Toward
    Training Trillion Parameter Models <https://arxiv.org/abs/1910.02054>`_,
    SC 2020.
  """
  if axis not in mesh.axis_names:
    raise ValueError(f"axis must be one of the mesh's axes {mesh.axis_names}, got {axis!r}")
  size = mesh.shape[axis]

  def quantized(q):
    # The scales are split along the axes the codes are, so that each device
    # keeps whole blocks; if a split leaves partial blocks, neither is split.
    codes = leaf(q.codes)
    spec = tuple(codes.spec) + (None,) * (q.scale.ndim - len(codes.spec))
    for entry, n in zip(spec, jnp.shape(q.scale), strict=True):
      if entry is not None and n % math.prod(mesh.shape[a] for a in _names(entry)):
        replicated = NamedSharding(mesh, PartitionSpec())
        return type(q)(codes=replicated, scale=replicated)
    return type(q)(codes=codes, scale=NamedSharding(mesh, PartitionSpec(*spec)))

  def leaf(x):
    shape = jnp.shape(x)
    spec = [None] * len(shape)
    current = getattr(x, "sharding", None)
    if isinstance(current, NamedSharding) and current.mesh.shape_tuple == mesh.shape_tuple:
      spec = list(current.spec) + [None] * (len(shape) - len(current.spec))
    used = {a for entry in spec if entry is not None for a in _names(entry)}
    if axis not in used:
      for d, n in enumerate(shape):
        if spec[d] is None and n > 0 and n % size == 0:
          spec[d] = axis
          break
    return NamedSharding(mesh, PartitionSpec(*spec))

  def any_leaf(x):
    return quantized(x) if _quantize.is_quantized(x) else leaf(x)

  return jax.tree.map(any_leaf, state, is_leaf=_quantize.is_quantized)


def shard_state(state: Any, mesh: Mesh, axis: str = "data") -> Any:
  """Returns ``state`` placed on ``mesh`` as :func:`state_sharding` lays it out.

  Args:
    state: an optimizer state.
    mesh: the device mesh.
    axis: the name of the data-parallel axis of ``mesh``.

  Returns:
    The same state, each leaf a :class:`jax.Array` sharded over ``axis``.

  Raises:
    ValueError: if ``axis`` is not an axis of ``mesh``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> import amsgrad_optax
    >>> mesh = jax.make_mesh((1,), ("data",))
    >>> tx = amsgrad_optax.amsgrad(1e-3)
    >>> state = amsgrad_optax.shard_state(tx.init({"w": jnp.zeros((4, 3))}), mesh)
    >>> tuple(state[0].nu_max["w"].sharding.spec)
    ('data', None)
  """
  return jax.device_put(state, state_sharding(state, mesh, axis))


def _names(entry) -> tuple:
  return entry if isinstance(entry, tuple) else (entry,)
