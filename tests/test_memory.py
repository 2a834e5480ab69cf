"""A jitted, donated AMSGrad step updates params and state in place: no full-size temporaries."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import amsgrad_optax

N = 2**20
BUFFER = N * 4  # bytes of one float32 array of N elements


def _step(tx):
  # Donated arguments are paired with outputs of the same shape in order, so
  # params and state come first and in the order the step returns them.
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  return step


def _memory(tx, params, donate):
  state = tx.init(params)
  step = jax.jit(_step(tx), donate_argnums=(0, 1) if donate else ())
  return step.lower(params, state, params).compile().memory_analysis()


PARAMS = {
  "one_leaf": {"w": jnp.zeros((N,))},
  "tree": {"w": jnp.zeros((N // 4, 3)), "b": jnp.zeros((N // 4,))},
}


@pytest.mark.parametrize("tree", sorted(PARAMS))
@pytest.mark.parametrize("convention", amsgrad_optax.CONVENTIONS)
def test_donated_step_needs_no_full_size_temporary(tree, convention):
  params = PARAMS[tree]
  tx = amsgrad_optax.amsgrad(1e-3, convention=convention, weight_decay=1e-4)
  stats = _memory(tx, params, donate=True)
  # params, mu, nu and nu_max are written over their own input buffers ...
  assert stats.alias_size_in_bytes >= 4 * BUFFER
  # ... and nothing else of their size is allocated on the way.
  assert stats.temp_size_in_bytes < BUFFER


def test_without_donation_the_outputs_are_new_buffers():
  """The control: the aliasing measured above is what donation buys."""
  stats = _memory(amsgrad_optax.amsgrad(1e-3), PARAMS["one_leaf"], donate=False)
  assert stats.alias_size_in_bytes < BUFFER
  assert stats.output_size_in_bytes >= 4 * BUFFER


# ---------------------------------------------------------------- donation
#
# A state can be donated only if no two of its leaves are one buffer:
# ``jax.jit(step, donate_argnums=...)`` refuses to "donate the same buffer
# twice". Every state a public function (or a common optax wrapper around one)
# builds is checked here: its leaves are distinct buffers, a donated jitted
# step runs, consumes its inputs and gives the undonated step's result bit for
# bit.

SMALL = {"w": jnp.ones((3, 2)), "b": jnp.zeros((2,)), "s": jnp.float32(0.5)}

TRANSFORMS = {
  "amsgrad": lambda: amsgrad_optax.amsgrad(1e-2),
  "amsgrad_wd_schedule": lambda: amsgrad_optax.amsgrad(
    optax.linear_schedule(1e-2, 1e-3, 10), weight_decay=1e-4, convention="optax"
  ),
  "amsgrad_skip_nonfinite": lambda: amsgrad_optax.amsgrad(1e-2, skip_nonfinite=True),
  "skip_nonfinite_chain": lambda: amsgrad_optax.skip_nonfinite(
    optax.chain(optax.clip_by_global_norm(1.0), amsgrad_optax.amsgrad(1e-2))
  ),
  "adamnc": lambda: amsgrad_optax.adamnc(1e-2, skip_nonfinite=True),
  "scale_by_amsgrad": lambda: amsgrad_optax.scale_by_amsgrad(convention="keras"),
  "scale_by_adamnc": amsgrad_optax.scale_by_adamnc,
  "inject_hyperparams": lambda: optax.inject_hyperparams(amsgrad_optax.amsgrad)(1e-2),
  "inject_hyperparams_skip": lambda: optax.inject_hyperparams(amsgrad_optax.amsgrad)(
    1e-2, skip_nonfinite=True
  ),
  "multisteps": lambda: optax.MultiSteps(amsgrad_optax.amsgrad(1e-2, skip_nonfinite=True), 2),
  "apply_if_finite": lambda: optax.apply_if_finite(amsgrad_optax.amsgrad(1e-2), 3),
}


def _buffers(tree) -> list[tuple[str, int]]:
  return [
    (jax.tree_util.keystr(path), x.unsafe_buffer_pointer())
    for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]
    if isinstance(x, jax.Array) and x.size
  ]


def _assert_no_shared_buffer(tree) -> None:
  seen: dict[int, str] = {}
  for path, ptr in _buffers(tree):
    assert ptr not in seen, f"{seen[ptr]} and {path} are one buffer: the state cannot be donated"
    seen[ptr] = path


def _copy(tree):
  return jax.tree.map(jnp.copy, tree)


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_state_leaves_are_distinct_buffers(name):
  tx = TRANSFORMS[name]()
  _assert_no_shared_buffer(tx.init(SMALL))
  _assert_no_shared_buffer(jax.jit(tx.init)(SMALL))


@pytest.mark.standard_promotion  # optax.MultiSteps / apply_if_finite promote implicitly
@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_donated_step_runs_and_equals_the_undonated_one(name):
  tx = TRANSFORMS[name]()
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.3), SMALL)
  plain = jax.jit(_step(tx))
  donated = jax.jit(_step(tx), donate_argnums=(0, 1))
  p_ref, s_ref = _copy(SMALL), tx.init(SMALL)
  params, state = _copy(SMALL), tx.init(SMALL)
  for _ in range(3):
    p_ref, s_ref = plain(p_ref, s_ref, grads)
    inputs = jax.tree.leaves((params, state))
    params, state = donated(params, state, grads)
    _assert_no_shared_buffer(state)
  # The params and moments were consumed (donation took place, it was not
  # ignored; XLA may keep an input it cannot alias, such as a bool flag) ...
  assert all(x.is_deleted() for x in inputs if x.size and jnp.issubdtype(x.dtype, jnp.inexact))
  # ... and the result is the undonated step's.
  for a, b in zip(jax.tree.leaves((params, state)), jax.tree.leaves((p_ref, s_ref)), strict=True):
    assert np.array_equal(np.asarray(a), np.asarray(b))


def test_flax_train_state_donated_under_jit():
  train_state = pytest.importorskip("flax.training.train_state")
  tx = amsgrad_optax.amsgrad(1e-2, skip_nonfinite=True)
  state = train_state.TrainState.create(apply_fn=None, params=_copy(SMALL), tx=tx)

  @functools.partial(jax.jit, donate_argnums=0)
  def step(state):
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.3), state.params)
    return state.apply_gradients(grads=grads)

  for _ in range(3):
    old = state
    state = step(state)
  assert old.params["w"].is_deleted()
  assert int(state.step) == 3
  assert int(state.opt_state.inner_state[0].count) == 3


def test_flax_nnx_optimizer_donated_under_nnx_jit():
  nnx = pytest.importorskip("flax.nnx")

  class Model(nnx.Module):
    def __init__(self):
      self.w = nnx.Param(jnp.ones((3, 2)))
      self.b = nnx.Param(jnp.zeros((2,)))

  model = Model()
  tx = amsgrad_optax.amsgrad(1e-2, skip_nonfinite=True)
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

  @functools.partial(nnx.jit, donate_argnums=(0, 1))
  def step(model, optimizer):
    grads = nnx.State({"w": nnx.Param(jnp.full((3, 2), 0.3)), "b": nnx.Param(jnp.full((2,), 0.3))})
    optimizer.update(model, grads)

  for _ in range(3):
    step(model, optimizer)
  assert int(optimizer.opt_state.inner_state[0].count[...]) == 3
  assert int(optimizer.opt_state.total_skipped[...]) == 0
  # The same three updates without Flax or donation.
  p, s = {"b": jnp.zeros((2,)), "w": jnp.ones((3, 2))}, None
  s = tx.init(p)
  for _ in range(3):
    u, s = tx.update({"b": jnp.full((2,), 0.3), "w": jnp.full((3, 2), 0.3)}, s, p)
    p = optax.apply_updates(p, u)
  np.testing.assert_array_equal(np.asarray(model.w[...]), np.asarray(p["w"]))


def test_a_sharded_state_is_donatable():
  # shard_state places every leaf anew: still one buffer per leaf, per device.
  if jax.device_count() < 2:
    pytest.skip("needs several devices (conftest forces 8 CPU devices)")
  mesh = jax.make_mesh((jax.device_count(),), ("data",))
  params = {"w": jnp.ones((jax.device_count(), 3)), "b": jnp.zeros((3,))}
  tx = amsgrad_optax.amsgrad(1e-2, skip_nonfinite=True)
  state = amsgrad_optax.shard_state(tx.init(params), mesh)
  params = jax.device_put(params, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  # Outputs placed as the inputs, so that every donated buffer can be reused.
  shardings = jax.tree.map(lambda x: x.sharding, (params, state))
  step = jax.jit(_step(tx), donate_argnums=(0, 1), out_shardings=shardings)
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.3), params)
  for _ in range(2):
    old = state
    params, state = step(params, state, grads)
  assert old.inner_state[0].mu["w"].is_deleted()
  assert int(state.inner_state[0].count) == 2


def test_a_restored_state_is_donatable_even_if_the_restored_tree_shared_an_array():
  tx = amsgrad_optax.amsgrad(1e-2, skip_nonfinite=True)
  state = tx.init(SMALL)
  zero = jnp.zeros([], jnp.int32)
  raw = state._replace(total_skipped=zero, consecutive_skipped=zero)
  _assert_no_shared_buffer(amsgrad_optax.restore_state(state, raw))
