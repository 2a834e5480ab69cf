"""How far low-precision AMSGrad state and params drift from a float32 run.

Trains a one-hidden-layer MLP (64-64-10, tanh) on scikit-learn's bundled
``load_digits`` (1797 8x8 images; no download) with minibatches of 128, the
same batches for every run, and compares each low-precision run with the
float32 run of the same optimizer: the relative parameter error
``||p - p_f32|| / ||p_f32||`` and the training loss. The forward pass is
always float32 (low-precision params are cast up), so the difference comes
from the optimizer's storage alone. Gradients of bfloat16/float16 params come
back in that dtype. The 8-bit rows keep float32 params and store ``mu``, ``nu`` and
``nu_max`` block-wise in 8 bits (``state_bits=8``, docs/memory.md); its rounding is
stochastic but seeded by the step count, so those rows are deterministic too.

Run (about a minute on 2 CPU cores):

  PYTHONPATH=. python benchmarks/precision_drift.py [--steps 500] [--seeds 3]

Prints, per configuration, the median over seeds (and the worst seed) at a few
checkpoints. Figures are deterministic for a given machine; they are not
timings.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits

import amsgrad_optax

BF16, F16, F32 = jnp.bfloat16, jnp.float16, jnp.float32


def _data():
  x, y = load_digits(return_X_y=True)
  x = (x / 16.0).astype(np.float32)
  x = (x - x.mean(0)) / (x.std(0) + 1e-3)
  return jnp.asarray(x, F32), jnp.asarray(y, jnp.int32)


def _init(seed: int, hidden: int = 64):
  k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
  return {
    "w1": jax.random.normal(k1, (64, hidden), F32) / np.sqrt(64.0),
    "b1": jnp.zeros(hidden, F32),
    "w2": jax.random.normal(k2, (hidden, 10), F32) / np.sqrt(hidden),
    "b2": jnp.zeros(10, F32),
  }


def _loss(params, x, y):
  p = jax.tree.map(lambda a: a.astype(F32), params)
  h = jnp.tanh(x @ p["w1"] + p["b1"])
  logits = h @ p["w2"] + p["b2"]
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def _batches(n: int, steps: int, batch: int, seed: int = 0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  per_epoch = n // batch
  epochs = -(-steps // per_epoch)
  idx = np.concatenate([rng.permutation(n)[: per_epoch * batch] for _ in range(epochs)])
  return idx.reshape(-1, batch)[:steps]


def make_trainer(tx, x, y, chunk: int):
  """Returns ``run(params, batches) -> [params after each chunk of steps]``, jitted once."""

  def step(carry, idx):
    p, s = carry
    g = jax.grad(_loss)(p, x[idx], y[idx])
    u, s = tx.update(g, s, p)
    return (optax.apply_updates(p, u), s), None

  scan_chunk = jax.jit(lambda p, s, bs: jax.lax.scan(step, (p, s), bs)[0])

  def run(params, batches):
    state, out = tx.init(params), []
    for start in range(0, batches.shape[0], chunk):
      params, state = scan_chunk(params, state, batches[start : start + chunk])
      out.append(params)
    return out

  return run


def _rel_err(p, ref) -> float:
  num = sum(
    float(np.sum((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(ref), strict=True)
  )
  den = sum(float(np.sum(np.asarray(b, np.float64) ** 2)) for b in jax.tree.leaves(ref))
  return float(np.sqrt(num / den))


LR = 1e-3


def _ours(**kw):
  return lambda: amsgrad_optax.amsgrad(LR, **kw)


# (name, optimizer factory, params dtype, reference): each run is compared with
# the float32 run of its reference, ours (pytorch convention) or optax.amsgrad
# (which ours reproduces bit for bit in float32 under convention="optax").
CONFIGS = [
  ("ours   mu bf16", _ours(mu_dtype=BF16), F32, "ours"),
  ("ours   mu+nu bf16", _ours(mu_dtype=BF16, nu_dtype=BF16), F32, "ours"),
  ("ours   bf16 params+state", _ours(), BF16, "ours"),
  ("ours   bf16 params, f32 state", _ours(mu_dtype=F32, nu_dtype=F32), BF16, "ours"),
  ("ours   f16 params (f32 state)", _ours(), F16, "ours"),
  ("ours   8-bit state (f32 params)", _ours(state_bits=8), F32, "ours"),
  ("ours/o float32", _ours(convention="optax"), F32, "optax"),
  ("ours/o mu bf16", _ours(convention="optax", mu_dtype=BF16), F32, "optax"),
  ("optax  mu bf16", lambda: optax.amsgrad(LR, mu_dtype=BF16), F32, "optax"),
  ("ours/o mu+nu bf16", _ours(convention="optax", mu_dtype=BF16, nu_dtype=BF16), F32, "optax"),
  ("ours/o bf16 params+state", _ours(convention="optax"), BF16, "optax"),
  ("optax  bf16 params+state", lambda: optax.amsgrad(LR), BF16, "optax"),
  ("ours/o f16 params (f32 state)", _ours(convention="optax"), F16, "optax"),
  ("ours/o 8-bit state (f32 params)", _ours(convention="optax", state_bits=8), F32, "optax"),
  ("optax  f16 params+state", lambda: optax.amsgrad(LR), F16, "optax"),
]
REFERENCES = {"ours": _ours(), "optax": lambda: optax.amsgrad(LR)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=500, help="a multiple of 100")
  parser.add_argument("--seeds", type=int, default=3)
  args = parser.parse_args()
  x, y = _data()
  batches = jnp.asarray(_batches(x.shape[0], args.steps, 128))
  chunk = 100
  checkpoints = list(range(chunk, args.steps + 1, chunk))
  full_loss = jax.jit(lambda p: _loss(p, x, y))
  starts = [_init(seed) for seed in range(args.seeds)]

  rows: dict[str, np.ndarray] = {}
  with jax.numpy_dtype_promotion("standard"):  # optax.amsgrad needs it
    refs = {}
    for k, make in REFERENCES.items():
      run = make_trainer(make(), x, y, chunk)
      refs[k] = [run(p0, batches) for p0 in starts]
      rows[f"{k:6} float32 (reference)"] = np.asarray(
        [[(0.0, float(full_loss(r)), 0.0) for r in ref] for ref in refs[k]]
      )
    for name, make, dtype, ref_name in CONFIGS:
      run = make_trainer(make(), x, y, chunk)
      per_seed = []
      for p0, ref in zip(starts, refs[ref_name], strict=True):
        got = run(jax.tree.map(lambda a, dtype=dtype: a.astype(dtype), p0), batches)
        per_seed.append(
          [
            (_rel_err(g, r), float(full_loss(g)), float(full_loss(g)) - float(full_loss(r)))
            for g, r in zip(got, ref, strict=True)
          ]
        )
      rows[name] = np.asarray(per_seed)  # seeds x checkpoints x 3

  show = sorted({0, len(checkpoints) // 2 - 1, len(checkpoints) - 1})
  print(
    f"MLP 64-64-10 on load_digits, batch 128, lr {LR}, b1 0.9, b2 0.999, "
    f"{args.seeds} seeds: median [worst seed]; ours/o = ours with convention='optax'"
  )
  head = f"{'configuration':32}"
  for j in show:
    head += f" | step {checkpoints[j]}: rel. param err [worst], loss (diff)"
  print(head)
  for name, arr in rows.items():
    line = f"{name:32}"
    for j in show:
      err, loss, dl = (np.median(arr[:, j, k]) for k in range(3))
      line += f" | {err:8.2e} [{np.max(arr[:, j, 0]):8.2e}], {loss:.4f} ({dl:+.1e})"
    print(line)


if __name__ == "__main__":
  main()
