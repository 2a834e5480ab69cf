"""Sharded params on eight CPU devices: the state follows the params, and the update
is communication-free; the state sharded over a data axis (ZeRO-1) gives the same run."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import amsgrad_optax

pytestmark = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 devices (conftest)")

# HLO opcodes of every cross-device collective, sync and async forms.
_COLLECTIVE = re.compile(
  r"\b(all-reduce|all-gather|reduce-scatter|collective-permute|all-to-all|"
  r"collective-broadcast|ragged-all-to-all)(-start|-done)?\("
)

MESHES = {
  "1d": ((8,), ("x",), {"w": P("x", None), "b": P("x"), "s": P()}),
  "2d": ((4, 2), ("x", "y"), {"w": P("x", "y"), "b": P("y"), "s": P()}),
}


def _explicit_mesh(shape, names):
  return jax.make_mesh(shape, names, axis_types=(AxisType.Explicit,) * len(names))


def _params(mesh, specs):
  rng = np.random.default_rng(0)
  values = {
    "w": rng.normal(size=(16, 8)).astype(np.float32),
    "b": rng.normal(size=(8,)).astype(np.float32),
    "s": rng.normal(size=(3,)).astype(np.float32),
  }
  return {k: jax.device_put(v, NamedSharding(mesh, specs[k])) for k, v in values.items()}


def _grads_like(params):
  return jax.tree.map(lambda p: jnp.cos(3.0 * p) * 0.5, params)


def _step(tx):
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  return step


def _same(a, b, ndim):
  return a.is_equivalent_to(b, ndim)


@pytest.mark.parametrize("mesh_name", sorted(MESHES))
@pytest.mark.parametrize("jitted", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("convention", ["pytorch", "optax"])
def test_init_state_has_the_params_sharding(mesh_name, jitted, convention):
  shape, names, specs = MESHES[mesh_name]
  mesh = _explicit_mesh(shape, names)
  params = _params(mesh, specs)
  tx = amsgrad_optax.amsgrad(1e-3, convention=convention, mu_dtype=jnp.bfloat16)
  with jax.set_mesh(mesh):
    state = (jax.jit(tx.init) if jitted else tx.init)(params)
  inner = state[0]
  for field in ("mu", "nu", "nu_max"):
    for k, p in params.items():
      leaf = getattr(inner, field)[k]
      assert _same(leaf.sharding, p.sharding, p.ndim), (field, k, leaf.sharding, p.sharding)
      # Each device holds only its own slice, not a replicated copy.
      assert leaf.addressable_shards[0].data.shape == p.addressable_shards[0].data.shape
  assert inner.count.sharding.is_fully_replicated


def _collectives(hlo: str) -> list[str]:
  return [m.group(0) for m in _COLLECTIVE.finditer(hlo)]


def test_collective_detector_sees_a_collective():
  """The check below means something: a reduction over a sharded axis is caught."""
  mesh = _explicit_mesh((8,), ("x",))
  x = jax.device_put(jnp.arange(16.0), NamedSharding(mesh, P("x")))
  with jax.set_mesh(mesh):
    hlo = jax.jit(jnp.sum).lower(x).compile().as_text()
  assert _collectives(hlo)


@pytest.mark.parametrize("mesh_name", sorted(MESHES))
@pytest.mark.parametrize("convention", amsgrad_optax.CONVENTIONS)
def test_sharded_update_has_no_collectives(mesh_name, convention):
  shape, names, specs = MESHES[mesh_name]
  mesh = _explicit_mesh(shape, names)
  params = _params(mesh, specs)
  tx = amsgrad_optax.amsgrad(1e-3, convention=convention, weight_decay=1e-2)
  with jax.set_mesh(mesh):
    state = tx.init(params)
    step = jax.jit(_step(tx), donate_argnums=(0, 1))
    compiled = step.lower(params, state, _grads_like(params)).compile()
    assert _collectives(compiled.as_text()) == []
    new_params, new_state = step(params, state, _grads_like(params))
  for k, p in params.items():
    assert _same(new_params[k].sharding, NamedSharding(mesh, specs[k]), p.ndim)
    assert _same(new_state[0].nu_max[k].sharding, NamedSharding(mesh, specs[k]), p.ndim)


def test_sharded_update_equals_the_single_device_update():
  shape, names, specs = MESHES["2d"]
  mesh = _explicit_mesh(shape, names)
  params = _params(mesh, specs)
  tx = amsgrad_optax.amsgrad(1e-2)
  host = jax.tree.map(np.asarray, params)
  one = jax.devices()[0]
  local = jax.device_put(host, one)
  state1 = tx.init(local)
  with jax.set_mesh(mesh):
    state8 = tx.init(params)
    step8 = jax.jit(_step(tx))
    for _ in range(3):
      params, state8 = step8(params, state8, _grads_like(params))
  step1 = jax.jit(_step(tx))
  for _ in range(3):
    local, state1 = step1(local, state1, _grads_like(local))
  for k in host:
    np.testing.assert_allclose(np.asarray(params[k]), np.asarray(local[k]), rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------- ZeRO-1


def test_state_sharding_layout():
  mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(AxisType.Auto,) * 2)
  params = {
    "w": jnp.zeros((6, 8)),  # 6 is not a multiple of 4: the next dimension is split
    "b": jnp.zeros((8,)),
    "odd": jnp.zeros((3, 5)),  # nothing divisible: replicated
    "tp": jax.device_put(jnp.zeros((8, 4)), NamedSharding(mesh, P(None, "model"))),
  }
  state = amsgrad_optax.amsgrad(1e-3).init(params)
  shardings = amsgrad_optax.state_sharding(state, mesh, "data")
  mu = shardings[0].mu
  assert mu["w"].spec == P(None, "data")
  assert mu["b"].spec == P("data")
  assert mu["odd"].spec == P(None, None)
  assert mu["tp"].spec == P("data", "model")  # keeps the model-parallel split
  assert shardings[0].count.spec == P()


def test_state_sharding_rejects_an_unknown_axis():
  mesh = jax.make_mesh((8,), ("x",))
  state = amsgrad_optax.amsgrad(1e-3).init({"w": jnp.zeros(8)})
  with pytest.raises(ValueError, match=r"axis must be one of the mesh's axes \('x',\), got 'data'"):
    amsgrad_optax.state_sharding(state, mesh, "data")


def _regression(seed=0, n=64, d=16, k=8):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d)).astype(np.float32)
  y = rng.normal(size=(n, k)).astype(np.float32)
  params = {
    "w": (rng.normal(size=(d, k)) * 0.1).astype(np.float32),
    "b": np.zeros((k,), np.float32),
  }
  return x, y, params


def _loss(params, x, y):
  return jnp.mean((x @ params["w"] + params["b"][None, :] - y) ** 2)


def _train_step(tx):
  def step(params, state, x, y):
    grads = jax.grad(_loss)(params, x, y)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  return step


@pytest.mark.parametrize("axis_type", [AxisType.Auto, AxisType.Explicit], ids=["auto", "explicit"])
def test_zero1_state_sharding_gives_the_unsharded_run(axis_type):
  x, y, params0 = _regression()
  tx = amsgrad_optax.amsgrad(1e-2)
  steps = 5

  # Reference: one device, everything local.
  one = jax.devices()[0]
  params, state = jax.device_put(params0, one), tx.init(jax.device_put(params0, one))
  step = jax.jit(_train_step(tx))
  for _ in range(steps):
    params, state = step(params, state, x, y)
  expected = jax.tree.map(np.asarray, params)

  # Data parallel on eight devices: batch split, params replicated, state split.
  mesh = jax.make_mesh((8,), ("data",), axis_types=(axis_type,))
  replicated = NamedSharding(mesh, P())
  batch = NamedSharding(mesh, P("data"))
  with jax.set_mesh(mesh):
    params = jax.device_put(params0, replicated)
    state = amsgrad_optax.shard_state(tx.init(params), mesh, "data")
    shardings = amsgrad_optax.state_sharding(state, mesh, "data")
    xs, ys = jax.device_put(x, batch), jax.device_put(y, batch)
    param_shardings = jax.tree.map(lambda _: replicated, params)
    step = jax.jit(_train_step(tx), out_shardings=(param_shardings, shardings))
    for _ in range(steps):
      params, state = step(params, state, xs, ys)

  for k in expected:
    np.testing.assert_allclose(np.asarray(params[k]), expected[k], rtol=1e-6, atol=1e-7)
    assert params[k].sharding.is_fully_replicated
  nu_max = state[0].nu_max["w"]
  assert nu_max.sharding.spec == P("data", None)
  # Each device keeps one eighth of the moments.
  assert nu_max.addressable_shards[0].data.shape == (16 // 8, 8)
