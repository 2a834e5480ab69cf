"""Optimizer states through orbax-checkpoint and flax.serialization, and exact resume.

A run stopped at step K, written to a checkpoint, read back into a freshly
initialised state and continued must end bit for bit where the run that never
stopped ends: params and every state leaf, ``count`` and ``nu_max`` included.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import amsgrad_optax

ocp = pytest.importorskip("orbax.checkpoint")
serialization = pytest.importorskip("flax.serialization")
nnx = pytest.importorskip("flax.nnx")

STEPS, STOP = 40, 17


def _params() -> dict:
  k1, k2 = jax.random.split(jax.random.key(0))
  return {
    "hidden": {"w": jax.random.normal(k1, (4, 8)) * 0.5, "b": jnp.zeros((1, 8))},
    "out": {"w": jax.random.normal(k2, (8, 1)) * 0.5, "b": jnp.zeros((1, 1))},
  }


def _loss(params, x, y):
  h = jnp.tanh(x @ params["hidden"]["w"] + params["hidden"]["b"])
  return jnp.mean((h @ params["out"]["w"] + params["out"]["b"] - y) ** 2)


def _batch(step):
  # Data depends on the step alone, so a resumed run sees the same batches.
  x = jax.random.normal(jax.random.fold_in(jax.random.key(1), step), (16, 4))
  return x, jnp.sin(x.sum(axis=1, keepdims=True))


def _tx():
  # A schedule and a clip, so the state holds more than one counter.
  return optax.chain(
    optax.clip_by_global_norm(1.0),
    amsgrad_optax.amsgrad(amsgrad_optax.inverse_sqrt_schedule(0.05), weight_decay=1e-3),
  )


def _make_step(tx):
  @jax.jit
  def step(params, state, i):
    grads = jax.grad(_loss)(params, *_batch(i))
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  return step


def _train(step, params, state, start, stop):
  for i in range(start, stop):
    params, state = step(params, state, jnp.int32(i))
  return params, state


def _assert_bit_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    assert np.asarray(x).dtype == np.asarray(y).dtype
    assert np.array_equal(np.asarray(x), np.asarray(y))


def _orbax_roundtrip(tree, path):
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(path, tree)
    ckptr.wait_until_finished()
    return ckptr.restore(path)  # raw: dicts and lists, no target


def _flax_roundtrip(tree, path):
  del path
  return serialization.msgpack_restore(serialization.to_bytes(tree))


ROUNDTRIPS = {"orbax": _orbax_roundtrip, "flax_serialization": _flax_roundtrip}


@pytest.mark.parametrize("backend", sorted(ROUNDTRIPS))
def test_resume_is_bit_identical(backend, tmp_path):
  tx = _tx()
  step = _make_step(tx)
  p0 = _params()
  full_params, full_state = _train(step, p0, tx.init(p0), 0, STEPS)

  params, state = _train(step, p0, tx.init(p0), 0, STOP)
  raw = ROUNDTRIPS[backend]({"params": params, "opt_state": state}, tmp_path / "ckpt")
  fresh = {"params": _params(), "opt_state": tx.init(_params())}
  restored = amsgrad_optax.restore_state(fresh, raw)
  _assert_bit_equal(restored, {"params": params, "opt_state": state})
  params, state = _train(step, restored["params"], restored["opt_state"], STOP, STEPS)

  _assert_bit_equal(params, full_params)
  _assert_bit_equal(state, full_state)
  ams = state[1][0]
  assert isinstance(ams, amsgrad_optax.ScaleByAmsgradState)
  assert int(ams.count) == STEPS
  assert np.array_equal(ams.nu_max["hidden"]["w"], full_state[1][0].nu_max["hidden"]["w"])
  # The run is long enough for the cap to matter: otherwise nu_max == nu and
  # a checkpoint that lost nu_max would pass unnoticed.
  pairs = zip(jax.tree.leaves(ams.nu_max), jax.tree.leaves(ams.nu), strict=True)
  assert any(np.any(m > n) for m, n in pairs)


def test_flax_from_bytes_with_a_target_round_trips(tmp_path):
  del tmp_path
  tx = _tx()
  p0 = _params()
  _, state = _train(_make_step(tx), p0, tx.init(p0), 0, STOP)
  back = serialization.from_bytes(tx.init(_params()), serialization.to_bytes(state))
  _assert_bit_equal(back, state)


def test_orbax_restore_into_an_abstract_target(tmp_path):
  tx = _tx()
  p0 = _params()
  _, state = _train(_make_step(tx), p0, tx.init(p0), 0, STOP)
  raw = _orbax_roundtrip(state, tmp_path / "ckpt")
  abstract = jax.eval_shape(tx.init, _params())
  _assert_bit_equal(amsgrad_optax.restore_state(abstract, raw), state)


def test_nnx_optimizer_resume_is_bit_identical(tmp_path):
  class MLP(nnx.Module):
    def __init__(self, rngs):
      self.hidden = nnx.Linear(4, 8, rngs=rngs)
      self.out = nnx.Linear(8, 1, rngs=rngs)

    def __call__(self, x):
      return self.out(jnp.tanh(self.hidden(x)))

  @nnx.jit
  def step(model, optimizer, i):
    x, y = _batch(i)
    grads = nnx.grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
    optimizer.update(model, grads)

  def fresh():
    model = MLP(nnx.Rngs(0))
    return model, nnx.Optimizer(model, amsgrad_optax.amsgrad(0.05), wrt=nnx.Param)

  model, optimizer = fresh()
  for i in range(STEPS):
    step(model, optimizer, jnp.int32(i))
  full = nnx.state((model, optimizer))

  model, optimizer = fresh()
  for i in range(STOP):
    step(model, optimizer, jnp.int32(i))
  raw = _orbax_roundtrip(nnx.state((model, optimizer)), tmp_path / "ckpt")
  model, optimizer = fresh()
  nnx.update((model, optimizer), amsgrad_optax.restore_state(nnx.state((model, optimizer)), raw))
  for i in range(STOP, STEPS):
    step(model, optimizer, jnp.int32(i))
  _assert_bit_equal(nnx.state((model, optimizer)), full)
  assert int(optimizer.opt_state[0].count[...]) == STEPS


# ---------------------------------------------------------------- mismatches


def _state(params, tx=None):
  return (tx or amsgrad_optax.amsgrad(1e-3)).init(params)


def test_rejects_a_shape_mismatch_naming_the_path():
  raw = serialization.msgpack_restore(serialization.to_bytes(_state({"w": jnp.ones((3, 2))})))
  with pytest.raises(
    ValueError, match=r"restored leaf 0/mu/w has shape \(3, 2\), but the target has \(2, 3\)"
  ):
    amsgrad_optax.restore_state(_state({"w": jnp.ones((2, 3))}), raw)


def test_rejects_a_dtype_mismatch_naming_the_path():
  # orbax, given this target, would cast float32 to bfloat16 without a word.
  raw = serialization.msgpack_restore(serialization.to_bytes(_state({"w": jnp.ones(3)})))
  target = _state({"w": jnp.ones(3, jnp.bfloat16)})
  with pytest.raises(
    ValueError, match=r"restored leaf 0/mu/w has dtype float32, but the target has bfloat16"
  ):
    amsgrad_optax.restore_state(target, raw)


def test_rejects_a_missing_leaf_naming_the_path():
  raw = serialization.msgpack_restore(serialization.to_bytes(_state({"w": jnp.ones(3)})))
  with pytest.raises(ValueError, match="restored has no leaf at 0/mu/b"):
    amsgrad_optax.restore_state(_state({"w": jnp.ones(3), "b": jnp.ones(2)}), raw)


def test_rejects_an_extra_leaf_naming_the_path():
  # flax.serialization.from_bytes, given this target, drops 'b' without a word.
  raw = serialization.msgpack_restore(
    serialization.to_bytes(_state({"w": jnp.ones(3), "b": jnp.ones(2)}))
  )
  with pytest.raises(ValueError, match="restored has a leaf at 0/mu/b that the target lacks"):
    amsgrad_optax.restore_state(_state({"w": jnp.ones(3)}), raw)


def test_rejects_another_optimizers_state():
  raw = serialization.msgpack_restore(serialization.to_bytes(optax.adam(1e-3).init(jnp.ones(3))))
  with pytest.raises(ValueError, match="restored has no leaf at 0/nu_max"):
    amsgrad_optax.restore_state(_state(jnp.ones(3)), raw)


def test_matches_leaves_by_name_not_by_order():
  # A NamedTuple flattens in field order, the dict a checkpointer returns in
  # key order: matching by position would swap z and a silently.
  class State(NamedTuple):
    z: jax.Array
    a: jax.Array

  target = State(z=jnp.zeros(2), a=jnp.zeros(2))
  back = amsgrad_optax.restore_state(
    target, {"a": np.full(2, 1.0, np.float32), "z": np.full(2, 2.0, np.float32)}
  )
  assert isinstance(back, State)
  assert isinstance(back.z, jax.Array)
  np.testing.assert_array_equal(back.z, [2.0, 2.0])
  np.testing.assert_array_equal(back.a, [1.0, 1.0])
