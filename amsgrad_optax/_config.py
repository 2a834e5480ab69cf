"""What an AMSGrad state belongs to: the convention and hyperparameters, as a record.

An AMSGrad state holds moments, not the hyperparameters that give them their
meaning: the same ``nu_max`` is a bias-corrected maximum under ``"optax"`` and a
raw one under the other conventions. :class:`AmsgradConfig` is that missing
record. :func:`amsgrad_optax.amsgrad` and :func:`amsgrad_optax.scale_by_amsgrad`
record theirs, :func:`amsgrad_config` reads it back from the transformation,
and :func:`amsgrad_optax.diagnostics` and the checkpoint helpers use it instead
of assuming defaults.
"""

from __future__ import annotations

import dataclasses
import weakref
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from amsgrad_optax import _conventions, _validation

#: The fields of :class:`AmsgradConfig` that hold numbers (or a schedule).
NUMERIC_FIELDS = ("learning_rate", "b1", "b2", "eps", "eps_root", "b1_decay", "weight_decay")


@dataclasses.dataclass(frozen=True, eq=False)
class AmsgradConfig:
  """The convention and hyperparameters an AMSGrad optimizer was built with.

  :func:`amsgrad_optax.amsgrad` and :func:`amsgrad_optax.scale_by_amsgrad`
  record one on the transformation they return (read it with
  :func:`amsgrad_config`); build one by hand for a transformation that does
  not, such as ``optax.amsgrad`` (``convention="optax"``) or a chain.

  Attributes:
    convention: one of :data:`amsgrad_optax.CONVENTIONS`.
    learning_rate: a number, an array or an optax schedule; None where the
      transformation has none (:func:`amsgrad_optax.scale_by_amsgrad`).
    b1: decay rate of the first moment.
    b2: decay rate of the second moment.
    eps: added to the denominator outside the square root.
    eps_root: added to ``nu_max`` inside the square root.
    b1_decay: the factor of a decaying ``b1`` (1.0, or None, keeps it
      constant).
    weight_decay: the weight-decay rate (0.0, or None, for none).

  Examples:
    >>> import amsgrad_optax
    >>> tx = amsgrad_optax.amsgrad(1e-3, b2=0.9, convention="optax")
    >>> cfg = amsgrad_optax.amsgrad_config(tx)
    >>> cfg.convention, cfg.b2, cfg.eps
    ('optax', 0.9, 1e-08)
    >>> amsgrad_optax.AmsgradConfig("optax", learning_rate=1e-3).b1  # optax.amsgrad's
    0.9
  """

  convention: str
  learning_rate: optax.ScalarOrSchedule | None = None
  b1: jax.typing.ArrayLike = 0.9
  b2: jax.typing.ArrayLike = 0.999
  eps: jax.typing.ArrayLike = 1e-8
  eps_root: jax.typing.ArrayLike = 0.0
  b1_decay: jax.typing.ArrayLike | None = 1.0
  weight_decay: jax.typing.ArrayLike | None = 0.0

  def __post_init__(self):
    # The name only: the numbers may be tracers (optax.inject_hyperparams
    # calls the factory inside the update), and the factory checked them.
    object.__setattr__(self, "convention", _conventions.get_convention(self.convention).name)
    # The factories' None ("unset") is the constant b1 and no weight decay.
    if self.b1_decay is None:
      object.__setattr__(self, "b1_decay", 1.0)
    if self.weight_decay is None:
      object.__setattr__(self, "weight_decay", 0.0)

  def to_json(self) -> dict[str, Any]:
    """Returns the record as JSON-ready values (a schedule as the string ``"schedule"``).

    Raises:
      ValueError: if a hyperparameter is traced or not a scalar.
    """
    out: dict[str, Any] = {"convention": self.convention}
    for name in NUMERIC_FIELDS:
      value = getattr(self, name)
      if value is None or callable(value):
        out[name] = None if value is None else "schedule"
        continue
      arr = _validation.concrete_value(value)
      if arr is None or arr.shape != ():
        raise ValueError(
          f"{name} must be a concrete scalar to be recorded, got {value!r}: a "
          "traced value (under jit or inject_hyperparams) has no number to store"
        )
      out[name] = float(arr)
    return out


# Keyed by the transformation's update function: optax's transformations are
# NamedTuples, which take neither attributes nor weak references, and the
# function lives exactly as long as the transformation that holds it.
_RECORDS: weakref.WeakKeyDictionary[Any, AmsgradConfig] = weakref.WeakKeyDictionary()


def record(tx: optax.GradientTransformation, config: AmsgradConfig):
  """Records ``config`` as ``tx``'s and returns ``tx`` (for the factories)."""
  _RECORDS[tx.update] = config
  return tx


def recorded(tx: Any) -> AmsgradConfig | None:
  """Returns the config recorded for ``tx``, or None."""
  update = getattr(tx, "update", None)
  try:
    return _RECORDS.get(update) if update is not None else None
  except TypeError:  # not weakly referenceable: nothing was recorded for it
    return None


def amsgrad_config(tx: optax.GradientTransformation | AmsgradConfig) -> AmsgradConfig:
  """Returns the :class:`AmsgradConfig` that :func:`amsgrad` or :func:`scale_by_amsgrad` recorded.

  Args:
    tx: a transformation returned by :func:`amsgrad_optax.amsgrad` or
      :func:`amsgrad_optax.scale_by_amsgrad` (also with ``skip_nonfinite``,
      or wrapped in :func:`amsgrad_optax.skip_nonfinite`), or a config.

  Returns:
    Its config (``tx`` itself if it is one).

  Raises:
    ValueError: if ``tx`` carries no record (an ``optax.chain``, an
      ``optax.inject_hyperparams`` wrapper, ``optax.amsgrad``): pass the
      inner ``amsgrad_optax`` transformation, or build an
      :class:`AmsgradConfig` by hand.

  Examples:
    >>> import amsgrad_optax
    >>> amsgrad_optax.amsgrad_config(amsgrad_optax.amsgrad(0.1, convention="keras")).convention
    'keras'
  """
  if isinstance(tx, AmsgradConfig):
    return tx
  found = recorded(tx)
  if found is None:
    raise ValueError(
      f"tx: {_describe(tx)} carries no AmsgradConfig: only the transformations "
      "amsgrad_optax.amsgrad and amsgrad_optax.scale_by_amsgrad return (and "
      "skip_nonfinite around them) record one. Pass that inner "
      "transformation, or build amsgrad_optax.AmsgradConfig(convention=..., "
      "learning_rate=..., b1=..., ...) for it (convention='optax' for optax.amsgrad)."
    )
  return found


def _describe(tx: Any) -> str:
  if isinstance(tx, optax.GradientTransformation):
    return "this transformation"
  return f"a {type(tx).__name__}"


def same_value(a: Any, b: Any) -> bool:
  """Whether two concrete scalars are equal in the narrower of their dtypes.

  A Python ``0.9`` and a float32 ``0.9`` (as ``inject_hyperparams`` stores it)
  are the same hyperparameter. Traced values cannot be compared: True.
  """
  if isinstance(a, str) or isinstance(b, str):
    return a == b
  x, y = _validation.concrete_value(a), _validation.concrete_value(b)
  if x is None or y is None:
    return True
  dtypes = [d for d in (x.dtype, y.dtype) if jnp.issubdtype(d, jnp.inexact)]
  dtype = min(dtypes, key=lambda d: d.itemsize) if dtypes else np.dtype(np.float64)
  x, y = x.astype(dtype), y.astype(dtype)
  return bool(np.all((x == y) | (np.isnan(x) & np.isnan(y))))


def show(value: Any) -> str:
  """A hyperparameter as it is worded in error messages."""
  if isinstance(value, str):
    return repr(value)
  if callable(value):
    return "a schedule"
  arr = _validation.concrete_value(value)
  if arr is None:
    return "a traced value"
  if arr.shape == () and jnp.issubdtype(arr.dtype, jnp.floating):  # bfloat16 too
    return str(arr[()])  # shortest repr in its own dtype: float32 0.9 is "0.9"
  return repr(value)
