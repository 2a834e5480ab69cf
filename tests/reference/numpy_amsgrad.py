"""Float64 NumPy AMSGrad and AdamNC, written from the formulas, for the parity tests.

Deliberately naive: explicit loops over time, bias corrections from explicit products of the
per-step rates, AdamNC's second moment as a plain mean of all squared gradients so far. It
shares no code with the package.
"""

from __future__ import annotations

import numpy as np


def _div(num, den):
  """num / den with 0/0 taken as 0: the documented step of a never-moved coordinate."""
  return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def amsgrad(grads, lr, b1, b2, eps, eps_root=0.0, convention="pytorch", b1_decay=1.0):
  """Returns the update u_t (already times -lr) at every step, float64, for one array."""
  grads = np.asarray(grads, np.float64)
  m = np.zeros(grads.shape[1:])
  v = np.zeros(grads.shape[1:])
  v_max = np.zeros(grads.shape[1:])
  prod_b1 = 1.0
  out = []
  for t in range(1, len(grads) + 1):
    g = grads[t - 1]
    b1_t = b1 * b1_decay ** (t - 1)
    prod_b1 *= b1_t
    c1 = 1.0 - prod_b1
    c2 = 1.0 - b2**t
    m = b1_t * m + (1.0 - b1_t) * g
    v = b2 * v + (1.0 - b2) * g * g
    if convention == "pytorch":
      v_max = np.maximum(v_max, v)
      u = _div(m / c1, np.sqrt(v_max + eps_root) / np.sqrt(c2) + eps)
    elif convention == "keras":
      v_max = np.maximum(v_max, v)
      u = np.sqrt(c2) / c1 * _div(m, np.sqrt(v_max + eps_root) + eps)
    elif convention == "optax":
      v_max = np.maximum(v_max, v / c2)
      u = _div(m / c1, np.sqrt(v_max + eps_root) + eps)
    elif convention == "paper":
      v_max = np.maximum(v_max, v)
      u = _div(m, np.sqrt(v_max + eps_root) + eps)
    else:
      raise ValueError(convention)
    out.append(-lr(t - 1) * u if callable(lr) else -lr * u)
  return np.stack(out)


def adamnc(grads, lr, b1, eps, eps_root=0.0, b1_decay=1.0):
  """AdamNC: v_t = mean(g_1^2..g_t^2), no bias correction; returns the updates."""
  grads = np.asarray(grads, np.float64)
  m = np.zeros(grads.shape[1:])
  out = []
  for t in range(1, len(grads) + 1):
    b1_t = b1 * b1_decay ** (t - 1)
    m = b1_t * m + (1.0 - b1_t) * grads[t - 1]
    v = np.mean(grads[:t] ** 2, axis=0)
    u = _div(m, np.sqrt(v + eps_root) + eps)
    out.append(-lr(t - 1) * u if callable(lr) else -lr * u)
  return np.stack(out)
