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


# ---------------------------------------------------------------- values no state can hold


def _trained(tx, steps=6, params=None):
  """A state after ``steps`` updates; |g| falls on half the coordinates (the cap is
  active there) and rises on the others (it is not)."""
  params = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3)} if params is None else params
  falling = jnp.array([[True, False, True], [False, True, False]])
  state = tx.init(params)
  for i in range(steps):
    scale = jnp.where(falling, 4.0 if i == 0 else 1.0 / (i + 1), float(i + 1))
    grads = jax.tree.map(lambda p, s=scale: s * (p + 0.3), params)
    _, state = tx.update(grads, state, params)
  return params, state


def _raw(state):
  return serialization.msgpack_restore(serialization.to_bytes(state))


def _set(raw, path, fn):
  node = raw
  for key in path[:-1]:
    node = node[key]
  node[path[-1]] = fn(np.array(node[path[-1]]))


CORRUPT = {
  "negative_count": (("0", "count"), lambda x: np.int32(-5), r"0/count is -5, but a step count"),
  "negative_nu": (("0", "nu", "w"), lambda x: -x, r"0/nu/w is -.* never negative"),
  "nu_max_below_nu": (("0", "nu_max", "w"), lambda x: x * 0.5, r"0/nu_max/w is below 0/nu/w"),
  "nan_mu": (("0", "mu", "w"), lambda x: x * np.nan, r"0/mu/w is not finite \(nan at index"),
  "inf_nu_max": (("0", "nu_max", "w"), lambda x: x + np.inf, r"0/nu_max/w is not finite \(inf"),
}


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_restore_state_rejects_values_no_state_can_hold(case):
  tx = amsgrad_optax.amsgrad(1e-2)
  params, state = _trained(tx)
  raw = _raw(state)
  path, fn, message = CORRUPT[case]
  _set(raw, path, fn)
  with pytest.raises(ValueError, match=message):
    amsgrad_optax.restore_state(tx.init(params), raw)
  # The escape hatch restores it as it is.
  back = amsgrad_optax.restore_state(tx.init(params), raw, check_values=False)
  for a, b in zip(jax.tree.leaves(_raw(back)), jax.tree.leaves(raw), strict=True):
    assert np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True)


def test_restore_state_rejects_impossible_skip_counters():
  tx = amsgrad_optax.amsgrad(1e-2, skip_nonfinite=True)
  params, state = _trained(tx)
  raw = _raw(state)
  raw["total_skipped"] = np.int32(-1)
  with pytest.raises(ValueError, match="total_skipped is -1, but a skip counter is never negative"):
    amsgrad_optax.restore_state(tx.init(params), raw)
  raw["total_skipped"], raw["consecutive_skipped"] = np.int32(1), np.int32(2)
  with pytest.raises(ValueError, match="consecutive_skipped is 2, above total_skipped"):
    amsgrad_optax.restore_state(tx.init(params), raw)


@pytest.mark.standard_promotion  # optax.amsgrad's bias correction
@pytest.mark.parametrize(
  ("convention", "nu_dtype"),
  [(c, d) for c in amsgrad_optax.CONVENTIONS for d in (None, jnp.bfloat16)]
  + [("optax.amsgrad", None)],
)
def test_every_trained_state_passes_and_nu_max_is_never_below_nu(convention, nu_dtype):
  # The invariant the check relies on holds exactly, in every convention and
  # dtype, including where the cap is active (nu_max > nu) and is not.
  if convention == "optax.amsgrad":
    tx = optax.amsgrad(1e-2, b2=0.9)
  else:
    tx = amsgrad_optax.amsgrad(1e-2, b2=0.9, convention=convention, nu_dtype=nu_dtype)
  params, state = _trained(tx, steps=12)
  amsgrad_optax.check_state_values(state)
  amsgrad_optax.restore_state(tx.init(params), _raw(state))
  nu, nu_max = (
    np.asarray(state[0].nu["w"], np.float64),
    np.asarray(state[0].nu_max["w"], np.float64),
  )
  assert np.all(nu_max >= nu)
  if convention in ("pytorch", "keras", "paper"):
    assert np.any(nu_max > nu) and np.any(nu_max == nu)


# ---------------------------------------------------------------- save_checkpoint / restore_checkpoint


def test_checkpoint_resume_is_bit_identical(tmp_path):
  tx = amsgrad_optax.amsgrad(
    amsgrad_optax.inverse_sqrt_schedule(0.05), weight_decay=1e-3, skip_nonfinite=True
  )
  step = _make_step(tx)
  p0 = _params()
  full_params, full_state = _train(step, p0, tx.init(p0), 0, STEPS)
  params, state = _train(step, p0, tx.init(p0), 0, STOP)
  amsgrad_optax.save_checkpoint(tmp_path / "ckpt", {"params": params, "opt_state": state}, tx)
  target = {"params": _params(), "opt_state": tx.init(_params())}
  back = amsgrad_optax.restore_checkpoint(tmp_path / "ckpt", target, tx)
  params, state = _train(step, back["params"], back["opt_state"], STOP, STEPS)
  _assert_bit_equal(params, full_params)
  _assert_bit_equal(state, full_state)
  saved = amsgrad_optax.read_checkpoint_config(tmp_path / "ckpt")
  assert saved == {
    "convention": "pytorch",
    "learning_rate": "schedule",
    "b1": 0.9,
    "b2": 0.999,
    "eps": 1e-8,
    "eps_root": 0.0,
    "b1_decay": 1.0,
    "weight_decay": 1e-3,
  }


def test_restore_checkpoint_refuses_an_optax_state_into_pytorch(tmp_path):
  # The migration trap of issue 13: optax's nu_max is bias-corrected, and
  # restored into "pytorch" it gave 10x smaller steps without a word.
  optax_tx = amsgrad_optax.amsgrad(1e-3, convention="optax")
  params, state = _trained(optax_tx)
  amsgrad_optax.save_checkpoint(tmp_path / "ckpt", state, optax_tx)
  torch_tx = amsgrad_optax.amsgrad(1e-3)
  with pytest.raises(ValueError, match="holds a convention='optax' state and this optimizer is"):
    amsgrad_optax.restore_checkpoint(tmp_path / "ckpt", torch_tx.init(params), torch_tx)
  with pytest.raises(ValueError, match="holds a convention='optax' state"):
    amsgrad_optax.restore_checkpoint(
      tmp_path / "ckpt", torch_tx.init(params), torch_tx, allow_changes=("convention",)
    )
  # Into the optax convention it restores.
  back = amsgrad_optax.restore_checkpoint(tmp_path / "ckpt", optax_tx.init(params), optax_tx)
  _assert_bit_equal(back, state)


def test_restore_checkpoint_refuses_other_hyperparameters_unless_allowed(tmp_path):
  tx = amsgrad_optax.amsgrad(1e-3, b2=0.99, convention="keras")
  params, state = _trained(tx)
  amsgrad_optax.save_checkpoint(tmp_path / "ckpt", state, tx)
  other = amsgrad_optax.amsgrad(1e-4, b2=0.999, convention="keras")
  with pytest.raises(
    ValueError,
    match=r"learning_rate is 0\.001 there, 0\.0001 here; b2 is 0\.99 there, 0\.999 here\. "
    r".*allow_changes=\('learning_rate', 'b2'\)",
  ):
    amsgrad_optax.restore_checkpoint(tmp_path / "ckpt", other.init(params), other)
  finetune = amsgrad_optax.amsgrad(1e-4, b2=0.99, convention="keras")
  back = amsgrad_optax.restore_checkpoint(
    tmp_path / "ckpt", finetune.init(params), finetune, allow_changes=("learning_rate",)
  )
  _assert_bit_equal(back, state)
  # pytorch, keras and paper states mean the same: the change may be allowed.
  torch_tx = amsgrad_optax.amsgrad(1e-3, b2=0.99)
  with pytest.raises(ValueError, match="convention is 'keras' there, 'pytorch' here"):
    amsgrad_optax.restore_checkpoint(tmp_path / "ckpt", torch_tx.init(params), torch_tx)
  amsgrad_optax.restore_checkpoint(
    tmp_path / "ckpt", torch_tx.init(params), torch_tx, allow_changes=("convention",)
  )
  # A config given by hand is compared like a recorded one; float32 values agree.
  config = amsgrad_optax.AmsgradConfig("keras", jnp.float32(1e-3), b2=jnp.float32(0.99))
  amsgrad_optax.restore_checkpoint(tmp_path / "ckpt", tx.init(params), config)
  with pytest.raises(ValueError, match="allow_changes names \\['lr'\\]"):
    amsgrad_optax.restore_checkpoint(tmp_path / "ckpt", tx.init(params), tx, allow_changes=("lr",))


def test_restore_checkpoint_refuses_a_checkpoint_without_a_record(tmp_path):
  tx = amsgrad_optax.amsgrad(1e-3)
  params, state = _trained(tx)
  _orbax_roundtrip(state, tmp_path / "plain")
  with pytest.raises(ValueError, match="was not written by amsgrad_optax.save_checkpoint"):
    amsgrad_optax.restore_checkpoint(tmp_path / "plain", tx.init(params), tx)


@pytest.mark.standard_promotion  # optax.amsgrad's bias correction
def test_save_checkpoint_refuses_an_optax_state_described_as_pytorch(tmp_path):
  params, state = _trained(optax.amsgrad(1e-3))
  with pytest.raises(ValueError, match="holds an optax.ScaleByAmsgradState"):
    amsgrad_optax.save_checkpoint(
      tmp_path / "c", state, amsgrad_optax.AmsgradConfig("pytorch", 1e-3)
    )
  with pytest.raises(ValueError, match="carries no AmsgradConfig"):
    amsgrad_optax.save_checkpoint(tmp_path / "c", state, optax.amsgrad(1e-3))
  amsgrad_optax.save_checkpoint(tmp_path / "c", state, amsgrad_optax.AmsgradConfig("optax", 1e-3))


# ---------------------------------------------------------------- migrating from optax.amsgrad


@pytest.mark.standard_promotion  # optax.amsgrad's bias correction
def test_an_optax_amsgrad_checkpoint_resumes_bit_exactly_under_the_optax_convention(tmp_path):
  theirs = optax.amsgrad(0.05)
  ours = amsgrad_optax.amsgrad(0.05, convention="optax")
  p0 = _params()
  full_params, _ = _train(_make_step(theirs), p0, theirs.init(p0), 0, STEPS)
  params, state = _train(_make_step(theirs), p0, theirs.init(p0), 0, STOP)
  raw = _orbax_roundtrip({"params": params, "opt_state": state}, tmp_path / "ckpt")
  back = amsgrad_optax.restore_state({"params": _params(), "opt_state": ours.init(_params())}, raw)
  assert isinstance(back["opt_state"][0], amsgrad_optax.ScaleByAmsgradState)
  params, _ = _train(_make_step(ours), back["params"], back["opt_state"], STOP, STEPS)
  _assert_bit_equal(params, full_params)


def test_optax_nu_max_times_c2_bounds_the_pytorch_nu_max():
  # What docs/checkpoints.md states about converting an optax state to the
  # raw-maximum conventions: with c2 = 1 - b2^t, the true pytorch nu_max (the
  # same gradients run under "pytorch") lies in [nu, nu_max_optax * c2], and
  # equals the upper end where optax's cap is inactive.
  b2, t = 0.999, 12
  params, opt = _trained(amsgrad_optax.amsgrad(1e-2, b2=b2, convention="optax"), steps=t)
  _, pt = _trained(amsgrad_optax.amsgrad(1e-2, b2=b2), steps=t)
  nu = np.asarray(opt[0].nu["w"], np.float64)
  np.testing.assert_array_equal(nu, np.asarray(pt[0].nu["w"]))  # nu does not depend on it
  # c2 as the "optax" convention (and optax) evaluates it: a float32 power.
  _, c2 = amsgrad_optax.get_convention("optax").bias_corrections(0.9, b2, opt[0].count)
  converted = np.asarray(opt[0].nu_max["w"], np.float64) * float(c2)
  true = np.asarray(pt[0].nu_max["w"], np.float64)
  assert np.all(nu <= true) and np.all(true <= converted * (1 + 1e-6))
  # Inactive: nu_max is this step's nu / c2 (up to c2's float32 rounding).
  inactive = np.isclose(converted, nu, rtol=1e-6, atol=0)
  assert np.any(inactive) and np.any(~inactive)
  np.testing.assert_allclose(true[inactive], converted[inactive], rtol=1e-6)
  assert np.all(true[~inactive] < converted[~inactive] * (1 - 1e-3))  # not exact there
