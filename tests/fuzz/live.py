"""Live references over lists of leaves: torch.optim, Keras 3 (JAX backend) and optax.

Each runner takes the initial params and the gradients of every step as lists of NumPy arrays
(float64/complex128 values already rounded through the leaf's dtype) and returns the params
after every step, per leaf, as NumPy arrays of shape ``(steps, *leaf.shape)``.
"""

from __future__ import annotations

import numpy as np


def torch_run(params, grads, dtypes, *, lr, b1, b2, eps, weight_decay, decoupled):
  """``torch.optim.Adam/AdamW(amsgrad=True)``, single-tensor path, on CPU.

  Returns None where torch itself refuses to step (its step size overflows float32).
  """
  import torch

  if not params:
    return []  # torch refuses an empty parameter list; there is nothing to compare
  tensors = [
    torch.tensor(np.asarray(p, dt), requires_grad=True)
    for p, dt in zip(params, dtypes, strict=True)
  ]
  steps = grads[0].shape[0] if grads else 0
  cls = torch.optim.AdamW if decoupled else torch.optim.Adam
  opt = cls(
    tensors,
    lr=lr,
    betas=(b1, b2),
    eps=eps,
    weight_decay=weight_decay,
    amsgrad=True,
    foreach=False,
  )
  out = [np.empty((steps, *np.shape(p)), dt) for p, dt in zip(params, dtypes, strict=True)]
  for t in range(steps):
    for p, g, dt in zip(tensors, grads, dtypes, strict=True):
      p.grad = torch.tensor(np.asarray(g[t], dt))
    try:
      opt.step()
    except RuntimeError as e:
      if "overflow" not in str(e):
        raise
      return None  # torch refuses: lr / (1 - b1**t) overflows float32; no reference here
    for o, p in zip(out, tensors, strict=True):
      o[t] = p.detach().numpy()
  return out


def keras_run(params, grads, *, lr, b1, b2, eps, weight_decay):
  """``keras.optimizers.Adam(amsgrad=True)`` (or AdamW) on float32 variables."""
  import keras

  if not params:
    return []
  if keras.backend.backend() != "jax":
    raise RuntimeError("Keras must run on its JAX backend (KERAS_BACKEND=jax)")
  variables = [keras.Variable(np.asarray(p, np.float32)) for p in params]
  steps = grads[0].shape[0] if grads else 0
  kw = dict(learning_rate=lr, beta_1=b1, beta_2=b2, epsilon=eps, amsgrad=True)
  if weight_decay:
    opt = keras.optimizers.AdamW(weight_decay=weight_decay, **kw)
  else:
    opt = keras.optimizers.Adam(**kw)
  opt.build(variables)
  out = [np.empty((steps, *np.shape(p)), np.float32) for p in params]
  for t in range(steps):
    opt.apply([np.asarray(g[t], np.float32) for g in grads], variables)
    for o, v in zip(out, variables, strict=True):
      o[t] = np.asarray(v.numpy())
  return out
