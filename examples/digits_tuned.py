"""Adam vs AMSGrad on handwritten digits, each optimizer with its own tuned step size.

Reddi et al. (ICLR 2018, Section 5) tuned the step size of every optimizer
separately and report that AMSGrad matched or beat Adam on training loss. The
other digits examples use one step size for both; this one runs, for each
model and optimizer, a grid of learning rates times seeds, all of them in ONE
``jax.jit(jax.vmap(...))`` call, and picks each optimizer's best learning rate
by its mean final training loss over the seeds.

Data, split and batches come from ``_digits.py`` (scikit-learn's 8x8 digits,
nothing is downloaded); the models are ``flax_linen_digits.py``'s Linen
modules (logistic regression, a 100-unit MLP, a small CNN). Logistic
regression uses the paper's :math:`\\alpha_t = \\alpha/\\sqrt{t}`; the MLP and
the CNN a constant step. No gradient clipping. The same seed gives every
optimizer and learning rate the same initial params and the same batches.

Run:
  python examples/digits_tuned.py --json tuned.json --plot tuned.png     # logreg and mlp
  python examples/digits_tuned.py --models logreg mlp cnn --conventions pytorch keras

``--json`` writes ``{"runs": [{"model", "optimizer", "convention",
"learning_rate", "train_loss_mean", "train_loss_std", "test_accuracy_mean",
"test_accuracy_std", "seeds"}, ...], "best": {"MODEL/OPTIMIZER": row}}``:
final full-train-set loss and test accuracy, mean and (population) standard
deviation over the seeds; ``convention`` is null for Adam; a diverged grid
point's numbers are null and it is never "best". The ``best`` keys are
``logreg/adam``, ``logreg/amsgrad`` (the pytorch convention) and
``logreg/amsgrad-keras`` etc. for other conventions.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import _digits
import flax_linen_digits
import jax
import jax.numpy as jnp
import numpy as np
import optax

import amsgrad_optax

MODELS = ("logreg", "mlp", "cnn")
OPTIMIZERS = ("adam", "amsgrad")
#: The step-size schedule of each model: the paper's alpha/sqrt(t) for logistic regression.
SCHEDULES = {"logreg": "inverse_sqrt", "mlp": "constant", "cnn": "constant"}
#: The default grid of each model (alpha of alpha/sqrt(t) for logreg), the same for every optimizer.
LEARNING_RATES = {
  "logreg": (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0),
  "mlp": (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1),
  "cnn": (3e-4, 1e-3, 3e-3, 1e-2, 3e-2),
}


@dataclasses.dataclass(frozen=True)
class Config:
  """What every run of the grid shares."""

  steps: int = 1000
  batch_size: int = 128
  eval_every: int = 50
  b1: float = 0.9
  b2: float = 0.99
  eps: float = 1e-8

  def __post_init__(self):
    for name in ("steps", "batch_size", "eval_every"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    if self.steps % self.eval_every:
      raise ValueError(
        f"steps must be a multiple of eval_every, got steps={self.steps}, "
        f"eval_every={self.eval_every}"
      )


def label(optimizer: str, convention: str | None) -> str:
  """Returns the name of an optimizer in tables and in the JSON's "best" keys."""
  if optimizer == "adam" or convention == "pytorch":
    return optimizer
  return f"{optimizer}-{convention}"


def make_tx(
  optimizer: str, convention: str | None, learning_rate: Any, schedule: str, cfg: Config
) -> optax.GradientTransformation:
  """Returns Adam (``optax.adam``) or AMSGrad in ``convention``; ``learning_rate`` may be traced."""
  lr = learning_rate
  if schedule == "inverse_sqrt":
    lr = amsgrad_optax.inverse_sqrt_schedule(learning_rate)
  if optimizer == "adam":
    return optax.adam(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
  if optimizer == "amsgrad":
    return amsgrad_optax.amsgrad(lr, cfg.b1, cfg.b2, cfg.eps, convention=convention)
  raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")


def one_run(
  model_name: str, optimizer: str, convention: str | None, schedule: str, cfg: Config
) -> Callable[..., tuple[jax.Array, jax.Array]]:
  """Returns ``run(lr, key, batches, x_tr, y_tr, x_te, y_te) -> (train_loss, test_accuracy)``.

  One training run: params from ``key``, ``cfg.steps`` steps on ``batches``
  (``(steps, batch_size)`` indices), and the full-train-set loss and test
  accuracy at steps 0, ``eval_every``, ..., ``steps``.
  """
  model = flax_linen_digits.MODELS[model_name]()
  loss_fn = flax_linen_digits.loss_fn
  n_evals = cfg.steps // cfg.eval_every

  def run(lr, key, batches, x_tr, y_tr, x_te, y_te):
    tx = make_tx(optimizer, convention, lr, schedule, cfg)

    def evaluate(params):
      logits = model.apply(params, x_te)
      accuracy = jnp.mean((jnp.argmax(logits, axis=-1) == y_te).astype(jnp.float32))
      return loss_fn(params, model.apply, x_tr, y_tr), accuracy

    def step(carry, idx):
      params, opt_state = carry
      grads = jax.grad(loss_fn)(params, model.apply, x_tr[idx], y_tr[idx])
      updates, opt_state = tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), None

    def chunk(carry, idx):
      carry, _ = jax.lax.scan(step, carry, idx)
      return carry, evaluate(carry[0])

    params = model.init(key, x_tr[:1])
    _, (loss, acc) = jax.lax.scan(
      chunk,
      (params, tx.init(params)),
      batches.reshape(n_evals, cfg.eval_every, cfg.batch_size),
    )
    loss0, acc0 = evaluate(params)
    return jnp.concatenate([loss0[None], loss]), jnp.concatenate([acc0[None], acc])

  return run


def train_grid(
  model_name: str,
  optimizer: str,
  convention: str | None,
  learning_rates: Sequence[float],
  seeds: Sequence[int],
  cfg: Config,
  data: _digits.Digits | None = None,
) -> dict[str, np.ndarray]:
  """Trains every (learning rate, seed) of one model and optimizer in one vmapped, jitted call.

  Returns:
    ``{"learning_rates", "seeds", "steps": (E,), "train_loss": (L, S, E),
    "test_accuracy": (L, S, E), "seconds", "compile_seconds"}`` for ``L``
    learning rates, ``S`` seeds and ``E`` evaluations (``seconds`` is the
    wall time of the call, compilation included).
  """
  data = data if data is not None else _digits.load_digits()
  schedule = SCHEDULES[model_name]
  n_lr, n_seed = len(learning_rates), len(seeds)
  lrs = np.repeat(np.asarray(learning_rates, np.float32), n_seed)
  seed_col = np.tile(np.asarray(seeds, np.int32), n_lr)
  per_seed = {
    s: _digits.batch_indices(len(data.y_train), cfg.batch_size, cfg.steps, int(s)) for s in seeds
  }
  batches = np.stack([per_seed[s] for s in seed_col])
  arrays = [jnp.asarray(a) for a in (data.x_train, data.y_train, data.x_test, data.y_test)]
  fn = jax.jit(
    jax.vmap(
      one_run(model_name, optimizer, convention, schedule, cfg),
      in_axes=(0, 0, 0, None, None, None, None),
    )
  )
  start = time.perf_counter()
  with jax.numpy_dtype_promotion("standard"):  # optax.adam's bias correction, flax's layers
    inputs = (jnp.asarray(lrs), jax.vmap(jax.random.key)(jnp.asarray(seed_col)))
    inputs += (jnp.asarray(batches), *arrays)
    compiled = fn.lower(*inputs).compile()
    compile_seconds = time.perf_counter() - start
    loss, acc = compiled(*inputs)
    loss, acc = np.asarray(loss), np.asarray(acc)
  seconds = time.perf_counter() - start
  shape = (n_lr, n_seed, loss.shape[-1])
  return {
    "learning_rates": [float(lr) for lr in learning_rates],
    "seeds": [int(s) for s in seeds],
    "steps": np.arange(loss.shape[-1]) * cfg.eval_every,
    "train_loss": loss.reshape(shape),
    "test_accuracy": acc.reshape(shape),
    "seconds": seconds,
    "compile_seconds": compile_seconds,
  }


def _finite_or_none(x: float) -> float | None:
  return float(x) if math.isfinite(x) else None


def summarize(grids: dict[tuple[str, str, str | None], dict]) -> dict[str, Any]:
  """Returns the ``{"runs": [...], "best": {...}}`` table of the module docstring."""
  runs, best = [], {}
  for (model, optimizer, convention), grid in grids.items():
    candidates = []
    for i, lr in enumerate(grid["learning_rates"]):
      loss = grid["train_loss"][i, :, -1].astype(np.float64)
      acc = grid["test_accuracy"][i, :, -1].astype(np.float64)
      row = {
        "model": model,
        "optimizer": optimizer,
        "convention": convention,
        "learning_rate": float(lr),
        "train_loss_mean": _finite_or_none(loss.mean()),
        "train_loss_std": _finite_or_none(loss.std()),
        "test_accuracy_mean": _finite_or_none(acc.mean()),
        "test_accuracy_std": _finite_or_none(acc.std()),
        "seeds": grid["seeds"],
      }
      runs.append(row)
      if row["train_loss_mean"] is not None:
        candidates.append(row)
    if candidates:
      best[f"{model}/{label(optimizer, convention)}"] = min(
        candidates, key=lambda r: r["train_loss_mean"]
      )
  return {"runs": runs, "best": best}


def print_table(table: dict[str, Any], seconds: dict) -> None:
  """Prints every grid point, the best of each model and optimizer marked with '*'."""
  best_ids = {id(r) for r in table["best"].values()}
  print(f"{'model':>7} {'optimizer':>14} {'lr':>8} {'train loss':>17} {'test acc':>15}")
  for r in table["runs"]:
    mark = "*" if id(r) in best_ids else " "
    loss = r["train_loss_mean"]
    if loss is None:
      cells = f"{'diverged':>17} {'':>15}"
    else:
      cells = (
        f"{loss:>9.3e} ± {r['train_loss_std']:<8.2e} "
        f"{r['test_accuracy_mean']:>6.4f} ± {r['test_accuracy_std']:<6.4f}"
      )
    name = label(r["optimizer"], r["convention"])
    print(f"{r['model']:>7} {name:>14} {r['learning_rate']:>8g} {cells}{mark}")
  for key, best in table["best"].items():
    lrs = [r["learning_rate"] for r in table["runs"] if r["model"] == best["model"]]
    if best["learning_rate"] in (min(lrs), max(lrs)):
      print(f"  note: the best learning rate of {key} is at the edge of its grid")
  for key, (secs, compile_secs) in seconds.items():
    name = "/".join(str(k) for k in key if k)
    print(f"  {name}: {secs:.1f} s in one jit(vmap) call, {compile_secs:.1f} s of it compiling")


def figure(grids: dict, table: dict[str, Any], title: str):
  """Returns a figure of the best runs: train loss and test accuracy, mean and seed range."""
  import matplotlib.pyplot as plt

  models = list(dict.fromkeys(k[0] for k in grids))
  fig, axes = plt.subplots(len(models), 2, figsize=(10, 3.2 * len(models)), squeeze=False)
  for row, model in zip(axes, models, strict=True):
    for (m, optimizer, convention), grid in grids.items():
      if m != model:
        continue
      name = label(optimizer, convention)
      best = table["best"].get(f"{model}/{name}")
      if best is None:
        continue
      i = grid["learning_rates"].index(best["learning_rate"])
      steps = grid["steps"]
      for ax, key in zip(row, ("train_loss", "test_accuracy"), strict=True):
        curves = grid[key][i]
        first = 0 if key == "train_loss" else 1  # chance accuracy at step 0 squashes the axis
        (line,) = ax.plot(
          steps[first:], curves.mean(0)[first:], label=f"{name} (lr {best['learning_rate']:g})"
        )
        ax.fill_between(
          steps[first:],
          curves.min(0)[first:],
          curves.max(0)[first:],
          color=line.get_color(),
          alpha=0.25,
          linewidth=0,
        )
    sched = "alpha/sqrt(t)" if SCHEDULES[model] == "inverse_sqrt" else "constant lr"
    row[0].set(yscale="log", ylabel=f"{model} ({sched})\ntrain loss")
    row[1].set(ylabel="test accuracy")
    row[0].legend()
  for ax in axes[-1]:
    ax.set_xlabel("step")
  fig.suptitle(title)
  fig.tight_layout()
  return fig


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--models", nargs="+", choices=MODELS, default=["logreg", "mlp"])
  p.add_argument("--optimizers", nargs="+", choices=OPTIMIZERS, default=list(OPTIMIZERS))
  p.add_argument(
    "--conventions",
    nargs="+",
    choices=amsgrad_optax.CONVENTIONS,
    default=["pytorch"],
    help="AMSGrad conventions to tune (default: pytorch)",
  )
  p.add_argument(
    "--lrs",
    type=float,
    nargs="+",
    default=None,
    help="one grid for every model (default: each model's LEARNING_RATES)",
  )
  p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  p.add_argument("--steps", type=int, default=1000)
  p.add_argument("--batch-size", type=int, default=128)
  p.add_argument("--eval-every", type=int, default=50)
  p.add_argument("--b1", type=float, default=0.9)
  p.add_argument("--b2", type=float, default=0.99)
  p.add_argument("--eps", type=float, default=1e-8)
  p.add_argument("--json", metavar="FILE.json", default=None)
  p.add_argument("--plot", metavar="FILE.png", default=None)
  return p


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Runs the tuned comparison; returns the JSON table."""
  args = build_parser().parse_args(argv)
  if args.lrs is not None and (len(args.lrs) < 1 or min(args.lrs) <= 0):
    raise ValueError(f"--lrs must be positive numbers, got {args.lrs}")
  cfg = Config(args.steps, args.batch_size, args.eval_every, args.b1, args.b2, args.eps)
  learning_rates = {m: tuple(args.lrs) if args.lrs else LEARNING_RATES[m] for m in args.models}
  data = _digits.load_digits()
  grids, seconds = {}, {}
  start = time.perf_counter()
  for model in args.models:
    for optimizer in args.optimizers:
      for convention in args.conventions if optimizer == "amsgrad" else [None]:
        key = (model, optimizer, convention)
        grids[key] = train_grid(
          model, optimizer, convention, learning_rates[model], args.seeds, cfg, data
        )
        seconds[key] = grids[key]["seconds"], grids[key]["compile_seconds"]
  table = summarize(grids)
  print(
    f"{args.steps} steps, batch {args.batch_size}, b1 {args.b1}, b2 {args.b2}, eps {args.eps}, "
    f"seeds {args.seeds}; final train loss and test accuracy, mean ± std over seeds"
  )
  print_table(table, seconds)
  print(f"total {time.perf_counter() - start:.1f} s")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(table, f, indent=1)
    print(f"wrote {args.json}")
  if args.plot:
    import matplotlib.pyplot as plt

    fig = figure(grids, table, "Digits, each optimizer at its best learning rate")
    fig.savefig(args.plot, dpi=100)
    plt.close(fig)
    print(f"wrote {args.plot}")
  return table


if __name__ == "__main__":
  main()
