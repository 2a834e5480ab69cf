"""Block-wise 8-bit storage of optimizer moments, with rounding towards +inf for the running max.

A quantized leaf keeps 8-bit codes shaped like its param and one float32
scale per block: a power of two at least the block's largest magnitude (in the
update, from bounds known before the new values: :func:`block_bounds`).
What was taken from
bitsandbytes' block-wise dynamic quantization (Dettmers et al., 2022):

- normalisation by the absolute maximum of each block, so that one outlier
  coarsens only its own block;
- a *dynamic* code map, exponent plus fraction, so that values spanning
  orders of magnitude below the block's maximum keep their relative
  precision; a signed map for the first moment and an unsigned one (the
  sign bit spent on precision) for the second moments;
- 256-element blocks, and small leaves left in 32 bits (bitsandbytes keeps
  tensors under 4096 elements in 32 bits; we keep those under 64, which the
  digits MLPs' 256x10 kernel and 100-element bias need to reach 3.1 bytes
  per parameter).

What differs: bitsandbytes' map is decimal (a decade per exponent step,
with more fraction bits near 1) and is searched; ours is binary, a
float-like format read straight off the float32 bit pattern (code
``c`` is the float32 whose bits are ``bits(1.0) - (c_max - c) * 2**(23 - M)``),
so encoding is integer arithmetic with no search, and rounding towards
+inf is exact. bitsandbytes rounds to nearest only and has no AMSGrad.
The scale is a power of two, not the block maximum itself: the map is then
the same grid at every scale, so a value decoded with one scale and encoded
again with a larger one (when the block's maximum grows) is exactly on the
grid and keeps its value. With the maximum as the scale, every growth of a
block would round all its ``nu_max`` up by up to a grid step, compounding
over training.

Blocks are tiles of the last two axes (``k`` rows by ``b`` columns), never
crossing them, so a leaf sharded like its param keeps whole blocks on each
device and the update needs no communication.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

STATE_BITS = (None, 8)
#: Elements per block; chosen in docs/memory.md (benchmarks/quantized_state.py).
DEFAULT_BLOCK_SIZE = 256
#: Leaves with fewer elements stay in full precision: a leaf of n in one block
#: costs 3n + 12 bytes against 12n, under 600 bytes saved below 64, while each
#: quantized leaf is six buffers to dispatch instead of three.
MIN_QUANTIZED_SIZE = 64

_ONE_BITS = 0x3F800000  # float32 1.0
# Fraction bits of each map: signed (mu) spends 1 bit on the sign and 7 on
# 127 magnitudes: 3 fraction bits, 15.75 binades (down to 1.8e-5 of the block
# max). Unsigned (nu, nu_max): 255 magnitudes, 3 fraction bits, 31.9 binades:
# nu is a square, so that is the same 16 binades of gradient scale as mu.
_SIGNED_BITS, _UNSIGNED_BITS = 3, 3
_SIGNED_MAX, _UNSIGNED_MAX = 127, 255


class QuantizedArray(NamedTuple):
  """An 8-bit block-wise quantized moment; :func:`dequantize` returns its float32 value.

  A NamedTuple, so it is a pytree that jit, vmap, ``jax.eval_shape``,
  orbax and ``flax.serialization`` handle as they handle the state itself;
  its layout (signed or not, block tile) is read from its fields' dtypes and
  shapes, so it carries no static data.

  Attributes:
    codes: int8 (signed map, for ``mu``) or uint8 (unsigned map, for ``nu``
      and ``nu_max``) codes, shaped like the param.
    scale: float32, a power of two at least the largest magnitude of each
      block (inf or NaN if the block holds one), shaped like the param with
      its last two axes divided by the block tile.
  """

  codes: jax.Array
  scale: jax.Array


def _rebuilt(x: Any) -> QuantizedArray | None:
  """A QuantizedArray from a container that lost the type but kept the fields, or None.

  Flax's ``nnx.Optimizer`` hands the state back with each NamedTuple turned
  into an ``nnx.State`` mapping; ``{"codes": int8 or uint8, "scale": float32}``
  is ours (params, being floating point, never have integer leaves).
  """
  keys = getattr(x, "keys", None)
  if keys is None or isinstance(x, QuantizedArray):
    return None
  try:
    if set(keys()) != {"codes", "scale"}:
      return None
    (codes,), (scale,) = jax.tree.leaves(x["codes"]), jax.tree.leaves(x["scale"])
  except (TypeError, ValueError, KeyError):
    return None
  if getattr(codes, "dtype", None) not in (jnp.int8, jnp.uint8):
    return None
  if getattr(scale, "dtype", None) != jnp.float32 or codes.ndim != scale.ndim:
    return None
  return QuantizedArray(codes=codes, scale=scale)


def is_quantized(x: Any) -> bool:
  return isinstance(x, QuantizedArray) or _rebuilt(x) is not None


def as_quantized(x: Any) -> Any:
  """``x`` as a QuantizedArray if it is one (or a container rebuilt from one), else ``x``."""
  if isinstance(x, QuantizedArray):
    return x
  rebuilt = _rebuilt(x)
  return x if rebuilt is None else rebuilt


def dequantize(x: Any) -> Any:
  """Returns the float32 value of a quantized state leaf, or ``x`` itself for any other.

  Args:
    x: a :class:`QuantizedArray` (a leaf of the ``mu``, ``nu`` or ``nu_max``
      of a state built with ``state_bits=8``) or an array.

  Returns:
    A float32 array shaped like the param, or ``x`` unchanged.

  Examples:
    >>> import jax.numpy as jnp
    >>> import amsgrad_optax
    >>> tx = amsgrad_optax.scale_by_amsgrad(state_bits=8)
    >>> state = tx.init(jnp.zeros(1024))
    >>> _, state = tx.update(jnp.full(1024, 2.0), state)
    >>> state.nu_max.codes.dtype, state.nu_max.scale.shape
    (dtype('uint8'), (4,))
    >>> amsgrad_optax.dequantize(state.nu_max)[:2]  # (1 - 0.999) * 2**2, rounded up
    Array([0.00439453, 0.00439453], dtype=float32)
    >>> float(2**-8 * (1 + 1 / 8))  # the grid point above 0.004 (3 fraction bits)
    0.00439453125
  """
  if not is_quantized(x):
    return x
  x = as_quantized(x)
  # jax.tree.leaves unwraps containers around the arrays (Flax nnx Variables).
  (codes,), (scale,) = jax.tree.leaves(x.codes), jax.tree.leaves(x.scale)
  x = QuantizedArray(jnp.asarray(codes), jnp.asarray(scale))
  signed = x.codes.dtype == jnp.int8
  tile = _tile_of(x)
  vals = _decode_codes(x.codes, signed)
  blocked = _split(vals, tile) * _expand(x.scale, x.codes.ndim)
  return _merge(blocked, x.codes.shape)


def dequantize_tree(tree: Any) -> Any:
  """Returns ``tree`` with every quantized leaf replaced by its float32 value."""
  return jax.tree.map(dequantize, tree, is_leaf=is_quantized)


def shapes_tree(tree: Any) -> Any:
  """Returns ``tree`` with each quantized leaf replaced by its codes (shaped like the param)."""
  return jax.tree.map(
    lambda x: as_quantized(x).codes if is_quantized(x) else x, tree, is_leaf=is_quantized
  )


def normalized(tree: Any) -> Any:
  """Returns ``tree`` with every container rebuilt from a QuantizedArray made one again."""
  return jax.tree.map(as_quantized, tree, is_leaf=is_quantized)


# ---------------------------------------------------------------- layout


class _Traced:
  """Marks an option that ``optax.inject_hyperparams`` passed as a tracer."""


TRACED = _Traced()


def _as_int(name: str, x: Any) -> Any:
  """``x`` as a Python int; a concrete integer array (inject_hyperparams) counts."""
  if isinstance(x, bool) or isinstance(x, (str, bytes)):
    return x
  if isinstance(x, (int, np.integer)):
    return int(x)
  if isinstance(x, jax.core.Tracer):
    return TRACED
  arr = np.asarray(x) if hasattr(x, "dtype") else None
  if arr is not None and arr.shape == () and np.issubdtype(arr.dtype, np.integer):
    return int(arr)
  return x


def check_options(state_bits: Any, block_size: Any) -> tuple[Any, Any]:
  """Returns ``(state_bits, block_size)`` as ints (or None), raising for values not allowed.

  ``optax.inject_hyperparams`` passes both as arrays, traced inside a jitted
  update: they only shape the state, which ``init`` builds, so a traced value
  comes back as :data:`TRACED` and the update reads the layout off the state.
  """
  if state_bits is not None:
    state_bits = _as_int("state_bits", state_bits)
    if state_bits is not TRACED and (isinstance(state_bits, bool) or state_bits != 8):
      raise ValueError(f"state_bits must be None (full precision) or 8, got {state_bits!r}")
  block_size = _as_int("block_size", block_size)
  if block_size is TRACED:
    return state_bits, block_size
  if isinstance(block_size, bool) or not isinstance(block_size, int):
    raise TypeError(f"block_size must be a positive int, got {block_size!r}")
  if block_size <= 0:
    raise ValueError(f"block_size must be a positive int, got {block_size!r}")
  return state_bits, block_size


def _largest_divisor(n: int, limit: int) -> int:
  best = 1
  for d in range(1, math.isqrt(n) + 1):
    if n % d == 0:
      for c in (d, n // d):
        if best < c <= limit:
          best = c
  return best


def block_tile(
  shape: tuple[int, ...], block_size: int, shards: tuple[int, ...] | None = None
) -> tuple[int, int] | None:
  """Returns the block tile ``(k, b)`` over the last two axes of ``shape``, or None.

  ``b`` is the largest divisor of the last axis's per-device length that is
  at most ``block_size``, ``k`` the largest divisor of the axis before it
  (1 for a 1-D leaf) with ``k * b <= block_size``; ``shards`` is the number
  of devices each axis is split over (default: none), so that no block
  straddles two devices. None (full precision) for a leaf of fewer than
  :data:`MIN_QUANTIZED_SIZE` elements, or whose axes only divide into
  blocks of under an eighth of ``block_size`` (a prime length, say), where
  the scales would cost more than they save.
  """
  size = math.prod(shape)
  if len(shape) == 0 or size < MIN_QUANTIZED_SIZE:
    return None
  shards = shards or (1,) * len(shape)
  if any(n % d for n, d in zip(shape, shards, strict=True)):
    return None
  local = [n // d for n, d in zip(shape, shards, strict=True)]
  b = _largest_divisor(local[-1], block_size)
  k = _largest_divisor(local[-2], block_size // b) if len(shape) >= 2 else 1
  if k * b < max(1, min(block_size, size) // 8):
    return None
  return k, b


def _tile_of(x: QuantizedArray) -> tuple[int, int]:
  cs, ss = x.codes.shape, x.scale.shape
  if x.codes.ndim == 1:
    return 1, cs[-1] // ss[-1]
  return cs[-2] // ss[-2], cs[-1] // ss[-1]


def _spec(x) -> tuple | None:
  """The explicit-mesh partition of ``x``'s axes, or None when the mesh is not explicit."""
  sharding = getattr(jax.typeof(x), "sharding", None)
  mesh = getattr(sharding, "mesh", None)
  if sharding is None or mesh is None or mesh.empty or not mesh.explicit_axes:
    return None
  spec = tuple(sharding.spec)
  return spec + (None,) * (x.ndim - len(spec))


def _split(x, tile):
  """``(..., m, n) -> (..., m/k, k, n/b, b)`` (``(n,) -> (n/b, b)`` in 1-D), keeping shardings."""
  k, b = tile
  spec = _spec(x)
  if x.ndim == 1:
    shape = (x.shape[0] // b, b)
    out = None if spec is None else PartitionSpec(spec[0], None)
  else:
    *lead, m, n = x.shape
    shape = (*lead, m // k, k, n // b, b)
    out = None if spec is None else PartitionSpec(*spec[:-2], spec[-2], None, spec[-1], None)
  return jnp.reshape(x, shape, out_sharding=out)


def _merge(x, shape):
  """The inverse of :func:`_split`, back to the param's ``shape``."""
  spec = _spec(x)
  out = None
  if spec is not None:
    if len(shape) == 1:
      out = PartitionSpec(spec[0])
    else:
      out = PartitionSpec(*spec[:-4], spec[-4], spec[-2])
  return jnp.reshape(x, shape, out_sharding=out)


def _expand(scale, ndim):
  """Broadcasts a scale against the split layout of a leaf of ``ndim`` axes."""
  return scale[..., None] if ndim == 1 else scale[..., :, None, :, None]


def _block_max(blocked, ndim):
  return jnp.max(blocked, axis=-1 if ndim == 1 else (-3, -1))


def _block_min(blocked, ndim):
  return jnp.min(blocked, axis=-1 if ndim == 1 else (-3, -1))


# ---------------------------------------------------------------- code maps


def _map_params(signed: bool) -> tuple[int, int]:
  return (_SIGNED_BITS, _SIGNED_MAX) if signed else (_UNSIGNED_BITS, _UNSIGNED_MAX)


def code_map(signed: bool) -> np.ndarray:
  """Returns the float32 value of every code (int8 order -128..127 if signed, else 0..255)."""
  frac, cmax = _map_params(signed)
  mags = np.arange(cmax + 1, dtype=np.int64)
  bits = (_ONE_BITS - (cmax - mags) * (1 << (23 - frac))).astype(np.uint32)
  vals = bits.view(np.float32).copy()
  vals[0] = 0.0
  if not signed:
    return vals
  codes = np.arange(-128, 128)
  out = np.sign(codes) * vals[np.minimum(np.abs(codes), cmax)]
  return out.astype(np.float32)


def _magnitude(k, signed):
  """The float32 value of magnitude codes ``k`` (int32, 0..max)."""
  frac, cmax = _map_params(signed)
  bits = _ONE_BITS - (cmax - k) * (1 << (23 - frac))
  vals = jax.lax.bitcast_convert_type(bits, jnp.float32)
  return jnp.where(k == 0, jnp.zeros_like(vals), vals)


def _decode_codes(codes, signed):
  c = codes.astype(jnp.int32)
  if not signed:
    return _magnitude(c, signed)
  v = _magnitude(jnp.abs(c), signed)
  return jnp.where(c < 0, -v, v)


def _encode_magnitude(y, signed, mode, noise=None):
  """Codes of ``y`` in [0, 1] (float32), rounded by ``mode``.

  ``"nearest"``; ``"ceil"``, the smallest code whose value is >= y;
  ``"stochastic"``, up with probability the fraction of the grid step that
  ``y`` lies above the code below it (unbiased), with ``noise`` (uint32,
  uniform) as the random source.
  """
  frac, cmax = _map_params(signed)
  shift = 23 - frac
  step = 1 << shift
  base = _ONE_BITS - (cmax - 1) * step  # bits of the smallest nonzero code
  smallest = float(np.uint32(base).view(np.float32))
  d = jax.lax.bitcast_convert_type(y, jnp.int32) - base
  if mode == "ceil":
    add, zero = step - 1, y <= 0
  elif mode == "nearest":
    add, zero = step // 2, y < smallest / 2
  else:
    r = jax.lax.shift_right_logical(noise, jnp.uint32(32 - shift)).astype(jnp.int32)
    add = r
    # Below the smallest code: 0 or that code, with the same odds.
    u = r.astype(jnp.float32) * (1.0 / step)
    zero = u * smallest >= y
  k = jnp.clip(1 + jax.lax.shift_right_arithmetic(d + add, shift), 1, cmax)
  return jnp.where(zero, jnp.zeros_like(k), k)


def noise_like(x, count) -> jax.Array:
  """Returns uint32 pseudo-random bits, one per element of ``x``, for stochastic rounding.

  A hash (the murmur3 finaliser) of each element's index and the step count:
  no random key in the state, the same bits however the array is sharded, a
  resumed run draws exactly what the uninterrupted one drew, and (unlike a
  hash of the values) an ulp of difference in a value, as between jit and
  eager, changes no draw.
  """
  spec = _spec(x)
  out = None if spec is None else PartitionSpec(*spec)
  h = jnp.zeros(x.shape, jnp.uint32)
  stride = 1
  for d in reversed(range(x.ndim)):
    iota = jax.lax.broadcasted_iota(jnp.uint32, x.shape, d, out_sharding=out)
    h = h + iota * jnp.uint32(stride % 2**32)
    stride *= x.shape[d]
  h = h * jnp.uint32(0x9E3779B9) + jnp.asarray(count).astype(jnp.uint32) * jnp.uint32(0x85EBCA77)
  h = h ^ jax.lax.shift_right_logical(h, jnp.uint32(16))
  h = h * jnp.uint32(0x85EBCA6B)
  h = h ^ jax.lax.shift_right_logical(h, jnp.uint32(13))
  h = h * jnp.uint32(0xC2B2AE35)
  return h ^ jax.lax.shift_right_logical(h, jnp.uint32(16))


def _pow2_ceil(x):
  """The least power of two >= x for x >= 0 (0 for 0); inf and NaN pass through."""
  bits = jax.lax.bitcast_convert_type(x, jnp.int32)
  up = jax.lax.bitcast_convert_type((bits + 0x7FFFFF) & -0x800000, jnp.float32)
  return jnp.where(jnp.isfinite(x), up, x)


def _ratio(x, scale):
  """x / scale, with 0 where a block is all zeros."""
  safe = jnp.where(scale > 0, scale, jnp.ones_like(scale))
  return jnp.where(scale > 0, x / safe, jnp.zeros_like(x))


def encode(
  x, like: QuantizedArray, *, mode: str = "nearest", scale=None, noise=None
) -> QuantizedArray:
  """Returns ``x`` (float, shaped like the param) quantized in ``like``'s layout.

  The scale is each block's largest magnitude of ``x`` rounded up to a power
  of two, unless ``scale`` is given (it must bound ``|x|`` in every block).
  ``mode`` is ``"nearest"``, ``"stochastic"`` (with ``noise``, uint32 bits
  shaped like ``x``) or ``"ceil"``. With ``"ceil"`` (unsigned maps only) the
  stored value is never below ``x``:
  the code is the smallest whose value is at least ``x / scale`` (exact, as
  the scale is a power of two), raised by one where a subnormal product
  still rounds below ``x``.
  """
  signed = like.codes.dtype == jnp.int8
  tile = _tile_of(like)
  ndim = like.codes.ndim
  x = x.astype(jnp.float32)
  blocked = _split(x, tile)
  mag = jnp.abs(blocked) if signed else blocked
  if scale is None:
    scale = _pow2_ceil(_block_max(mag, ndim))
  s = _expand(scale, ndim)
  if noise is not None:
    noise = _split(noise, tile)
  k = _encode_magnitude(_ratio(mag, s), signed, mode, noise)
  if mode == "ceil":
    _, cmax = _map_params(signed)
    low = _magnitude(k, signed) * s < blocked
    k = jnp.where(low, jnp.minimum(k + 1, cmax), k)
  if signed:
    k = jnp.where(blocked < 0, -k, k)
  codes = _merge(k, like.codes.shape).astype(like.codes.dtype)
  return QuantizedArray(codes=codes, scale=scale)


def zeros(p, block_size: int, signed: bool) -> Any:
  """Returns a quantized zero shaped (and sharded) like ``p``, or None if ``p`` stays full."""
  shape = tuple(jnp.shape(p))
  dtype = getattr(p, "dtype", None)
  if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
    return None  # complex (and Python scalar) leaves keep full precision
  tile = block_tile(shape, block_size, _shard_counts(p))
  if tile is None:
    return None
  code_dtype = jnp.int8 if signed else jnp.uint8
  zero = jnp.zeros_like(p, dtype=jnp.float32) if isinstance(p, jax.Array) else jnp.zeros(shape)
  like = QuantizedArray(
    codes=jax.ShapeDtypeStruct(shape, code_dtype),  # type: ignore[arg-type]  # a shape template
    scale=_scale_shape(shape, tile),
  )
  return encode(zero, like)


def _shard_counts(p) -> tuple[int, ...] | None:
  """How many devices each axis of ``p`` is split over, when a NamedSharding says so."""
  sharding = getattr(p, "sharding", None)
  if not isinstance(sharding, NamedSharding):
    sharding = getattr(jax.typeof(p), "sharding", None) if isinstance(p, jax.Array) else None
  if not isinstance(sharding, NamedSharding):
    return None
  spec = tuple(sharding.spec) + (None,) * (len(jnp.shape(p)) - len(sharding.spec))
  sizes = dict(sharding.mesh.shape)
  return tuple(
    math.prod(sizes[a] for a in (e if isinstance(e, tuple) else (e,))) if e is not None else 1
    for e in spec
  )


def _scale_shape(shape, tile):
  k, b = tile
  if len(shape) == 1:
    return jax.ShapeDtypeStruct((shape[0] // b,), jnp.float32)
  return jax.ShapeDtypeStruct((*shape[:-2], shape[-2] // k, shape[-1] // b), jnp.float32)


def quantize_moments(params, mu, nu, nu_max, block_size: int):
  """Returns ``(mu, nu, nu_max)`` with every leaf big enough quantized to zeros."""
  if block_size is TRACED:
    raise TypeError(
      "block_size is traced: it sets the layout of the state that init builds. Under "
      "optax.inject_hyperparams, list 'state_bits' and 'block_size' in static_args."
    )

  def one(p, m, v, vm):
    qm = zeros(p, block_size, signed=True)
    if qm is None:
      return m, v, vm
    return qm, zeros(p, block_size, signed=False), zeros(p, block_size, signed=False)

  treedef = jax.tree.structure(params)
  # jax's stubs type PyTreeDef loosely (the same ignore as in _validation.check_same_structure).
  out = treedef.flatten_up_to(jax.tree.map(one, params, mu, nu, nu_max))  # type: ignore[attr-defined]
  return tuple(treedef.unflatten([o[i] for o in out]) for i in range(3))  # type: ignore[attr-defined]


# The block bounds and the elements are rounded along different paths (XLA may
# contract a multiply-add in one and not the other): a few ulps, covered by
# this relative margin (8 ulps at least) before the round-up to a power of two.
_BOUND_MARGIN = 1.0 + 2.0**-20


def block_bounds(g, m, v, vmax):
  """Per-block upper bounds of ``|g|`` and of the stored ``|mu|``, ``nu``, ``nu_max``.

  Shaped like the scales: ``max |g|`` over each block (float32; NaN for a
  block with a gradient of inf or NaN, so that its new scales are NaN), and for each
  moment the decoded value of its largest code, exact (the map is monotone).
  The moment update is monotone in ``|g|`` and in each moment's magnitude, so
  applied to these bounds it bounds every element of the new moments: the new
  scales are known before the new values are, and the step is one pass over
  the elements rather than a pass to find each block's maximum and another to
  encode it.
  """
  m, v, vmax = as_quantized(m), as_quantized(v), as_quantized(vmax)
  tile, ndim = _tile_of(vmax), vmax.codes.ndim
  # max(max, -min) rather than max(abs): XLA:CPU reduces the plain form
  # about 10x faster, but drops NaN from a large max; the sum of g - g is NaN
  # exactly where a gradient is not finite, and so is the bound then (g * 0
  # would have XLA write out a block of zeros to multiply by).
  g_blocked = _split(g.astype(jnp.float32), tile)
  g_max = jnp.maximum(_block_max(g_blocked, ndim), -_block_min(g_blocked, ndim))
  finite = ~jnp.isnan(jnp.sum(g_blocked - g_blocked, axis=-1 if ndim == 1 else (-3, -1)))
  g_max = jnp.where(finite, g_max, jnp.nan)

  def top(q, scale):
    # Reduced in the codes' own 8 bits: converted first, XLA:CPU writes the
    # whole int32 array out before reducing it (50x slower at 2^24).
    signed = q.codes.dtype == jnp.int8
    c = _split(q.codes, tile)
    k = _block_max(c, ndim).astype(jnp.int32)
    if signed:
      k = jnp.maximum(k, -_block_min(c, ndim).astype(jnp.int32))
    return _magnitude(k, signed) * scale

  return g_max, top(m, m.scale), top(v, vmax.scale), top(vmax, vmax.scale)


def scale_of_bound(bound):
  """The power-of-two scale for a block whose elements are at most ``bound``."""
  return _pow2_ceil(bound * jnp.float32(_BOUND_MARGIN))


def store_moments(old_m, old_v, old_vmax, m, v, vmax, *, g, count, scales):
  """Returns the new moments of a quantized leaf, encoded in the old ones' layout.

  ``nu_max`` is rounded towards +inf with its own block scales, and ``nu``
  with those same scales: since ``nu <= nu_max`` elementwise and the map is
  monotone, the stored ``nu`` never exceeds the stored ``nu_max``. ``scales``
  is ``(mu's, nu_max's)`` (:func:`scale_of_bound` of the update's block
  bounds). ``mu``
  and ``nu`` are rounded stochastically (noise from :func:`noise_like`, of
  the element index and ``count``): rounded to nearest, an average with
  ``b2 = 0.999`` moves by 0.1% a step, far under half a grid step, and
  would never decay.
  """
  old_m, old_v, old_vmax = as_quantized(old_m), as_quantized(old_v), as_quantized(old_vmax)
  noise = noise_like(g, count)
  m_scale, vmax_scale = scales
  m = encode(m, old_m, mode="stochastic", scale=m_scale, noise=noise)
  vmax = encode(vmax, old_vmax, mode="ceil", scale=vmax_scale)
  # Other bits of the same hash for nu than for mu (stochastic rounding reads
  # the top 12): the same bits would correlate their errors.
  rotated = jax.lax.shift_left(noise, jnp.uint32(16)) | jax.lax.shift_right_logical(
    noise, jnp.uint32(16)
  )
  v = encode(v, old_v, mode="stochastic", scale=vmax.scale, noise=rotated)
  return m, v, vmax
