"""The synthetic experiments against float64 loops written here, closed forms and invariants."""

from __future__ import annotations

import math
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from amsgrad_optax import synthetic

LR, B1, B2, EPS = 1e-2, 0.9, 0.99, 1e-8

# ---------------------------------------------------------------- references


def ref_optimizer(name, lr=LR, b1=B1, b2=B2, eps=EPS):
  """Returns ``step(state, g, k) -> (delta, state)`` in float64, from the published formulas."""

  def sgd(state, g, k):
    return -lr * g, state

  def adam(state, g, k):  # optax.adam
    m, v = state
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    mhat, vhat = m / (1 - b1**k), v / (1 - b2**k)
    return -lr * mhat / (math.sqrt(vhat) + eps), (m, v)

  def amsgrad(max_of, step):
    def update(state, g, k):
      m, v, vmax = state
      m = b1 * m + (1 - b1) * g
      v = b2 * v + (1 - b2) * g * g
      c1, c2 = 1 - b1**k, 1 - b2**k
      vmax = max(vmax, v / c2 if max_of == "corrected" else v)
      return step(m, vmax, c1, c2), (m, v, vmax)

    return update

  def adamnc(state, g, k):  # b2_t = 1 - 1/t: v is the plain mean of g^2
    m, v = state
    m = b1 * m + (1 - b1) * g
    v = v + (g * g - v) / k
    return -lr * m / (math.sqrt(v) + eps), (m, v)

  steps = {
    # torch.optim.Adam(amsgrad=True)
    "pytorch": lambda m, vm, c1, c2: -lr / c1 * m / (math.sqrt(vm) / math.sqrt(c2) + eps),
    # keras.optimizers.Adam(amsgrad=True)
    "keras": lambda m, vm, c1, c2: -lr * math.sqrt(c2) / c1 * m / (math.sqrt(vm) + eps),
    # optax.amsgrad
    "optax": lambda m, vm, c1, c2: -lr * (m / c1) / (math.sqrt(vm) + eps),
    # the paper's Algorithm 2
    "paper": lambda m, vm, c1, c2: -lr * m / (math.sqrt(vm) + eps),
  }
  if name == "sgd":
    return sgd, None
  if name == "adam":
    return adam, (0.0, 0.0)
  if name == "adamnc":
    return adamnc, (0.0, 0.0)
  conv = name.split(":")[1]
  max_of = "corrected" if conv == "optax" else "raw"
  return amsgrad(max_of, steps[conv]), (0.0, 0.0, 0.0)


def ref_run(coefs, problem, name, **hp):
  """Returns ``(xs, avg_regret)``: x_t after every step and R(t)/t, by a float64 loop."""
  step, state = ref_optimizer(name, **hp)
  x, total = float(problem.x0), 0.0
  xs, avgs = [], []
  for k, c in enumerate(coefs, start=1):
    total += c * (x - problem.x_star)
    delta, state = step(state, c, k)
    x = min(max(x + delta, problem.lower), problem.upper)
    xs.append(x)
    avgs.append(total / k)
  return np.array(xs), np.array(avgs)


def online_coefs(problem, steps):
  t = np.arange(problem.first_step, problem.first_step + steps)
  return np.where(t % problem.period == 1, problem.big, problem.small).astype(np.float64)


def stochastic_coefs(problem, steps, seed):
  """The documented draw: the first word of fold_in(key, t) below floor(q * 2**32)."""
  key = jax.random.key(seed)
  words = [
    int(jax.random.key_data(jax.random.fold_in(key, t))[0])
    for t in range(problem.first_step, problem.first_step + steps)
  ]
  heads = np.array(words, dtype=np.uint64) < math.floor(problem.probability * 2**32)
  return np.where(heads, problem.big, problem.small).astype(np.float64)


def make_tx(name, **hp):
  if name.startswith("amsgrad:"):
    return synthetic.make_optimizer("amsgrad", convention=name.split(":")[1], **hp)
  return synthetic.make_optimizer(name, **hp)


# ---------------------------------------------------------------- small-T exact checks

ALL = ["sgd", "adam", "amsgrad:pytorch", "amsgrad:keras", "amsgrad:optax"]


@pytest.mark.parametrize("name", [*ALL, "amsgrad:paper", "adamnc"])
def test_online_matches_float64_loop(name):
  problem = synthetic.online()
  steps = 404
  res = synthetic.run(problem, make_tx(name), steps, trace_every=1)
  xs, avgs = ref_run(online_coefs(problem, steps), problem, name)
  np.testing.assert_allclose(res.trace.x, xs, rtol=0, atol=2e-5)
  np.testing.assert_allclose(res.trace.avg_regret, avgs, rtol=2e-5, atol=1e-5)
  assert res.x_final == pytest.approx(xs[-1], abs=2e-5)
  assert res.avg_regret == pytest.approx(avgs[-1], rel=2e-5)


@pytest.mark.parametrize(("name", "seed"), list(zip(ALL, [0, 7, 1, 2, 3], strict=True)))
def test_stochastic_matches_float64_loop_with_documented_coins(name, seed):
  # probability 0.05 so that 400 steps hold a good number of large gradients.
  problem = synthetic.stochastic(probability=0.05)
  steps = 400
  coefs = stochastic_coefs(problem, steps, seed)
  assert 5 <= np.sum(coefs == problem.big) <= 50
  res = synthetic.run(problem, make_tx(name), steps, seed=seed, trace_every=1)
  xs, avgs = ref_run(coefs, problem, name)
  np.testing.assert_allclose(res.trace.x, xs, rtol=0, atol=2e-5)
  np.testing.assert_allclose(res.trace.avg_regret, avgs, rtol=2e-5, atol=1e-5)


def test_stochastic_seeds_give_different_coins_and_key_overrides_seed():
  problem = synthetic.stochastic(probability=0.3)
  tx = synthetic.make_optimizer("sgd", learning_rate=0.0)
  r0 = synthetic.run(problem, tx, 200, seed=0)
  r1 = synthetic.run(problem, tx, 200, seed=1)
  rk = synthetic.run(problem, tx, 200, seed=0, key=jax.random.key(1))
  legacy = synthetic.run(problem, tx, 200, key=jax.random.PRNGKey(1))  # raw uint32 key
  # With x fixed at 0, R(T) = sum_t c_t (0 - x*) = sum of the coins' coefficients.
  for seed, res in ((0, r0), (1, r1), (1, rk), (1, legacy)):
    assert res.regret == pytest.approx(stochastic_coefs(problem, 200, seed).sum(), rel=1e-6)
  assert r0.regret != r1.regret


@pytest.mark.parametrize("name", ["adam", "amsgrad:pytorch", "amsgrad:optax", "sgd"])
def test_theorem1_matches_float64_loop(name):
  problem = synthetic.theorem1(3.0)
  betas = synthetic.theorem1_betas(3.0)
  steps = 300
  coefs = online_coefs(problem, steps)
  assert coefs[:4].tolist() == [3.0, -1.0, -1.0, 3.0]  # counted from t = 1, as the proof
  res = synthetic.run(problem, make_tx(name, **betas), steps, trace_every=1)
  xs, avgs = ref_run(coefs, problem, name, **betas)
  np.testing.assert_allclose(res.trace.x, xs, rtol=0, atol=2e-5)
  np.testing.assert_allclose(res.trace.avg_regret, avgs, rtol=2e-5, atol=1e-5)


def test_theorem1_adam_ends_at_the_worst_point_and_amsgrad_at_the_optimum():
  problem = synthetic.theorem1(3.0)
  betas = synthetic.theorem1_betas(3.0)
  assert betas == {"b1": 0.0, "b2": pytest.approx(0.1)}
  adam = synthetic.run(problem, make_tx("adam", **betas), 30_000)
  ams = synthetic.run(problem, make_tx("amsgrad:pytorch", **betas), 30_000)
  assert adam.x_final > 0.9
  assert ams.x_final == pytest.approx(-1.0, abs=0.02)
  # Adam's average regret stays near (C - 2)/3 * 2 = 2/3; AMSGrad's vanishes.
  assert adam.avg_regret > 0.6
  assert ams.avg_regret < 0.05


# ---------------------------------------------------------------- 10^5 steps


def test_online_1e5_steps_adam_rises_amsgrad_falls_as_float64_loops():
  problem = synthetic.online()
  steps, every = 100_000, 101 * 40  # trace at whole periods: the same phase each time
  coefs = online_coefs(problem, steps)
  got = {}
  for name in ("adam", "amsgrad:pytorch", "amsgrad:optax"):
    res = synthetic.run(problem, make_tx(name), steps, trace_every=every)
    xs, avgs = ref_run(coefs, problem, name)
    idx = res.trace.t - 1
    np.testing.assert_allclose(res.trace.x, xs[idx], rtol=0, atol=1e-3)
    np.testing.assert_allclose(res.trace.avg_regret, avgs[idx], rtol=1e-3)
    got[name] = (res, xs[-1])
  adam, ams_pt, ams_ox = got["adam"][0], got["amsgrad:pytorch"][0], got["amsgrad:optax"][0]
  # The figures of the float64 loops, to 1e-3.
  assert got["amsgrad:pytorch"][1] == pytest.approx(-0.79938, abs=1e-3)
  assert got["amsgrad:optax"][1] == pytest.approx(-0.15330, abs=1e-3)
  assert ams_pt.x_final == pytest.approx(-0.79938, abs=1e-3)
  assert ams_ox.x_final == pytest.approx(-0.15330, abs=1e-3)
  # At whole periods Adam climbs to the worst point +1 and stays; AMSGrad goes down.
  periods = adam.trace.t % 101 == 0
  adam_x = adam.trace.x[periods]
  assert np.all(np.diff(adam_x) >= 0) and adam_x[0] < 1.0 and np.all(adam_x[2:] == 1.0)
  for res in (ams_pt, ams_ox):
    assert np.all(np.diff(res.trace.x[periods]) < 0)
  assert ams_pt.avg_regret < adam.avg_regret
  assert ams_ox.avg_regret < ams_pt.avg_regret


# ---------------------------------------------------------------- regret accuracy


def test_avg_regret_is_exact_over_1e7_steps_with_x_constant():
  # lr = 0 keeps x at x0: each step adds one of two float32 numbers, so the
  # exact total is n_big * r_big + n_small * r_small.
  x0 = 0.123456
  problem = synthetic.online(x0=x0)
  steps = 10_000_000
  res = synthetic.run(problem, optax.sgd(0.0), steps)
  n_big = len(range(1, steps, 101))
  n_small = steps - n_big
  x = np.float32(x0)
  r_big = np.float32(1010) * x - np.float32(1010) * np.float32(-1)
  r_small = np.float32(-10) * x - np.float32(-10) * np.float32(-1)
  exact = n_big * Fraction(float(r_big)) + n_small * Fraction(float(r_small))
  assert abs(Fraction(res.regret) - exact) <= 1e-9 * exact
  assert res.avg_regret == pytest.approx(float(exact) / steps, rel=1e-9)
  # A plain float32 running sum of the same terms is off by over 1%.
  terms = np.where(np.arange(steps) % 101 == 1, r_big, r_small).astype(np.float32)
  naive = np.cumsum(terms, dtype=np.float32)[-1]
  assert abs(Fraction(float(naive)) - exact) > 1e-2 * exact


def test_avg_regret_matches_fsum_of_the_recorded_steps():
  problem = synthetic.online()
  steps = 1 << 17
  res = synthetic.run(problem, make_tx("adam"), steps, trace_every=1)
  x_played = np.concatenate([[problem.x0], res.trace.x[:-1].astype(np.float64)])
  per_step = online_coefs(problem, steps) * (x_played - problem.x_star)
  exact = math.fsum(per_step)
  # Each step's regret is rounded to float32 (about 6e-8 of a term); the
  # sum of those adds nothing measurable on top.
  assert res.regret == pytest.approx(exact, rel=1e-6)
  exact_avgs = np.cumsum(per_step) / np.arange(1, steps + 1)
  np.testing.assert_allclose(res.trace.avg_regret, exact_avgs, rtol=1e-6)
  # A plain float32 running sum of the same terms is off by far more.
  naive = np.cumsum(per_step.astype(np.float32), dtype=np.float32)[-1]
  assert abs(naive - exact) > 1e-5 * abs(exact)


# ---------------------------------------------------------------- trace, chunks, purity


def test_trace_every_k_with_a_remainder():
  problem = synthetic.online()
  res = synthetic.run(problem, make_tx("amsgrad:pytorch"), 1000, trace_every=300)
  assert res.trace.t.tolist() == [300, 600, 900, 1000]
  xs, avgs = ref_run(online_coefs(problem, 1000), problem, "amsgrad:pytorch")
  np.testing.assert_allclose(res.trace.x, xs[res.trace.t - 1], atol=2e-5)
  np.testing.assert_allclose(res.trace.avg_regret, avgs[res.trace.t - 1], rtol=2e-5)


def test_trace_every_longer_than_the_run():
  problem = synthetic.online()
  res = synthetic.run(problem, make_tx("sgd"), 50, trace_every=64)
  assert res.trace.t.tolist() == [50]
  assert res.trace.x[0] == res.x_final


@pytest.mark.parametrize("trace_every", [None, 1000])
def test_chunked_run_with_progress_bar_equals_one_call(trace_every, capsys):
  problem = synthetic.stochastic()
  tx = make_tx("amsgrad:pytorch")
  steps = 25_500
  one = synthetic.run(problem, tx, steps, seed=3, trace_every=trace_every)
  chunked = synthetic.run(
    problem, tx, steps, seed=3, trace_every=trace_every, progress=True, chunk_steps=4096
  )
  assert "step" in capsys.readouterr().err  # the bar was drawn
  assert chunked.x_final == one.x_final
  assert chunked.regret == one.regret
  if trace_every is not None:
    np.testing.assert_array_equal(chunked.trace.t, one.trace.t)
    np.testing.assert_array_equal(chunked.trace.x, one.trace.x)


def test_simulate_under_jit_and_vmap_over_keys_matches_run():
  problem = synthetic.stochastic(probability=0.1)
  tx = make_tx("amsgrad:optax")

  @jax.jit
  def sims(seeds):
    return jax.vmap(lambda s: synthetic.simulate(problem, tx, 3000, key=jax.random.key(s)))(seeds)

  out = sims(jnp.arange(3))
  for seed in range(3):
    res = synthetic.run(problem, tx, 3000, seed=seed)
    assert float(out.x_final[seed]) == pytest.approx(res.x_final, abs=1e-6)
    total = float(out.regret[seed]) + float(out.regret_residual[seed])
    assert total == pytest.approx(res.regret, rel=1e-6)


def test_any_optax_transformation_and_weight_decay_run():
  # A chain with a gradient clip: |g| <= 1 turns the problem into sign descent.
  problem = synthetic.online()
  tx = optax.chain(optax.clip(1.0), optax.sgd(0.1))
  res = synthetic.run(problem, tx, 202, trace_every=1)
  coefs = np.clip(online_coefs(problem, 202), -1.0, 1.0)
  x, xs = 0.0, []
  for c in coefs:
    x = min(max(x - 0.1 * c, -1.0), 1.0)
    xs.append(x)
  np.testing.assert_allclose(res.trace.x, xs, atol=1e-6)


# ---------------------------------------------------------------- sweeps


def test_sweep_equals_a_python_loop_over_the_configs():
  problem = synthetic.online()
  grid = {"b1": [0.0, 0.9], "b2": [0.9, 0.999], "learning_rate": [0.01, 0.1]}
  table = synthetic.sweep(problem, 600, grid, optimizer="amsgrad", shard=False)
  rows = synthetic.table_rows(table)
  assert len(rows) == 8
  assert [(r["b1"], r["b2"], r["learning_rate"]) for r in rows[:2]] == [
    (0.0, 0.9, 0.01),
    (0.0, 0.9, 0.1),
  ]
  coefs = online_coefs(problem, 600)
  for row in rows:
    hp = {k: row[k] for k in ("learning_rate", "b1", "b2", "eps")}
    xs, avgs = ref_run(coefs, problem, "amsgrad:pytorch", lr=hp.pop("learning_rate"), **hp)
    assert row["x_final"] == pytest.approx(xs[-1], abs=5e-5)
    assert row["avg_regret"] == pytest.approx(avgs[-1], rel=5e-5)
    assert row["eps"] == EPS and row["seed"] == 0


def test_sweep_over_seeds_equals_runs_per_seed():
  problem = synthetic.stochastic(probability=0.05)
  table = synthetic.sweep(problem, 500, {"b2": [0.99]}, optimizer="adam", seeds=[4, 5, 6])
  assert table["seed"].tolist() == [4, 5, 6]
  for row in synthetic.table_rows(table):
    xs, avgs = ref_run(stochastic_coefs(problem, 500, row["seed"]), problem, "adam")
    assert row["x_final"] == pytest.approx(xs[-1], abs=5e-5)
    assert row["avg_regret"] == pytest.approx(avgs[-1], rel=5e-5)


def test_sweep_finds_where_adam_fails():
  problem = synthetic.online()
  grid = {"b1": [0.0, 0.9], "b2": [0.9, 0.99]}
  adam = synthetic.sweep(problem, 10_000, grid, optimizer="adam")
  ams = synthetic.sweep(problem, 10_000, grid, optimizer="amsgrad")
  assert np.all(adam["x_final"] > 0.9)
  assert np.all(ams["x_final"] < 0)


def test_sweep_sharded_over_8_devices_equals_unsharded():
  from amsgrad_optax.synthetic import _sweep

  assert jax.device_count() == 8, "conftest.py sets 8 CPU devices"
  problem = synthetic.stochastic(probability=0.05)
  # 6 configs x 2 seeds = 12: padded to 16 over the 8 devices.
  grid = {"b1": [0.0, 0.5, 0.9], "b2": [0.9, 0.99]}
  kw = {"optimizer": "amsgrad", "seeds": [0, 1], "unroll": 1}
  sharded = synthetic.sweep(problem, 800, grid, shard=True, **kw)
  single = synthetic.sweep(problem, 800, grid, shard=False, **kw)
  assert len(sharded["x_final"]) == 12
  np.testing.assert_allclose(sharded["x_final"], single["x_final"], rtol=0, atol=1e-6)
  np.testing.assert_allclose(sharded["avg_regret"], single["avg_regret"], rtol=1e-6)
  # The sharded call really spreads the configs over the 8 devices.
  make = lambda **hp: synthetic.make_optimizer("sgd", **hp)  # noqa: E731
  hp = {
    k: np.full(12, v) for k, v in {"learning_rate": 0.1, "b1": 0.9, "b2": 0.99, "eps": 0.0}.items()
  }
  x, _, _ = _sweep._run_configs(problem, make, 10, hp, np.arange(12), shard=True, unroll=1)
  assert len(x.sharding.device_set) == 8
  assert x.shape == (16,)


# ---------------------------------------------------------------- problems and bad input


def test_problem_optima_and_descriptions():
  assert synthetic.online().x_star == -1.0
  assert synthetic.online(big=-1010.0, small=10.0).x_star == 1.0
  assert synthetic.stochastic().mean_coefficient == pytest.approx(0.2)
  assert synthetic.online(period=1).mean_coefficient == -10.0  # t mod 1 is never 1
  assert "1010 x if t mod 101 = 1" in synthetic.online().describe()
  assert synthetic.make_problem("stochastic", probability=0.5).probability == 0.5


@pytest.mark.parametrize(
  ("make", "match"),
  [
    (lambda: synthetic.online(period=0), "period must be a positive int, got 0"),
    (lambda: synthetic.online(lower=1.0, upper=-1.0), "lower must be below upper"),
    (lambda: synthetic.online(x0=2.0), r"x0 must lie in \[lower, upper\]"),
    (lambda: synthetic.online(big=float("nan")), "big must be finite"),
    (lambda: synthetic.stochastic(probability=1.5), r"probability must be in \[0, 1\]"),
    (lambda: synthetic.theorem1(2.0), "c must be > 2"),
    (lambda: synthetic.make_problem("nope"), "problem must be one of"),
    (lambda: synthetic.make_optimizer("rmsprop"), "optimizer must be one of"),
    (lambda: synthetic.make_optimizer("adam", b2=1.0), r"b2 must be in \[0, 1\), got 1.0"),
    (lambda: synthetic.make_optimizer("amsgrad", convention="torch"), "convention must be"),
    (lambda: synthetic.run(synthetic.online(), optax.sgd(0.1), 0), "steps must be >= 1"),
    (
      lambda: synthetic.run(synthetic.online(), optax.sgd(0.1), 10, trace_every=0),
      "trace_every must be a positive int",
    ),
    (
      lambda: synthetic.sweep(synthetic.online(), 10, {"momentum": [0.9]}),
      "grid keys must be among",
    ),
    (
      lambda: synthetic.sweep(synthetic.online(), 10, {"b1": [1.0]}),
      r"b1 must be in \[0, 1\)",
    ),
  ],
)
def test_bad_input_names_the_argument(make, match):
  with pytest.raises(ValueError, match=match):
    make()


def test_run_rejects_a_non_problem():
  with pytest.raises(TypeError, match="problem must be an OnlineProblem"):
    synthetic.run("online", optax.sgd(0.1), 10)
