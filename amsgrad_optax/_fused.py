"""An opt-in AMSGrad step that makes one pass over memory on the CPU (an XLA FFI kernel).

XLA:CPU compiles the step of :func:`amsgrad_optax.amsgrad` into four loops a
leaf (``mu``; ``nu``; ``nu_max``; the step fused with ``apply_updates``),
moving 52 bytes per float32 parameter, because it does not fuse sibling loops
with several outputs; a per-computation compiler option cannot turn its
multi-output fusion on. :func:`fused_amsgrad` runs the same arithmetic as one
C++ loop per leaf, in place (36 bytes per parameter: read p, g, mu, nu,
nu_max; write p, mu, nu, nu_max), all leaves in one call, on XLA's intra-op
threads. With 8-bit state (``state_bits=8``) a second kernel makes one pass
per block (about 18 bytes per parameter), where the XLA step takes 21 loops.
With ``flatten=True`` (``optax.flatten``'s state: each moment one 1-D array) a
third reads the moments at each leaf's offset, so that a step of a tree of
many leaves passes three moment buffers in and out instead of three a leaf:
on a CPU, JAX's dispatch of a jitted call costs about a microsecond an array
warm and about two once other work has evicted it from the caches.

The kernel is compiled from ``_fused_kernel.cc`` (shipped with the package) by
the C++ compiler (``$CXX`` or ``c++``) the first time it is needed, into
``$AMSGRAD_OPTAX_CACHE`` (default ``~/.cache/amsgrad_optax``); nothing is
downloaded. Without a compiler, on a non-CPU backend, with
``AMSGRAD_OPTAX_FUSED_KERNEL=0``, or for a tree the kernels do not take
(params, gradients or full-precision moments not float32; complex), the step
is the plain XLA one.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from importlib import resources
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from amsgrad_optax import _alias, _conventions, _quantize, _transform, _validation

_TARGET = "amsgrad_optax_fused_step"
_TARGET_8BIT = "amsgrad_optax_fused_step8"
_TARGET_FLAT = "amsgrad_optax_fused_step_flat"
_ENV_SWITCH = "AMSGRAD_OPTAX_FUSED_KERNEL"
_ENV_CACHE = "AMSGRAD_OPTAX_CACHE"

_lock = threading.Lock()
_status: dict[str, Any] = {}  # "ok": bool, "reason": str, "path": str


class FusedAmsgrad(NamedTuple):
  """What :func:`fused_amsgrad` returns.

  Attributes:
    init: ``init(params) -> state``, the state of :attr:`tx` (so the two
      paths share checkpoints).
    step: ``step(params, state, grads) -> (params, state)``, jitted, with
      ``params`` and ``state`` donated.
    tx: the same optimizer as an optax transformation (the XLA path).
  """

  init: Callable[[optax.Params], optax.OptState]
  step: Callable[[optax.Params, optax.OptState, optax.Updates], tuple[optax.Params, Any]]
  tx: optax.GradientTransformation


def kernel_status() -> dict[str, Any]:
  """Builds and loads the fused kernel if it has not been tried yet; returns the outcome.

  Returns:
    ``{"ok": bool, "reason": str, "path": str | None}``: whether the kernel is
    registered with XLA, why not if it is not, and the shared library's path.

  Examples:
    >>> from amsgrad_optax import _fused
    >>> sorted(_fused.kernel_status())
    ['ok', 'path', 'reason']
  """
  with _lock:
    if not _status:
      _status.update(_load())
    return dict(_status)


def _cpu_flags() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith(("flags", "Features")):
          return line
  except OSError:
    pass
  return platform.processor()


def _load() -> dict[str, Any]:
  if os.environ.get(_ENV_SWITCH, "1") == "0":
    return {"ok": False, "reason": f"{_ENV_SWITCH}=0", "path": None}
  if jax.default_backend() != "cpu":
    return {"ok": False, "reason": f"backend is {jax.default_backend()}, not cpu", "path": None}
  compiler = shutil.which(os.environ.get("CXX", "c++"))
  if compiler is None:
    return {"ok": False, "reason": "no C++ compiler ($CXX or c++) on PATH", "path": None}
  source = resources.files("amsgrad_optax").joinpath("_fused_kernel.cc").read_bytes()
  include = jax.ffi.include_dir()
  # -ffp-contract=fast: multiply-adds fused where XLA:CPU fuses them (the
  # moments then equal the XLA step's); -fno-math-errno lets sqrt vectorise.
  flags = [
    "-O3",
    "-ffp-contract=fast",
    "-fno-math-errno",
    "-std=c++17",
    "-shared",
    "-fPIC",
  ]
  key = hashlib.sha256(
    b"\0".join(
      [source, jax.__version__.encode(), compiler.encode(), " ".join(flags).encode()]
      + [platform.machine().encode(), _cpu_flags().encode()]
    )
  ).hexdigest()[:20]
  cache = os.environ.get(_ENV_CACHE) or os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "amsgrad_optax"
  )
  path = os.path.join(cache, f"fused_{key}.so")
  if not os.path.exists(path):
    try:
      os.makedirs(cache, exist_ok=True)
      with tempfile.TemporaryDirectory(dir=cache) as tmp:
        src = os.path.join(tmp, "kernel.cc")
        with open(src, "wb") as f:
          f.write(source)
        out = os.path.join(tmp, "kernel.so")
        # -march=native where the compiler knows it (the library is built on the
        # machine that runs it, and the cache key holds the CPU's flags); else portable.
        for extra in (["-march=native"], []):
          run = subprocess.run(
            [compiler, *flags, *extra, f"-I{include}", src, "-o", out],
            capture_output=True,
            text=True,
            timeout=300,
          )
          if run.returncode == 0:
            break
        else:
          return {"ok": False, "reason": f"{compiler} failed: {run.stderr[-500:]}", "path": None}
        os.replace(out, path)  # atomic: a concurrent build finds a whole file or none
    except (OSError, subprocess.SubprocessError) as e:
      return {"ok": False, "reason": f"build failed: {e}", "path": None}
  try:
    lib = ctypes.cdll.LoadLibrary(path)
    jax.ffi.register_ffi_target(_TARGET, jax.ffi.pycapsule(lib.AmsgradFusedStep), platform="cpu")
    jax.ffi.register_ffi_target(
      _TARGET_8BIT, jax.ffi.pycapsule(lib.AmsgradFusedStep8), platform="cpu"
    )
    jax.ffi.register_ffi_target(
      _TARGET_FLAT, jax.ffi.pycapsule(lib.AmsgradFusedStepFlat), platform="cpu"
    )
  except (OSError, AttributeError, ValueError) as e:
    return {"ok": False, "reason": f"loading {path} failed: {e}", "path": path}
  return {"ok": True, "reason": "", "path": path}


# ---------------------------------------------------------------- the step


def _scalars(conv: _conventions.Convention, lr, b1, b2, eps, eps_root, count) -> jax.Array:
  """The kernel's float32[11] operand (order: ``Scalar`` in _fused_kernel.cc).

  Each value is the one the XLA path forms: ``1 - b`` from Python numbers in
  double precision, the bias corrections from the convention's table.
  """
  f32 = jnp.float32
  one = jnp.ones([], f32)
  bc1, bc2 = conv.bias_corrections(b1, b2, count)
  bc1 = one if bc1 is None else jnp.asarray(bc1).astype(f32)
  bc2 = one if bc2 is None else jnp.asarray(bc2).astype(f32)
  max_div = den_scale = step_mul = step_div = one
  eps_ = jnp.asarray(eps, f32)
  if conv.nu_correction == "max":
    max_div = bc2
  elif conv.nu_correction == "denominator":
    # As scale_by_amsgrad: (m / c1) sqrt(c2) / (sqrt(v_max) + eps sqrt(c2)).
    step_mul = jnp.sqrt(bc2)
    eps_ = eps_ * step_mul
  elif conv.nu_correction == "step":
    step_mul = jnp.sqrt(bc2) / bc1
  if conv.correct_mu and conv.nu_correction != "step":
    step_div = bc1
  values = [b1, 1.0 - b1, b2, 1.0 - b2, max_div, eps_root, den_scale, eps_, step_mul, step_div, -lr]
  return jnp.stack([jnp.asarray(x, f32) if isinstance(x, float) else x for x in values])


_F32 = np.dtype(np.float32)


def _takes(params, grads, inner, flat: bool) -> bool:
  """Whether the kernels take every leaf: float32 params, gradients and moments
  (not Python numbers, not complex), or float32 params and gradients with
  8-bit moments; with ``flat``, float32 moments only."""
  if not all(getattr(x, "dtype", None) == _F32 for x in jax.tree.leaves((params, grads))):
    return False
  moments = jax.tree.leaves((inner.mu, inner.nu, inner.nu_max), is_leaf=_quantize.is_quantized)
  return all(
    getattr(x, "dtype", None) == _F32
    or (not flat and isinstance(x, _quantize.QuantizedArray) and x.scale.dtype == _F32)
    for x in moments
  )


def _on_one_device(tree) -> bool:
  """False for arrays spread over several devices, or traced ones where there are several.

  The kernel sees one buffer; sharded arrays take the XLA step, whose
  partitioning XLA knows.
  """
  if jax.device_count() == 1:
    return True  # nothing to spread over (and no per-leaf check on every step)
  single = jax.sharding.SingleDeviceSharding
  for x in jax.tree.leaves(tree):
    if isinstance(x, (np.ndarray, np.generic, int, float)):
      continue  # a host value: jit puts it on the default device
    sharding = getattr(x, "sharding", None)
    if type(sharding) is single:
      continue
    if sharding is None or not hasattr(sharding, "num_devices"):  # traced: placement unknown
      if jax.device_count() > 1:
        return False
    elif sharding.num_devices > 1:
      return False
  return True


def fused_amsgrad(
  learning_rate: float = 1e-3,
  b1: float = 0.9,
  b2: float = 0.999,
  eps: float = 1e-8,
  eps_root: float = 0.0,
  *,
  convention: str = "pytorch",
  state_bits: int | None = None,
  block_size: int | None = None,
  flatten: bool = False,
  use_kernel: bool | None = None,
) -> FusedAmsgrad:
  r"""Returns :func:`amsgrad_optax.amsgrad`'s step as one fused pass on the CPU.

  ``step(params, state, grads)`` is ``tx.update`` followed by
  ``optax.apply_updates``, with ``tx = amsgrad(learning_rate, b1, b2, eps,
  eps_root, convention=convention, state_bits=state_bits,
  block_size=block_size)``, on the same state. On a CPU, for a tree whose
  params and gradients are float32 and real, it runs as one C++ loop per leaf
  over the donated buffers (see the module docstring for how the kernel is
  built), with 8-bit moments one pass per block; its rounding can differ from
  the XLA path's by an ulp where XLA turns a division into a multiplication
  (with 8-bit state, an ulp can move a value to the next code). Otherwise
  (and under ``use_kernel=False``) it is the XLA step itself.

  With ``flatten=True`` the optimizer is ``optax.flatten(amsgrad(...))``: the
  state holds each moment of all leaves as one 1-D array, the leaves one after
  another in ``jax.tree.leaves`` order (params and gradients stay trees). A
  step then passes three moment buffers instead of three a leaf in and out of
  the jitted call, which is most of a many-leaf step's cost on a CPU (see the
  performance page). The state is ``optax.flatten``'s, not the per-leaf
  state of :func:`amsgrad`, and the flat moments are not sharded like the
  params; :func:`amsgrad_optax.flatten_state` and
  :func:`amsgrad_optax.unflatten_state` convert between the two bit for bit.
  8-bit state with ``flatten=True`` takes the XLA step.

  Transformations: under ``jax.jvp``/``jax.grad`` the derivative is the XLA
  step's; under ``jax.vmap`` the kernel runs once per batch element. Arrays
  sharded over several devices take the XLA step.

  Args:
    learning_rate: a positive number (schedules: use :func:`amsgrad`).
    b1: decay rate of the first moment, in [0, 1).
    b2: decay rate of the second moment, in [0, 1).
    eps: added to the denominator outside the square root, >= 0.
    eps_root: added to the running max inside the square root, >= 0.
    convention: one of :data:`amsgrad_optax.CONVENTIONS`.
    state_bits: None (float32 moments) or 8 (:func:`amsgrad`'s 8-bit state).
    block_size: the most elements per block with ``state_bits=8`` (None: 256).
    flatten: keep the moments as one 1-D array each (``optax.flatten``'s
      state) instead of one a leaf.
    use_kernel: None (default) for the kernel where it is available; True to
      raise RuntimeError if it cannot be built; False for the XLA step.

  Returns:
    A :class:`FusedAmsgrad` ``(init, step, tx)``.

  Raises:
    TypeError: for a hyperparameter that is not a Python number.
    RuntimeError: with ``use_kernel=True``, if the kernel is unavailable.

  Examples:
    >>> import jax.numpy as jnp
    >>> import amsgrad_optax
    >>> opt = amsgrad_optax.fused_amsgrad(0.1)
    >>> params = {"w": jnp.ones(3)}
    >>> state = opt.init(params)
    >>> params, state = opt.step(params, state, {"w": jnp.array([1.0, -1.0, 0.0])})
    >>> params["w"]  # lr * sign(g) on the first step, 0 where g = 0
    Array([0.9, 1.1, 1. ], dtype=float32)

  References:
    Reddi, Kale & Kumar, `On the Convergence of Adam and Beyond
    <https://openreview.net/forum?id=ryQu7f-RZ>`_, ICLR 2018.
  """
  hyper = {"learning_rate": learning_rate, "b1": b1, "b2": b2, "eps": eps, "eps_root": eps_root}
  for name, value in hyper.items():
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise TypeError(
        f"{name} must be a Python number for fused_amsgrad, got {value!r}; "
        "use amsgrad for arrays, schedules or traced values"
      )
  if use_kernel is not None and not isinstance(use_kernel, bool):
    raise TypeError(f"use_kernel must be None, True or False, got {use_kernel!r}")
  if not isinstance(flatten, bool):
    raise TypeError(f"flatten must be True or False, got {flatten!r}")
  lr, b1, b2, eps, eps_root = (float(v) for v in hyper.values())
  tx = _alias.amsgrad(  # validates all
    lr, b1, b2, eps, eps_root, convention=convention, state_bits=state_bits, block_size=block_size
  )
  if flatten:
    tx = optax.flatten(tx)
  conv = _conventions.get_convention(convention)
  if use_kernel is True and not kernel_status()["ok"]:
    raise RuntimeError(f"the fused AMSGrad kernel is unavailable: {kernel_status()['reason']}")

  def plain(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  def kernel(params, state, grads):
    status = kernel_status()  # registers the handler before XLA looks it up
    if not status["ok"]:
      raise RuntimeError(f"the fused AMSGrad kernel is unavailable: {status['reason']}")
    inner, rest = state[0], state[1:]
    if flatten:
      _check_flat(params, grads, inner)
    else:
      _transform._check_updates(grads, inner, _transform.ScaleByAmsgradState)
    _transform._check_hyperparams({"b1": b1, "b2": b2, "eps": eps, "eps_root": eps_root}, "float32")
    _validation.check_finite_in("learning_rate", lr, jnp.float32)
    count = optax.safe_increment(inner.count)
    scalars = _scalars(conv, lr, b1, b2, eps, eps_root, count)
    treedef = jax.tree.structure(params)
    if flatten:
      p, mu, nu, nu_max = _call_flat(
        scalars, treedef.flatten_up_to(params), treedef.flatten_up_to(grads), inner
      )
      p = treedef.unflatten(p)
      return p, (inner._replace(count=count, mu=mu, nu=nu, nu_max=nu_max), *rest)
    moments = [_quantize.normalized(t) for t in (inner.mu, inner.nu, inner.nu_max)]
    leaves = [treedef.flatten_up_to(t) for t in (params, grads, *moments)]
    groups = [list(group) for group in zip(*leaves, strict=True)]  # [p, g, mu, nu, nu_max]
    new = [None] * len(groups)
    # One call for the float32 leaves, one for the 8-bit ones (small leaves stay float32).
    for call, wanted in ((_call_full, False), (_call_8bit, True)):
      ks = [k for k, group in enumerate(groups) if _is_8bit(group[2]) == wanted]
      if ks:
        for k, out in zip(ks, call(scalars, count, [groups[k] for k in ks]), strict=True):
          new[k] = out
    p, mu, nu, nu_max = (treedef.unflatten([n[j] for n in new]) for j in range(4))
    return p, (inner._replace(count=count, mu=mu, nu=nu, nu_max=nu_max), *rest)

  fused = jax.custom_jvp(kernel)
  fused.defjvp(lambda primals, tangents: jax.jvp(plain, primals, tangents))

  def chosen(params, state, grads):
    # Decided while tracing, from dtypes (jit's cache keys on them): a call
    # pays no check a leaf beyond jit's own.
    inner = _amsgrad_inner(state)
    eligible = (
      use_kernel is not False
      and inner is not None
      and _takes(params, grads, inner, flatten)
      and kernel_status()["ok"]
    )
    return (fused if eligible else plain)(params, state, grads)

  jit_chosen = jax.jit(chosen, donate_argnums=(0, 1))
  jit_fused = jax.jit(fused, donate_argnums=(0, 1))
  jit_plain = jax.jit(plain, donate_argnums=(0, 1))

  def step(params, state, grads):
    """``(params, state)`` after one step; ``params`` and ``state`` are donated."""
    if not _on_one_device((params, grads, state)):
      return jit_plain(params, state, grads)
    return jit_chosen(params, state, grads)

  # For inspection: step.fused.lower(...).compile().
  step.fused, step.plain = jit_fused, jit_plain  # type: ignore[attr-defined]
  return FusedAmsgrad(tx.init, step, tx)


def _is_8bit(x) -> bool:
  return isinstance(x, _quantize.QuantizedArray)


def _call_full(scalars, count, leaves):
  """The float32 kernel over ``leaves`` ([p, g, mu, nu, nu_max] each): [p, mu, nu, nu_max] each."""
  del count  # in the scalars' bias corrections
  operands = [x for group in leaves for x in group]
  out_types = [
    jax.ShapeDtypeStruct(jnp.shape(x), jnp.float32)
    for p, _, m, v, vm in leaves
    for x in (p, m, v, vm)
  ]
  # (operand index within a leaf's five, result index within its four)
  aliases = {1 + 5 * k + i: 4 * k + o for k in range(len(leaves)) for i, o in _PAIRS}
  call = jax.ffi.ffi_call(
    _TARGET, out_types, input_output_aliases=aliases, vmap_method="sequential"
  )
  outs = call(scalars, *operands)
  return [outs[4 * k : 4 * k + 4] for k in range(len(leaves))]


def _call_8bit(scalars, count, leaves):
  """The 8-bit kernel over ``leaves`` ([p, g, mu, nu, nu_max], moments quantized)."""
  operands, out_types, ints = [], [], [count]
  for p, g, m, v, vm in leaves:
    k, b = _quantize._tile_of(vm)
    n_cols = p.shape[-1]
    ints += [n_cols, k, b]
    group = [p, g, m.codes, m.scale, v.codes, v.scale, vm.codes, vm.scale]
    operands += group
    out_types += [jax.ShapeDtypeStruct(x.shape, x.dtype) for i, x in enumerate(group) if i != 1]
  # Each leaf's eight operands (after the two arrays of scalars) alias its seven
  # results, g (operand 1) excepted.
  aliases = {
    2 + 8 * k + i: 7 * k + (i if i == 0 else i - 1)
    for k in range(len(leaves))
    for i in range(8)
    if i != 1
  }
  call = jax.ffi.ffi_call(
    _TARGET_8BIT, out_types, input_output_aliases=aliases, vmap_method="sequential"
  )
  outs = call(scalars, jnp.stack([jnp.asarray(x, jnp.int32) for x in ints]), *operands)
  return [
    [
      outs[7 * k],
      _quantize.QuantizedArray(outs[7 * k + 1], outs[7 * k + 2]),
      _quantize.QuantizedArray(outs[7 * k + 3], outs[7 * k + 4]),
      _quantize.QuantizedArray(outs[7 * k + 5], outs[7 * k + 6]),
    ]
    for k in range(len(leaves))
  ]


_PAIRS = ((0, 0), (2, 1), (3, 2), (4, 3))


def _check_flat(params, grads, inner) -> None:
  """The checks of ``optax.flatten(amsgrad)``'s update, on the unflattened trees."""
  _validation.check_state(inner, _transform.ScaleByAmsgradState._fields, "ScaleByAmsgradState")
  _validation.check_same_structure(grads, _quantize.shapes_tree(params), "params")
  _validation.check_float_tree(grads, "updates")
  size = sum(int(np.size(x)) for x in jax.tree.leaves(params))
  for name in _transform._MOMENTS:
    _check_flat_moment(
      getattr(inner, name),
      name,
      size,
      " (flatten=True)",
      "; was the state made by this optimizer's init?",
    )


def _check_flat_moment(moment, name: str, size: int, where: str = "", hint: str = "") -> None:
  """Raises ValueError unless ``moment`` is one 1-D array of ``size`` elements."""
  shape = getattr(moment, "shape", None)
  if shape is None or tuple(shape) != (size,):
    got = f"shape {tuple(shape)}" if shape is not None else f"a {type(moment).__name__}"
    raise ValueError(
      f"state.{name} must be one 1-D array of the params' {size} elements{where}, got {got}{hint}"
    )


def _call_flat(scalars, p_leaves, g_leaves, inner):
  """The float32 kernel over per-leaf p and g and flat moments: (p leaves, mu, nu, nu_max)."""
  n = len(p_leaves)
  moments = (inner.mu, inner.nu, inner.nu_max)
  operands = [x for pair in zip(p_leaves, g_leaves, strict=True) for x in pair] + list(moments)
  out_types = [jax.ShapeDtypeStruct(jnp.shape(x), jnp.float32) for x in (*p_leaves, *moments)]
  # Operand 0 is the scalars; p of leaf k is operand 1 + 2k, the moments follow the pairs.
  aliases = {1 + 2 * k: k for k in range(n)} | {1 + 2 * n + j: n + j for j in range(3)}
  call = jax.ffi.ffi_call(
    _TARGET_FLAT, out_types, input_output_aliases=aliases, vmap_method="sequential"
  )
  outs = call(scalars, *operands)
  return list(outs[:n]), *outs[n:]


# ---------------------------------------------------------------- state layouts


def _amsgrad_inner(state: Any) -> _transform.ScaleByAmsgradState | None:
  """``state[0]`` where ``state`` is amsgrad's (a tuple led by a ScaleByAmsgradState), else None."""
  inner = state[0] if isinstance(state, tuple) and state else None
  return inner if isinstance(inner, _transform.ScaleByAmsgradState) else None


def _inner_and_rest(state: Any, what: str) -> tuple[Any, tuple]:
  inner = _amsgrad_inner(state)
  if inner is None:
    raise TypeError(
      f"{what} must be the state of amsgrad or fused_amsgrad (a tuple whose first entry "
      f"is a ScaleByAmsgradState), got {type(state).__name__}"
    )
  moments = tuple(getattr(inner, f) for f in _transform._MOMENTS)
  if any(_is_8bit(x) for x in jax.tree.leaves(moments, is_leaf=_is_8bit)):
    raise ValueError(
      f"{what} holds 8-bit moments (state_bits=8), which have no flat layout here: "
      "flatten=True keeps float32 state"
    )
  return inner, tuple(state[1:])


def flatten_state(state: optax.OptState) -> optax.OptState:
  """Returns :func:`amsgrad`'s per-leaf state in ``fused_amsgrad(flatten=True)``'s layout.

  Each moment becomes one 1-D array, the leaves' elements end to end in
  ``jax.tree.leaves`` order: the layout of ``optax.flatten``, bit for bit
  (no arithmetic), so training can switch between the two steps mid-run.

  Args:
    state: ``amsgrad(...).init(params)``'s state (or one a step returned),
      float32 moments (not 8-bit), at least one leaf.

  Returns:
    The same state with flat ``mu``, ``nu`` and ``nu_max``.

  Raises:
    TypeError: for a state that is not amsgrad's.
    ValueError: for 8-bit moments, no leaves, or moments of different dtypes.

  Examples:
    >>> import jax.numpy as jnp
    >>> import amsgrad_optax
    >>> params = {"b": jnp.zeros(2), "w": jnp.zeros((2, 3))}
    >>> state = amsgrad_optax.amsgrad(1e-3).init(params)
    >>> amsgrad_optax.flatten_state(state)[0].mu.shape
    (8,)
  """
  inner, rest = _inner_and_rest(state, "state")

  def flat(tree, name):
    leaves = jax.tree.leaves(tree)
    if not leaves:
      raise ValueError(f"state.{name} has no leaves to flatten")
    dtypes = {jnp.result_type(x) for x in leaves}
    if len(dtypes) > 1:
      raise ValueError(
        f"state.{name}'s leaves have dtypes {sorted(map(str, dtypes))}; a flat moment has one"
      )
    return jnp.concatenate([jnp.reshape(x, [-1]) for x in leaves])

  moments = {f: flat(getattr(inner, f), f) for f in _transform._MOMENTS}
  return (inner._replace(**moments), *rest)


def unflatten_state(state: optax.OptState, params: optax.Params) -> optax.OptState:
  """Returns ``fused_amsgrad(flatten=True)``'s state in :func:`amsgrad`'s per-leaf layout.

  The inverse of :func:`flatten_state`: each flat moment is cut into arrays
  shaped like ``params``' leaves (in ``jax.tree.leaves`` order), bit for bit.

  Args:
    state: the flat state (``fused_amsgrad(..., flatten=True)``'s, or
      ``optax.flatten(amsgrad(...))``'s).
    params: the params the state belongs to (only their tree and shapes are
      read).

  Returns:
    The state with ``mu``, ``nu`` and ``nu_max`` shaped like ``params``.

  Raises:
    TypeError: for a state that is not amsgrad's.
    ValueError: if a moment is not one 1-D array of the params' size.

  Examples:
    >>> import jax.numpy as jnp
    >>> import amsgrad_optax
    >>> params = {"b": jnp.zeros(2), "w": jnp.zeros((2, 3))}
    >>> flat = amsgrad_optax.fused_amsgrad(1e-3, flatten=True).init(params)
    >>> amsgrad_optax.unflatten_state(flat, params)[0].mu["w"].shape
    (2, 3)
  """
  inner, rest = _inner_and_rest(state, "state")
  leaves, treedef = jax.tree.flatten(params)
  sizes = [int(np.size(x)) for x in leaves]
  total = sum(sizes)

  def cut(moment, name):
    _check_flat_moment(moment, name, total)
    offsets = np.cumsum([0, *sizes])
    return treedef.unflatten(
      [
        jnp.reshape(moment[a:b], jnp.shape(x))
        for a, b, x in zip(offsets[:-1], offsets[1:], leaves, strict=True)
      ]
    )

  moments = {f: cut(getattr(inner, f), f) for f in _transform._MOMENTS}
  return (inner._replace(**moments), *rest)
