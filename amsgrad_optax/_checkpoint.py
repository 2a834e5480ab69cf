"""Checked restoring of optimizer states from checkpoints, and orbax checkpoints that know their optimizer."""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from amsgrad_optax import _config


def _key_name(key: Any) -> str:
  """Returns a path entry as a string, whatever container it indexed."""
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def _named_leaves(tree: Any, what: str) -> dict[tuple[str, ...], Any]:
  out: dict[tuple[str, ...], Any] = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    name = tuple(_key_name(k) for k in path)
    if name in out:
      raise ValueError(
        f"{what} has two leaves at the path {_show(name)}: restore_state "
        "matches leaves by path and cannot tell them apart."
      )
    out[name] = leaf
  return out


def _show(name: tuple[str, ...]) -> str:
  return "/".join(name) or "<root>"


def _dtype(x: Any) -> np.dtype:
  dtype = getattr(x, "dtype", None)
  return np.dtype(dtype if dtype is not None else jnp.result_type(x))


def restore_state(target: Any, restored: Any, *, check_values: bool = True) -> Any:
  """Returns ``restored``'s arrays in ``target``'s tree, after checking they fit.

  Checkpointers are forgiving in ways that hide bugs:
  ``flax.serialization.from_bytes(target, data)`` silently drops entries
  the target lacks and keeps stored shapes that differ from the target's,
  and ``orbax`` casts to the target's dtype on restore. Restore the raw
  tree instead (``flax.serialization.msgpack_restore(data)``, or orbax's
  ``restore(path)`` without a target) and pass it here with a freshly
  initialised state: this checks that both have the same leaves at the same
  paths, with the same shapes and dtypes, and rebuilds ``target``'s
  structure (NamedTuples, ``optax.EmptyState``, Flax ``nnx`` containers)
  around the restored arrays.

  Paths are compared by their entries' names, so the plain dicts and lists
  a checkpointer returns match the NamedTuples and tuples they came from
  (``ScaleByAmsgradState.nu_max`` matches ``{"nu_max": ...}``; a tuple's
  element 1 matches a list's element 1 or a dict's key ``"1"``). Nodes
  without arrays (``optax.EmptyState()``, ``None``) are not compared.

  Then the values are checked against what an optimizer state can hold
  (see :func:`check_state_values`): no negative step count or skip counter,
  no negative or non-finite second moment, no ``nu_max`` below ``nu``, no
  non-finite first moment. Such a state is corrupt, or was saved after the
  run diverged, and resuming from it would give wrong steps without a word.

  The state does not record its optimizer's convention: an
  ``optax.amsgrad`` state fits ``amsgrad(convention="pytorch")`` leaf for
  leaf, though its ``nu_max`` means something else there. Use
  :func:`save_checkpoint` and :func:`restore_checkpoint`, which record and
  check the convention and hyperparameters.

  Args:
    target: the state to restore into, e.g. ``tx.init(params)``; its leaves
      may be arrays or ``jax.ShapeDtypeStruct``.
    restored: the tree read from a checkpoint.
    check_values: check the values as above; False restores any values of
      the right shapes and dtypes.

  Returns:
    A tree with ``target``'s structure and ``restored``'s values (NumPy
    leaves become JAX arrays, with unchanged dtype).

  Raises:
    ValueError: naming the first path (in ``target``'s leaf order) that is
      missing from ``restored``, or whose shape or dtype differs, or the
      first path of ``restored`` that ``target`` lacks; or the first value
      that no optimizer state can hold.

  Examples:
    >>> import jax.numpy as jnp, optax
    >>> from flax import serialization
    >>> import amsgrad_optax
    >>> tx = amsgrad_optax.amsgrad(1e-3)
    >>> state = tx.init({"w": jnp.ones(3)})
    >>> data = serialization.to_bytes(state)
    >>> raw = serialization.msgpack_restore(data)
    >>> back = amsgrad_optax.restore_state(tx.init({"w": jnp.zeros(3)}), raw)
    >>> type(back[0]).__name__
    'ScaleByAmsgradState'
    >>> amsgrad_optax.restore_state(tx.init({"w": jnp.zeros(4)}), raw)
    Traceback (most recent call last):
    ...
    ValueError: restored leaf 0/mu/w has shape (3,), but the target has (4,)...
    >>> raw["0"]["count"] = -5  # msgpack keeps a tuple as a dict of "0", "1"
    >>> amsgrad_optax.restore_state(tx.init({"w": jnp.zeros(3)}), raw)
    Traceback (most recent call last):
    ...
    ValueError: restored leaf 0/count is -5, but a step count is never negative...
  """
  target_leaves = _named_leaves(target, "target")
  restored_leaves = _named_leaves(restored, "restored")
  values, seen = [], set()  # seen: ids of the arrays in values, which keeps them alive
  for name, want in target_leaves.items():
    if name not in restored_leaves:
      raise ValueError(
        f"restored has no leaf at {_show(name)}, which the target has "
        f"(shape {np.shape(want)}, dtype {_dtype(want)}). The checkpoint "
        "was written for a different model or optimizer: rebuild the "
        "target with the params and optimizer the checkpoint was saved with."
      )
    got = restored_leaves[name]
    if np.shape(got) != np.shape(want):
      raise ValueError(
        f"restored leaf {_show(name)} has shape {np.shape(got)}, but the "
        f"target has {np.shape(want)}. The checkpoint was written for "
        "params of other shapes."
      )
    if _dtype(got) != _dtype(want):
      raise ValueError(
        f"restored leaf {_show(name)} has dtype {_dtype(got)}, but the "
        f"target has {_dtype(want)}. Build the target with the dtypes the "
        "checkpoint was saved with (params dtype, mu_dtype, nu_dtype), or "
        "cast the restored tree explicitly before restoring."
      )
    value = got if isinstance(got, jax.Array) else jnp.asarray(got)
    if id(value) in seen:
      # One array at two paths would make the state undonatable ("donate the
      # same buffer twice"): each leaf gets its own buffer.
      value = jnp.copy(value)
    seen.add(id(value))
    values.append(value)
  extra = [name for name in restored_leaves if name not in target_leaves]
  if extra:
    raise ValueError(
      f"restored has a leaf at {_show(extra[0])} that the target lacks "
      f"({len(extra)} such leaves in all). The checkpoint was written for a "
      "different model or optimizer."
    )
  if not isinstance(check_values, bool):
    raise TypeError(f"check_values must be a bool, got {check_values!r}")
  if check_values:
    _check_named_values(dict(zip(target_leaves, values, strict=True)))
  return jax.tree.unflatten(jax.tree.structure(target), values)


# ---------------------------------------------------------------- values

_COUNTERS = ("count", "total_skipped", "consecutive_skipped")
# The fields of the moment states (ScaleByAmsgradState, optax's class of that
# name, ScaleByAdamncState), recognised by their names so that a raw tree or
# a Flax nnx.State is checked as well as the NamedTuples.
_MOMENT_STATES = ({"count", "mu", "nu", "nu_max"}, {"count", "mu", "nu"})


def check_state_values(state: Any) -> None:
  r"""Raises ValueError if ``state`` holds a value no optimizer state can hold.

  Checked, wherever they are in the tree:

  * every integer leaf called ``count``, ``total_skipped`` or
    ``consecutive_skipped`` (optax's step counters, :class:`SkipNonfiniteState`'s
    counters) is >= 0, and ``consecutive_skipped <= total_skipped``;
  * in every AMSGrad or AdamNC state (a node with the fields ``count``,
    ``mu``, ``nu`` and, for AMSGrad, ``nu_max``): ``mu``, ``nu`` and
    ``nu_max`` are finite; ``nu`` and ``nu_max`` are >= 0; and ``nu_max >=
    nu``. That holds under every convention: ``"optax"`` takes the maximum
    over :math:`v_t / c_2 \ge v_t`, the others over :math:`v_t` itself, and
    the update preserves it exactly in every dtype (rounding is monotone).
    A shortfall of up to 4 ulps of ``nu`` is let through for states written
    by other code.

  A non-finite moment is refused rather than restored: AMSGrad's ``nu_max``
  never recovers from NaN or inf, so every later update of that coordinate
  would be NaN or zero. :func:`amsgrad_optax.skip_nonfinite` keeps a
  running state finite.

  Args:
    state: an optimizer state, or a tree holding some (``{"params": ...,
      "opt_state": ...}``, a Flax ``nnx.State``).

  Raises:
    ValueError: naming the first offending leaf, the value and the rule.

  Examples:
    >>> import jax.numpy as jnp
    >>> import amsgrad_optax
    >>> state = amsgrad_optax.scale_by_amsgrad().init(jnp.zeros(2))
    >>> amsgrad_optax.check_state_values(state._replace(nu=jnp.array([1.0, 0.0])))
    Traceback (most recent call last):
    ...
    ValueError: restored leaf nu_max is below nu at index (0,) (nu_max 0.0 < nu 1.0)...
  """
  _check_named_values(_named_leaves(state, "state"))


def _check_named_values(leaves: dict[tuple[str, ...], Any]) -> None:
  # Reductions run where the arrays are (jnp), and only the failing leaf is
  # fetched to the host for the message: params, which are not checked, are
  # never copied, and a sharded state is not gathered.
  for name, x in leaves.items():
    if not (name and name[-1] in _COUNTERS and np.issubdtype(_dtype(x), np.integer)):
      continue
    if bool(jnp.any(jnp.asarray(x) < 0)):
      x = np.asarray(x)
      what = "a step count" if name[-1] == "count" else "a skip counter"
      raise ValueError(
        f"restored leaf {_show(name)} is {_first(x, x < 0)}, but {what} is never "
        "negative: the checkpoint is corrupt or was edited."
      )
    total = leaves.get((*name[:-1], "total_skipped"))
    if name[-1] == "consecutive_skipped" and total is not None:
      if bool(jnp.any(jnp.asarray(x) > jnp.asarray(total))):
        x, total = np.asarray(x), np.asarray(total)
        raise ValueError(
          f"restored leaf {_show(name)} is {_first(x, x > total)}, above "
          f"total_skipped ({_first(total, x > total)}): consecutive skips are "
          "also counted in the total. The checkpoint is corrupt or was edited."
        )
  for prefix in sorted({name[:-1] for name in leaves if name and name[-1] == "count"}):
    fields: dict[str, dict[tuple[str, ...], Any]] = {}
    for name, x in leaves.items():
      if len(name) > len(prefix) and name[: len(prefix)] == prefix:
        fields.setdefault(name[len(prefix)], {})[name[len(prefix) + 1 :]] = x
    if set(fields) not in _MOMENT_STATES:
      continue
    for field in ("mu", "nu", "nu_max"):
      for sub, x in fields.get(field, {}).items():
        path = _show((*prefix, field, *sub))
        x = jnp.asarray(x)
        if jnp.issubdtype(x.dtype, jnp.inexact) and not bool(jnp.all(jnp.isfinite(x))):
          x = np.asarray(x)
          bad = ~np.isfinite(x)
          raise ValueError(
            f"restored leaf {path} is not finite ({_first(x, bad)} at index "
            f"{_where(bad)}; {int(bad.sum())} of {x.size} entries): the run had "
            "diverged when it was saved, and AMSGrad's nu_max never recovers from "
            "NaN or inf. Restore an earlier checkpoint (skip_nonfinite keeps the "
            "state finite), or pass check_values=False to restore it as it is."
          )
        if field != "mu" and bool(jnp.any(x < 0)):
          x = np.asarray(x)
          raise ValueError(
            f"restored leaf {path} is {_first(x, x < 0)} at index {_where(x < 0)}, "
            "but a second moment (an average of squares) is never negative: the "
            "checkpoint is corrupt or was edited."
          )
    for sub, top in fields.get("nu_max", {}).items():
      nu = fields["nu"].get(sub)
      if nu is None or np.shape(nu) != np.shape(top):
        continue
      top, nu = jnp.asarray(top), jnp.asarray(nu)
      if not (jnp.issubdtype(top.dtype, jnp.inexact) and jnp.issubdtype(nu.dtype, jnp.inexact)):
        # 8-bit codes (state_bits=8): nu is stored on nu_max's scales and
        # rounded below it, so the cap holds by construction.
        continue
      with jax.numpy_dtype_promotion("standard"):
        wide = jnp.promote_types(jnp.promote_types(nu.dtype, top.dtype), jnp.float32)
      nu_w = nu.astype(wide)
      slack = 4 * float(jnp.finfo(nu.dtype).eps)
      if bool(jnp.any(top.astype(wide) < nu_w - slack * nu_w)):
        top, nu = np.asarray(top), np.asarray(nu)
        low = top.astype(np.float64) < nu.astype(np.float64) * (1 - slack)
        i = _where(low)
        raise ValueError(
          f"restored leaf {_show((*prefix, 'nu_max', *sub))} is below "
          f"{_show((*prefix, 'nu', *sub))} at index {i} (nu_max {top[i]} < nu "
          f"{nu[i]}), but the running maximum is never below the second moment "
          "under any convention: the checkpoint is corrupt, or nu and nu_max "
          "were swapped."
        )


def _where(mask: np.ndarray) -> tuple[int, ...]:
  return tuple(int(i) for i in np.argwhere(mask)[0])


def _first(x: np.ndarray, mask: np.ndarray) -> Any:
  value = x[_where(mask)] if x.ndim else x
  return value.item() if hasattr(value, "item") else value


# ---------------------------------------------------------------- orbax checkpoints

_ITEM_STATE = "state"
_ITEM_META = "amsgrad_optax"
_FORMAT = 1


def _orbax():
  try:
    import orbax.checkpoint as ocp  # noqa: PLC0415 - an optional dependency
  except ImportError as e:  # pragma: no cover - orbax is in the checkpoint extra
    raise ImportError(
      "save_checkpoint and restore_checkpoint need orbax-checkpoint: "
      "pip install orbax-checkpoint (it is in amsgrad-optax's 'examples' extra)"
    ) from e
  return ocp


def _check_kind(state: Any, config: _config.AmsgradConfig, what: str) -> None:
  """Refuses an optax.ScaleByAmsgradState described as another convention's."""
  found = optax.tree_utils.tree_get_all_with_path(
    state, "ScaleByAmsgradState", filtering=lambda _, v: isinstance(v, optax.ScaleByAmsgradState)
  )
  if found and config.convention != "optax":
    raise ValueError(
      f"{what} holds an optax.ScaleByAmsgradState (optax.amsgrad's), whose nu_max "
      f"is bias-corrected, but the config says convention={config.convention!r}: "
      "describe it as amsgrad_optax.AmsgradConfig('optax', learning_rate=..., ...)."
    )


def save_checkpoint(
  path: Any,
  state: Any,
  tx: optax.GradientTransformation | _config.AmsgradConfig,
  *,
  force: bool = False,
) -> None:
  """Writes ``state`` to an orbax checkpoint, with the optimizer's convention and hyperparameters.

  The checkpoint is a directory with two orbax items: ``state`` (the tree,
  as ``orbax.checkpoint.StandardCheckpointer`` would write it) and
  ``amsgrad_optax`` (JSON: the :class:`~amsgrad_optax.AmsgradConfig`, a
  schedule recorded as ``"schedule"``). :func:`restore_checkpoint` reads
  both back and refuses a state whose optimizer differs.

  Args:
    path: a directory that does not exist yet (unless ``force``); made
      absolute, as orbax requires.
    state: any tree of arrays: the optimizer state, or ``{"params": ...,
      "opt_state": ...}``, or a Flax ``nnx.State``.
    tx: the optimizer (as :func:`amsgrad_optax.amsgrad` or
      :func:`amsgrad_optax.scale_by_amsgrad` returned it, which records its
      config) or an :class:`~amsgrad_optax.AmsgradConfig` (for
      ``optax.amsgrad``, a chain, ``optax.inject_hyperparams``).
    force: overwrite an existing checkpoint at ``path``.

  Raises:
    ValueError: if ``tx`` records no config, a hyperparameter is not a
      concrete scalar, or ``state`` holds an ``optax.ScaleByAmsgradState``
      while the config names another convention than ``"optax"``.
    ImportError: without orbax-checkpoint.

  Examples:
    >>> import os, tempfile, jax.numpy as jnp
    >>> import amsgrad_optax
    >>> tx = amsgrad_optax.amsgrad(1e-3, convention="optax")
    >>> state = tx.init({"w": jnp.ones(3)})
    >>> path = os.path.join(tempfile.mkdtemp(), "ckpt")
    >>> amsgrad_optax.save_checkpoint(path, state, tx)
    >>> back = amsgrad_optax.restore_checkpoint(path, tx.init({"w": jnp.zeros(3)}), tx)
    >>> other = amsgrad_optax.amsgrad(1e-3)  # convention="pytorch"
    >>> amsgrad_optax.restore_checkpoint(path, other.init({"w": jnp.zeros(3)}), other)
    Traceback (most recent call last):
    ...
    ValueError: the checkpoint at ... holds a convention='optax' state and this optimizer is convention='pytorch'...
  """
  ocp = _orbax()
  config = _config.amsgrad_config(tx)
  _check_kind(state, config, "state")
  meta = {"format": _FORMAT, "config": config.to_json()}
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
    ckptr.save(
      os.path.abspath(os.fspath(path)),
      ocp.args.Composite(
        **{_ITEM_STATE: ocp.args.StandardSave(state), _ITEM_META: ocp.args.JsonSave(meta)}
      ),
      force=force,
    )


def read_checkpoint_config(path: Any) -> dict[str, Any]:
  """Returns the config :func:`save_checkpoint` recorded, as JSON values.

  Args:
    path: the checkpoint's directory.

  Returns:
    ``{"convention": ..., "learning_rate": ..., "b1": ..., ...}``, with a
    schedule as ``"schedule"`` and a missing learning rate as None.

  Raises:
    ValueError: if the checkpoint was not written by :func:`save_checkpoint`
      (e.g. by ``orbax``'s ``StandardCheckpointer`` directly).

  Examples:
    >>> import os, tempfile, jax.numpy as jnp
    >>> import amsgrad_optax
    >>> tx = amsgrad_optax.amsgrad(1e-3, b2=0.99, convention="keras")
    >>> path = os.path.join(tempfile.mkdtemp(), "ckpt")
    >>> amsgrad_optax.save_checkpoint(path, tx.init(jnp.zeros(2)), tx)
    >>> cfg = amsgrad_optax.read_checkpoint_config(path)
    >>> cfg["convention"], cfg["b2"]
    ('keras', 0.99)
  """
  ocp = _orbax()
  full = os.path.abspath(os.fspath(path))
  if not os.path.isdir(os.path.join(full, _ITEM_META)):
    raise ValueError(
      f"the checkpoint at {full} has no {_ITEM_META!r} item: it was not written by "
      "amsgrad_optax.save_checkpoint, so nothing says which optimizer its state "
      "belongs to. Read it with orbax (StandardCheckpointer().restore(path)) and "
      "pass the tree to amsgrad_optax.restore_state with a target built for the "
      "optimizer that wrote it (see the checkpoints guide for optax.amsgrad)."
    )
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
    meta = ckptr.restore(full, ocp.args.Composite(**{_ITEM_META: ocp.args.JsonRestore()}))[
      _ITEM_META
    ]
  if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
    raise ValueError(
      f"the checkpoint at {full} has amsgrad_optax metadata of an unknown format: {meta!r}"
    )
  return dict(meta["config"])


def _differs(saved: Any, current: Any) -> bool:
  if isinstance(saved, (int, float)) and isinstance(current, (int, float)):
    a, b = np.float32(saved), np.float32(current)
    return not (a == b or (np.isnan(a) and np.isnan(b)))
  return saved != current


def restore_checkpoint(
  path: Any,
  target: Any,
  tx: optax.GradientTransformation | _config.AmsgradConfig,
  *,
  allow_changes: tuple[str, ...] = (),
  check_values: bool = True,
) -> Any:
  """Reads a :func:`save_checkpoint` checkpoint into ``target``, refusing another optimizer's state.

  The recorded convention and hyperparameters must equal ``tx``'s (numbers
  compared in float32; two schedules are taken as equal, since a function
  cannot be stored), except those named in ``allow_changes``. Then the
  state is restored with :func:`restore_state`: same paths, shapes and
  dtypes as ``target``, and values an optimizer state can hold.

  What may change: ``learning_rate``, ``eps`` and ``weight_decay`` enter
  only the steps to come, so resuming with other values is well defined (to
  fine-tune with a smaller rate, say). ``b1``, ``b2``, ``eps_root`` and
  ``b1_decay`` entered the stored moments or their bias corrections. The
  ``convention`` may change among ``"pytorch"``, ``"keras"`` and
  ``"paper"``, whose states mean the same; never to or from ``"optax"``,
  whose ``nu_max`` is bias-corrected (see the checkpoints guide for
  converting an ``optax.amsgrad`` state).

  Args:
    path: the checkpoint's directory.
    target: the tree to restore into, as for :func:`restore_state` (e.g.
      ``tx.init(params)``, or ``jax.eval_shape`` of it).
    tx: the optimizer that will continue, or its
      :class:`~amsgrad_optax.AmsgradConfig`.
    allow_changes: names of the config's fields that may differ.
    check_values: passed to :func:`restore_state`.

  Returns:
    The restored tree, with ``target``'s structure.

  Raises:
    ValueError: if the checkpoint has no recorded config, a field differs
      that ``allow_changes`` does not name, ``allow_changes`` names an
      unknown field or a change to or from ``"optax"``; and as
      :func:`restore_state` raises.

  Examples:
    >>> import os, tempfile, jax.numpy as jnp
    >>> import amsgrad_optax
    >>> tx = amsgrad_optax.amsgrad(1e-3)
    >>> path = os.path.join(tempfile.mkdtemp(), "ckpt")
    >>> amsgrad_optax.save_checkpoint(path, tx.init(jnp.ones(2)), tx)
    >>> finetune = amsgrad_optax.amsgrad(1e-4)
    >>> amsgrad_optax.restore_checkpoint(path, finetune.init(jnp.zeros(2)), finetune)
    Traceback (most recent call last):
    ...
    ValueError: the checkpoint at ... was saved by another optimizer: learning_rate is 0.001 there, 0.0001 here...
    >>> state = amsgrad_optax.restore_checkpoint(
    ...     path, finetune.init(jnp.zeros(2)), finetune, allow_changes=("learning_rate",))
    >>> int(state[0].count)
    0
  """
  ocp = _orbax()
  config = _config.amsgrad_config(tx)
  fields = ("convention", *_config.NUMERIC_FIELDS)
  if isinstance(allow_changes, str) or not all(isinstance(n, str) for n in allow_changes):
    raise TypeError(f"allow_changes must be a tuple of field names, got {allow_changes!r}")
  unknown = [n for n in allow_changes if n not in fields]
  if unknown:
    raise ValueError(f"allow_changes names {unknown}, which are not among {fields}")
  _check_kind(target, config, "target")
  saved = read_checkpoint_config(path)
  current = config.to_json()
  full = os.path.abspath(os.fspath(path))
  if saved["convention"] != current["convention"] and "optax" in (
    saved["convention"],
    current["convention"],
  ):
    raise ValueError(
      f"the checkpoint at {full} holds a convention={saved['convention']!r} state and "
      f"this optimizer is convention={current['convention']!r}: under 'optax' nu_max "
      "is the maximum of the bias-corrected v_t / (1 - b2^t), under the others of v_t "
      "itself, so the steps would silently change. "
      "allow_changes cannot permit this; build the optimizer with the checkpoint's "
      "convention, or convert the state as the checkpoints guide shows."
    )
  diffs = [n for n in fields if n not in allow_changes and _differs(saved.get(n), current.get(n))]
  if diffs:
    shown = "; ".join(f"{n} is {saved.get(n)!r} there, {current.get(n)!r} here" for n in diffs)
    raise ValueError(
      f"the checkpoint at {full} was saved by another optimizer: {shown}. Build the "
      "optimizer with the checkpoint's settings (amsgrad_optax.read_checkpoint_config "
      f"shows them), or pass allow_changes={tuple(diffs)!r} if continuing with "
      "these is intended."
    )
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
    raw = ckptr.restore(full, ocp.args.Composite(**{_ITEM_STATE: ocp.args.StandardRestore()}))[
      _ITEM_STATE
    ]
  return restore_state(target, raw, check_values=check_values)
