"""fused_amsgrad: the one-pass CPU kernel against a float64 loop and the XLA step; its fallbacks."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import amsgrad_optax
from amsgrad_optax import _fused
from tests.reference import numpy_amsgrad as ref

STEPS = 120
SHAPES = {"w": (3, 40), "b": (7,), "empty": (0,)}


def _kernel_or_skip():
  status = _fused.kernel_status()
  if not status["ok"]:
    pytest.skip(f"fused kernel unavailable here: {status['reason']}")


def _grads(seed):
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(STEPS):
    g = {k: rng.normal(size=s) * 10.0 ** rng.uniform(-2, 1, size=s) for k, s in SHAPES.items()}
    out.append(g)
  for t in range(30):
    out[t]["b"][0] = 0.0  # a coordinate that stays silent for a while
  for t in range(0, STEPS, 17):
    out[t]["w"] = out[t]["w"] * 30.0  # spikes: the max must hold them
  return [{k: v.astype(np.float32) for k, v in g.items()} for g in out]


def _copy(tree):
  return jax.tree.map(lambda x: jnp.array(x, copy=True), tree)


def _run(step, init, grads, params=None):
  params = _copy(params or {k: jnp.zeros(s, jnp.float32) for k, s in SHAPES.items()})
  state = init(params)
  for g in grads:
    params, state = step(params, state, g)
  return params, state


def _plain_step(tx):
  @jax.jit
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  return step


CASES = [(0.9, 0.999, 1e-8, 0.0), (0.0, 0.9, 0.0, 1e-6), (0.5, 0.99, 0.0, 0.0)]


@pytest.mark.parametrize("convention", amsgrad_optax.CONVENTIONS)
@pytest.mark.parametrize("b1,b2,eps,eps_root", CASES)
def test_kernel_matches_float64_loop(convention, b1, b2, eps, eps_root):
  _kernel_or_skip()
  grads = _grads(0)
  opt = amsgrad_optax.fused_amsgrad(0.01, b1, b2, eps, eps_root, convention=convention)
  params, state = _run(opt.step, opt.init, grads)
  for k in SHAPES:
    g = np.stack([x[k] for x in grads])
    # From zero params, p_T is the sum of the updates (a float32 sum of STEPS terms).
    want = ref.amsgrad(g, 0.01, b1, b2, eps, eps_root, convention).sum(axis=0)
    scale = np.abs(want).max(initial=0.0)
    np.testing.assert_allclose(params[k], want, rtol=5e-5, atol=1e-6 * scale, err_msg=k)
  assert int(state[0].count) == STEPS


@pytest.mark.parametrize("convention", amsgrad_optax.CONVENTIONS)
def test_kernel_state_and_params_agree_with_the_xla_step(convention):
  """The moments are the XLA step's to the ulp; params differ by rounding only."""
  _kernel_or_skip()
  grads = _grads(1)
  rng = np.random.default_rng(2)
  p0 = {k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}
  opt = amsgrad_optax.fused_amsgrad(0.01, convention=convention)
  p_k, s_k = _run(opt.step, opt.init, grads, p0)
  p_x, s_x = _run(_plain_step(opt.tx), opt.tx.init, grads, p0)
  assert jax.tree.structure(s_k) == jax.tree.structure(s_x)
  for name in ("mu", "nu", "nu_max"):
    for k in SHAPES:
      np.testing.assert_array_max_ulp(getattr(s_k[0], name)[k], getattr(s_x[0], name)[k], 2)
  for k in SHAPES:
    np.testing.assert_allclose(p_k[k], p_x[k], rtol=1e-6, atol=1e-7)


def test_first_step_is_lr_times_sign_and_zero_for_a_zero_gradient_without_eps():
  _kernel_or_skip()
  opt = amsgrad_optax.fused_amsgrad(0.5, eps=0.0)
  params = {"w": jnp.zeros(4)}
  state = opt.init(params)
  params, state = opt.step(params, state, {"w": jnp.array([2.0, -3.0, 0.0, 1e-3])})
  np.testing.assert_allclose(params["w"], [-0.5, 0.5, 0.0, -0.5], rtol=1e-6, atol=0)


def test_underflowing_gradients_step_as_the_xla_step_does():
  """g^2 below float32's subnormals: whatever the CPU's flush mode does, both paths agree."""
  _kernel_or_skip()
  g = {"w": jnp.array([1e-20, -1e-22, 1e-30, 3e-19, 0.0])}
  fused = amsgrad_optax.fused_amsgrad(0.5, eps=0.0)
  plain = amsgrad_optax.fused_amsgrad(0.5, eps=0.0, use_kernel=False)
  p = {"w": jnp.zeros(5)}
  got, _ = fused.step(_copy(p), fused.init(p), g)
  want, _ = plain.step(_copy(p), plain.init(p), g)
  np.testing.assert_array_equal(got["w"], want["w"])


def test_use_kernel_false_is_the_xla_step_bit_for_bit():
  grads = _grads(3)
  opt = amsgrad_optax.fused_amsgrad(0.01, use_kernel=False)
  got = _run(opt.step, opt.init, grads)
  want = _run(_plain_step(opt.tx), opt.tx.init, grads)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
  "dtype,flatten,state_bits",
  [
    (jnp.bfloat16, False, None),
    (jnp.float16, False, None),
    (jnp.bfloat16, True, None),
    (jnp.float32, True, 8),  # flatten=True with 8-bit state
  ],
)
def test_trees_the_kernels_do_not_take_run_the_xla_step_bit_for_bit(dtype, flatten, state_bits):
  opt = amsgrad_optax.fused_amsgrad(0.01, flatten=flatten, state_bits=state_bits)
  grads = [jax.tree.map(lambda x: x.astype(dtype), g) for g in _grads(4)[:10]]
  p0 = {k: jnp.ones(s, dtype) for k, s in SHAPES.items()}
  got = _run(opt.step, opt.init, grads, p0)
  want = _run(_plain_step(opt.tx), opt.tx.init, grads, p0)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_array_equal(a, b)


def test_unavailable_kernel_falls_back_and_use_kernel_true_raises(monkeypatch):
  monkeypatch.setattr(_fused, "_status", {"ok": False, "reason": "test: no compiler", "path": None})
  grads = _grads(5)[:5]
  opt = amsgrad_optax.fused_amsgrad(0.01)
  got = _run(opt.step, opt.init, grads)
  want = _run(_plain_step(opt.tx), opt.tx.init, grads)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(RuntimeError, match="test: no compiler"):
    amsgrad_optax.fused_amsgrad(0.01, use_kernel=True)


def test_kernel_switched_off_by_environment(monkeypatch):
  monkeypatch.setenv("AMSGRAD_OPTAX_FUSED_KERNEL", "0")
  status = _fused._load()
  assert not status["ok"] and "AMSGRAD_OPTAX_FUSED_KERNEL=0" in status["reason"]


def test_missing_compiler_is_reported_not_raised(monkeypatch, tmp_path):
  monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
  monkeypatch.setenv("AMSGRAD_OPTAX_CACHE", str(tmp_path))
  status = _fused._load()
  assert not status["ok"] and "compiler" in status["reason"]


def test_gradient_through_the_step_is_the_xla_steps():
  """jax.grad through the fused step differentiates the XLA step (the kernel has no rule)."""
  opt = amsgrad_optax.fused_amsgrad(0.1)
  params = {"w": jnp.array([0.5, -1.0, 2.0])}
  state = opt.init(params)

  def loss(step, g):
    new, _ = step(_copy(params), _copy(state), {"w": g})
    return jnp.sum(new["w"] ** 2)

  g = jnp.array([0.3, -0.2, 0.0])
  got = jax.grad(lambda g: loss(opt.step.fused, g))(g)
  want = jax.grad(lambda g: loss(_plain_step(opt.tx), g))(g)
  np.testing.assert_array_equal(got, want)


def test_vmap_runs_the_kernel_per_example():
  _kernel_or_skip()
  opt = amsgrad_optax.fused_amsgrad(0.1)
  rng = np.random.default_rng(6)
  p = jnp.asarray(rng.normal(size=(3, 5)).astype(np.float32))
  g = jnp.asarray(rng.normal(size=(3, 5)).astype(np.float32))
  state = jax.vmap(opt.init)({"w": p})
  got, _ = jax.vmap(opt.step.fused)(_copy({"w": p}), state, {"w": g})  # donates the copies
  for i in range(3):
    p_i = {"w": p[i]}
    want, _ = opt.step(p_i, opt.init(p_i), {"w": g[i]})
    np.testing.assert_array_equal(got["w"][i], want["w"])


@pytest.mark.parametrize("name", ["learning_rate", "b1", "eps"])
def test_hyperparameters_must_be_numbers(name):
  with pytest.raises(TypeError, match=f"{name} must be a Python number"):
    amsgrad_optax.fused_amsgrad(**{name: jnp.float32(0.1)})


def test_invalid_values_raise_as_amsgrad_does():
  with pytest.raises(ValueError, match="b1"):
    amsgrad_optax.fused_amsgrad(0.1, b1=1.5)
  with pytest.raises(ValueError, match="convention"):
    amsgrad_optax.fused_amsgrad(0.1, convention="adam")
  with pytest.raises(TypeError, match="use_kernel"):
    amsgrad_optax.fused_amsgrad(0.1, use_kernel="yes")
  with pytest.raises(TypeError, match="use_kernel"):
    amsgrad_optax.fused_amsgrad(0.1, use_kernel=1)


@pytest.mark.skipif(jax.device_count() < 2, reason="needs several devices (conftest makes 8)")
@pytest.mark.parametrize("flatten", [False, True])
def test_arrays_sharded_over_devices_take_the_xla_step(flatten):
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ("d",))
  spread = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("d"))
  n = 8 * jax.device_count()
  params = {"w": jax.device_put(jnp.linspace(-1.0, 1.0, n), spread)}
  grads = {"w": jax.device_put(jnp.linspace(0.5, -0.5, n), spread)}
  assert not _fused._on_one_device(params)
  assert _fused._on_one_device({"w": jnp.ones(3)})
  # Host values (NumPy gradients, Python numbers) are put on one device by jit: the kernel
  # takes them (this file's steps feed NumPy gradients under conftest's 8 devices).
  assert _fused._on_one_device(({"w": np.ones(3, np.float32)}, np.float32(1.0), 2.0))
  opt = amsgrad_optax.fused_amsgrad(0.1, flatten=flatten)
  got, state = opt.step(_copy(params), opt.init(params), grads)
  want, _ = _plain_step(opt.tx)(_copy(params), opt.tx.init(params), grads)
  np.testing.assert_array_equal(got["w"], want["w"])
  assert got["w"].sharding.is_equivalent_to(spread, 1)


def test_the_jitted_kernel_path_loads_the_kernel_itself(monkeypatch):
  """step.fused called before any step (a fresh process) builds and registers the kernel."""
  _kernel_or_skip()
  monkeypatch.setattr(_fused, "_status", {})
  opt = amsgrad_optax.fused_amsgrad(0.1)
  p = {"w": jnp.ones(4)}
  got, _ = opt.step.fused(_copy(p), opt.init(p), {"w": jnp.ones(4)})
  np.testing.assert_allclose(got["w"], 0.9, rtol=1e-6)
  assert _fused._status["ok"]


# ---------------------------------------------------------------- 8-bit state

SHAPES_8BIT = {"w": (64, 256), "v": (1000,), "o": (256, 10), "b": (10,)}  # o: (25, 10) tiles


def _grads_8bit(seed, steps=40, scale=1.0):
  rng = np.random.default_rng(seed)
  return [
    {k: (rng.standard_t(1.5, size=s) * scale).astype(np.float32) for k, s in SHAPES_8BIT.items()}
    for _ in range(steps)
  ]


def _assert_states_equal(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("convention", amsgrad_optax.CONVENTIONS)
def test_8bit_kernel_state_is_the_xla_steps_bit_for_bit(convention):
  """Codes and scales equal the XLA step's; params to an ulp a step (the XLA step's
  own rounding of the update), over 40 heavy-tailed steps, 1-D and 2-D tiles and a
  leaf small enough to stay float32 in one tree."""
  _kernel_or_skip()
  opt = amsgrad_optax.fused_amsgrad(0.01, convention=convention, state_bits=8)
  params = {k: jnp.ones(s, jnp.float32) for k, s in SHAPES_8BIT.items()}
  grads = _grads_8bit(11)
  p_k, s_k = _run(opt.step.fused, opt.init, grads, params)
  p_x, s_x = _run(opt.step.plain, opt.init, grads, params)
  assert isinstance(s_k[0].nu_max["o"], amsgrad_optax.QuantizedArray)
  assert not isinstance(s_k[0].nu_max["b"], amsgrad_optax.QuantizedArray)
  _assert_states_equal(
    {k: v for k, v in s_k[0].nu_max.items() if k != "b"},
    {k: v for k, v in s_x[0].nu_max.items() if k != "b"},
  )
  for f in ("mu", "nu", "nu_max"):
    for k in ("w", "v", "o"):
      _assert_states_equal(getattr(s_k[0], f)[k], getattr(s_x[0], f)[k])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-6, atol=1e-7), p_k, p_x)


@pytest.mark.parametrize("case", ["nan", "inf", "square overflows", "subnormal", "zeros"])
def test_8bit_kernel_non_finite_and_tiny_gradients_leave_the_xla_steps_state(case):
  _kernel_or_skip()
  opt = amsgrad_optax.fused_amsgrad(0.01, state_bits=8)
  grads = _grads_8bit(
    12, steps=6, scale=1e-42 if case == "subnormal" else 0.0 if case == "zeros" else 1.0
  )
  if case in ("nan", "inf"):
    grads[3]["v"][5] = np.nan if case == "nan" else np.inf
  elif case == "square overflows":
    grads[2]["w"][3, 7] = 3e19
  params = {k: jnp.ones(s, jnp.float32) for k, s in SHAPES_8BIT.items()}
  _, s_k = _run(opt.step.fused, opt.init, grads, params)
  _, s_x = _run(opt.step.plain, opt.init, grads, params)
  _assert_states_equal(s_k, s_x)


def test_8bit_kernel_vmap_runs_per_example():
  _kernel_or_skip()
  opt = amsgrad_optax.fused_amsgrad(0.1, state_bits=8)
  rng = np.random.default_rng(7)
  p = jnp.asarray(rng.normal(size=(2, 512)).astype(np.float32))
  g = jnp.asarray(rng.normal(size=(2, 512)).astype(np.float32))
  state = jax.vmap(opt.init)({"w": p})
  got, got_state = jax.vmap(opt.step.fused)(_copy({"w": p}), state, {"w": g})
  for i in range(2):
    p_i = {"w": p[i]}
    want, want_state = opt.step.plain(_copy(p_i), opt.init(p_i), {"w": g[i]})
    np.testing.assert_allclose(
      got["w"][i], want["w"], rtol=2e-6, atol=1e-7
    )  # an ulp of the 0.1-sized update
    _assert_states_equal(
      jax.tree.map(lambda x, i=i: x[i], got_state[0].nu_max), want_state[0].nu_max
    )


def test_float32_kernel_keeps_a_nan_in_nu_max_as_the_xla_step_does():
  """A NaN gradient makes that coordinate's nu_max NaN on both paths (the kernel's
  maximum propagates NaN as jnp.maximum does)."""
  _kernel_or_skip()
  opt = amsgrad_optax.fused_amsgrad(0.01)
  g = {"w": jnp.array([1.0, np.nan, -2.0], jnp.float32)}
  _, s_k = opt.step.fused({"w": jnp.ones(3)}, opt.init({"w": jnp.ones(3)}), g)
  _, s_x = opt.step.plain({"w": jnp.ones(3)}, opt.init({"w": jnp.ones(3)}), g)
  assert np.isnan(s_k[0].nu_max["w"][1])
  _assert_states_equal(s_k, s_x)


def test_gradient_through_the_8bit_step_is_the_xla_steps():
  """jax.grad through the fused 8-bit step (integer codes in its state) differentiates the
  XLA step, bit for bit with the jitted one."""
  _kernel_or_skip()
  opt = amsgrad_optax.fused_amsgrad(0.1, state_bits=8)
  params = {"w": jnp.linspace(-1.0, 1.0, 512)}
  _, state = opt.step.plain(_copy(params), opt.init(params), {"w": jnp.cos(jnp.arange(512.0))})

  def loss(step, g):
    new, _ = step(_copy(params), _copy(state), {"w": g})
    return jnp.sum(new["w"] ** 2)

  g = jnp.sin(jnp.arange(512.0))
  got = jax.grad(lambda g: loss(opt.step.fused, g))(g)
  want = jax.grad(lambda g: loss(_plain_step(opt.tx), g))(g)
  assert float(jnp.max(jnp.abs(want))) > 0.01
  np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------- flattened state


def _flat(tree):
  return np.concatenate([np.asarray(x).reshape(-1) for x in jax.tree.leaves(tree)])


@pytest.mark.parametrize("convention", amsgrad_optax.CONVENTIONS)
def test_flat_kernel_is_the_per_leaf_kernel_bit_for_bit(convention):
  """flatten=True runs the same arithmetic on the same values: params equal the per-leaf
  kernel's bit for bit, each flat moment is the per-leaf moments laid end to end, and both
  follow the float64 loop."""
  _kernel_or_skip()
  grads = _grads(7)
  tree = amsgrad_optax.fused_amsgrad(0.01, convention=convention)
  flat = amsgrad_optax.fused_amsgrad(0.01, convention=convention, flatten=True)
  p_t, s_t = _run(tree.step, tree.init, grads)
  p_f, s_f = _run(flat.step, flat.init, grads)
  for k in SHAPES:
    np.testing.assert_array_equal(p_f[k], p_t[k])
  for name in ("mu", "nu", "nu_max"):
    assert getattr(s_f[0], name).shape == (sum(int(np.prod(s)) for s in SHAPES.values()),)
    np.testing.assert_array_equal(getattr(s_f[0], name), _flat(getattr(s_t[0], name)))
  assert int(s_f[0].count) == STEPS
  for k in SHAPES:
    g = np.stack([x[k] for x in grads])
    want = ref.amsgrad(g, 0.01, 0.9, 0.999, 1e-8, 0.0, convention).sum(axis=0)
    np.testing.assert_allclose(
      p_f[k], want, rtol=5e-5, atol=1e-6 * np.abs(want).max(initial=0.0), err_msg=k
    )


@pytest.mark.parametrize("convention", amsgrad_optax.CONVENTIONS)
def test_flat_state_is_optax_flattens_and_agrees_with_its_xla_step(convention):
  """The state is optax.flatten's; the moments are the per-leaf XLA step's laid end to end
  (2 ulps: optax.flatten's own program fuses without multiply-adds, which can move a
  cancelling moment further), and the params follow optax.flatten's XLA step."""
  _kernel_or_skip()
  grads = _grads(8)
  rng = np.random.default_rng(9)
  p0 = {k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}
  opt = amsgrad_optax.fused_amsgrad(0.01, convention=convention, flatten=True)
  reference = optax.flatten(amsgrad_optax.amsgrad(0.01, convention=convention))
  assert jax.tree.structure(opt.init(p0)) == jax.tree.structure(reference.init(p0))
  per_leaf = amsgrad_optax.amsgrad(0.01, convention=convention)
  p_k, s_k = _run(opt.step, opt.init, grads, p0)
  p_x, _ = _run(_plain_step(reference), reference.init, grads, p0)
  _, s_l = _run(_plain_step(per_leaf), per_leaf.init, grads, p0)
  for name in ("mu", "nu", "nu_max"):
    np.testing.assert_array_max_ulp(getattr(s_k[0], name), _flat(getattr(s_l[0], name)), 2)
  for k in SHAPES:
    np.testing.assert_allclose(p_k[k], p_x[k], rtol=1e-6, atol=1e-7)


def test_flat_step_rejects_a_per_leaf_state_and_other_gradients():
  _kernel_or_skip()
  flat = amsgrad_optax.fused_amsgrad(0.01, flatten=True)
  tree = amsgrad_optax.fused_amsgrad(0.01)
  p = {"w": jnp.ones(3), "b": jnp.ones(2)}
  g = {"w": jnp.ones(3), "b": jnp.ones(2)}
  with pytest.raises(ValueError, match=r"state.mu must be one 1-D array of the params' 5"):
    flat.step(_copy(p), tree.init(p), g)
  with pytest.raises(ValueError, match="tree structure"):
    flat.step(_copy(p), flat.init(p), {"w": jnp.ones(3)})
  with pytest.raises(ValueError, match="shapes"):
    flat.step(_copy(p), flat.init(p), {"w": jnp.ones(3), "b": jnp.ones(3)})
  with pytest.raises(TypeError, match="flatten must be True or False"):
    amsgrad_optax.fused_amsgrad(0.01, flatten=1)


def test_flat_gradient_and_vmap():
  """jax.grad through the flat kernel step is the XLA step's; under vmap it runs per example."""
  _kernel_or_skip()
  opt = amsgrad_optax.fused_amsgrad(0.1, flatten=True)
  params = {"w": jnp.array([0.5, -1.0, 2.0]), "b": jnp.array([0.25])}
  state = opt.init(params)

  def loss(step, g):
    new, _ = step(_copy(params), _copy(state), {"w": g, "b": g[:1]})
    return jnp.sum(new["w"] ** 2) + jnp.sum(new["b"] ** 3)

  g = jnp.array([0.3, -0.2, 0.0])
  got = jax.grad(lambda g: loss(opt.step.fused, g))(g)
  want = jax.grad(lambda g: loss(_plain_step(opt.tx), g))(g)
  np.testing.assert_array_equal(got, want)

  rng = np.random.default_rng(11)
  p = {"w": jnp.asarray(rng.normal(size=(3, 5)).astype(np.float32)), "b": jnp.ones((3, 2))}
  gs = {"w": jnp.asarray(rng.normal(size=(3, 5)).astype(np.float32)), "b": jnp.ones((3, 2))}
  out, out_state = jax.vmap(opt.step.fused)(_copy(p), jax.vmap(opt.init)(p), gs)
  for i in range(3):
    p_i = jax.tree.map(lambda x, i=i: x[i], p)
    want_p, want_state = opt.step.plain(
      _copy(p_i), opt.init(p_i), jax.tree.map(lambda x, i=i: x[i], gs)
    )
    for k in p:
      np.testing.assert_allclose(out[k][i], want_p[k], rtol=2e-6, atol=1e-7)  # an ulp of the update
    np.testing.assert_array_max_ulp(out_state[0].nu_max[i], want_state[0].nu_max, 2)


def test_flatten_state_and_back_are_exact_and_training_can_switch_layouts():
  """flatten_state/unflatten_state reshape and concatenate only: round trips are bit for bit,
  the flat layout is optax.flatten's, and a run that switches from the per-leaf kernel to the
  flat one mid-way equals one that never switched."""
  _kernel_or_skip()
  grads = _grads(13)[:40]
  rng = np.random.default_rng(14)
  p0 = {k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}
  tree = amsgrad_optax.fused_amsgrad(0.01)
  flat = amsgrad_optax.fused_amsgrad(0.01, flatten=True)
  p_t, s_t = _run(tree.step, tree.init, grads[:25], p0)
  s_f = amsgrad_optax.flatten_state(s_t)
  assert jax.tree.structure(s_f) == jax.tree.structure(flat.init(p0))
  for name in ("mu", "nu", "nu_max"):
    np.testing.assert_array_equal(getattr(s_f[0], name), _flat(getattr(s_t[0], name)))
  back = amsgrad_optax.unflatten_state(s_f, p_t)
  assert jax.tree.structure(back) == jax.tree.structure(s_t)
  _assert_states_equal(back, s_t)
  # Switch layouts after 25 steps; compare with 40 steps per leaf.
  p_switch, s_switch = _copy(p_t), s_f
  for g in grads[25:]:
    p_switch, s_switch = flat.step(p_switch, s_switch, g)
  p_all, s_all = _run(tree.step, tree.init, grads, p0)
  for k in SHAPES:
    np.testing.assert_array_equal(p_switch[k], p_all[k])
  _assert_states_equal(amsgrad_optax.unflatten_state(s_switch, p_all), s_all)


def test_state_layout_conversions_refuse_what_they_cannot_convert():
  params = {"w": jnp.ones(3), "b": jnp.ones(2)}
  flat_state = amsgrad_optax.fused_amsgrad(0.1, flatten=True).init(params)
  with pytest.raises(ValueError, match="state.mu must be one 1-D array of the params' 4"):
    amsgrad_optax.unflatten_state(flat_state, {"w": jnp.ones(4)})
  with pytest.raises(ValueError, match="8-bit moments"):
    amsgrad_optax.flatten_state(amsgrad_optax.amsgrad(0.1, state_bits=8).init({"w": jnp.ones(512)}))
  with pytest.raises(TypeError, match="state of amsgrad or fused_amsgrad"):
    amsgrad_optax.flatten_state(optax.adam(0.1).init(params))
  with pytest.raises(ValueError, match="no leaves"):
    amsgrad_optax.flatten_state(amsgrad_optax.amsgrad(0.1).init({}))
  state = amsgrad_optax.amsgrad(0.1).init(params)
  mixed = (state[0]._replace(mu={"w": jnp.ones(3), "b": jnp.ones(2, jnp.bfloat16)}), *state[1:])
  with pytest.raises(ValueError, match=r"state.mu's leaves have dtypes \['bfloat16', 'float32'\]"):
    amsgrad_optax.flatten_state(mixed)
