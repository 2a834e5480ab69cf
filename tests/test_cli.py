"""The ``amsgrad-synthetic`` command line, run as a user runs it."""

from __future__ import annotations

import importlib
import json
import math
import os
import pathlib
import re
import signal
import subprocess
import sys
import time
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


# ------------------------------------------------------------------ strict JSON, checked outputs


def strict_json(text: str):
  """Parses ``text`` as JSON, refusing the NaN/Infinity tokens that Python's json accepts."""

  def refuse(token):
    raise ValueError(f"not JSON: {token}")

  return json.loads(text, parse_constant=refuse)


def test_json_of_a_diverged_run_is_strict_and_says_so(monkeypatch, capsys):
  # No flag combination left can make a run diverge (they fail validation), so
  # the runner is made to return what a diverged run returns.
  nan, inf = float("nan"), float("inf")
  real_run = _cli._runner.run

  def diverging_run(problem, tx, steps, **kwargs):
    r = real_run(problem, tx, steps, **kwargs)
    return r._replace(x_final=nan, regret=inf, avg_regret=inf) if kwargs["label"] == "adam" else r

  monkeypatch.setattr(_cli._runner, "run", diverging_run)
  assert _cli.main(["--steps", "1000", "--json"]) == 0
  out = strict_json(capsys.readouterr().out)
  adam, ams = out["results"]
  assert adam["diverged"] is True and ams["diverged"] is False
  assert adam["x_final"] is None and adam["regret"] is None and adam["avg_regret"] is None
  assert math.isfinite(ams["x_final"]) and out["interrupted"] is False
  # The table says so in words as well.
  assert _cli.main(["--steps", "1000", "--quiet"]) == 0
  assert "diverged (x_t or the regret is not finite): adam" in capsys.readouterr().out


@pytest.mark.parametrize(
  ("args", "needle"),
  [
    # Hyperparameters that float32, the runs' dtype, rounds to an invalid value.
    (["--b2", "0.99999999"], "--b2 0.99999999 rounds to 1 in float32"),
    (["--b1", "0.999999999"], "--b1 0.999999999 rounds to 1 in float32"),
    (["--sweep-b2", "0.9", "0.99999999"], "--sweep-b2 0.99999999 rounds to 1 in float32"),
    (["--lr", "1e300"], "--lr 1e+300 overflows float32"),
    (["--eps", "1e39"], "--eps 1e+39 overflows float32"),
    (["--eps", "1e-50"], "--eps 1e-50 is below the smallest normal float32 number"),
    (["--lr", "nan"], "--lr must be a finite number, got nan"),
    (["--b2", "0.1", "0.1000000001"], "--b2 0.1 and 0.1000000001 are the same number in float32"),
    (["--problem", "theorem1", "--theorem1-c", "1e20"], "--theorem1-c 1e+20: C^2 overflows"),
    (["--problem", "theorem1", "--theorem1-c", "1.5e19"], "--theorem1-c 1.5e+19 gives b2 ="),
    # Flags that would be ignored.
    (["--theorem1-c", "0"], "--theorem1-c applies to --problem theorem1 only"),
    (["--seed", "3"], "--seed applies to --problem stochastic only"),
    (["--seeds", "3", "--sweep"], "--seeds applies to --problem stochastic only"),
    (["--problem", "stochastic", "--seeds", "3"], "--seeds applies to sweeps"),
    (
      ["--optimizer", "adam", "--convention", "optax"],
      "--convention applies to --optimizer amsgrad",
    ),
    (["--optimizer", "sgd", "--b2", "0.5"], "--b2 is not used by --optimizer sgd"),
    (["--optimizer", "sgd", "--sweep-eps", "0", "1"], "--sweep-eps is not used by --optimizer sgd"),
    (["--trace-every", "5"], "--trace-every sets the points of --plot"),
    (["--optimizer", "sgd", "--sweep"], "--sweep alone sweeps b1 and b2, which --optimizer sgd"),
    # Outputs, in the user's terms.
    (["--engine", "fast", "--plot", "x.png"], "use --engine auto (the default) or scan"),
    (["--lr", "0.1", "0.2", "--plot", "x.png"], "it cannot be combined with --sweep"),
    (["--plot", "fig.jpx"], "--plot: matplotlib cannot write '.jpx' files"),
    (["--plot", "/proc/x.png", "--json"], "--plot: cannot write '/proc/x.png'"),
    (["--plot", "/no/such/folder/f.png"], "--plot: the folder '/no/such/folder' does not exist"),
  ],
)
def test_usage_errors_exit_2_before_anything_runs(args, needle, monkeypatch, capsys):
  def no_run(*a, **k):
    raise AssertionError("a run started")

  monkeypatch.setattr(_cli._runner, "run", no_run)
  monkeypatch.setattr(_cli._sweep, "sweep", no_run)
  with pytest.raises(SystemExit) as exc:
    _cli.main([*args, "--steps", "1000"])
  assert exc.value.code == 2
  captured = capsys.readouterr()
  assert captured.out == ""
  assert captured.err.count("\n") == 1 and captured.err.startswith("amsgrad-synthetic: error: ")
  assert needle in captured.err


def test_plot_into_an_existing_folder_is_refused_and_writes_nothing(tmp_path, capsys):
  folder = tmp_path / "dir"
  folder.mkdir()
  with pytest.raises(SystemExit) as exc:
    _cli.main(["--steps", "1000", "--plot", str(folder)])
  assert exc.value.code == 2
  assert f"--plot: '{folder}' is a folder" in capsys.readouterr().err
  assert sorted(p.name for p in tmp_path.iterdir()) == ["dir"]  # no dir.png


def test_plot_without_a_suffix_names_the_file_it_writes(tmp_path, capsys):
  assert _cli.main(["--steps", "2020", "--plot", str(tmp_path / "fig"), "--quiet"]) == 0
  assert f"wrote {tmp_path / 'fig.png'}\n" in capsys.readouterr().out
  assert (tmp_path / "fig.png").read_bytes()[:4] == b"\x89PNG"


def test_plot_of_the_stochastic_problem_draws_it(tmp_path, capsys):
  # The stochastic problem has no period: the plot's early trace must not ask for one.
  png = tmp_path / "s.png"
  assert (
    _cli.main(["--problem", "stochastic", "--steps", "20000", "--json", "--plot", str(png)]) == 0
  )
  doc = strict_json(capsys.readouterr().out)
  assert doc["plot"] == str(png) and png.read_bytes()[:4] == b"\x89PNG"
  assert [r["optimizer"] for r in doc["results"]] == ["adam", "amsgrad"]


def test_missing_matplotlib_is_a_usage_error(monkeypatch, capsys):
  for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
    monkeypatch.setitem(sys.modules, name, None)
  monkeypatch.setitem(sys.modules, "matplotlib", None)
  with pytest.raises(SystemExit) as exc:
    _cli.main(["--steps", "1000", "--plot", "x.png"])
  assert exc.value.code == 2
  captured = capsys.readouterr()
  assert captured.out == ""
  assert captured.err == (
    "amsgrad-synthetic: error: --plot needs matplotlib, which is not installed: "
    "pip install 'amsgrad-optax[plot]'\n"
  )


def test_sweep_table_tells_close_values_apart_and_its_header_claims_no_single_beta(capsys):
  args = ["--optimizer", "adam", "--b2", "0.999999", "0.9999999", "--steps", "1000", "--quiet"]
  assert _cli.main(args) == 0
  lines = capsys.readouterr().out.splitlines()
  assert (
    lines[1] == "1,000 steps; lr 0.01 (constant), b1 0.9, b2 in {0.999999, 0.9999999}, eps 1e-08"
  )
  rows = [line.split() for line in lines[3:]]
  assert [r[3] for r in rows[1:]] == ["0.999999", "0.9999999"]
  assert _cli.main(["--sweep", "--optimizer", "adam", "--steps", "1000", "--quiet"]) == 0
  header = capsys.readouterr().out.splitlines()[1]
  assert header == (
    "1,000 steps; lr 0.01 (constant), b1 in {0, 0.5, 0.9}, b2 in {0.9, 0.99, 0.999, 0.9999}, "
    "eps 1e-08"
  )


# ------------------------------------------------------------------ interrupts and progress


def interrupt_second_run(monkeypatch):
  """Makes the second run (or sweep) raise KeyboardInterrupt, as Ctrl-C during it does."""
  calls = []
  real_run, real_sweep = _cli._runner.run, _cli._sweep.sweep

  def wrap(real):
    def fn(*args, **kwargs):
      calls.append(1)
      if len(calls) == 2:
        raise KeyboardInterrupt
      return real(*args, **kwargs)

    return fn

  monkeypatch.setattr(_cli._runner, "run", wrap(real_run))
  monkeypatch.setattr(_cli._sweep, "sweep", wrap(real_sweep))


def test_interrupt_keeps_the_finished_runs_in_json(monkeypatch, capsys):
  interrupt_second_run(monkeypatch)
  args = ["--steps", "2000", "--json", "--optimizer", "sgd", "adam", "amsgrad"]
  assert _cli.main(args) == 130
  captured = capsys.readouterr()
  out = strict_json(captured.out)
  assert out["interrupted"] is True
  (sgd,) = out["results"]
  x, avg = ref_online("sgd", 2000)
  assert sgd["label"] == "sgd" and sgd["x_final"] == pytest.approx(x, abs=1e-4)
  assert captured.err == "amsgrad-synthetic: interrupted: 1 of 3 runs finished\n"


def test_interrupt_keeps_the_finished_rows_of_a_table_and_of_a_sweep(monkeypatch, capsys):
  interrupt_second_run(monkeypatch)
  assert _cli.main(["--steps", "2000", "--optimizer", "sgd", "adam", "--quiet"]) == 130
  captured = capsys.readouterr()
  rows = captured.out.splitlines()[3:]
  assert [r.split()[0] for r in rows] == ["optimizer", "sgd"]
  assert captured.err == "amsgrad-synthetic: interrupted: 1 of 2 runs finished\n"
  interrupt_second_run(monkeypatch)
  args = ["--sweep-b1", "0", "0.9", "--steps", "1500", "--optimizer", "adam", "amsgrad", "--json"]
  assert _cli.main(args) == 130
  captured = capsys.readouterr()
  out = strict_json(captured.out)
  assert out["interrupted"] is True
  assert [(r["label"], r["b1"]) for r in out["sweep"]] == [("adam", 0.0), ("adam", 0.9)]
  assert "interrupted: 1 of 2 optimizers' grids finished" in captured.err


def spawn(*args: str, **kwargs) -> subprocess.Popen:
  """Starts the command line; it prints "ready" on stderr once imported, before main runs."""
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
  code = (
    "import sys; from amsgrad_optax.synthetic import _cli; "
    "print('ready', file=sys.stderr, flush=True); sys.exit(_cli.main(sys.argv[1:]))"
  )
  # Started with SIGINT handled even if this process ignores it (as a background job does).
  old = signal.signal(signal.SIGINT, signal.default_int_handler)
  try:
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, cwd=ROOT, **kwargs)
  finally:
    signal.signal(signal.SIGINT, old)


@pytest.mark.parametrize("engine", ["fast", "scan"])
def test_sigint_without_a_terminal_stops_a_long_run_with_strict_json(engine):
  # 2e9 steps take seconds (fast) to minutes (scan) on CPU; an interrupt must
  # land between the host calls of a run, not after the whole run.
  # Four runs, so that a faster machine is still running one when the signal comes.
  proc = spawn(
    "--steps", "2e9", "--json", "--optimizer", "amsgrad", "--engine", engine,
    "--convention", "pytorch", "keras", "optax", "paper",
    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
  )  # fmt: skip
  try:
    assert proc.stderr.readline() == "ready\n"
    time.sleep(3.0)  # into the compilation or the run
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
  finally:
    proc.kill()
  assert proc.returncode == 130, err
  doc = strict_json(out)
  assert doc["interrupted"] is True
  finished = len(doc["results"])
  assert finished < 4
  assert [r["label"] for r in doc["results"]] == [
    f"amsgrad ({c})" for c in ("pytorch", "keras", "optax", "paper")[:finished]
  ]
  assert err.splitlines()[-1] == f"amsgrad-synthetic: interrupted: {finished} of 4 runs finished"


def _bar_positions_then_ctrl_c(*args: str) -> tuple[set[bytes], int, str, bytes]:
  """Runs the command with stderr on a pseudo-terminal until its bar has shown three positions
  (or two minutes pass), then sends SIGINT; returns (positions, exit status, stdout, terminal)."""
  import fcntl
  import pty
  import struct
  import termios

  leader, follower = pty.openpty()
  # A terminal of 30 rows, 100 columns (tqdm draws nothing on one of width 0).
  fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
  proc = spawn(*args, stdout=subprocess.PIPE, stderr=follower, text=True)
  os.close(follower)
  seen, buf = set(), b""
  try:
    deadline = time.monotonic() + 120
    while len(seen) < 3 and time.monotonic() < deadline and proc.poll() is None:
      try:
        chunk = os.read(leader, 4096)
      except OSError:
        break
      buf += chunk
      # tqdm draws "adam:  12%|#...| 240M/2.00G [...]"
      seen.update(re.findall(rb"\| *([0-9.]+[kMG]?)/2\.00G", buf))
      seen.discard(b"0")
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    try:
      while chunk := os.read(leader, 4096):
        buf += chunk
    except OSError:
      pass
  finally:
    proc.kill()
    os.close(leader)
  return seen, proc.returncode, out, buf


def test_progress_bar_moves_during_a_fast_run_and_ctrl_c_stops_it():
  # stderr on a terminal: the bar shows. It must advance several times before
  # the run ends (the fast engine used to jump from 0% to done).
  seen, returncode, out, buf = _bar_positions_then_ctrl_c("--steps", "2e9", "--optimizer", "adam")
  assert len(seen) >= 3, buf[-500:]
  assert returncode == 130
  assert out.splitlines()[0].startswith("online: ")
  assert b"amsgrad-synthetic: interrupted: 0 of 1 runs finished" in buf


# A sweep of 6 configs x 2e9 steps per optimizer: a minute or more of one CPU core per grid.
LONG_SWEEP = ("--sweep-b1", "0", "0.5", "0.9", "--sweep-b2", "0.99", "0.999", "--steps", "2e9")


def test_sigint_without_a_terminal_stops_a_long_sweep_between_calls_with_strict_json():
  # The grid runs as host calls of about 0.1 s: an interrupt lands between
  # them, not after the whole grid (as it did when a grid was one call).
  proc = spawn(
    *LONG_SWEEP, "--json", "--optimizer", "adam", "amsgrad",
    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
  )  # fmt: skip
  try:
    assert proc.stderr.readline() == "ready\n"
    time.sleep(4.0)  # into the compilation or the first grid
    proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    out, err = proc.communicate(timeout=60)
    waited = time.monotonic() - sent
  finally:
    proc.kill()
  assert proc.returncode == 130, err
  # Generous for a loaded machine; a grid takes a minute or more.
  assert waited < 10, waited
  doc = strict_json(out)
  assert doc["interrupted"] is True
  # Only whole grids: the one running when the signal came is dropped.
  labels = [r["label"] for r in doc["sweep"]]
  finished = len(labels) // 6
  assert len(labels) == 6 * finished and finished < 2
  assert labels == ["adam"] * len(labels)
  assert err.splitlines()[-1] == (
    f"amsgrad-synthetic: interrupted: {finished} of 2 optimizers' grids finished"
  )


def test_progress_bar_moves_during_a_sweep_and_ctrl_c_stops_it():
  seen, returncode, _, buf = _bar_positions_then_ctrl_c(*LONG_SWEEP, "--optimizer", "adam")
  assert len(seen) >= 3, buf[-500:]
  assert returncode == 130
  assert b"amsgrad-synthetic: interrupted: 0 of 1 optimizers' grids finished" in buf


# ------------------------------------------------------------------ the examples' --help


@pytest.mark.parametrize(
  "script", ["flax_nnx_digits.py", "flax_linen_digits.py", "distributed_data_parallel.py"]
)
def test_example_help_explains_every_flag_and_its_default(script):
  proc = subprocess.run(
    [sys.executable, str(ROOT / "examples" / script), "--help"],
    capture_output=True,
    text=True,
    timeout=120,
    cwd=ROOT,
    env={**os.environ, "COLUMNS": "200"},  # one line per flag
  )
  assert proc.returncode == 0, proc.stderr
  options = proc.stdout.split("options:\n", 1)[1]
  entries: list[list[str]] = []  # [invocation, help text]
  for line in options.splitlines():
    if line.startswith("  -"):
      invocation, _, text = line.strip().partition("  ")
      entries.append([invocation, text.strip()])
    elif line.startswith("    ") and entries:
      entries[-1][1] += " " + line.strip()
  flags = [inv.split()[0].rstrip(",") for inv, _ in entries]
  assert "--steps" in flags and len(flags) >= 6
  for invocation, text in entries:
    if invocation.startswith("-h"):
      continue
    assert text.strip() and not text.startswith("(default:"), f"{script}: {invocation}: no help"
    assert "(default: " in text, f"{script}: {invocation} does not show its default"


def test_a_reader_that_goes_away_ends_the_command_without_a_traceback():
  # As `amsgrad-synthetic ... | head -1` does once head has its line.
  proc = spawn("--steps", "1000", "--quiet", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  assert proc.stderr.readline() == b"ready\n"
  proc.stdout.close()
  err = proc.stderr.read().decode()
  proc.wait(timeout=120)
  assert proc.returncode == 1
  assert "Traceback" not in err and "BrokenPipeError" not in err, err


def test_json_names_the_plot_it_wrote(tmp_path, capsys):
  assert _cli.main(["--steps", "2020", "--json", "--plot", str(tmp_path / "f.svg")]) == 0
  doc = strict_json(capsys.readouterr().out)
  assert doc["plot"] == str(tmp_path / "f.svg")
  assert (tmp_path / "f.svg").read_text().lstrip().startswith("<?xml")


def test_figure_has_log_t_axes_readable_regret_ticks_and_a_legend_off_the_curves(
  monkeypatch, tmp_path
):
  from matplotlib.figure import Figure

  drawn = []
  monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: drawn.append(self))
  args = ["--steps", "50500", "--plot", str(tmp_path / "f.png"), "--quiet"]
  assert _cli.main([*args, "--convention", "pytorch", "optax"]) == 0
  (fig,) = drawn
  fig.draw_without_rendering()  # lays out the ticks and their labels
  ax_r, ax_x = fig.axes
  assert ax_r.get_xscale() == ax_x.get_xscale() == "log"
  assert (ax_r.get_ylabel(), ax_x.get_ylabel(), ax_x.get_xlabel()) == ("$R_t / t$", "$x_t$", "$t$")
  # The runs end near R/t = 0.3-0.5 (the reference loop's figures): those ticks carry labels.
  low, high = ax_r.get_ylim()
  labels = {t.get_text() for t in ax_r.get_yticklabels() if low <= t.get_position()[1] <= high}
  assert {"0.3", "0.4", "0.5"} <= labels, labels
  # One legend, outside both panels, with each run's final R_T/T.
  assert ax_r.get_legend() is None and ax_x.get_legend() is None
  (legend,) = fig.legends
  texts = [t.get_text() for t in legend.get_texts()]
  _, avg = ref_online("amsgrad (optax)", 50500)
  assert f"amsgrad (optax), $R_T/T$ = {avg:#.3g}" in texts
  # The first steps are drawn: the t axis starts within the first period.
  assert min(line.get_xdata()[0] for line in ax_x.get_lines()[:3]) <= 101
