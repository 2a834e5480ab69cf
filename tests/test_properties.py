"""Property-based tests over random pytrees, shapes, dtypes and hyperparameters.

For any valid input: init and update do not raise, the updates have the
gradients' tree, shapes and dtypes, the state dtypes follow the documented
rule, ``nu_max`` never decreases, the updates are finite, and the jitted
update agrees with the eager one (to a few ulps: XLA fuses the jitted one).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import amsgrad_optax

# Every example compiles anew, so shrinking a failure would take minutes:
# a failing example is reported as generated.
NO_SHRINK = (Phase.explicit, Phase.reuse, Phase.generate)
SETTINGS = settings(
  max_examples=30,
  deadline=None,
  suppress_health_check=[HealthCheck.too_slow],
  derandomize=True,
  phases=NO_SHRINK,
)

LOW = [jnp.float32, jnp.bfloat16, jnp.float16]


@dataclasses.dataclass(frozen=True)
class Spec:
  """A leaf to be made: its shape and dtype."""

  shape: tuple[int, ...]
  dtype: object


def _trees(dtypes):
  shapes = st.one_of(
    st.just(()),
    st.lists(st.integers(0, 3), min_size=1, max_size=3).map(tuple),
  )
  leaf = st.one_of(
    st.none(), st.builds(Spec, shapes, st.sampled_from(dtypes)), st.just(Spec((), float))
  )
  keys = st.text("abxyz", min_size=1, max_size=2)
  return st.recursive(
    leaf,
    lambda kids: st.one_of(
      st.lists(kids, max_size=3),
      st.lists(kids, max_size=3).map(tuple),
      st.dictionaries(keys, kids, max_size=3),
    ),
    max_leaves=6,
  )


def _make(template, rng, scale):
  """Materialises a template: a pytree of the same structure with arrays."""
  if template is None:
    return None
  if isinstance(template, Spec):
    if template.dtype is float:
      return float(rng.normal() * scale)  # a Python-number leaf
    x = np.asarray(rng.normal(size=template.shape) * scale)
    x[rng.random(size=template.shape) < 0.2] = 0.0  # exact zeros too
    return jnp.asarray(x, template.dtype)
  if isinstance(template, dict):
    return {k: _make(v, rng, scale) for k, v in template.items()}
  return type(template)(_make(v, rng, scale) for v in template)


def _assert_close(got, want, unit, input_dtype):
  """Asserts agreement to 16 rounding errors, relative and in units of ``unit``.

  ``unit`` is the size of the terms that were summed (a moment can be a small
  difference of large terms), so one rounding of theirs is ``eps * unit``;
  ``eps`` is that of the coarser of ``want``'s dtype and ``input_dtype`` (the
  gradients': a coupled weight decay adds to them in their own dtype).
  """
  dtype = jnp.asarray(want).dtype
  if not jnp.issubdtype(dtype, jnp.inexact):
    np.testing.assert_array_equal(got, want)
    return
  eps = max(float(jnp.finfo(dtype).eps), float(jnp.finfo(input_dtype).eps))
  np.testing.assert_allclose(
    np.asarray(got, np.float64),
    np.asarray(want, np.float64),
    rtol=16 * eps,
    atol=16 * eps * unit + 16 * float(jnp.finfo(dtype).smallest_subnormal),
  )


def _max_abs(trees) -> float:
  leaves = [x for t in trees for x in jax.tree.leaves(t)]
  return max(
    [float(np.max(np.abs(np.asarray(x, np.float64)), initial=0.0)) for x in leaves], default=0.0
  )


hyperparams = st.fixed_dictionaries(
  {
    "learning_rate": st.floats(0.0, 1.0),
    "b1": st.floats(0.0, 0.95),
    "b2": st.floats(0.0, 0.999),
    "eps": st.sampled_from([0.0, 1e-8, 1e-3]),
    "eps_root": st.sampled_from([0.0, 1e-12]),
    "convention": st.sampled_from(amsgrad_optax.CONVENTIONS),
    "weight_decay": st.sampled_from([0.0, 1e-2]),
    "decoupled_weight_decay": st.booleans(),
    "mu_dtype": st.sampled_from([None, jnp.float32, jnp.bfloat16]),
    "b1_decay": st.sampled_from([1.0, 0.9]),
  }
)


def _scaler_state(state):
  """The ScaleByAmsgradState inside the chain's state (first or second)."""
  (found,) = [s for s in state if isinstance(s, amsgrad_optax.ScaleByAmsgradState)]
  return found


def _check_run(template, hp, seed, scale_exp):
  rng = np.random.default_rng(seed)
  # float16 gradients stay below its largest value, 65504.
  scale = 10.0 ** min(scale_exp, 2)
  params = _make(template, rng, 1.0)
  grads = [_make(template, rng, scale) for _ in range(3)]
  tx = amsgrad_optax.amsgrad(**hp)
  state = tx.init(params)
  jit_state = state
  jit_update = jax.jit(tx.update)
  treedef = jax.tree.structure(params)
  # |update| <= lr |m_hat| / sqrt(nu_max) + lr wd |p| <= lr / ((1 - b1) sqrt(1 - b2)) + lr wd |p|.
  lr, wd = hp["learning_rate"], hp["weight_decay"]
  step_unit = lr / ((1 - hp["b1"]) * np.sqrt(1 - hp["b2"])) + lr * wd * _max_abs([params])
  # mu sums terms up to the largest gradient (plus a coupled decay's wd |p|).
  g_unit = _max_abs(grads) + wd * _max_abs([params])
  for g in grads:
    u, new_state = tx.update(g, state, params)
    ju, jit_state = jit_update(g, jit_state, params)
    assert jax.tree.structure(u) == treedef
    for gl, ul, jl in zip(jax.tree.leaves(g), jax.tree.leaves(u), jax.tree.leaves(ju), strict=True):
      assert jnp.shape(ul) == jnp.shape(gl)
      assert ul.dtype == jnp.asarray(gl).dtype == jl.dtype
      assert np.isfinite(np.asarray(ul, np.float64)).all()
      _assert_close(jl, ul, step_unit, ul.dtype)
    s_old, s_new = _scaler_state(state), _scaler_state(new_state)
    for p, m, v, vm_old, vm in zip(
      jax.tree.leaves(params),
      jax.tree.leaves(s_new.mu),
      jax.tree.leaves(s_new.nu),
      jax.tree.leaves(s_old.nu_max),
      jax.tree.leaves(s_new.nu_max),
      strict=True,
    ):
      p_dtype = jnp.asarray(p).dtype
      # float16 params keep both moments in float32 (docs/precision.md).
      want_nu = jnp.float32 if p_dtype == jnp.float16 else p_dtype
      assert m.dtype == (hp["mu_dtype"] or want_nu)
      assert v.dtype == vm.dtype == want_nu
      assert (np.asarray(vm, np.float64) >= np.asarray(vm_old, np.float64)).all()
    assert int(s_new.count) == int(s_old.count) + 1
    state = new_state
  s, js = _scaler_state(state), _scaler_state(jit_state)
  assert int(js.count) == int(s.count)
  in_dtypes = [jnp.asarray(p).dtype for p in jax.tree.leaves(params)]
  for name, unit in (("mu", g_unit), ("nu", 0.0), ("nu_max", 0.0)):
    pairs = zip(jax.tree.leaves(getattr(js, name)), jax.tree.leaves(getattr(s, name)), strict=True)
    for (a, b), in_dtype in zip(pairs, in_dtypes, strict=True):
      _assert_close(a, b, unit, in_dtype)


@SETTINGS
@given(
  template=_trees(LOW),
  hp=hyperparams,
  seed=st.integers(0, 2**32 - 1),
  scale_exp=st.integers(-6, 4),
)
def test_update_keeps_tree_and_dtypes_and_nu_max_monotone(template, hp, seed, scale_exp):
  _check_run(template, hp, seed, scale_exp)


@settings(max_examples=15, deadline=None, derandomize=True, phases=NO_SHRINK)
@given(
  template=_trees([jnp.float64, jnp.float32]),
  hp=hyperparams,
  seed=st.integers(0, 2**32 - 1),
  scale_exp=st.integers(-6, 4),
)
def test_update_properties_hold_in_float64(template, hp, seed, scale_exp):
  with jax.enable_x64(True):
    _check_run(template, hp, seed, scale_exp)


@settings(max_examples=20, deadline=None, derandomize=True, phases=NO_SHRINK)
@given(
  template=_trees(LOW),
  seed=st.integers(0, 2**32 - 1),
  bad=st.sampled_from([np.nan, np.inf, -np.inf]),
  convention=st.sampled_from(amsgrad_optax.CONVENTIONS),
)
def test_skip_nonfinite_keeps_state_for_any_tree(template, seed, bad, convention):
  rng = np.random.default_rng(seed)
  params = _make(template, rng, 1.0)
  tx = amsgrad_optax.amsgrad(0.1, convention=convention, skip_nonfinite=True)
  state = tx.init(params)
  _, state = tx.update(_make(template, rng, 1.0), state, params)
  grads = _make(template, rng, 1.0)
  leaves, treedef = jax.tree.flatten(grads)
  sized = [i for i, x in enumerate(leaves) if np.size(x) > 0]
  if not sized:  # nothing to make non-finite: the step is applied
    _, new_state = tx.update(grads, state, params)
    assert int(new_state.total_skipped) == 0
    assert int(new_state.inner_state[0].count) == 2
    return
  i = sized[rng.integers(len(sized))]
  x = np.array(leaves[i], dtype=np.asarray(leaves[i]).dtype)
  x.reshape(-1)[rng.integers(x.size)] = bad
  leaves[i] = jnp.asarray(x) if isinstance(leaves[i], jax.Array) else float(x)
  grads = jax.tree.unflatten(treedef, leaves)
  u, new_state = jax.jit(tx.update)(grads, state, params)
  assert jax.tree.structure(u) == jax.tree.structure(params)
  new_params = optax.apply_updates(params, u)
  # Bit for bit: -0.0 params stay -0.0.
  for a, b in zip(jax.tree.leaves(new_params), jax.tree.leaves(params), strict=True):
    assert np.asarray(a).tobytes() == np.asarray(jnp.asarray(b)).tobytes()
  for a, b in zip(
    jax.tree.leaves(new_state.inner_state), jax.tree.leaves(state.inner_state), strict=True
  ):
    assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
  assert int(new_state.total_skipped) == 1
  assert int(new_state.consecutive_skipped) == 1
