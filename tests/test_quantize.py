"""8-bit AMSGrad state (state_bits=8): code maps, the cap under quantization, and every convention.

References are independent of the encoder: the code maps are checked against a
brute-force search written here in NumPy, the cap against its definition
(elementwise order of the dequantized state), the first step against the
full-precision transform, and resumes, sharding and skipping against runs
that did not checkpoint, shard or skip.
"""

from __future__ import annotations

import functools
import math
import re

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import amsgrad_optax
from amsgrad_optax import _quantize

deq = amsgrad_optax.dequantize


def _params(key=0):
  k1, k2, k3 = jax.random.split(jax.random.key(key), 3)
  return {
    "w": jax.random.normal(k1, (64, 256)) * 0.1,  # quantized, 256-wide rows
    "v": jax.random.normal(k2, (1000,)),  # quantized, 1-D, blocks of 250
    "o": jax.random.normal(k3, (256, 10)),  # quantized, (25, 10) tiles
    "b": jnp.zeros(10),  # too small: full precision
  }


def _grads(params, i, df=2.0):
  rng = np.random.default_rng(1000 + i)
  return {
    k: jnp.asarray(rng.standard_t(df, size=p.shape).astype(np.float32) * 0.1)
    for k, p in sorted(params.items())
  }


def _assert_mostly_close(x, y, rtol):
  """All but one element in a thousand of each leaf agree to ``rtol``.

  The exceptions are values that a last-bit difference in float32 moved onto
  the neighbouring code (3 fraction bits: a 6-12% step).
  """
  for a, b in zip(jax.tree.leaves(x), jax.tree.leaves(y), strict=True):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    close = np.isclose(a, b, rtol=rtol, atol=rtol * np.max(np.abs(b)))
    assert close.mean() >= 0.999, (close.mean(), a.shape)


def _bytes(tree):
  return sum(x.nbytes for x in jax.tree.leaves(tree))


# ---------------------------------------------------------------- code maps


def _brute_nearest(values, y):
  return np.argmin(np.abs(values[None, :] - y[:, None]), axis=1)


def _brute_ceil(values, y):
  # The smallest value at or above y (values sorted ascending).
  return np.argmax(values[None, :] >= y[:, None], axis=1)


def test_unsigned_map_is_sorted_from_zero_to_one():
  values = _quantize.code_map(signed=False)
  assert values[0] == 0.0 and values[-1] == 1.0
  assert np.all(np.diff(values) > 0)
  # A float with 3 fraction bits: 8 steps per binade, 254 steps below 1.0.
  assert values[1] == 2.0**-32 * (1 + 2 / 8)
  np.testing.assert_allclose(values[2:] / values[1:-1], 2 ** (1 / 8), rtol=0.07)


def test_signed_map_is_symmetric():
  values = _quantize.code_map(signed=True)  # codes -128..127
  mags = values[128:]
  assert mags[0] == 0.0 and mags[-1] == 1.0 and np.all(np.diff(mags) > 0)
  np.testing.assert_array_equal(values[1:128], -mags[1:][::-1])


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_encoding_matches_a_brute_force_search(signed):
  rng = np.random.default_rng(0)
  # Magnitudes over the map's whole range, exact grid points and midpoints included.
  y = np.exp(rng.uniform(np.log(1e-12), 0.0, 4000)).astype(np.float32)
  mags = _quantize.code_map(signed)[128:] if signed else _quantize.code_map(signed)
  y = np.concatenate([y, mags, (mags[1:] + mags[:-1]) / 2, [0.0, 1.0]]).astype(np.float32)
  nearest = np.asarray(_quantize._encode_magnitude(jnp.asarray(y), signed, "nearest"))
  want = _brute_nearest(mags.astype(np.float64), y.astype(np.float64))
  # Ties (exact midpoints) may go either way; everything else must agree.
  err_got = np.abs(mags[nearest].astype(np.float64) - y)
  err_want = np.abs(mags[want].astype(np.float64) - y)
  np.testing.assert_array_equal(err_got, err_want)
  if not signed:
    ceil = np.asarray(_quantize._encode_magnitude(jnp.asarray(y), signed, "ceil"))
    np.testing.assert_array_equal(ceil, _brute_ceil(mags, y))


def test_stochastic_rounding_is_unbiased_between_neighbours():
  mags = _quantize.code_map(signed=False)
  y = np.full(200_000, 0.3, np.float32)
  noise = _quantize.noise_like(jnp.asarray(np.random.default_rng(1).normal(size=y.shape)), 7)
  k = np.asarray(_quantize._encode_magnitude(jnp.asarray(y), False, "stochastic", noise))
  below = _brute_ceil(mags, y[:1])[0] - 1
  assert set(np.unique(k)) <= {below, below + 1}
  assert mags[k].astype(np.float64).mean() == pytest.approx(0.3, rel=2e-3)


# ---------------------------------------------------------------- memory and layout


def test_state_of_a_big_leaf_costs_about_three_bytes_a_parameter():
  n = 2**20
  state = amsgrad_optax.scale_by_amsgrad(state_bits=8).init(jnp.zeros(n))
  full = amsgrad_optax.scale_by_amsgrad().init(jnp.zeros(n))
  assert _bytes(full) / n == pytest.approx(12, abs=1e-4)
  assert _bytes(state) / n <= 3.1
  assert state.mu.codes.dtype == jnp.int8 and state.nu_max.codes.dtype == jnp.uint8


def test_small_and_complex_leaves_stay_full_precision():
  params = {"b": jnp.zeros(63), "c": jnp.zeros(4096, jnp.complex64), "w": jnp.zeros(64)}
  state = amsgrad_optax.scale_by_amsgrad(state_bits=8).init(params)
  assert state.mu["b"].dtype == jnp.float32 and state.mu["c"].dtype == jnp.complex64
  assert isinstance(state.nu_max["w"], amsgrad_optax.QuantizedArray)
  u, state = jax.jit(amsgrad_optax.scale_by_amsgrad(state_bits=8).update)(
    {"b": jnp.ones(63), "c": jnp.ones(4096, jnp.complex64), "w": jnp.ones(64)}, state
  )
  assert u["c"].dtype == jnp.complex64


def test_dequantize_of_a_plain_array_is_the_array():
  x = jnp.arange(3.0)
  assert amsgrad_optax.dequantize(x) is x


@pytest.mark.parametrize(
  ("shape", "tile"),
  [((1000,), (1, 250)), ((64, 256), (1, 256)), ((256, 10), (16, 10)), ((3, 1009), None)],
)
def test_block_tiles(shape, tile):
  assert _quantize.block_tile(shape, 256) == tile


# ---------------------------------------------------------------- the cap


@functools.cache
def _cap_update(convention, b2):
  # One compile per (convention, b2), shared by the examples.
  tx = amsgrad_optax.scale_by_amsgrad(b2=b2, convention=convention, state_bits=8, block_size=64)
  return tx, jax.jit(tx.update)


@settings(max_examples=20, deadline=None)
@given(
  convention=st.sampled_from(amsgrad_optax.CONVENTIONS),
  df=st.sampled_from([0.7, 1.0, 1.5, 3.0]),  # Student-t; 1.0 is Cauchy
  spikes=hnp.arrays(np.float32, 12, elements=st.sampled_from([1.0, 1.0, 1.0, 1e-3, 1e3])),
  seed=st.integers(0, 2**16),
  b2=st.sampled_from([0.9, 0.999]),
)
def test_the_cap_survives_quantization(convention, df, spikes, seed, b2):
  """Dequantized nu_max never decreases and never drops below nu, under heavy tails.

  Spikes change a block's scale by up to 10**6 each way, which is where a
  re-encoding could lose the maximum.
  """
  tx, update = _cap_update(convention, b2)
  shape = (16, 64)
  state = tx.init(jnp.zeros(shape))
  rng = np.random.default_rng(seed)
  prev = np.zeros(shape, np.float32)
  for t, spike in enumerate(spikes):
    g = rng.standard_t(df, size=shape).astype(np.float32) * spike
    g[rng.integers(0, 16), :] *= 100.0  # one row (one block) far above the rest
    _, state = update(jnp.asarray(g), state)
    nu_max, nu = np.asarray(deq(state.nu_max)), np.asarray(deq(state.nu))
    assert np.all(nu_max >= prev), f"nu_max decreased at step {t + 1}"
    assert np.all(nu_max >= nu), f"nu_max below nu at step {t + 1}"
    prev = nu_max
  # The paper's effective step eta / sqrt(nu_max) is therefore non-increasing.


def test_nu_max_bounds_the_float_maximum_of_its_own_inputs():
  """Each step, stored nu_max >= max(previous stored nu_max, v_t) computed in float32."""
  b2 = 0.99
  tx = amsgrad_optax.scale_by_amsgrad(b2=b2, b1=0.0, state_bits=8)
  params = {k: v for k, v in _params().items() if k in ("v", "o")}

  @jax.jit
  def step(g, state):
    v_t = jax.tree.map(lambda gg, n: b2 * deq(n) + (1 - b2) * gg**2, g, state.nu)
    bound = jax.tree.map(lambda v, old: jnp.maximum(deq(old), v), v_t, state.nu_max)
    _, state = tx.update(g, state)
    ok = jax.tree.map(lambda b, new: jnp.all(deq(new) >= b), bound, state.nu_max)
    return ok, state

  state = tx.init(params)
  for i in range(8):
    ok, state = step(_grads(params, i, df=1.0), state)
    assert all(bool(x) for x in jax.tree.leaves(ok)), (i, ok)


def _block_abs_max(x, like):
  """Each block's largest |x| in ``like``'s layout, float64 (one scale per block)."""
  tile = _quantize._tile_of(like)
  blocked = np.abs(np.asarray(_quantize._split(jnp.asarray(x), tile), np.float64))
  return blocked.max(axis=-1 if blocked.ndim == 2 else (-3, -1))


def _pow2_at_least(x):
  return np.where(x > 0, 2.0 ** np.ceil(np.log2(np.maximum(x, 1e-300))), 0.0)


def test_scales_bound_the_new_values_and_follow_them_down():
  """Each new scale bounds its block's new values (from a float64 update of the old
  dequantized state); nu_max's is at most twice the tightest power of two; and when
  the gradients fall by 10^4, mu's scales fall with them, to at most twice the
  tightest: the scales come from the stored values each step, not the old scales.
  """
  b1, b2 = 0.9, 0.99
  tx = amsgrad_optax.scale_by_amsgrad(b1=b1, b2=b2, state_bits=8)
  params = {k: v for k, v in _params().items() if k in ("w", "v", "o")}
  update = jax.jit(tx.update)
  state = tx.init(params)
  for i in range(60):
    g = _grads(params, i, df=1.5)
    if i >= 10:
      g = jax.tree.map(lambda x: x * 1e-4, g)
    m_old, v_old, vm_old = (
      jax.tree.map(deq, x, is_leaf=_quantize.is_quantized)
      for x in (state.mu, state.nu, state.nu_max)
    )
    _, state = update(g, state)
    for k in params:
      gk = np.asarray(g[k], np.float64)
      m = b1 * np.asarray(m_old[k], np.float64) + (1 - b1) * gk
      v = b2 * np.asarray(v_old[k], np.float64) + (1 - b2) * gk**2
      vm = np.maximum(np.asarray(vm_old[k], np.float64), v)
      mu_q, vm_q = state.mu[k], state.nu_max[k]
      m_top, vm_top = _block_abs_max(m, mu_q), _block_abs_max(vm, vm_q)
      mu_scale, vm_scale = np.asarray(mu_q.scale), np.asarray(vm_q.scale)
      assert np.all(m_top <= mu_scale * (1 + 1e-6)), (i, k)
      assert np.all(vm_top <= vm_scale * (1 + 1e-6)), (i, k)
      assert np.all(vm_scale <= 2 * _pow2_at_least(vm_top * (1 + 1e-6))), (i, k)
      if i == 59:
        assert np.all(mu_scale <= 2 * _pow2_at_least(m_top * (1 + 1e-6))), k


# ---------------------------------------------------------------- behaviour


@pytest.mark.parametrize("convention", amsgrad_optax.CONVENTIONS)
def test_first_step_equals_full_precision(convention):
  # The zero state is exact, and the update is computed before re-encoding.
  params = _params()
  g = _grads(params, 0)
  full = amsgrad_optax.scale_by_amsgrad(convention=convention)
  bits = amsgrad_optax.scale_by_amsgrad(convention=convention, state_bits=8)
  u_full, _ = jax.jit(full.update)(g, full.init(params))
  u_bits, _ = jax.jit(bits.update)(g, bits.init(params))
  jax.tree.map(np.testing.assert_array_equal, u_bits, u_full)


@pytest.mark.parametrize("convention", amsgrad_optax.CONVENTIONS)
def test_training_tracks_full_precision(convention):
  """Over 30 steps on heavy-tailed gradients the updates stay close to float32 state's."""
  params = _params()
  full = amsgrad_optax.scale_by_amsgrad(convention=convention)
  bits = amsgrad_optax.scale_by_amsgrad(convention=convention, state_bits=8)
  sf, sb = full.init(params), bits.init(params)
  uf_step, ub_step = jax.jit(full.update), jax.jit(bits.update)
  for i in range(30):
    g = _grads(params, i)
    uf, sf = uf_step(g, sf)
    ub, sb = ub_step(g, sb)
  for k in ("w", "v", "o"):
    a, b = np.asarray(ub[k]), np.asarray(uf[k])
    # Direction: cosine similarity of the whole leaf's update.
    cos = np.sum(a * b) / np.linalg.norm(a) / np.linalg.norm(b)
    assert cos > 0.97, (k, cos)
    # Scale: nu_max is rounded up, so the steps are a few percent shorter, not longer.
    ratio = np.linalg.norm(a) / np.linalg.norm(b)
    assert 0.8 < ratio < 1.02, (k, ratio)
  np.testing.assert_array_equal(ub["b"].shape, (10,))


def test_jit_equals_eager():
  tx = amsgrad_optax.amsgrad(1e-2, state_bits=8)
  params = _params()
  se = sj = tx.init(params)
  step = jax.jit(tx.update)
  for i in range(2):
    g = _grads(params, i)
    ue, se = tx.update(g, se, params)
    uj, sj = step(g, sj, params)
  # XLA may fuse and round a float32 op differently under jit; a value within
  # an ulp of a rounding threshold can then land on the neighbouring code.
  _assert_mostly_close((ue, se), (uj, sj), rtol=1e-5)


def test_donated_step():
  tx = amsgrad_optax.amsgrad(1e-2, state_bits=8)

  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  params = _params()
  state = tx.init(params)
  ref_p, ref_s = jax.jit(step)(params, state, _grads(params, 0))
  donated = jax.jit(step, donate_argnums=(0, 1))
  stats = donated.lower(params, state, _grads(params, 0)).compile().memory_analysis()
  assert stats.alias_size_in_bytes >= _bytes(params) + _bytes(state) - 64
  p, s = donated(jax.tree.map(jnp.copy, params), jax.tree.map(jnp.copy, state), _grads(params, 0))
  jax.tree.map(np.testing.assert_array_equal, (p, s), (ref_p, ref_s))


def test_vmap_over_b2_equals_a_loop():
  params = {"w": jnp.linspace(-1.0, 1.0, 512)}

  def final(b2):
    tx = amsgrad_optax.amsgrad(0.05, b2=b2, state_bits=8)
    p, s = params, tx.init(params)
    for i in range(4):
      u, s = tx.update({"w": jnp.sin(p["w"] * (i + 1))}, s, p)
      p = optax.apply_updates(p, u)
    return p["w"], deq(s[0].nu_max["w"])

  values = jnp.asarray([0.9, 0.99, 0.999])
  swept = jax.jit(jax.vmap(final))(values)
  for i, v in enumerate(values):
    np.testing.assert_allclose(swept[0][i], final(v)[0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(swept[1][i], final(v)[1], rtol=1e-6)


def test_inject_hyperparams():
  tx = optax.inject_hyperparams(amsgrad_optax.amsgrad)(learning_rate=0.1, state_bits=8)
  plain = amsgrad_optax.amsgrad(0.1, state_bits=8)
  params = _params()
  s, sp = tx.init(params), plain.init(params)
  for i in range(3):
    g = _grads(params, i)
    u, s = jax.jit(tx.update)(g, s, params)
    up, sp = plain.update(g, sp, params)
    # Injected, b2 is a float32 array, so 1 - b2 differs from the Python float's
    # by 5e-5 (as for full-precision state), which can move a value onto the
    # neighbouring code now and then.
    _assert_mostly_close(u, up, rtol=1e-4)
  assert isinstance(s.inner_state[0].nu_max["w"], amsgrad_optax.QuantizedArray)


def test_skip_nonfinite_keeps_the_quantized_state_bit_for_bit():
  tx = amsgrad_optax.amsgrad(1e-2, state_bits=8, skip_nonfinite=True)
  params = _params()
  state = tx.init(params)
  _, state = tx.update(_grads(params, 0), state, params)
  bad = _grads(params, 1)
  bad["w"] = bad["w"].at[3, 7].set(jnp.inf)  # a finite square would not be caught
  u, after = jax.jit(tx.update)(bad, state, params)
  jax.tree.map(np.testing.assert_array_equal, after.inner_state, state.inner_state)
  assert int(after.total_skipped) == 1
  assert all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(u))


def test_a_huge_gradient_makes_the_stored_scale_nonfinite():
  """Its square overflows to inf: the block's scale shows it, so skip_nonfinite can see it."""
  tx = amsgrad_optax.scale_by_amsgrad(state_bits=8)
  state = tx.init(jnp.zeros(512))
  _, state = tx.update(jnp.zeros(512).at[0].set(1e30), state)
  assert not np.isfinite(np.asarray(state.nu_max.scale)[0])
  assert np.all(np.isfinite(np.asarray(state.nu_max.scale)[1:]))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_gradient_makes_its_blocks_scales_nan(bad):
  """The documented decision: NaN scales for that block's three moments (XLA:CPU's
  large max-reductions drop NaN; the update does not), finite ones elsewhere, and
  the block dequantizes to NaN, as a float32 state holds NaN at that coordinate."""
  tx = amsgrad_optax.scale_by_amsgrad(state_bits=8)
  g = jax.random.normal(jax.random.key(3), (4096,))
  state = tx.init(jnp.zeros(4096))
  _, state = jax.jit(tx.update)(g, state)
  _, state = jax.jit(tx.update)(g.at[300].set(bad), state)
  for q in (state.mu, state.nu, state.nu_max):
    scale = np.asarray(q.scale)
    assert np.isnan(scale[1]), scale[:3]
    assert np.all(np.isfinite(np.delete(scale, 1)))
  assert np.all(np.isnan(np.asarray(deq(state.nu_max))[256:512]))


def test_diagnostics_read_the_dequantized_state():
  kw = dict(learning_rate=0.1, b1=0.9, b2=0.99)
  tx = amsgrad_optax.amsgrad(state_bits=8, **kw)
  params = _params()
  state = tx.init(params)
  for i in range(5):
    _, state = tx.update(_grads(params, i), state, params)
  inner = state[0]
  plain = inner._replace(
    mu=jax.tree.map(deq, inner.mu, is_leaf=_quantize.is_quantized),
    nu=jax.tree.map(deq, inner.nu, is_leaf=_quantize.is_quantized),
    nu_max=jax.tree.map(deq, inner.nu_max, is_leaf=_quantize.is_quantized),
  )
  got = amsgrad_optax.diagnostics(state, tx)
  want = amsgrad_optax.diagnostics(plain, tx)
  assert got.keys() == want.keys()
  for k in got:
    np.testing.assert_array_equal(got[k], want[k], err_msg=k)
  assert int(got["cap_active"]) > 0


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
  ("kwargs", "error", "match"),
  [
    ({"state_bits": 4}, ValueError, r"state_bits must be None \(full precision\) or 8, got 4"),
    ({"state_bits": "8"}, ValueError, r"state_bits must be None .* got '8'"),
    ({"state_bits": True}, ValueError, r"state_bits must be None .* got True"),
    ({"state_bits": 8, "block_size": 0}, ValueError, "block_size must be a positive int, got 0"),
    ({"state_bits": 8, "block_size": 2.5}, TypeError, "block_size must be a positive int, got 2.5"),
    ({"block_size": -4}, ValueError, "block_size must be a positive int, got -4"),
  ],
)
def test_bad_options(kwargs, error, match):
  with pytest.raises(error, match=match):
    amsgrad_optax.amsgrad(1e-3, **kwargs)
  with pytest.raises(error, match=match):
    amsgrad_optax.scale_by_amsgrad(**kwargs)


def test_integer_params_are_an_error():
  with pytest.raises(TypeError, match=r"params must be floating point; the leaf at \['w'\]"):
    amsgrad_optax.amsgrad(1e-3, state_bits=8).init({"w": jnp.zeros(1024, jnp.int32)})


def test_block_size_changes_the_layout():
  state = amsgrad_optax.scale_by_amsgrad(state_bits=8, block_size=64).init(jnp.zeros(1024))
  assert state.nu_max.scale.shape == (1024 // 64,)
  assert math.prod(state.mu.codes.shape) == 1024


# ---------------------------------------------------------------- checkpoints


def _ckpt_params():
  k1, k2 = jax.random.split(jax.random.key(3))
  return {"w": jax.random.normal(k1, (16, 64)) * 0.3, "b": jax.random.normal(k2, (1, 64))}


def _ckpt_step(tx):
  @jax.jit
  def step(params, state, i):
    x = jax.random.normal(jax.random.fold_in(jax.random.key(4), i), (8, 16))
    loss = lambda p: jnp.mean(jnp.tanh(x @ p["w"] + p["b"]) ** 2)  # noqa: E731
    updates, state = tx.update(jax.grad(loss)(params), state, params)
    return optax.apply_updates(params, updates), state

  return step


def _orbax(tree, path):
  ocp = pytest.importorskip("orbax.checkpoint")
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(path, tree)
    ckptr.wait_until_finished()
    return ckptr.restore(path)


def _flax(tree, path):
  del path
  serialization = pytest.importorskip("flax.serialization")
  return serialization.msgpack_restore(serialization.to_bytes(tree))


@pytest.mark.parametrize("roundtrip", [_orbax, _flax], ids=["orbax", "flax_serialization"])
def test_checkpoint_resume_is_bit_identical(roundtrip, tmp_path):
  tx = amsgrad_optax.amsgrad(1e-2, state_bits=8, block_size=64)
  step = _ckpt_step(tx)
  p0 = _ckpt_params()
  full_p, full_s = p0, tx.init(p0)
  for i in range(12):
    full_p, full_s = step(full_p, full_s, i)
  p, s = p0, tx.init(p0)
  for i in range(5):
    p, s = step(p, s, i)
  raw = roundtrip({"params": p, "opt_state": s}, tmp_path / "ckpt")
  back = amsgrad_optax.restore_state({"params": p0, "opt_state": tx.init(p0)}, raw)
  assert isinstance(back["opt_state"][0].nu_max["w"], amsgrad_optax.QuantizedArray)
  p, s = back["params"], back["opt_state"]
  for i in range(5, 12):
    p, s = step(p, s, i)
  for a, b in zip(jax.tree.leaves((p, s)), jax.tree.leaves((full_p, full_s)), strict=True):
    assert np.asarray(a).dtype == np.asarray(b).dtype
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_checkpoint_of_the_other_precision_is_refused():
  serialization = pytest.importorskip("flax.serialization")
  p0 = _ckpt_params()
  raw = serialization.msgpack_restore(serialization.to_bytes(amsgrad_optax.amsgrad(1e-2).init(p0)))
  target = amsgrad_optax.amsgrad(1e-2, state_bits=8).init(p0)
  with pytest.raises(ValueError, match="restored has no leaf at 0/mu/b/codes"):
    amsgrad_optax.restore_state(target, raw)


# ---------------------------------------------------------------- sharding

_COLLECTIVE = re.compile(
  r"\b(all-reduce|all-gather|reduce-scatter|collective-permute|all-to-all|"
  r"collective-broadcast|ragged-all-to-all)(-start|-done)?\("
)

SHARDED = {
  "1d": ((8,), ("x",), {"w": P("x", None), "v": P("x"), "b": P()}),
  "2d": ((4, 2), ("x", "y"), {"w": P("x", "y"), "v": P("y"), "b": P()}),
}


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 devices (conftest)")
@pytest.mark.parametrize("mesh_name", sorted(SHARDED))
def test_sharded_quantized_state_follows_the_params(mesh_name):
  shape, names, specs = SHARDED[mesh_name]
  mesh = jax.make_mesh(shape, names, axis_types=(AxisType.Explicit,) * len(names))
  rng = np.random.default_rng(0)
  host = {
    "w": rng.normal(size=(64, 256)).astype(np.float32),
    "v": rng.normal(size=(2048,)).astype(np.float32),
    "b": rng.normal(size=(10,)).astype(np.float32),
  }
  params = {k: jax.device_put(v, NamedSharding(mesh, specs[k])) for k, v in host.items()}
  tx = amsgrad_optax.amsgrad(1e-2, state_bits=8)

  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  grads = jax.tree.map(lambda p: jnp.cos(3.0 * p) * 0.5, params)
  with jax.set_mesh(mesh):
    state = tx.init(params)
    for k in ("w", "v"):
      for field in ("mu", "nu", "nu_max"):
        q = getattr(state[0], field)[k]
        assert isinstance(q, amsgrad_optax.QuantizedArray)
        assert q.codes.sharding.is_equivalent_to(params[k].sharding, params[k].ndim)
        assert (
          q.codes.addressable_shards[0].data.shape == params[k].addressable_shards[0].data.shape
        )
        assert not q.scale.sharding.is_fully_replicated
    jitted = jax.jit(step, donate_argnums=(0, 1))
    hlo = jitted.lower(params, state, grads).compile().as_text()
    assert [m.group(0) for m in _COLLECTIVE.finditer(hlo)] == []
    new_p, new_s = jitted(params, state, grads)
    new_p, new_s = jitted(new_p, new_s, grads)

  assert new_s[0].nu_max["w"].codes.sharding.is_equivalent_to(params["w"].sharding, 2)
  if mesh_name != "1d":
    # Blocks never straddle devices, so a (64, 256) leaf split 2-way along its
    # rows of 256 has (2, 128) tiles here and (1, 256) on one device.
    assert new_s[0].nu_max["w"].scale.shape == (32, 2)
    return
  # The same two steps on one device, with the same (1, 256) tiles, agree.
  local = jax.device_put(host, jax.devices()[0])
  one = jax.jit(step)
  lp, ls = one(local, tx.init(local), jax.tree.map(lambda p: jnp.cos(3.0 * p) * 0.5, local))
  lp, ls = one(lp, ls, jax.tree.map(lambda p: jnp.cos(3.0 * p) * 0.5, local))
  _assert_mostly_close((new_p, new_s), (lp, ls), rtol=1e-6)


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 devices (conftest)")
def test_zero1_state_sharding_splits_codes_and_scales_alike():
  mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Explicit,))
  tx = amsgrad_optax.amsgrad(1e-2, state_bits=8)
  params = {"w": jnp.ones((256, 10)), "v": jnp.ones(4096)}
  with jax.set_mesh(mesh):
    state = amsgrad_optax.shard_state(tx.init(params), mesh, "data")
  w = state[0].nu_max["w"]
  assert w.codes.sharding.spec == P("data", None) and w.scale.sharding.spec == P("data", None)
  assert w.codes.addressable_shards[0].data.shape == (32, 10)
  assert w.scale.addressable_shards[0].data.shape == (2, 1)  # (16, 10) tiles: 2 per device
  assert state[0].mu["v"].scale.sharding.spec == P("data")


def test_flax_nnx_optimizer_keeps_training_and_diagnosing():
  """nnx.Optimizer hands the state back with each QuantizedArray turned into an nnx.State."""
  nnx = pytest.importorskip("flax.nnx")
  model = nnx.Linear(64, 256, rngs=nnx.Rngs(0))
  tx = amsgrad_optax.amsgrad(1e-2, state_bits=8)
  opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
  x = jnp.linspace(-1.0, 1.0, 4 * 64).reshape(4, 64)

  @nnx.jit
  def step(model, opt):
    grads = nnx.grad(lambda m: jnp.mean(m(x) ** 2))(model)
    opt.update(model, grads)

  before = np.asarray(model.kernel[...])
  for _ in range(3):
    step(model, opt)
  assert not np.array_equal(np.asarray(model.kernel[...]), before)
  nu_max = amsgrad_optax.dequantize(opt.opt_state[0].nu_max["kernel"])
  assert nu_max.dtype == jnp.float32 and nu_max.shape == (64, 256)
  d = amsgrad_optax.diagnostics(opt.opt_state, tx)
  assert int(d["cap_active"]) > 0 and np.isfinite(float(d["step_max"]))
