"""Adam vs AMSGrad on handwritten digits with Flax NNX: the paper's MNIST models, and a CNN.

Multinomial logistic regression and a one-hidden-layer MLP (100 ReLU units)
are the paper's two MNIST models (Section 5); a small CNN stands in for its
CIFARNET. Both optimizers get the same seeds, so the same initial weights
and batches. The optimizer is one line:
``nnx.Optimizer(model, amsgrad_optax.amsgrad(...), wrt=nnx.Param)``.

Run:
  python examples/flax_nnx_digits.py                     # all models, 2 seeds
  python examples/flax_nnx_digits.py --model mlp --convention optax --plot mlp.png
"""

from __future__ import annotations

from collections.abc import Sequence

import _digits
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx


class LogReg(nnx.Module):
  """Multinomial logistic regression on the 64 pixels."""

  def __init__(self, rngs: nnx.Rngs):
    self.linear = nnx.Linear(64, _digits.NUM_CLASSES, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.linear(x.reshape(x.shape[0], -1))


class MLP(nnx.Module):
  """One hidden layer of 100 ReLU units."""

  def __init__(self, rngs: nnx.Rngs):
    self.hidden = nnx.Linear(64, 100, rngs=rngs)
    self.out = nnx.Linear(100, _digits.NUM_CLASSES, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.out(jax.nn.relu(self.hidden(x.reshape(x.shape[0], -1))))


class CNN(nnx.Module):
  """Two 3x3 convolutions, a 2x2 average pool and two dense layers."""

  def __init__(self, rngs: nnx.Rngs):
    self.conv1 = nnx.Conv(1, 8, kernel_size=(3, 3), rngs=rngs)
    self.conv2 = nnx.Conv(8, 16, kernel_size=(3, 3), rngs=rngs)
    self.dense = nnx.Linear(4 * 4 * 16, 64, rngs=rngs)
    self.out = nnx.Linear(64, _digits.NUM_CLASSES, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = jax.nn.relu(self.conv1(x))
    x = jax.nn.relu(self.conv2(x))
    x = nnx.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
    return self.out(jax.nn.relu(self.dense(x.reshape(x.shape[0], -1))))


MODELS = {"logreg": LogReg, "mlp": MLP, "cnn": CNN}


def loss_fn(model: nnx.Module, x: jax.Array, y: jax.Array) -> jax.Array:
  return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


@nnx.jit
def train_step(
  model: nnx.Module, optimizer: nnx.Optimizer, x: jax.Array, y: jax.Array, idx: jax.Array
) -> jax.Array:
  loss, grads = nnx.value_and_grad(loss_fn)(model, x[idx], y[idx])
  optimizer.update(model, grads)
  return loss


@nnx.jit
def evaluate(
  model: nnx.Module, x_tr: jax.Array, y_tr: jax.Array, x_te: jax.Array, y_te: jax.Array
) -> tuple[jax.Array, jax.Array]:
  accuracy = jnp.mean((jnp.argmax(model(x_te), axis=-1) == y_te).astype(jnp.float32))
  return loss_fn(model, x_tr, y_tr), accuracy


def train(
  model_name: str,
  tx: optax.GradientTransformation,
  data: _digits.Digits,
  batches: np.ndarray,
  seed: int,
  eval_every: int,
  diagnose,
) -> _digits.Curves:
  """Trains one model with ``tx`` on ``batches``; returns its curves."""
  model = MODELS[model_name](nnx.Rngs(seed))
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  arrays = [jnp.asarray(a) for a in (data.x_train, data.y_train, data.x_test, data.y_test)]
  x_tr, y_tr = arrays[:2]
  # Binds the graph nodes once, so each step skips nnx.jit's traversal of them.
  step_fn = nnx.cached_partial(train_step, model, optimizer)
  curves = _digits.Curves()
  for step in range(len(batches) + 1):
    if step % eval_every == 0 or step == len(batches):
      diag = diagnose(optimizer.opt_state) if diagnose and step else None
      curves.record(step, *evaluate(model, *arrays), diag)
    if step < len(batches):
      step_fn(x_tr, y_tr, batches[step])
  return curves


def main(argv: Sequence[str] | None = None) -> dict:
  """Runs the comparison; returns ``{(model, optimizer, seed): Curves}``."""
  args = _digits.build_parser(__doc__.splitlines()[0]).parse_args(argv)
  return _digits.run(args, train, "Flax NNX on digits: Adam vs AMSGrad")


if __name__ == "__main__":
  main()
