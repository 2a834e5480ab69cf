"""The ``amsgrad-synthetic`` command line, run as a user runs it."""

from __future__ import annotations

import importlib
import json
import math
import os
import pathlib
import subprocess
import sys
import tomllib

import pytest

from amsgrad_optax.synthetic import _cli

ROOT = pathlib.Path(__file__).resolve().parents[1]


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
  return subprocess.run(
    [sys.executable, "-m", "amsgrad_optax.synthetic", *args],
    capture_output=True,
    text=True,
    env=env,
    timeout=timeout,
    cwd=ROOT,
  )


def ref_online(name, steps, lr=1e-2, b1=0.9, b2=0.99, eps=1e-8):
  """Returns (x_T, R(T)/T) on the online problem by a float64 loop of the published formulas."""
  x, total, m, v, vmax = 0.0, 0.0, 0.0, 0.0, 0.0
  for t in range(steps):
    g = 1010.0 if t % 101 == 1 else -10.0
    total += g * (x + 1.0)
    k = t + 1
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    if name == "sgd":
      delta = -lr * g
    elif name == "adam":  # optax.adam
      delta = -lr * (m / (1 - b1**k)) / (math.sqrt(v / (1 - b2**k)) + eps)
    elif name == "amsgrad (pytorch)":  # torch.optim.Adam(amsgrad=True)
      vmax = max(vmax, v)
      delta = -lr / (1 - b1**k) * m / (math.sqrt(vmax) / math.sqrt(1 - b2**k) + eps)
    elif name == "amsgrad (optax)":  # optax.amsgrad
      vmax = max(vmax, v / (1 - b2**k))
      delta = -lr * (m / (1 - b1**k)) / (math.sqrt(vmax) + eps)
    x = min(max(x + delta, -1.0), 1.0)
  return x, total / steps


def test_json_output_holds_every_run_with_the_reference_figures():
  proc = cli(
    "--steps", "2000", "--json", "--optimizer", "adam", "amsgrad", "sgd",
    "--convention", "pytorch", "optax",
  )  # fmt: skip
  assert proc.returncode == 0, proc.stderr
  out = json.loads(proc.stdout)
  assert out["problem"] == "online" and out["steps"] == 2000
  assert out["hyperparameters"]["learning_rate"] == 0.01
  labels = [r["label"] for r in out["results"]]
  assert labels == ["adam", "amsgrad (pytorch)", "amsgrad (optax)", "sgd"]
  for r in out["results"]:
    assert {"x_final", "avg_regret", "steps", "seconds"} <= set(r)
    assert r["steps"] == 2000 and r["seconds"] >= 0
    x, avg = ref_online(r["label"], 2000)
    assert r["x_final"] == pytest.approx(x, abs=1e-4)
    assert r["avg_regret"] == pytest.approx(avg, rel=1e-4)


def test_plot_writes_a_png_of_both_panels(tmp_path):
  png = tmp_path / "figure1.png"
  proc = cli("--steps", "5000", "--plot", str(png))
  assert proc.returncode == 0, proc.stderr
  assert f"wrote {png}" in proc.stdout
  data = png.read_bytes()
  assert data[:8] == b"\x89PNG\r\n\x1a\n"
  from matplotlib.image import imread

  height, width = imread(png).shape[:2]
  assert width > 2 * height > 400  # two panels side by side


def test_long_run_without_a_tty_shows_no_progress_bar():
  # Above the bar's threshold of steps, but stderr is a pipe.
  proc = cli("--steps", "3e6", "--optimizer", "sgd", "--json")
  assert proc.returncode == 0, proc.stderr
  assert proc.stderr == ""
  (run,) = json.loads(proc.stdout)["results"]
  assert run["steps"] == 3_000_000


def test_sweep_json_rows_match_reference_loops():
  proc = cli(
    "--sweep-b1", "0", "0.9", "--sweep-b2", "0.9", "0.99", "--steps", "1500",
    "--optimizer", "adam", "--json",
  )  # fmt: skip
  assert proc.returncode == 0, proc.stderr
  rows = json.loads(proc.stdout)["sweep"]
  assert [(r["b1"], r["b2"]) for r in rows] == [(0.0, 0.9), (0.0, 0.99), (0.9, 0.9), (0.9, 0.99)]
  for r in rows:
    x, avg = ref_online("adam", 1500, b1=r["b1"], b2=r["b2"])
    assert r["x_final"] == pytest.approx(x, abs=1e-4)
    assert r["avg_regret"] == pytest.approx(avg, rel=1e-4)
    assert r["ends_at"] == ("worst" if x > 0.8 else r["ends_at"])


@pytest.mark.parametrize(
  ("args", "needle"),
  [
    (["--steps", "-5"], "argument --steps: must be a positive integer, got '-5'"),
    (["--optimizer", "rmsprop"], "argument --optimizer: invalid choice: 'rmsprop'"),
    (["--b2", "1.0"], "b2 must be in [0, 1), got 1.0"),
    (["--convention", "torch"], "argument --convention: invalid choice: 'torch'"),
  ],
)
def test_bad_input_exits_with_one_line(args, needle):
  proc = cli(*args, "--steps", "10") if "--steps" not in args else cli(*args)
  assert proc.returncode == 2
  assert proc.stdout == ""
  lines = proc.stderr.splitlines()
  assert len(lines) == 1, proc.stderr
  assert lines[0].startswith("amsgrad-synthetic: error: ")
  assert needle in lines[0]


@pytest.mark.parametrize(
  ("args", "needle"),
  [
    (["--lr", "-1"], "--lr must be in [0, inf), got -1.0"),
    (["--steps", "abc"], "argument --steps: must be a positive integer, got 'abc'"),
    (["--steps", "1.5e3"], None),  # accepted: 1500
    (["--sweep-b2", "1.5"], "b2 must be in [0, 1), got 1.5"),
    (["--sweep", "--plot", "x.png"], "cannot be combined with --sweep"),
    (["--problem", "theorem1", "--theorem1-c", "1"], "--theorem1-c must be a finite number > 2"),
    (["--seed", "-1"], "argument --seed: must be an integer in [0, 2**31)"),
    (["--plot", "/no/such/folder/f.png"], "--plot: the folder '/no/such/folder' does not exist"),
  ],
)
def test_bad_input_in_process(args, needle, capsys):
  if needle is None:
    assert _cli.main([*args, "--optimizer", "sgd", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 1500
    return
  with pytest.raises(SystemExit) as exc:
    _cli.main([*args, "--steps", "10"] if "--steps" not in args else args)
  assert exc.value.code == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and err.startswith("amsgrad-synthetic: error: ")
  assert needle in err


def test_human_output_is_an_aligned_table(capsys):
  assert _cli.main(["--steps", "3030", "--convention", "pytorch", "keras", "--quiet"]) == 0
  out = capsys.readouterr().out.splitlines()
  assert out[0].startswith("online: f_t(x) = 1010 x if t mod 101 = 1, else -10 x")
  assert out[1] == "3,030 steps; lr 0.01 (constant), b1 0.9, b2 0.99, eps 1e-08"
  header, *rows = out[3:]
  assert header.split() == ["optimizer", "x_final", "avg_regret", "run", "s", "compile", "s"]
  assert [r[:17].strip() for r in rows] == ["adam", "amsgrad (pytorch)", "amsgrad (keras)"]
  assert len({len(r) for r in [header, *rows]}) == 1  # right-aligned columns end together
  x, avg = ref_online("amsgrad (pytorch)", 3030)
  cells = rows[1].split()
  assert float(cells[2]) == pytest.approx(x, abs=1e-4)
  assert float(cells[3]) == pytest.approx(avg, rel=1e-4)


def test_theorem1_defaults_to_its_betas(capsys):
  assert _cli.main(["--problem", "theorem1", "--steps", "3000", "--json"]) == 0
  out = json.loads(capsys.readouterr().out)
  assert out["hyperparameters"]["b1"] == 0.0
  assert out["hyperparameters"]["b2"] == pytest.approx(1 / (1 + 3.0**2))
  adam, ams = out["results"]
  assert adam["x_final"] > 0.9 > -0.9 > ams["x_final"]


def test_console_script_entry_point_resolves_to_main():
  meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
  target = meta["project"]["scripts"]["amsgrad-synthetic"]
  module, func = target.split(":")
  assert getattr(importlib.import_module(module), func) is _cli.main
  deps = " ".join(meta["project"]["dependencies"])
  assert "tqdm" in deps  # the default command's progress bar needs no extra
  assert any(d.startswith("matplotlib") for d in meta["project"]["optional-dependencies"]["test"])
