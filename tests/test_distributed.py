"""Two processes on JAX's distributed runtime train as one process on the full batch."""

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "distributed_data_parallel.py"
TIMEOUT_S = 50
STEPS = 20


def _load_example():
  spec = importlib.util.spec_from_file_location("distributed_data_parallel", EXAMPLE)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _run_processes(n: int, out: Path, logs: Path) -> list[str]:
  """Runs the example as ``n`` processes; returns their logs. Kills them all on failure."""
  env = dict(os.environ)
  env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"  # one CPU device each
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
  port = _free_port()
  procs, files = [], []
  try:
    for i in range(n):
      log = open(logs / f"process{i}.log", "w")  # closed in the finally below
      files.append(log)
      cmd = [sys.executable, str(EXAMPLE), "--num-processes", str(n), "--process-id", str(i)]
      cmd += ["--port", str(port), "--steps", str(STEPS), "--out", str(out)]
      procs.append(
        subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
      )
    deadline = time.monotonic() + TIMEOUT_S
    while True:
      codes = [p.poll() for p in procs]
      if None not in codes or any(c not in (None, 0) for c in codes):
        break  # all done, or one failed: the others would wait for it forever
      if time.monotonic() > deadline:
        break
      time.sleep(0.1)
  finally:
    for p in procs:
      if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)  # the child's own session: it and its threads
        p.wait()
    for f in files:
      f.close()
  texts = [(logs / f"process{i}.log").read_text() for i in range(n)]
  if any(p.returncode != 0 for p in procs):
    report = "\n".join(
      f"--- process {i} (exit {p.returncode})\n{t}" for i, (p, t) in enumerate(zip(procs, texts))
    )
    pytest.fail(f"distributed run failed or timed out after {TIMEOUT_S} s:\n{report}")
  return texts


def test_two_processes_equal_one_process_on_the_full_batch(tmp_path):
  example = _load_example()
  logs = _run_processes(2, tmp_path / "params.npz", tmp_path)
  for i, text in enumerate(logs):
    # Each process saw the global mesh and fed half the batch.
    assert f"process {i}/2: 2 devices, 128 local rows" in text, text

  x, y, params = example.make_problem()
  mesh = jax.make_mesh(
    (1,), ("data",), devices=jax.devices()[:1], axis_types=(jax.sharding.AxisType.Explicit,)
  )
  expected, expected_loss = example.train(mesh, x, y, x.shape[0], params, steps=STEPS)
  # The run moved the params: equality below is not equality of the initial values.
  assert not np.allclose(expected["w1"], params["w1"], atol=1e-3)

  results = [np.load(tmp_path / f"params.{i}.npz") for i in range(2)]
  for k, value in expected.items():
    np.testing.assert_array_equal(results[0][k], results[1][k])  # replicas agree
    np.testing.assert_allclose(results[0][k], value, rtol=1e-5, atol=1e-6, err_msg=k)
  np.testing.assert_allclose(float(results[0]["loss"]), expected_loss, rtol=1e-5)


@pytest.mark.parametrize(
  ("argv", "needle"),
  [
    (["--steps", "0"], "argument --steps: must be an integer >= 1, got 0"),
    (["--steps", "-3"], "argument --steps: must be an integer >= 1, got -3"),
    (["--num-processes", "0"], "argument --num-processes: must be an integer >= 1, got 0"),
    (["--num-processes", "two"], "argument --num-processes: must be an integer >= 1, got 'two'"),
    (["--num-processes", "2", "--process-id", "2"], "argument --process-id: must be in [0, 2)"),
  ],
)
def test_bad_arguments_exit_2_with_one_error_line(argv, needle, capsys):
  # Before anything runs: --steps 0 used to crash after training nothing, and
  # --num-processes 0 to run single-process without a word.
  example = _load_example()
  with pytest.raises(SystemExit) as exit_info:
    example.main(argv)
  assert exit_info.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err[0].startswith("usage:")
  assert err[-1].endswith(f": error: {needle}") or f": error: {needle}" in err[-1], err


def test_the_script_itself_exits_2():
  proc = subprocess.run(
    [sys.executable, str(EXAMPLE), "--num-processes", "0"],
    capture_output=True,
    text=True,
    timeout=TIMEOUT_S,
    check=False,
  )
  assert proc.returncode == 2, proc
  assert proc.stderr.strip().splitlines()[-1] == (
    f"{EXAMPLE.name}: error: argument --num-processes: must be an integer >= 1, got 0"
  )
