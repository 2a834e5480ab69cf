"""Hypothesis strategies for the fuzz suite: trees, dtypes, and hyperparameters at their extremes.

A drawn hyperparameter is a Python float that the arithmetic dtype represents exactly whenever
it is valid there, so that a live reference computing in float64 (torch's bias corrections,
optax's ``1 - b2``) sees the very value the library rounds to. Betas are drawn from five
regions: ordinary values, 0 and a few ulps above it, a few ulps below 1 (valid), and values
that round to 1 in the arithmetic dtype (invalid: the library must raise).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
from hypothesis import strategies as st

REAL = (jnp.float32,)
LOW = (jnp.float16, jnp.bfloat16)
COMPLEX = (jnp.complex64,)
X64 = (jnp.float64, jnp.complex128)


@dataclasses.dataclass(frozen=True)
class Spec:
  """A leaf to be made: its shape and dtype (``float`` for a Python-number leaf)."""

  shape: tuple[int, ...]
  dtype: object


def trees(dtypes, *, python_floats: bool = True, max_leaves: int = 5):
  """Pytrees of leaf specs: None leaves, scalars, zero-size arrays, lists, tuples, dicts."""
  shapes = st.one_of(
    st.just(()),
    st.sampled_from([(0,), (2, 0)]),
    st.lists(st.integers(1, 4), min_size=1, max_size=2).map(tuple),
  )
  leaves = [st.none(), st.builds(Spec, shapes, st.sampled_from(dtypes))]
  if python_floats:
    leaves.append(st.just(Spec((), float)))
  keys = st.text("abxyz", min_size=1, max_size=2)
  return st.recursive(
    st.one_of(*leaves),
    lambda kids: st.one_of(
      st.lists(kids, max_size=3),
      st.lists(kids, max_size=3).map(tuple),
      st.dictionaries(keys, kids, max_size=3),
    ),
    max_leaves=max_leaves,
  )


def specs(template) -> list[Spec]:
  """The leaf specs of a template, in jax.tree order (None is an empty subtree)."""
  if template is None:
    return []
  if isinstance(template, Spec):
    return [template]
  if isinstance(template, dict):
    return [s for k in sorted(template) for s in specs(template[k])]
  return [s for v in template for s in specs(v)]


def build(template, leaves):
  """The pytree of ``template`` with its specs replaced, in order, by ``leaves``."""
  it = iter(leaves)

  def go(t):
    if t is None:
      return None
    if isinstance(t, Spec):
      return next(it)
    if isinstance(t, dict):
      out = {k: go(t[k]) for k in sorted(t)}
      return {k: out[k] for k in t}
    return type(t)(go(v) for v in t)

  return go(template)


def leaf_dtype(spec: Spec, x64: bool = False):
  if spec.dtype is float:
    return np.dtype(np.float64 if x64 else np.float32)
  return np.dtype(spec.dtype)


def draw_array(rng, spec: Spec, lead: tuple[int, ...], scale, x64=False, zeros=0.2):
  """Float64 (or complex128) NumPy values for a leaf, rounded through its dtype."""
  dt = leaf_dtype(spec, x64)
  shape = (*lead, *spec.shape)
  x = np.asarray(rng.normal(size=shape) * scale)
  if np.issubdtype(dt, np.complexfloating):
    x = np.asarray(x + 1j * rng.normal(size=shape) * scale)
  if x.size:
    x[rng.random(size=shape) < zeros] = 0.0
  # Round through the leaf's dtype so that every implementation sees the same values.
  return round_through(x, dt)


def round_through(x, dtype):
  """``x`` rounded to ``dtype`` (NumPy, so float64 works without x64) and back to 64 bits."""
  rounded = np.asarray(x).astype(dtype)
  return rounded.astype(np.complex128 if np.iscomplexobj(rounded) else np.float64)


def as_leaf(x, spec: Spec, x64=False):
  """The library-side leaf: a jnp array of the spec's dtype, or a Python float."""
  if spec.dtype is float:
    return float(x)
  return jnp.asarray(x, spec.dtype)


# ---------------------------------------------------------------- hyperparameters


def ulp_below_one(dtype) -> float:
  """The spacing of ``dtype`` just below 1: 2**-24 for float32, 2**-53 for float64."""
  return float(np.finfo(np.dtype(dtype)).epsneg)


def rounds_to_one(x: float, dtype) -> bool:
  return x < 1.0 and float(np.asarray(x, np.dtype(dtype))) == 1.0


def betas(arith_dtype):
  """A beta and the region it came from.

  Regions: "ordinary" (twice the weight of the others), "decimal" (the values users type, not
  representable in float32), "near-zero", "ulps-below-one" (valid) and, for a float32
  arithmetic dtype, "rounds-to-one" (a float64 value strictly between the largest float32
  below 1 and 1, which the library must refuse). In float64 no Python float rounds to 1.
  """
  e = ulp_below_one(arith_dtype)
  tiny = float(np.finfo(np.dtype(arith_dtype)).smallest_subnormal)
  as_dt = lambda x: float(np.asarray(x, np.dtype(arith_dtype)))  # noqa: E731
  ordinary = st.floats(0.0, 0.999).map(as_dt).map(lambda b: ("ordinary", b))
  regions = [
    ordinary,
    ordinary,
    st.sampled_from([0.5, 0.9, 0.99, 0.999, 0.9999, 0.99999, 0.999999]).map(
      lambda b: ("decimal", b)
    ),
    st.sampled_from([0.0, tiny, 2 * tiny, 1e-30]).map(lambda b: ("near-zero", as_dt(b))),
    st.integers(1, 8).map(lambda k: ("ulps-below-one", 1.0 - k * e)),
  ]
  if np.dtype(arith_dtype) != np.float64:
    regions.append(st.sampled_from([0.25, 0.4, 0.49]).map(lambda f: ("rounds-to-one", 1.0 - f * e)))
  return st.one_of(*regions)


def eps_values(arith_dtype):
  big = float(np.finfo(np.dtype(arith_dtype)).max) / 1e3
  return st.sampled_from([0.0, 1e-30, 1e-8, 1e-3, 1.0, 1e30, big])


def learning_rates(arith_dtype):
  big = float(np.finfo(np.dtype(arith_dtype)).max)
  return st.one_of(
    st.floats(1e-6, 1.0),
    st.sampled_from([0.0, 1e-30, big / 1e6, big / 64]),
  )


def weight_decays():
  return st.tuples(st.sampled_from([0.0, 0.0, 1e-3, 0.1, 10.0]), st.booleans())
