"""examples/digits_tuned.py: its one vmapped call is the per-(lr, seed) loop; its JSON; its plot."""

from __future__ import annotations

import importlib
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import amsgrad_optax

pytest.importorskip("flax")
pytest.importorskip("sklearn")

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"
KEYS = {
  "model",
  "optimizer",
  "convention",
  "learning_rate",
  "train_loss_mean",
  "train_loss_std",
  "test_accuracy_mean",
  "test_accuracy_std",
  "seeds",
}


@pytest.fixture(scope="module")
def tuned():
  """The example module, imported from examples/ as the scripts import each other."""
  mp = pytest.MonkeyPatch()
  mp.syspath_prepend(str(EXAMPLES))
  yield importlib.import_module("digits_tuned")
  mp.undo()


def _loop(tuned, model_name, make_tx, lr, seed, cfg, data):
  """One run as a Python loop of single steps: no vmap, no scan; returns the loss and accuracy curves.

  ``make_tx(lr)`` is built inside the jitted step, so every lr shares one compilation.
  """
  model = tuned.flax_linen_digits.MODELS[model_name]()
  x_tr, y_tr, x_te, y_te = (
    jnp.asarray(a) for a in (data.x_train, data.y_train, data.x_test, data.y_test)
  )

  def loss(params, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(model.apply(params, x), y).mean()

  @jax.jit
  def step(params, state, idx, lr):
    grads = jax.grad(loss)(params, x_tr[idx], y_tr[idx])
    updates, state = make_tx(lr).update(grads, state, params)
    return optax.apply_updates(params, updates), state

  @jax.jit
  def metrics(params):
    return loss(params, x_tr, y_tr), jnp.mean(jnp.argmax(model.apply(params, x_te), -1) == y_te)

  def evaluate(params):
    return tuple(float(m) for m in metrics(params))

  params = model.init(jax.random.key(seed), x_tr[:1])
  state = make_tx(lr).init(params)
  rng = np.random.default_rng(seed)  # the batches: a fresh permutation per epoch
  n = len(data.y_train)
  order = np.concatenate([rng.permutation(n) for _ in range(-(-cfg.steps * cfg.batch_size // n))])
  curves = [evaluate(params)]
  for t in range(1, cfg.steps + 1):
    idx = order[(t - 1) * cfg.batch_size : t * cfg.batch_size]
    params, state = step(params, state, idx, jnp.float32(lr))
    if t % cfg.eval_every == 0:
      curves.append(evaluate(params))
  return np.asarray(curves).T


MAKE_TX = {  # what the example must train: the paper's alpha/sqrt(t) for logistic regression
  "logreg": lambda lr: amsgrad_optax.amsgrad(amsgrad_optax.inverse_sqrt_schedule(lr), 0.9, 0.99),
  "mlp": lambda lr: optax.adam(lr, 0.9, 0.99, 1e-8),
}


@pytest.mark.standard_promotion
@pytest.mark.parametrize(
  ("model_name", "optimizer", "convention"),
  [("logreg", "amsgrad", "pytorch"), ("mlp", "adam", None)],
)
def test_the_vmapped_grid_is_the_per_run_loop(tuned, model_name, optimizer, convention):
  cfg = tuned.Config(steps=12, batch_size=32, eval_every=4)
  data = tuned._digits.load_digits()
  lrs, seeds = (0.01, 0.3), (0, 3)
  grid = tuned.train_grid(model_name, optimizer, convention, lrs, seeds, cfg, data)
  assert grid["train_loss"].shape == (2, 2, 4)
  np.testing.assert_array_equal(grid["steps"], [0, 4, 8, 12])
  for i, lr in enumerate(lrs):
    for j, seed in enumerate(seeds):
      loss, acc = _loop(tuned, model_name, MAKE_TX[model_name], lr, seed, cfg, data)
      np.testing.assert_allclose(grid["train_loss"][i, j], loss, rtol=2e-4, atol=1e-6)
      np.testing.assert_allclose(grid["test_accuracy"][i, j], acc, atol=1.5 / len(data.y_test))
  # The grid points differ: a test that compared a run with itself would not see this.
  assert not np.allclose(grid["train_loss"][0, 0], grid["train_loss"][1, 0], rtol=1e-2)


def test_the_best_is_the_lowest_mean_final_loss_and_skips_diverged_runs(tuned):
  loss = np.array([[[2.0, 0.5], [2.0, 0.7]], [[2.0, 0.2], [2.0, 0.4]], [[2.0, np.nan], [2.0, 0.0]]])
  grid = {
    "learning_rates": [0.1, 0.3, 1.0],
    "seeds": [0, 1],
    "train_loss": loss,
    "test_accuracy": np.full((3, 2, 2), 0.5),
  }
  table = tuned.summarize({("mlp", "amsgrad", "keras"): grid})
  assert [r["train_loss_mean"] for r in table["runs"]] == pytest.approx([0.6, 0.3, None])
  assert table["runs"][2]["train_loss_std"] is None
  assert table["best"]["mlp/amsgrad-keras"]["learning_rate"] == 0.3
  assert json.loads(json.dumps(table)) == table  # plain JSON: no NaN, no NumPy types


@pytest.mark.standard_promotion
def test_a_small_run_writes_the_schema_and_the_plot(tuned, tmp_path, capsys):
  pytest.importorskip("matplotlib")
  out, png = tmp_path / "tuned.json", tmp_path / "tuned.png"
  argv = ["--models", "logreg", "--steps", "8", "--eval-every", "4", "--batch-size", "16"]
  argv += ["--lrs", "0.1", "1.0", "--seeds", "0", "1", "--json", str(out), "--plot", str(png)]
  tuned.main(argv)
  table = json.loads(out.read_text())
  assert set(table) == {"runs", "best"}
  assert len(table["runs"]) == 4  # 2 optimizers x 2 learning rates
  for row in table["runs"]:
    assert set(row) == KEYS
    assert row["seeds"] == [0, 1]
    assert row["convention"] == (None if row["optimizer"] == "adam" else "pytorch")
  assert set(table["best"]) == {"logreg/adam", "logreg/amsgrad"}
  for key, best in table["best"].items():
    model, optimizer = key.split("/")
    rows = [r for r in table["runs"] if (r["model"], r["optimizer"]) == (model, optimizer)]
    assert best == min(rows, key=lambda r: r["train_loss_mean"])
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert "one jit(vmap) call" in capsys.readouterr().out


def test_bad_configs_are_refused(tuned):
  with pytest.raises(ValueError, match="steps must be a multiple of eval_every"):
    tuned.Config(steps=10, eval_every=4)
  with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
    tuned.Config(batch_size=0)
