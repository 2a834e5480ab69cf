"""The blocked, time-parallel engine against float64 loops written here, and against the scan."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from amsgrad_optax import synthetic
from amsgrad_optax.synthetic import _fast

LR, B1, B2, EPS = 1e-2, 0.9, 0.99, 1e-8
# The contract: within these of a sequential float64 run.
X_TOL, REL_REGRET = 0.005, 0.003

NAMES = [
  "sgd",
  "adam",
  "adamnc",
  "amsgrad:pytorch",
  "amsgrad:keras",
  "amsgrad:optax",
  "amsgrad:paper",
]


def ref_step(name, lr, b1, b2, eps):
  """Returns ``step(state, g, k) -> (delta, state)`` in float64, from the published formulas."""

  def step(state, g, k):
    m, v, vmax = state
    lr_k = lr(k)
    if name == "sgd":
      return -lr_k * g, state
    m = b1 * m + (1 - b1) * g
    if name == "adamnc":
      v = v + (g * g - v) / k
      return -lr_k * m / (math.sqrt(v) + eps), (m, v, vmax)
    v = b2 * v + (1 - b2) * g * g
    c1, c2 = 1 - b1**k, 1 - b2**k
    if name == "adam":
      return -lr_k * (m / c1) / (math.sqrt(v / c2) + eps), (m, v, vmax)
    conv = name.split(":")[1]
    vmax = max(vmax, v / c2 if conv == "optax" else v)
    if conv == "pytorch":
      u = m / c1 / (math.sqrt(vmax) / math.sqrt(c2) + eps)
    elif conv == "keras":
      u = math.sqrt(c2) / c1 * m / (math.sqrt(vmax) + eps)
    elif conv == "optax":
      u = (m / c1) / (math.sqrt(vmax) + eps)
    else:
      u = m / (math.sqrt(vmax) + eps)
    return -lr_k * u, (m, v, vmax)

  return step


def ref_run(coefs, problem, name, lr=LR, b1=B1, b2=B2, eps=EPS, schedule="constant"):
  """Returns ``(x_final, avg_regret)`` of a plain float64 loop."""
  lr_of = (lambda k: lr / math.sqrt(k)) if schedule == "inverse-sqrt" else (lambda k: lr)
  step = ref_step(name, lr_of, b1, b2, eps)
  state, x, total = (0.0, 0.0, 0.0), float(problem.x0), 0.0
  for k, c in enumerate(coefs.tolist(), start=1):
    total += c * (x - problem.x_star)
    delta, state = step(state, c, k)
    x = min(max(x + delta, problem.lower), problem.upper)
  return x, total / len(coefs)


def coefficients(problem, steps, seed=0):
  """The documented draws: ``t % period == 1``, or the first word of fold_in(key, t) below floor(q 2^32)."""
  t = np.arange(problem.first_step, problem.first_step + steps)
  if not problem.stochastic:
    heads = t % problem.period == 1
  else:
    key = jax.random.key(seed)
    words = jax.vmap(lambda s: jax.random.key_data(jax.random.fold_in(key, s))[0])(
      jnp.asarray(t, jnp.int32)
    )
    heads = np.asarray(words, np.uint64) < math.floor(problem.probability * 2**32)
  return np.where(heads, problem.big, problem.small).astype(np.float64)


def make_tx(name, **hp):
  if name.startswith("amsgrad:"):
    return synthetic.make_optimizer("amsgrad", convention=name.split(":")[1], **hp)
  return synthetic.make_optimizer(name, **hp)


PROBLEMS = {
  "online": (synthetic.online(), {}),
  "stochastic": (synthetic.stochastic(probability=0.05), {}),
  "theorem1": (synthetic.theorem1(3.0), synthetic.theorem1_betas(3.0)),
}


@pytest.fixture
def small_chunks(monkeypatch):
  """Chunks of 64 steps x 16 lanes, so that a short run crosses many chunks, lanes and a padded tail."""
  monkeypatch.setattr(_fast, "_CHUNK_ELEMENTS", 1024)
  monkeypatch.setattr(_fast, "_ROW_ELEMENTS", 16)
  assert _fast.layout(5003) == (64, 16)


def _simulate(problem, tx, steps, engine, seed=0):
  fn = jax.jit(
    lambda key: synthetic.simulate(problem, tx, steps, key=key, engine=engine)[:3],
  )
  x, regret, residual = fn(jax.random.key(seed))
  return float(x), (float(regret) + float(residual)) / steps


@pytest.mark.parametrize("problem_name", list(PROBLEMS))
@pytest.mark.parametrize("name", NAMES)
def test_fast_matches_float64_loop_and_scan(small_chunks, problem_name, name):
  problem, betas = PROBLEMS[problem_name]
  hp = {"b1": betas.get("b1", B1), "b2": betas.get("b2", B2)}
  steps = 3011  # 2 whole chunks of 1024 steps, then 963 steps: a padded last chunk
  tx = make_tx(name, **hp)
  x_fast, avg_fast = _simulate(problem, tx, steps, "fast", seed=3)
  x_scan, avg_scan = _simulate(problem, tx, steps, "scan", seed=3)
  x_ref, avg_ref = ref_run(coefficients(problem, steps, seed=3), problem, name, **hp)
  assert x_fast == pytest.approx(x_ref, abs=X_TOL)
  assert avg_fast == pytest.approx(avg_ref, rel=REL_REGRET)
  # Both engines do float32 arithmetic step by step: they agree far closer.
  assert x_fast == pytest.approx(x_scan, abs=5e-4)
  assert avg_fast == pytest.approx(avg_scan, rel=1e-4)


@pytest.mark.parametrize("name", ["amsgrad:pytorch", "adam"])
def test_inverse_sqrt_schedule_matches_float64_loop(small_chunks, name):
  problem = synthetic.online()
  steps = 3000
  tx = synthetic.make_optimizer(
    name.split(":")[0],
    convention=name.split(":")[-1] if ":" in name else "pytorch",
    learning_rate=0.5,
    lr_schedule="inverse-sqrt",
  )
  x, avg = _simulate(problem, tx, steps, "fast")
  x_ref, avg_ref = ref_run(
    coefficients(problem, steps), problem, name, lr=0.5, schedule="inverse-sqrt"
  )
  assert x == pytest.approx(x_ref, abs=X_TOL)
  assert avg == pytest.approx(avg_ref, rel=REL_REGRET)


@pytest.mark.parametrize("name", ["amsgrad:pytorch", "amsgrad:optax"])
def test_long_run_with_default_chunks_matches_float64_loop(name):
  problem = synthetic.online()
  steps = 300_000  # two default chunks of 2^18 steps, the second padded
  res = synthetic.run(problem, make_tx(name), steps, engine="fast")
  x_ref, avg_ref = ref_run(coefficients(problem, steps), problem, name)
  assert res.x_final == pytest.approx(x_ref, abs=X_TOL)
  assert res.avg_regret == pytest.approx(avg_ref, rel=REL_REGRET)
  assert res.trace is None


def test_sweep_engines_agree_and_match_float64_loop(small_chunks):
  problem = synthetic.stochastic(probability=0.05)
  steps = 2500
  grid = {"b1": [0.0, 0.9], "b2": [0.9, 0.999], "learning_rate": [0.01, 0.1]}
  kw = dict(optimizer="amsgrad", seeds=(0, 5), convention="keras")
  fast = synthetic.sweep(problem, steps, grid, engine="fast", **kw)  # sharded over 8 devices
  scan = synthetic.sweep(problem, steps, grid, engine="scan", **kw)
  np.testing.assert_allclose(fast["x_final"], scan["x_final"], atol=5e-4)
  np.testing.assert_allclose(fast["avg_regret"], scan["avg_regret"], rtol=1e-4)
  for row in synthetic.table_rows(fast):
    x_ref, avg_ref = ref_run(
      coefficients(problem, steps, row["seed"]),
      problem,
      "amsgrad:keras",
      lr=row["learning_rate"],
      b1=row["b1"],
      b2=row["b2"],
    )
    assert row["x_final"] == pytest.approx(x_ref, abs=X_TOL)
    assert row["avg_regret"] == pytest.approx(avg_ref, rel=REL_REGRET)


def _count_fast_calls(monkeypatch):
  """Records the optimizer's name each time the fast engine is traced (run() or simulate())."""
  calls = []

  def spy_on(real):
    def spy(*args, **kwargs):
      calls.append(args[1].name)
      return real(*args, **kwargs)

    return spy

  # simulate() runs simulate_batch; run() calls advance_batch from the host, chunk by chunk.
  for name in ("simulate_batch", "advance_batch"):
    monkeypatch.setattr(_fast, name, spy_on(getattr(_fast, name)))
  return calls


@pytest.mark.standard_promotion
def test_auto_takes_the_fast_engine_only_where_it_applies(monkeypatch):
  calls = _count_fast_calls(monkeypatch)
  problem = synthetic.online(first_step=7)  # a problem no earlier test compiled
  named = synthetic.make_optimizer("adamnc", learning_rate=0.02)
  auto = synthetic.run(problem, named, 1000)
  assert calls == ["adamnc"]
  traced = synthetic.run(problem, named, 1000, trace_every=100)  # a trace: the scan
  plain = synthetic.run(problem, optax.adam(0.02), 1000)  # not built by name: the scan
  chained = synthetic.run(problem, optax.chain(named), 1000)
  # A learning rate given as a schedule callable has no closed form here.
  scheduled = synthetic.make_optimizer("adamnc", learning_rate=lambda count: 0.02)
  synthetic.run(problem, scheduled, 1000)
  assert calls == ["adamnc"]
  assert traced.trace is not None
  assert auto.x_final == pytest.approx(traced.x_final, abs=5e-4)
  assert plain.x_final != auto.x_final and chained.x_final == pytest.approx(auto.x_final, abs=5e-4)
  synthetic.sweep(problem, 500, {"b1": [0.0, 0.5]}, optimizer="sgd", shard=False)
  assert calls == ["adamnc", "sgd"]
  synthetic.sweep(problem, 500, {"b1": [0.0]}, optimizer="sgd", engine="scan", shard=False)
  synthetic.sweep(
    problem, 500, {"b1": [0.0]}, optimizer=lambda **hp: named, engine="scan", shard=False
  )
  assert calls == ["adamnc", "sgd"]


@pytest.mark.standard_promotion
def test_forcing_the_fast_engine_where_it_cannot_run_is_an_error():
  problem = synthetic.online()
  with pytest.raises(ValueError, match="engine='fast'.*make_optimizer"):
    synthetic.run(problem, optax.adam(0.1), 100, engine="fast")
  with pytest.raises(ValueError, match="engine='fast'.*trace"):
    synthetic.run(problem, synthetic.make_optimizer("adam"), 100, trace_every=10, engine="fast")
  with pytest.raises(ValueError, match="engine='fast'.*callable"):
    synthetic.sweep(problem, 100, optimizer=lambda **hp: optax.sgd(0.1), engine="fast")
  with pytest.raises(
    ValueError, match=r"engine must be one of \('auto', 'fast', 'scan'\), got 'gpu'"
  ):
    synthetic.run(problem, synthetic.make_optimizer("adam"), 100, engine="gpu")
  with pytest.raises(ValueError, match="engine must be one of"):
    synthetic.sweep(problem, 100, engine="quick")


def test_clamp_shift_maps_compose_like_the_steps_they_replace():
  # The lanes' starting points against applying every step in turn.
  rng = np.random.default_rng(0)
  d = rng.normal(scale=0.7, size=(32, 1)).astype(np.float32)
  inf = np.float32(np.inf)
  # 32 lanes of one step each: lane l's map is x -> clip(x + d_l, -1, 1).
  shift = jnp.asarray(d)
  low = jnp.clip(jnp.full_like(shift, -inf) + shift, -1.0, 1.0)
  high = jnp.clip(jnp.full_like(shift, inf) + shift, -1.0, 1.0)
  starts = _fast._clip_starts(shift, low, high, jnp.asarray([0.25], jnp.float32))
  x, expected = 0.25, []
  for s in d[:, 0].tolist():
    expected.append(x)
    x = min(max(x + s, -1.0), 1.0)
  np.testing.assert_allclose(np.asarray(starts)[:, 0], expected, atol=1e-6)


def test_bias_corrections_are_accurate_where_one_minus_power_is_tiny():
  b = jnp.asarray([0.999, 0.9, 0.0], jnp.float32)
  k_len = 8
  table = _fast._expm1_table(b, k_len)
  base = jnp.asarray([0, 8, 4096], jnp.int32)
  got = np.asarray(_fast._one_minus_powers(b, base, table))  # (K, L, B)
  b64 = np.asarray(b, np.float64)
  for li, a in enumerate(np.asarray(base).tolist()):
    t = a + np.arange(1, k_len + 1)
    want = 1 - b64[None, :] ** t[:, None]
    np.testing.assert_allclose(got[:, li, :], want, rtol=2e-6)


# ---------------------------------------------------------------- command line


def _cli_json(capsys, *argv):
  from amsgrad_optax.synthetic import _cli

  assert _cli.main([*argv, "--json", "--quiet"]) == 0
  return json.loads(capsys.readouterr().out)


def test_cli_runs_the_grid_of_multi_valued_hyperparameters(capsys):
  steps = 2020
  out = _cli_json(
    capsys,
    "--optimizer",
    "adam",
    "--b1",
    "0",
    "0.9",
    "--b2",
    "0.9",
    "0.999",
    "--lr",
    "0.05",
    "--steps",
    str(steps),
  )
  assert out["grid"] == {"b1": [0.0, 0.9], "b2": [0.9, 0.999]}
  assert out["seconds"] > 0 and set(out["grid_seconds"]) == {"adam"}
  got = [(r["b1"], r["b2"], r["learning_rate"]) for r in out["sweep"]]
  assert got == [(0.0, 0.9, 0.05), (0.0, 0.999, 0.05), (0.9, 0.9, 0.05), (0.9, 0.999, 0.05)]
  problem = synthetic.online()
  coefs = coefficients(problem, steps)
  for row in out["sweep"]:
    x_ref, avg_ref = ref_run(coefs, problem, "adam", lr=0.05, b1=row["b1"], b2=row["b2"])
    assert row["x_final"] == pytest.approx(x_ref, abs=X_TOL)
    assert row["avg_regret"] == pytest.approx(avg_ref, rel=REL_REGRET)


def test_cli_engines_agree(capsys):
  argv = ("--optimizer", "amsgrad", "--convention", "keras", "--steps", "3030")
  fast = _cli_json(capsys, *argv, "--engine", "fast")["results"][0]
  scan = _cli_json(capsys, *argv, "--engine", "scan")["results"][0]
  assert fast["x_final"] == pytest.approx(scan["x_final"], abs=5e-4)
  assert fast["avg_regret"] == pytest.approx(scan["avg_regret"], rel=1e-4)


@pytest.mark.parametrize(
  ("argv", "message"),
  [
    (["--lr", "0.1", "0.2", "--sweep-lr", "0.3"], "--lr has several values"),
    (["--engine", "fast", "--plot", "x.png"], "which --engine fast does not record"),
    (["--engine", "warp"], "invalid choice: 'warp'"),
  ],
)
def test_cli_rejects_bad_engine_and_grid_flags(capsys, tmp_path, argv, message):
  from amsgrad_optax.synthetic import _cli

  argv = [a if a != "x.png" else str(tmp_path / "x.png") for a in argv]
  with pytest.raises(SystemExit) as exc:
    _cli.main([*argv, "--steps", "100", "--quiet"])
  assert exc.value.code == 2
  assert message in capsys.readouterr().err


def _one_call_per_chunk(monkeypatch):
  """Makes the host loop run one chunk per call; returns the list of calls' ``(first, count)``."""
  from amsgrad_optax.synthetic import _runner

  monkeypatch.setattr(_runner, "_FIRST_CALL_CHUNKS", 1)
  monkeypatch.setattr(_runner, "_TARGET_CALL_SECONDS", 0.0)
  calls = []
  real = _runner._drive_chunks

  def spy(advance, *args, **kwargs):
    def counted(state, first, count):
      calls.append((int(first), int(count)))
      return advance(state, first, count)

    return real(counted, *args, **kwargs)

  monkeypatch.setattr(_runner, "_drive_chunks", spy)
  return calls


def _one_call(problem, name, steps, hp, seeds, convention="pytorch", big=None):
  """The sweep's runs as one jitted _fast.simulate_batch call (the engine's single-call result)."""

  def fn(hp, seeds):
    spec = _fast.OptimizerSpec(name, **hp, convention=convention, lr_schedule="constant")
    keys = jax.vmap(jax.random.key)(seeds)
    return _fast.simulate_batch(problem, spec, steps, keys, big=big)

  hp = {k: np.asarray(v, np.float32) for k, v in hp.items()}
  x, regret, residual = jax.jit(fn)(hp, np.asarray(seeds, np.int32))
  return np.asarray(x, np.float64), np.asarray(regret, np.float64) + np.asarray(residual)


@pytest.mark.parametrize("shard", [False, True])
def test_sweep_run_chunk_by_chunk_equals_one_call_bit_for_bit(small_chunks, monkeypatch, shard):
  calls = _one_call_per_chunk(monkeypatch)
  problem = synthetic.stochastic(probability=0.05)
  steps = 3011  # with 4 runs: chunks of 16 x 16 steps, the last one padded
  grid = {"b1": [0.0, 0.9], "b2": [0.9, 0.999]}
  table = synthetic.sweep(problem, steps, grid, optimizer="amsgrad", seeds=(0, 5), shard=shard)
  n_chunks = _fast.num_chunks(steps, 8)
  assert n_chunks > 3
  assert calls == [(i, 1) for i in range(n_chunks)]
  hp = {k: table[k] for k in ("learning_rate", "b1", "b2", "eps")}
  x, regret = _one_call(problem, "amsgrad", steps, hp, table["seed"])
  np.testing.assert_array_equal(table["x_final"], x)
  np.testing.assert_array_equal(table["regret"], regret)


def test_theorem1_sweep_run_chunk_by_chunk_equals_one_call_bit_for_bit(small_chunks, monkeypatch):
  calls = _one_call_per_chunk(monkeypatch)
  steps = 3011
  table = synthetic.theorem1_sweep([3.0, 10.0], steps, {"b2": [0.01, 0.9]}, shard=False)
  assert len(calls) == _fast.num_chunks(steps, 4) > 3
  hp = {k: table[k] for k in ("learning_rate", "b1", "b2", "eps")}
  problem = synthetic.theorem1(3.0)
  x, regret = _one_call(problem, "adam", steps, hp, np.zeros(4), big=table["C"])
  np.testing.assert_array_equal(table["x_final"], x)
  np.testing.assert_array_equal(table["regret"], regret)
  assert set(np.round(x).tolist()) == {1.0, -1.0}  # the grid holds both outcomes
