"""The "pytorch" convention and both weight-decay modes against torch.optim AMSGrad.

Two references: trajectories recorded from torch 2.13 and committed
(``tests/data/torch_amsgrad_golden.npz``, written by ``python -m tests.reference.torch_amsgrad``),
and, when torch is importable, the same cases run live.
"""

import numpy as np
import pytest

import amsgrad_optax
from tests.reference import torch_amsgrad as ref
from tests.reference.replay import find_amsgrad_state, replay

RTOL = 1e-5


def _ours(case):
  cls_name, kw, schedule = ref.CASES[case]
  b1, b2 = kw["betas"]
  lr = kw["lr"]
  if schedule == "inverse_sqrt":
    lr = amsgrad_optax.inverse_sqrt_schedule(lr)
  return amsgrad_optax.amsgrad(
    lr,
    b1,
    b2,
    kw["eps"],
    weight_decay=kw.get("weight_decay", 0.0),
    decoupled_weight_decay=cls_name == "AdamW",
    convention="pytorch",
  )


def _assert_matches(case, torch_traj, torch_state):
  params0, grads = ref.make_problem()
  traj, state = replay(_ours(case), params0, grads)
  for k in ref.SHAPES:
    # Every step of the trajectory, not only the end. Params start at O(1); a coordinate that
    # walks through zero keeps the absolute round-off of its start, hence the atol of ~8 ulps.
    np.testing.assert_allclose(traj[k], torch_traj[k], rtol=RTOL, atol=1e-6, err_msg=f"{case}/{k}")
  s = find_amsgrad_state(state)
  for k in ref.SHAPES:
    # torch forms mu by lerp, we by b1*mu + (1-b1)*g: both round to float32, but where mu
    # cancels to near zero the relative difference is large; bound it by the gradients' scale.
    g_scale = float(np.abs(grads[k]).max())
    np.testing.assert_allclose(s.mu[k], torch_state[f"{k}/mu"], rtol=RTOL, atol=1e-6 * g_scale)
    np.testing.assert_allclose(s.nu[k], torch_state[f"{k}/nu"], rtol=RTOL, atol=1e-30)
    np.testing.assert_allclose(s.nu_max[k], torch_state[f"{k}/nu_max"], rtol=RTOL, atol=1e-30)
  assert int(s.count) == ref.STEPS


@pytest.fixture(scope="module")
def golden():
  with np.load(ref.GOLDEN) as z:
    return {k: z[k] for k in z.files}


@pytest.mark.parametrize("case", sorted(ref.CASES))
def test_matches_recorded_torch(case, golden):
  assert str(golden["torch_version"]).startswith("2.13.0")
  traj = {k: golden[f"{case}/params/{k}"] for k in ref.SHAPES}
  state = {k.split("/state/")[1]: v for k, v in golden.items() if k.startswith(f"{case}/state/")}
  _assert_matches(case, traj, state)


@pytest.mark.parametrize("case", sorted(ref.CASES))
def test_matches_live_torch(case):
  pytest.importorskip("torch")
  traj, state = ref.record(case)
  _assert_matches(case, traj, state)


def test_golden_file_distinguishes_conventions(golden):
  """The recorded trajectory is not matched by the other conventions: the test has teeth.

  ("keras" differs from "pytorch" only where sqrt(nu_max) is comparable to eps; that is
  checked by hand in test_transform.py.)
  """
  params0, grads = ref.make_problem()
  for convention in ("optax", "paper"):
    tx = amsgrad_optax.amsgrad(1e-3, 0.9, 0.999, 1e-8, convention=convention)
    traj, _ = replay(tx, params0, grads)
    assert not np.allclose(traj["b"], golden["adam_default/params/b"], rtol=RTOL, atol=1e-6)


def test_zero_gradient_coordinates_never_move(golden):
  """Coordinates whose gradient is exactly zero keep their initial value (torch agrees)."""
  params0, grads = ref.make_problem()
  traj, _ = replay(_ours("adam_default"), params0, grads)
  silent = np.all(grads["w"][:40] == 0.0, axis=0)
  assert silent.any()
  np.testing.assert_array_equal(traj["w"][39][silent], params0["w"][silent])
  np.testing.assert_array_equal(golden["adam_default/params/w"][39][silent], params0["w"][silent])
