"""What the digits examples share: the data, its split, the batches, the optimizers, the report.

scikit-learn's handwritten digits (8x8 images, 1,797 of them, shipped with the
package: nothing is downloaded) stand in for MNIST in the paper's real-data
experiments. The training scripts (``flax_nnx_digits.py``,
``flax_linen_digits.py``) supply only the models and the train step; this
module runs every (model, optimizer, seed), prints the curves side by side
and plots them.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import optax

import amsgrad_optax

MODELS = ("logreg", "mlp", "cnn")
OPTIMIZERS = ("adam", "amsgrad")
NUM_CLASSES = 10


@dataclasses.dataclass(frozen=True)
class Digits:
  """The digits split into train and test sets.

  Images are float32 in [0, 1], shaped (n, 8, 8, 1); labels are int32.
  """

  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray


@functools.cache
def load_digits(test_fraction: float = 0.25, split_seed: int = 0) -> Digits:
  """Returns the digits, split once (stratified) with a fixed seed."""
  from sklearn import datasets, model_selection

  x, y = datasets.load_digits(return_X_y=True)
  x = (x / 16.0).astype(np.float32).reshape(-1, 8, 8, 1)
  y = y.astype(np.int32)
  x_tr, x_te, y_tr, y_te = model_selection.train_test_split(
    x, y, test_size=test_fraction, random_state=split_seed, stratify=y
  )
  return Digits(x_tr, y_tr, x_te, y_te)


def batch_indices(n: int, batch_size: int, steps: int, seed: int) -> np.ndarray:
  """Returns a (steps, batch_size) int32 array of example indices.

  Each epoch is a fresh permutation; the permutations are concatenated and
  cut into batches. The same seed gives both optimizers the same batches.
  """
  rng = np.random.default_rng(seed)
  epochs = -(-steps * batch_size // n)
  order = np.concatenate([rng.permutation(n) for _ in range(epochs)])
  return order[: steps * batch_size].reshape(steps, batch_size).astype(np.int32)


def learning_rate(args: argparse.Namespace) -> optax.ScalarOrSchedule:
  """Returns the step size: the paper's alpha/sqrt(t), or a constant."""
  if args.schedule == "inverse_sqrt":
    return amsgrad_optax.inverse_sqrt_schedule(args.lr)
  return args.lr


def make_optimizer(name: str, args: argparse.Namespace) -> optax.GradientTransformation:
  """Returns Adam (``optax.adam``) or AMSGrad in ``args.convention``, same hyperparameters."""
  lr = learning_rate(args)
  if name == "adam":
    return optax.adam(lr, b1=args.b1, b2=args.b2, eps=args.eps)
  if name == "amsgrad":
    return amsgrad_optax.amsgrad(
      lr, b1=args.b1, b2=args.b2, eps=args.eps, convention=args.convention
    )
  raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


def diagnostics_fn(args: argparse.Namespace) -> Callable[[Any], dict]:
  """Returns a jitted ``amsgrad_optax.diagnostics`` for this run's hyperparameters."""
  import jax

  # The optimizer records its convention and hyperparameters: nothing to repeat.
  tx = make_optimizer("amsgrad", args)
  return jax.jit(functools.partial(amsgrad_optax.diagnostics, tx=tx))


@dataclasses.dataclass
class Curves:
  """One run's curves, evaluated every ``eval_every`` steps (step 0 included)."""

  steps: list[int] = dataclasses.field(default_factory=list)
  train_loss: list[float] = dataclasses.field(default_factory=list)
  test_accuracy: list[float] = dataclasses.field(default_factory=list)
  cap_active_fraction: list[float] = dataclasses.field(default_factory=list)
  step_median: list[float] = dataclasses.field(default_factory=list)
  seconds: float = 0.0

  def record(self, step: int, loss: Any, accuracy: Any, diag: dict | None) -> None:
    self.steps.append(int(step))
    self.train_loss.append(float(loss))
    self.test_accuracy.append(float(accuracy))
    nan = float("nan")
    self.cap_active_fraction.append(float(diag["cap_active_fraction"]) if diag else nan)
    self.step_median.append(float(diag["step_median"]) if diag else nan)


#: train(model, tx, data, batches, seed, eval_every, diagnose) -> Curves
TrainFn = Callable[..., Curves]


def build_parser(description: str) -> argparse.ArgumentParser:
  """Returns the command line shared by the digits scripts."""
  p = argparse.ArgumentParser(
    description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
  )
  p.add_argument(
    "--model",
    choices=(*MODELS, "all"),
    default="all",
    help="logreg: multinomial logistic regression; mlp: one hidden layer of 100 ReLU; "
    "cnn: two 3x3 convolutions; all: each in turn",
  )
  p.add_argument(
    "--convention",
    choices=amsgrad_optax.CONVENTIONS,
    default="pytorch",
    help="AMSGrad's convention (Adam is optax.adam in every case)",
  )
  p.add_argument("--steps", type=int, default=1000, help="training steps per run")
  p.add_argument("--batch-size", type=int, default=128, help="examples per step")
  p.add_argument(
    "--lr",
    type=float,
    default=0.02,
    help="learning rate: alpha of alpha/sqrt(t) with --schedule inverse_sqrt, else the constant",
  )
  p.add_argument(
    "--schedule",
    choices=("inverse_sqrt", "constant"),
    default="inverse_sqrt",
    help="inverse_sqrt: the paper's alpha/sqrt(t); constant: alpha throughout",
  )
  p.add_argument("--b1", type=float, default=0.9, help="first-moment decay, both optimizers")
  p.add_argument("--b2", type=float, default=0.99, help="second-moment decay, both optimizers")
  p.add_argument("--eps", type=float, default=1e-8, help="denominator epsilon, both optimizers")
  p.add_argument(
    "--seeds",
    type=int,
    nargs="+",
    default=[0, 1],
    help="one run per seed (initial weights and batches); curves are averaged over them",
  )
  p.add_argument(
    "--eval-every", type=int, default=50, help="steps between evaluations of loss and accuracy"
  )
  p.add_argument(
    "--plot",
    metavar="FILE.png",
    default=None,
    help="write the loss and accuracy curves to this image (needs matplotlib)",
  )
  return p


def run(args: argparse.Namespace, train: TrainFn, title: str) -> dict[tuple[str, str, int], Curves]:
  """Trains every (model, optimizer, seed), prints the curves and plots them.

  Returns:
    ``{(model, optimizer, seed): Curves}``.
  """
  data = load_digits()
  models = MODELS if args.model == "all" else (args.model,)
  diagnose = diagnostics_fn(args)
  # One transform per optimizer, shared by every run: jitted train steps key
  # their caches on it, so later seeds reuse the compiled step.
  txs = {opt: make_optimizer(opt, args) for opt in OPTIMIZERS}
  results = {}
  for model in models:
    for seed in args.seeds:
      batches = batch_indices(len(data.y_train), args.batch_size, args.steps, seed)
      for opt in OPTIMIZERS:
        start = time.perf_counter()
        curves = train(
          model,
          txs[opt],
          data,
          batches,
          seed,
          args.eval_every,
          diagnose if opt == "amsgrad" else None,
        )
        curves.seconds = time.perf_counter() - start
        results[model, opt, seed] = curves
    print_curves(model, {k[1:]: v for k, v in results.items() if k[0] == model})
  print_summary(results, args)
  if args.plot:
    plot(results, args.plot, title)
    print(f"wrote {args.plot}")
  return results


def _mean(curves: list[Curves], field: str) -> np.ndarray:
  return np.mean([getattr(c, field) for c in curves], axis=0)


def print_curves(model: str, runs: dict[tuple[str, int], Curves]) -> None:
  """Prints one model's curves, averaged over seeds, Adam beside AMSGrad."""
  adam = [c for (o, _), c in runs.items() if o == "adam"]
  ams = [c for (o, _), c in runs.items() if o == "amsgrad"]
  print(f"\n{model}: train loss and test accuracy (mean of {len(adam)} seeds)")
  print(
    f"{'step':>6} {'loss Adam':>10} {'loss AMS':>10} {'acc Adam':>9} {'acc AMS':>9}"
    f" {'AMS cap%':>9} {'AMS step':>9}"
  )
  cols = [_mean(adam, "train_loss"), _mean(ams, "train_loss")]
  cols += [_mean(adam, "test_accuracy"), _mean(ams, "test_accuracy")]
  cols += [100 * _mean(ams, "cap_active_fraction"), _mean(ams, "step_median")]
  for i, step in enumerate(adam[0].steps):
    la, lm, aa, am, cap, s = (c[i] for c in cols)
    print(f"{step:>6} {la:>10.4f} {lm:>10.4f} {aa:>9.4f} {am:>9.4f} {cap:>9.1f} {s:>9.2e}")


def print_summary(results: dict[tuple[str, str, int], Curves], args: argparse.Namespace) -> None:
  """Prints the final train loss and test accuracy of every model and optimizer."""
  print(
    f"\nafter {args.steps} steps (batch {args.batch_size}, {args.schedule} lr {args.lr}, "
    f"b1 {args.b1}, b2 {args.b2}; AMSGrad convention {args.convention!r}; "
    f"seeds {args.seeds}):"
  )
  print(f"{'model':>7} {'optimizer':>9} {'train loss':>11} {'test acc':>9} {'seconds':>8}")
  for model in dict.fromkeys(k[0] for k in results):
    for opt in OPTIMIZERS:
      runs = [c for k, c in results.items() if k[:2] == (model, opt)]
      loss = np.mean([c.train_loss[-1] for c in runs])
      acc = np.mean([c.test_accuracy[-1] for c in runs])
      secs = sum(c.seconds for c in runs)
      print(f"{model:>7} {opt:>9} {loss:>11.4f} {acc:>9.4f} {secs:>8.1f}")


def figure(results: dict[tuple[str, str, int], Curves], title: str):
  """Returns a figure of train loss (log scale) and test accuracy per model, mean over seeds."""
  import matplotlib.pyplot as plt

  models = list(dict.fromkeys(k[0] for k in results))
  fig, axes = plt.subplots(len(models), 2, figsize=(9, 2.8 * len(models)), squeeze=False)
  for row, model in zip(axes, models, strict=True):
    for opt, style in zip(OPTIMIZERS, ("--", "-"), strict=True):
      runs = [c for k, c in results.items() if k[:2] == (model, opt)]
      label = "Adam" if opt == "adam" else "AMSGrad"
      row[0].plot(runs[0].steps, _mean(runs, "train_loss"), style, label=label)
      # From the first evaluation after step 0: chance accuracy would squash the axis.
      row[1].plot(runs[0].steps[1:], _mean(runs, "test_accuracy")[1:], style, label=label)
    row[0].set(yscale="log", ylabel=f"{model}\ntrain loss")
    row[1].set(ylabel="test accuracy")
    row[0].legend()
  for ax in axes[-1]:
    ax.set_xlabel("step")
  fig.suptitle(title)
  fig.tight_layout()
  return fig


def plot(results: dict[tuple[str, str, int], Curves], path: str, title: str) -> None:
  """Writes :func:`figure` to ``path``."""
  import matplotlib.pyplot as plt

  fig = figure(results, title)
  fig.savefig(path, dpi=100)
  plt.close(fig)
