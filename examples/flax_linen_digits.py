"""Adam vs AMSGrad on handwritten digits with Flax Linen and a TrainState.

The models of ``flax_nnx_digits.py`` in Linen: the paper's two MNIST models
(multinomial logistic regression, a one-hidden-layer MLP with 100 ReLU
units) and a small CNN. The optimizer goes into
``flax.training.train_state.TrainState.create(tx=optax.chain(...))``; here the
chain clips the global gradient norm (a guard that seldom fires at the
default ``--clip 10``) before the optimizer.

Run:
  python examples/flax_linen_digits.py                    # all models, 2 seeds
  python examples/flax_linen_digits.py --model logreg --convention keras --plot logreg.png
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import _digits
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state


class LogReg(nn.Module):
  """Multinomial logistic regression on the 64 pixels."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return nn.Dense(_digits.NUM_CLASSES)(x.reshape(x.shape[0], -1))


class MLP(nn.Module):
  """One hidden layer of 100 ReLU units."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.relu(nn.Dense(100)(x.reshape(x.shape[0], -1)))
    return nn.Dense(_digits.NUM_CLASSES)(x)


class CNN(nn.Module):
  """Two 3x3 convolutions, a 2x2 average pool and two dense layers."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.relu(nn.Conv(8, kernel_size=(3, 3))(x))
    x = nn.relu(nn.Conv(16, kernel_size=(3, 3))(x))
    x = nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
    x = nn.relu(nn.Dense(64)(x.reshape(x.shape[0], -1)))
    return nn.Dense(_digits.NUM_CLASSES)(x)


MODELS = {"logreg": LogReg, "mlp": MLP, "cnn": CNN}


@functools.cache
def build(model_name: str) -> tuple[nn.Module, Callable]:
  """Returns the model and its jitted init, one of each per model name.

  Every run then shares one ``apply_fn`` and one compiled init: the jitted
  steps key their caches on them.
  """
  model = MODELS[model_name]()
  return model, jax.jit(model.init)


@functools.cache
def clipped(tx: optax.GradientTransformation, clip: float) -> optax.GradientTransformation:
  """Returns ``tx`` behind a global-norm clip, one chain per (tx, clip) for the same reason."""
  return optax.chain(optax.clip_by_global_norm(clip), tx)


def loss_fn(params, apply_fn, x: jax.Array, y: jax.Array) -> jax.Array:
  return optax.softmax_cross_entropy_with_integer_labels(apply_fn(params, x), y).mean()


@jax.jit
def train_step(
  state: train_state.TrainState, x: jax.Array, y: jax.Array, idx: jax.Array
) -> tuple[train_state.TrainState, jax.Array]:
  loss, grads = jax.value_and_grad(loss_fn)(state.params, state.apply_fn, x[idx], y[idx])
  return state.apply_gradients(grads=grads), loss


@functools.partial(jax.jit, static_argnums=1)
def evaluate(params, apply_fn, x_tr, y_tr, x_te, y_te) -> tuple[jax.Array, jax.Array]:
  accuracy = jnp.mean((jnp.argmax(apply_fn(params, x_te), axis=-1) == y_te).astype(jnp.float32))
  return loss_fn(params, apply_fn, x_tr, y_tr), accuracy


def train(
  model_name: str,
  tx: optax.GradientTransformation,
  data: _digits.Digits,
  batches: np.ndarray,
  seed: int,
  eval_every: int,
  diagnose,
  clip: float = 10.0,
) -> _digits.Curves:
  """Trains one model with ``tx`` (behind a gradient clip) on ``batches``."""
  model, init = build(model_name)
  arrays = [jnp.asarray(a) for a in (data.x_train, data.y_train, data.x_test, data.y_test)]
  x_tr, y_tr = arrays[:2]
  params = init(jax.random.key(seed), x_tr[:1])
  state = train_state.TrainState.create(
    apply_fn=model.apply,
    params=params,
    tx=clipped(tx, clip),
  )
  curves = _digits.Curves()
  for step in range(len(batches) + 1):
    if step % eval_every == 0 or step == len(batches):
      diag = diagnose(state.opt_state) if diagnose and step else None
      curves.record(step, *evaluate(state.params, state.apply_fn, *arrays), diag)
    if step < len(batches):
      state, _ = train_step(state, x_tr, y_tr, batches[step])
  return curves


def main(argv: Sequence[str] | None = None) -> dict:
  """Runs the comparison; returns ``{(model, optimizer, seed): Curves}``."""
  parser = _digits.build_parser(__doc__.splitlines()[0])
  parser.add_argument(
    "--clip", type=float, default=10.0, help="global-norm clip before the optimizer"
  )
  args = parser.parse_args(argv)
  return _digits.run(
    args, functools.partial(train, clip=args.clip), "Flax Linen on digits: Adam vs AMSGrad"
  )


if __name__ == "__main__":
  main()
