"""Figure 1, the Theorem 1 grid and phase map, against float64 NumPy loops written here."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from amsgrad_optax import synthetic
from amsgrad_optax.synthetic import _cli

# The fast engine's contract (tests/test_fastpath.py): within these of a float64 run.
X_TOL, REL_REGRET = 0.005, 0.003


def ref_loop(coefs, x0, name, lr, b1, b2, eps=1e-8, schedule="constant", lower=-1.0, upper=1.0):
  """Returns ``(xs, avg_regrets)`` after every step of a float64 loop, regret against x* = -1.

  ``name``: ``"adam"`` (optax.adam: bias-corrected m and v) or
  ``"amsgrad"`` (torch.optim.Adam(amsgrad=True): max of the raw v).
  """
  m = v = vmax = 0.0
  x, total = float(x0), 0.0
  xs, avgs = [], []
  for k, g in enumerate(np.asarray(coefs, np.float64).tolist(), start=1):
    total += g * (x + 1.0)
    lr_k = lr / math.sqrt(k) if schedule == "inverse-sqrt" else lr
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    c1, c2 = 1 - b1**k, 1 - b2**k
    if name == "adam":
      delta = -lr_k * (m / c1) / (math.sqrt(v / c2) + eps)
    else:
      vmax = max(vmax, v)
      delta = -lr_k / c1 * m / (math.sqrt(vmax) / math.sqrt(c2) + eps)
    x = min(max(x + delta, lower), upper)
    xs.append(x)
    avgs.append(total / k)
  return np.array(xs), np.array(avgs)


def theorem1_coefs(c, steps):
  t = np.arange(1, steps + 1)  # Theorem 1 counts from 1: the first gradient is C
  return np.where(t % 3 == 1, c, -1.0)


def online_coefs(steps):
  t = np.arange(0, steps)  # the library's online problem counts from 0
  return np.where(t % 101 == 1, 1010.0, -10.0)


def stochastic_coefs(steps, seed):
  """The documented coins: the first word of fold_in(key, t) below floor(0.01 * 2**32)."""
  key = jax.random.key(seed)
  words = jax.vmap(lambda s: jax.random.key_data(jax.random.fold_in(key, s))[0])(
    jnp.arange(steps, dtype=jnp.int32)
  )
  heads = np.asarray(words, np.uint64) < math.floor(0.01 * 2**32)
  return np.where(heads, 1010.0, -10.0)


# ---------------------------------------------------------------- the (C, b1, b2) grid


@pytest.mark.parametrize("schedule", ["constant", "inverse-sqrt"])
@pytest.mark.parametrize("name", ["adam", "amsgrad"])
def test_theorem1_grid_matches_float64_loops_cell_by_cell(name, schedule):
  c, b1, b2 = [3.0, 7.5], [0.0, 0.5], [0.05, 0.6]
  steps, lr = 3000, 0.05
  table = synthetic.theorem1_sweep(
    c,
    steps,
    {"b1": b1, "b2": b2},
    optimizer=name,
    defaults={"learning_rate": lr},
    lr_schedule=schedule,
    shard=False,
  )
  rows = synthetic.table_rows(table)
  assert [(r["C"], r["b1"], r["b2"]) for r in rows] == [
    (ci, bi, bj) for ci in c for bi in b1 for bj in b2
  ]
  for r in rows:
    xs, avgs = ref_loop(
      theorem1_coefs(r["C"], steps), 1.0, name, lr, r["b1"], r["b2"], 1e-8, schedule
    )
    assert r["x_final"] == pytest.approx(xs[-1], abs=X_TOL), r
    assert r["avg_regret"] == pytest.approx(avgs[-1], rel=REL_REGRET), r
    assert r["avg_regret"] == pytest.approx(r["regret"] / steps)


def test_theorem1_grid_defaults_to_the_theorems_betas_per_c():
  table = synthetic.theorem1_sweep([3.0, 5.0], 300, shard=False)
  np.testing.assert_array_equal(table["b1"], [0.0, 0.0])
  np.testing.assert_allclose(table["b2"], [1 / 10, 1 / 26])
  # The theorem's claim at its own b2: Adam ends at the worst point, +1.
  adam = synthetic.theorem1_sweep([3.0, 5.0], 30_000, shard=False)
  assert np.all(adam["x_final"] > 0.9)


@pytest.mark.parametrize(
  ("kwargs", "match"),
  [
    ({"c": [3.0, 2.0]}, "c must be > 2"),
    ({"c": []}, "c must be a non-empty"),
    ({"grid": {"C": [3.0]}}, "grid keys must be among"),
    ({"grid": {"b2": [1.0]}}, r"b2 must be in \[0, 1\)"),
  ],
)
def test_theorem1_grid_bad_input_names_the_argument(kwargs, match):
  args = {"c": [3.0], "steps": 10, **kwargs}
  with pytest.raises(ValueError, match=match):
    synthetic.theorem1_sweep(args.pop("c"), args.pop("steps"), **args)


# ---------------------------------------------------------------- the steady-state boundary


@pytest.mark.parametrize(("c", "b2"), [(3.0, 0.1), (3.0, 0.8), (10.0, 0.05), (10.0, 0.3)])
def test_theorem1_drift_is_the_net_step_per_period_of_a_float64_loop(c, b2):
  # Adam with b1 = 0, no epsilon, no bias correction, constant lr, no projection:
  # after the moments settle, one period moves x by exactly lr * D.
  lr, v, x = 1e-3, 0.0, 0.0
  positions = []
  for k in range(1, 3 * 400 + 1):
    g = c if k % 3 == 1 else -1.0
    v = b2 * v + (1 - b2) * g * g
    x -= lr * g / math.sqrt(v)
    if k % 3 == 0:
      positions.append(x)
  assert positions[-1] - positions[-2] == pytest.approx(
    lr * synthetic.theorem1_drift(c, b2), rel=1e-9
  )


def test_theorem1_boundary_is_where_the_drift_changes_sign():
  for c in (2.2, 3.0, 10.0, 100.0):
    b = synthetic.theorem1_boundary(c)
    assert synthetic.theorem1_drift(c, b * 0.999) > 0 > synthetic.theorem1_drift(c, b * 1.001)
    # The theorem's b2 = 1/(1+C^2) is on the failing side.
    assert 1 / (1 + c * c) < b
  assert synthetic.theorem1_quoted_bound(3.0) < 0  # 1 - (9/6)^2: no b2 qualifies for C <= 4.5
  assert synthetic.theorem1_quoted_bound(10.0) == pytest.approx(10**-0.5)


def test_phase_map_json_rows_and_counts(tmp_path):
  pytest.importorskip("matplotlib")
  png, js = tmp_path / "pm.png", tmp_path / "pm.json"
  out = synthetic.theorem1_phase_map(
    png, c=[3.0, 10.0], b2=[0.01, 0.3, 0.9], steps=3000, json_path=js
  )
  assert png.stat().st_size > 10_000
  data = json.loads(js.read_text())
  assert len(data["rows"]) == 2 * 6
  for row in data["rows"]:
    assert {"C", "b1", "b2", "x_final", "avg_regret", "optimizer"} <= set(row)
    assert row["b1"] == 0.0
  adam = [r for r in data["rows"] if r["optimizer"] == "adam"]
  xs, _ = ref_loop(theorem1_coefs(10.0, 3000), 1.0, "adam", 1.0, 0.0, 0.3, 1e-8, "inverse-sqrt")
  assert adam[4]["C"] == 10.0 and adam[4]["b2"] == 0.3
  assert adam[4]["x_final"] == pytest.approx(xs[-1], abs=X_TOL)
  for name, s in data["summary"].items():
    x = np.array([r["x_final"] for r in data["rows"] if r["optimizer"] == name])
    assert s["ends_near_plus_1"] == int((x > 0.9).sum())
    assert s["ends_near_minus_1"] == int((x < -0.9).sum())
  x = np.array([r["x_final"] for r in adam])
  predicted = np.array([synthetic.theorem1_drift(r["C"], r["b2"]) > 0 for r in adam])
  assert data["summary"]["adam"]["agrees_with_boundary"] == int(((x > 0) == predicted).sum())
  assert "agrees_with_boundary" not in data["summary"]["amsgrad"]  # the boundary is Adam's
  assert data["boundary_b2"] == pytest.approx([synthetic.theorem1_boundary(c) for c in (3.0, 10.0)])
  assert out["summary"] == data["summary"]


# ---------------------------------------------------------------- Figure 1


def test_log_traces_follow_a_float64_loop_at_every_recorded_step():
  steps = 5000
  tx = synthetic.make_optimizer("amsgrad", 0.3, 0.9, 0.99, lr_schedule="inverse-sqrt")
  tr = synthetic.log_traces(synthetic.online(), tx, steps)
  xs, avgs = ref_loop(online_coefs(steps), 0.0, "amsgrad", 0.3, 0.9, 0.99, 1e-8, "inverse-sqrt")
  assert tr["t"][0] == 1 and tr["t"][-1] == steps and np.all(np.diff(tr["t"]) > 0)
  np.testing.assert_allclose(tr["x"][0], xs[tr["t"] - 1], rtol=0, atol=1e-4)
  np.testing.assert_allclose(tr["avg_regret"][0], avgs[tr["t"] - 1], rtol=1e-4, atol=1e-4)
  # Two seeds of the stochastic problem: each its own documented coins.
  tr = synthetic.log_traces(synthetic.stochastic(), tx, 2000, seeds=[3, 4])
  for i, seed in enumerate((3, 4)):
    xs, _ = ref_loop(
      stochastic_coefs(2000, seed), 0.0, "amsgrad", 0.3, 0.9, 0.99, 1e-8, "inverse-sqrt"
    )
    np.testing.assert_allclose(tr["x"][i], xs[tr["t"] - 1], rtol=0, atol=1e-4)


def test_choose_alpha_takes_the_lowest_mean_regret_of_the_grid():
  grid, steps = (0.01, 0.3, 3.0), 20_200
  got = synthetic.choose_alpha(synthetic.online(), "amsgrad", steps, grid=grid)
  want = [
    ref_loop(online_coefs(steps), 0.0, "amsgrad", a, 0.9, 0.99, 1e-8, "inverse-sqrt")[1][-1]
    for a in grid
  ]
  np.testing.assert_allclose(got["mean_avg_regret"], want, rtol=REL_REGRET)
  assert got["alpha"] == grid[int(np.argmin(want))]


@pytest.mark.slow
def test_cli_figure1_writes_the_png_and_the_numbers_beside_it(tmp_path, capsys):
  pytest.importorskip("matplotlib")
  png = tmp_path / "fig1.png"
  assert _cli.main(["--figure1", str(png), "--steps", "2000", "--json"]) == 0
  data = json.loads(capsys.readouterr().out)["figure1"]
  beside = json.loads((tmp_path / "fig1.json").read_text())
  assert png.stat().st_size > 20_000
  assert beside["panels"].keys() == data["panels"].keys() == {"online", "stochastic"}
  assert data["alpha_grid"] == list(synthetic.ALPHA_GRID)
  assert data["betas"] == {"b1": 0.9, "b2": 0.99} and data["lr_schedule"] == "inverse-sqrt"
  stochastic = data["panels"]["stochastic"]["runs"]
  for run in stochastic.values():
    assert run["seeds"] == list(range(8)) and len(run["x_final"]) == 8
    sel = run["alpha_selection"]
    assert run["alpha"] == sel["grid"][int(np.argmin(sel["mean_avg_regret"]))]
    assert set(sel["seeds"]).isdisjoint(run["seeds"])  # chosen on held-out seeds
  ams = stochastic["amsgrad (pytorch)"]
  xs, avgs = ref_loop(
    stochastic_coefs(2000, 5), 0.0, "amsgrad", ams["alpha"], 0.9, 0.99, 1e-8, "inverse-sqrt"
  )
  assert ams["x_final"][5] == pytest.approx(xs[-1], abs=1e-4)
  assert ams["avg_regret_final"][5] == pytest.approx(avgs[-1], rel=1e-4)
  assert ams["x"]["median"][-1] == pytest.approx(np.median(ams["x_final"]))


# ---------------------------------------------------------------- the command line


def test_cli_theorem1_c_grid_rows_carry_c_and_match_float64_loops(capsys):
  args = ["--problem", "theorem1", "--theorem1-c", "3", "6", "--b2", "0.05", "0.6"]
  assert _cli.main([*args, "--steps", "3000", "--json"]) == 0
  out = json.loads(capsys.readouterr().out)
  rows = out["sweep"]
  assert len(rows) == 2 * 2 * 2  # optimizers x C x b2
  for r in rows:
    assert {"C", "b1", "b2", "x_final", "avg_regret"} <= set(r)
    xs, avgs = ref_loop(theorem1_coefs(r["C"], 3000), 1.0, r["optimizer"], 0.01, 0.0, r["b2"])
    assert r["x_final"] == pytest.approx(xs[-1], abs=X_TOL)
    assert r["avg_regret"] == pytest.approx(avgs[-1], rel=REL_REGRET)
  # Without --b2 every C runs the theorem's own b2.
  assert (
    _cli.main(["--problem", "theorem1", "--theorem1-c", "3", "6", "--steps", "30", "--json"]) == 0
  )
  out = json.loads(capsys.readouterr().out)
  assert out["hyperparameters"]["b2"] == "1/(1+C^2)"
  assert sorted({(r["C"], r["b2"]) for r in out["sweep"]}) == [(3.0, 0.1), (6.0, 1 / 37)]


def test_cli_stochastic_defaults_to_the_papers_step_size(capsys):
  assert _cli.main(["--problem", "stochastic", "--steps", "3000", "--json"]) == 0
  out = json.loads(capsys.readouterr().out)
  assert out["hyperparameters"]["learning_rate"] == 1.0
  assert out["hyperparameters"]["lr_schedule"] == "inverse-sqrt"
  ams = next(r for r in out["results"] if r["optimizer"] == "amsgrad")
  xs, _ = ref_loop(stochastic_coefs(3000, 0), 0.0, "amsgrad", 1.0, 0.9, 0.99, 1e-8, "inverse-sqrt")
  assert ams["x_final"] == pytest.approx(xs[-1], abs=X_TOL)
  # The online problem keeps the reference's constant 0.01.
  assert _cli.main(["--steps", "300", "--json"]) == 0
  out = json.loads(capsys.readouterr().out)
  assert out["hyperparameters"]["learning_rate"] == 0.01
  assert out["hyperparameters"]["lr_schedule"] == "constant"


def test_cli_theorem1_c_grid_rejects_every_bad_c(capsys):
  with pytest.raises(SystemExit) as e:
    _cli.main(["--problem", "theorem1", "--theorem1-c", "3", "1.5"])
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert "--theorem1-c must be a finite number > 2" in err and "got 1.5" in err


@pytest.mark.parametrize(
  ("args", "needle"),
  [
    (
      ["--figure1", "/no/such/folder/f.png"],
      "--figure1: the folder '/no/such/folder' does not exist",
    ),
    (["--phase-map", "p.png", "--plot", "q.png"], "cannot be combined with --plot"),
    (["--figure1", "f.png", "--seeds", "4"], "--figure1 draws at least 8 seeds, got --seeds 4"),
  ],
)
def test_cli_figure_flags_bad_input_exits_with_one_line(args, needle, capsys):
  with pytest.raises(SystemExit) as e:
    _cli.main(args)
  assert e.value.code == 2
  assert needle in capsys.readouterr().err


# ---------------------------------------------------------------- the command line's checks


def _no_run(*a, **k):
  raise AssertionError("a run started")


@pytest.mark.parametrize(
  ("args", "needle"),
  [
    (
      ["--figure1", "f.png", "--b1", "0.5"],
      "--figure1 draws a whole figure; it cannot be combined",
    ),
    (["--phase-map", "p.png", "--sweep"], "cannot be combined with --sweep"),
    (["--figure1", "f.png", "--problem", "stochastic"], "cannot be combined with --problem"),
    (["--figure1", "f.png", "--lr", "1"], "--lr applies to --phase-map only"),
    (["--figure1", "f.png", "--theorem1-c", "3", "6"], "--theorem1-c applies to --phase-map only"),
    (["--phase-map", "p.png", "--seed", "3"], "--seed applies to --figure1's stochastic panel"),
    (["--phase-map", "p.png", "--theorem1-c", "5"], "give at least 2 values of --theorem1-c"),
    (["--phase-map", "p.png", "--b2", "0.5"], "give at least 2 values of --b2"),
    (["--phase-map", "p.png", "--b2", "0.5", "0.99999999"], "--b2 0.99999999 rounds to 1 in"),
    (["--phase-map", "p.png", "--theorem1-c", "3", "1e20"], "--theorem1-c 1e+20: C^2 overflows"),
    (["--phase-map", "p.png", "--lr", "1e300"], "--lr 1e+300 overflows float32"),
    (["--figure1", "f.png", "--convention", "pytorch", "optax"], "one AMSGrad convention"),
    (["--figure1", "a.png", "--phase-map", "a.svg"], "would both write 'a.json'"),
    (["--figure1", "f.jpx"], "--figure1: matplotlib cannot write '.jpx' files"),
    (["--phase-map", "taken.png"], "--phase-map: 'taken.json' is a folder"),
  ],
)
def test_cli_figure_flags_are_checked_before_anything_runs(
  args, needle, tmp_path, monkeypatch, capsys
):
  pytest.importorskip("matplotlib")
  monkeypatch.chdir(tmp_path)
  (tmp_path / "taken.json").mkdir()  # where --phase-map taken.png would write its numbers
  monkeypatch.setattr(synthetic._figures, "figure1", _no_run)
  monkeypatch.setattr(synthetic._figures, "theorem1_phase_map", _no_run)
  with pytest.raises(SystemExit) as e:
    _cli.main(args)
  assert e.value.code == 2
  captured = capsys.readouterr()
  assert captured.out == ""
  assert captured.err.count("\n") == 1 and captured.err.startswith("amsgrad-synthetic: error: ")
  assert needle in captured.err
  assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.json"]  # nothing written


def test_cli_figures_stop_between_figures_on_ctrl_c(tmp_path, monkeypatch, capsys):
  pytest.importorskip("matplotlib")
  calls = []

  def fake_figure1(path, **kwargs):
    calls.append(("figure1", path, kwargs))
    return {"figure": "figure1", "steps": kwargs["steps"], "seeds": list(kwargs["seeds"])}

  def interrupted(*a, **k):
    raise KeyboardInterrupt

  monkeypatch.setattr(synthetic._figures, "figure1", fake_figure1)
  monkeypatch.setattr(synthetic._figures, "theorem1_phase_map", interrupted)
  args = ["--figure1", str(tmp_path / "f"), "--phase-map", str(tmp_path / "p.png"), "--json"]
  assert _cli.main([*args, "--seed", "3", "--seeds", "9", "--steps", "500"]) == 130
  captured = capsys.readouterr()
  doc = json.loads(captured.out, parse_constant=_no_run)
  assert doc == {
    "figure1": {"figure": "figure1", "steps": 500, "seeds": list(range(3, 12))},
    "interrupted": True,
  }
  # The suffix-less name gets matplotlib's .png, and its numbers go beside it.
  assert calls[0][1] == str(tmp_path / "f.png")
  assert calls[0][2]["json_path"] == str(tmp_path / "f.json")
  assert "interrupted: 1 of 2 figures finished" in captured.err


def test_cli_theorem1_c_grid_keeps_finished_grids_on_ctrl_c_in_strict_json(monkeypatch, capsys):
  real = synthetic._sweep.theorem1_sweep

  def second_interrupted(c, steps, grid, *, optimizer, **kwargs):
    if optimizer == "amsgrad":
      raise KeyboardInterrupt
    table = real(c, steps, grid, optimizer=optimizer, **kwargs)
    table["x_final"][0] = np.nan  # as a diverged run returns it
    return table

  monkeypatch.setattr(synthetic._sweep, "theorem1_sweep", second_interrupted)
  argv = ["--problem", "theorem1", "--theorem1-c", "3", "6", "--steps", "300", "--json"]
  assert _cli.main(argv) == 130
  doc = json.loads(capsys.readouterr().out, parse_constant=_no_run)
  assert doc["interrupted"] is True and doc["C"] == [3.0, 6.0]
  rows = doc["sweep"]
  assert [(r["optimizer"], r["C"]) for r in rows] == [("adam", 3.0), ("adam", 6.0)]
  assert rows[0]["x_final"] is None and rows[0]["diverged"] is True
  assert rows[0]["ends_at"] == "diverged" and rows[1]["diverged"] is False
