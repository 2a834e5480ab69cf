"""Times one AMSGrad step (update + apply) against optax.amsgrad and PyTorch, in one process.

Each JAX step is ``jax.jit(step, donate_argnums=(0, 1))`` of ``tx.update`` followed by
``optax.apply_updates``; PyTorch's is ``torch.optim.Adam(amsgrad=True).step()`` with
``foreach=True`` and ``fused=True``. Within each repeat the implementations run in turn,
in a random order, so that a load on the machine falls on all of them alike. The table
shows medians and the ratio to ``optax.amsgrad``; ``optax.amsgrad, again`` times the same
program a second time, and its distance from 1.00 is the noise of the machine. For JAX it
also reads the compiled HLO: the number of elementwise loops over the params and the bytes
they move per parameter (an AMSGrad step cannot move fewer than 36 in float32: read p, g,
mu, nu, nu_max; write p, mu, nu, nu_max). Then it times fresh compiles of the step for a
tree of many leaves.

Also timed, in the same shuffled rounds: ``amsgrad_optax.fused_amsgrad`` (the one-pass FFI
kernel, when it builds here), the "group small leaves" route on the tree (the leaves under
2^16 elements concatenated into one per step; measured, not in the library), and a donated
``x * 2`` whose fastest run gives the machine's streaming bandwidth (8 bytes an element):
the last column is the bytes the HLO moves per second as a fraction of it. "dispatch floor"
is a donated step that only adds 0 to the params: what JAX and XLA take for the buffers alone.
On the tree, ``fused_amsgrad(flatten=True)`` (``optax.flatten``'s state, one array a
moment) and its dispatch floor are timed too.

  python benchmarks/update_step.py            # 2^16 ... 2^24, a model-like tree, compile time
  python benchmarks/update_step.py --quick    # a short run
  python benchmarks/update_step.py --peak-gbps 3350   # on a GPU: bandwidth as a fraction of peak
  python benchmarks/update_step.py --no-compile       # the step tables only
  python benchmarks/update_step.py --best-of 3        # each sample the fastest of 3 calls
  python benchmarks/update_step.py --only "flatten,torch fused" --sizes 24   # head-to-head

``torch fused, again`` is a second PyTorch optimizer over its own copy of the tensors, timed
as a separate implementation: its distance from ``torch fused`` is PyTorch's spread.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))  # this checkout's package

import amsgrad_optax  # noqa: E402

LR = 1e-3
MIN_BYTES_PER_PARAM = 36  # float32: read p, g, mu, nu, nu_max; write p, mu, nu, nu_max

# Peak memory bandwidth, GB/s, by jax device_kind (vendor figures).
KNOWN_PEAK_GBPS = {
  "NVIDIA H100 80GB HBM3": 3350.0,
  "NVIDIA H100 PCIe": 2000.0,
  "NVIDIA H200": 4800.0,
  "NVIDIA A100-SXM4-80GB": 2039.0,
  "NVIDIA A100-SXM4-40GB": 1555.0,
  "NVIDIA A100 80GB PCIe": 1935.0,
}


# ---------------------------------------------------------------- workloads


def single_array(n: int) -> list[tuple[int, ...]]:
  return [(n,)]


def model_like(layers: int = 12, d: int = 128, vocab: int = 6144) -> list[tuple[int, ...]]:
  """About 200 leaves of mixed sizes, about 2^22 params: a small transformer's shapes."""
  shapes: list[tuple[int, ...]] = [(vocab, d)]
  for _ in range(layers):
    shapes += [(d,), (d,), (d, 3 * d), (3 * d,), (d, d), (d,)]  # norm, attention
    shapes += [(d,), (d,), (d, 4 * d), (4 * d,), (4 * d, d), (d,)]  # norm, MLP
    shapes += [(d,), (d,), (d, d), (d,)]  # adapter
  shapes += [(d,), (d,), (d, vocab)]
  return shapes


def many_leaves(count: int) -> list[tuple[int, ...]]:
  return [(16 + i % 7, 8) for i in range(count)]


def make_tree(shapes, seed=0):
  rng = np.random.default_rng(seed)
  params = {f"p{i:04d}": rng.normal(size=s).astype(np.float32) for i, s in enumerate(shapes)}
  grads = {k: (0.01 * rng.normal(size=v.shape)).astype(np.float32) for k, v in params.items()}
  return params, grads


# ---------------------------------------------------------------- JAX


def jax_optimizers() -> dict[str, Callable[[], optax.GradientTransformation]]:
  return {
    "optax.amsgrad": lambda: optax.amsgrad(LR),
    "amsgrad_optax (pytorch)": lambda: amsgrad_optax.amsgrad(LR),
    "amsgrad_optax (optax)": lambda: amsgrad_optax.amsgrad(LR, convention="optax"),
    "amsgrad_optax (keras)": lambda: amsgrad_optax.amsgrad(LR, convention="keras"),
    "amsgrad_optax (paper)": lambda: amsgrad_optax.amsgrad(LR, convention="paper"),
    # The same program as the first, timed again: the spread between the two is
    # what the machine adds, not the code.
    "optax.amsgrad, again": lambda: optax.amsgrad(LR),
  }


GROUP_BELOW = 2**16  # leaves smaller than this are grouped by the "grouped" runner


def grouped_step(tx):
  """The step with every leaf under GROUP_BELOW elements concatenated into one, each step.

  The state keeps its per-leaf structure: the small leaves' params, gradients
  and moments are concatenated on the way in and split on the way out. This is
  the "group small leaves" route, measured; the library does not do it.
  """

  def step(params, state, grads):
    inner, rest = state[0], state[1:]
    small = [k for k, v in params.items() if v.size < GROUP_BELOW]
    if not small:
      updates, state = tx.update(grads, state, params)
      return optax.apply_updates(params, updates), state

    def join(tree):
      out = {k: v for k, v in tree.items() if k not in small}
      out["_group"] = jnp.concatenate([tree[k].ravel() for k in small])
      return out

    def split(tree):
      flat, out = tree["_group"], {k: v for k, v in tree.items() if k != "_group"}
      offsets = np.cumsum([params[k].size for k in small])[:-1]
      for k, piece in zip(small, jnp.split(flat, offsets)):
        out[k] = piece.reshape(params[k].shape)
      return out

    grouped = inner._replace(mu=join(inner.mu), nu=join(inner.nu), nu_max=join(inner.nu_max))
    updates, (g_inner, *g_rest) = tx.update(join(grads), (grouped, *rest), join(params))
    new = g_inner._replace(mu=split(g_inner.mu), nu=split(g_inner.nu), nu_max=split(g_inner.nu_max))
    return optax.apply_updates(params, split(updates)), (new, *g_rest)

  return step


def floor_step(tx):
  """Adds 0 to the params and returns the state as it is: the dispatch of the step's buffers."""
  del tx

  def step(params, state, grads):
    del grads
    return jax.tree.map(lambda p: p + 0.0, params), state

  return step


def copy_step(x):
  return x * 2.0  # one read, one write: the machine's streaming bandwidth, 8 bytes an element


class CopyRunner:
  def __init__(self, n):
    self.x = jnp.ones((n,), jnp.float32)
    self.compiled = jax.jit(copy_step, donate_argnums=0).lower(self.x).compile()

  def __call__(self) -> float:
    start = time.perf_counter()
    self.x = self.compiled(self.x)
    jax.block_until_ready(self.x)
    return time.perf_counter() - start


def jax_step(tx):
  # Params and state first, in the order returned: donated buffers are matched
  # to outputs in order, so this order lets every output reuse its input.
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  return step


class FusedRunner:
  """``amsgrad_optax.fused_amsgrad``'s step: one C++ pass per leaf where the kernel builds."""

  def __init__(self, convention, params, grads, **kwargs):
    opt = amsgrad_optax.fused_amsgrad(LR, convention=convention, **kwargs)
    self.params = jax.device_put(params)
    self.grads = jax.device_put(grads)
    self.state = opt.init(self.params)
    self.step = opt.step
    self.compiled = opt.step.fused.lower(self.params, self.state, self.grads).compile()
    self.params, self.state = self.step(self.params, self.state, self.grads)  # compiles

  def __call__(self) -> float:
    start = time.perf_counter()
    self.params, self.state = self.step(self.params, self.state, self.grads)
    jax.block_until_ready((self.params, self.state))
    return time.perf_counter() - start


class JaxRunner:
  def __init__(self, make_tx, params, grads, make_step=None):
    tx = make_tx()
    self.params = jax.device_put(params)
    self.grads = jax.device_put(grads)
    self.state = tx.init(self.params)
    self.step = jax.jit((make_step or jax_step)(tx), donate_argnums=(0, 1))
    self.compiled = self.step.lower(self.params, self.state, self.grads).compile()

  def __call__(self) -> float:
    start = time.perf_counter()
    self.params, self.state = self.compiled(self.params, self.state, self.grads)
    jax.block_until_ready((self.params, self.state))
    return time.perf_counter() - start


_NOT_LOOPS = {"parameter", "tuple", "get-tuple-element", "bitcast", "constant"}
_SHAPE = re.compile(r"(pred|s8|u8|s32|u32|f16|bf16|f32|f64)\[([\d,]*)\]")
_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s32": 4, "u32": 4, "f16": 2, "bf16": 2, "f32": 4, "f64": 8}


def _nbytes(shape_text: str) -> int:
  total = 0
  for dtype, dims in _SHAPE.findall(shape_text):
    total += _BYTES[dtype] * int(np.prod([int(d) for d in dims.split(",") if d] or [1]))
  return total


def hlo_traffic(hlo: str, n_params: int) -> tuple[int, float]:
  """(full-size loops, bytes each parameter moves) of the compiled step's entry computation.

  A loop is an instruction that computes an array (a fusion, a bare elementwise
  op such as the ``maximum`` XLA leaves unfused, a copy or a custom call such as
  the fused kernel) of at least 1,024 floats; scalar fusions (bias corrections,
  counts), parameters, tuples and views are not. Its traffic is the bytes of its
  array operands and outputs.
  """
  entry = hlo[hlo.index("\nENTRY") :]
  shapes = {}
  loops, moved = 0, 0
  for line in entry.splitlines():
    m = re.match(r"\s*(?:ROOT )?(%\S+) = (\(.*?\)|\S+) (\S+)\((.*?)\)", line)
    if not m:
      continue
    name, shape, op, operands = m.groups()
    operands = re.sub(r"/\*.*?\*/", "", operands)
    shapes[name] = shape
    if op in _NOT_LOOPS:
      continue
    out = _nbytes(shape)
    ins = sum(_nbytes(shapes.get(o.strip(), "")) for o in operands.split(",") if o.strip())
    if out >= 4 * 1024:  # scalar fusions (bias corrections, counts) are not loops
      loops += 1
      moved += out + ins
  return loops, moved / n_params


# ---------------------------------------------------------------- PyTorch


def torch_runners(params, grads):
  try:
    import torch
  except ImportError:
    return {}
  on_gpu = jax.devices()[0].platform == "gpu" and torch.cuda.is_available()
  device = "cuda" if on_gpu else "cpu"
  sync = torch.cuda.synchronize if on_gpu else (lambda: None)
  out = {}
  for name, kw in (
    ("torch foreach", dict(foreach=True)),
    ("torch fused", dict(fused=True)),
    # A second, separate instance: torch's own spread, as "optax.amsgrad, again" is JAX's.
    ("torch fused, again", dict(fused=True)),
  ):
    tensors = [torch.nn.Parameter(torch.from_numpy(v.copy()).to(device)) for v in params.values()]
    for t, g in zip(tensors, grads.values()):
      t.grad = torch.from_numpy(g.copy()).to(device)
    try:
      opt = torch.optim.Adam(tensors, lr=LR, amsgrad=True, **kw)
      opt.step()
    except (RuntimeError, TypeError) as e:  # fused unsupported on this device or version
      print(f"  ({name} skipped: {e})")
      continue

    def run(opt=opt):
      start = time.perf_counter()
      opt.step()
      sync()
      return time.perf_counter() - start

    out[name] = run
  return out


# ---------------------------------------------------------------- driver


def time_case(label, shapes, repeats, with_torch, peak_gbps, best_of=1, only=None):
  params, grads = make_tree(shapes)
  n = sum(int(np.prod(s)) for s in shapes)
  runners, hlo = {}, {}
  for name, make_tx in jax_optimizers().items():
    r = JaxRunner(make_tx, params, grads)
    runners[name] = r
    hlo[name] = hlo_traffic(r.compiled.as_text(), n)
  if len(shapes) > 1:
    r = JaxRunner(lambda: amsgrad_optax.amsgrad(LR), params, grads, grouped_step)
    runners["grouped small leaves (pytorch)"] = r
    hlo["grouped small leaves (pytorch)"] = hlo_traffic(r.compiled.as_text(), n)
  floor = JaxRunner(lambda: amsgrad_optax.amsgrad(LR), params, grads, floor_step)
  runners["dispatch floor: p + 0"] = floor
  if len(shapes) > 1:
    flat_tx = lambda: optax.flatten(amsgrad_optax.amsgrad(LR))  # noqa: E731
    runners["dispatch floor, flat state: p + 0"] = JaxRunner(flat_tx, params, grads, floor_step)
  status = amsgrad_optax._fused.kernel_status()
  if status["ok"]:
    variants = [(conv, {}) for conv in ("pytorch", "optax")]
    if len(shapes) > 1:
      variants += [(conv, {"flatten": True}) for conv in ("pytorch", "optax")]
    for conv, kwargs in variants:
      name = f"fused_amsgrad ({conv}{', flatten' if kwargs else ''})"
      r = FusedRunner(conv, params, grads, **kwargs)
      runners[name] = r
      hlo[name] = hlo_traffic(r.compiled.as_text(), n)
  else:
    print(f"  (fused_amsgrad: kernel unavailable, {status['reason']})")
  copy = CopyRunner(n)
  runners["copy x*2 (8 B/elem)"] = copy
  if with_torch:
    runners.update(torch_runners(params, grads))
  if only:
    # optax.amsgrad (the ratios' base) and the copy (the bandwidth) always stay.
    keep = ("optax.amsgrad", "copy x*2 (8 B/elem)")
    runners = {k: r for k, r in runners.items() if k in keep or any(o in k for o in only)}
  for run in runners.values():  # warm up
    for _ in range(3):
      run()
  times = {name: [] for name in runners}
  names = list(runners)
  order = np.random.default_rng(0)
  for _ in range(repeats):
    # Interleaved, so that a load spike hits everyone, in a new order each time:
    # PyTorch's OpenMP threads spin for a while after a step and slow whatever
    # runs next, and in a fixed (or rotated) order that is always the same one.
    for i in order.permutation(len(names)):
      times[names[i]].append(min(runners[names[i]]() for _ in range(best_of)))
  medians = {k: statistics.median(v) for k, v in times.items()}
  base = medians["optax.amsgrad"]
  # The fastest copy, not the median: the machine's bandwidth, not its load.
  copy_name = "copy x*2 (8 B/elem)"
  copy_gbps = 8 * n / min(times[copy_name]) / 1e9
  load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
  print(
    f"\n{label}: {n:,} params in {len(shapes)} leaves, median of {repeats}"
    f"{f' (each the fastest of {best_of} calls in a row)' if best_of > 1 else ''}; "
    f"load average {load:.1f}; copy bandwidth (fastest copy) {copy_gbps:.1f} GB/s"
  )
  print(
    "| implementation | median ms | vs optax | HLO loops | HLO bytes/param | GB/s at 36 B/param "
    "| HLO bytes/s vs copy |"
  )
  print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
  for name, t in medians.items():
    loops, traffic = hlo.get(name, (None, None))
    per_param = (
      8 if name == copy_name else 4 if name.startswith("dispatch floor") else MIN_BYTES_PER_PARAM
    )
    gbps = per_param * n / t / 1e9
    extra = f" ({gbps / peak_gbps:.0%} of peak)" if peak_gbps else ""
    moved = "" if traffic is None else f"{traffic * n / t / 1e9 / copy_gbps:.0%}"
    print(
      f"| {name} | {t * 1e3:.3f} | {t / base:.2f} | {'' if loops is None else loops} | "
      f"{'' if traffic is None else f'{traffic:.0f}'} | {gbps:.1f}{extra} | {moved} |"
    )
  return medians


def time_compile(leaves, repeats):
  params, grads = make_tree(many_leaves(leaves))
  params, grads = jax.device_put(params), jax.device_put(grads)
  results = {name: [] for name in jax_optimizers()}
  makers = list(jax_optimizers().items())
  order = np.random.default_rng(0)
  for _ in range(repeats):
    for i in order.permutation(len(makers)):
      name, make_tx = makers[i]
      tx = make_tx()  # a new transformation and a new function: no cache hit
      state = tx.init(params)
      step = jax.jit(jax_step(tx), donate_argnums=(0, 1))
      t0 = time.perf_counter()
      lowered = step.lower(params, state, grads)
      t1 = time.perf_counter()
      lowered.compile()
      t2 = time.perf_counter()
      results[name].append((t1 - t0, t2 - t1))
  base = sum(statistics.median(x) for x in zip(*results["optax.amsgrad"]))
  print(f"\nFresh jit of the step for {leaves} leaves, median of {repeats}")
  print("| implementation | trace+lower s | compile s | total s | vs optax |")
  print("| --- | ---: | ---: | ---: | ---: |")
  for name, runs in results.items():
    trace, comp = (statistics.median(x) for x in zip(*runs))
    print(
      f"| {name} | {trace:.2f} | {comp:.2f} | {trace + comp:.2f} | {(trace + comp) / base:.2f} |"
    )


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--quick", action="store_true", help="fewer sizes and repeats")
  parser.add_argument("--repeats", type=int, default=None)
  parser.add_argument(
    "--sizes", default=None, help="log2 sizes, comma separated (16,20,24); '' for none"
  )
  parser.add_argument("--no-torch", action="store_true")
  parser.add_argument("--compile-leaves", type=int, default=None)
  parser.add_argument("--peak-gbps", type=float, default=None, help="device memory bandwidth")
  parser.add_argument("--no-tree", action="store_true", help="skip the model-like tree")
  parser.add_argument("--no-compile", action="store_true", help="skip the compile-time table")
  parser.add_argument(
    "--only",
    default=None,
    help="comma-separated name fragments: time only the matching implementations (with "
    "optax.amsgrad and the copy), e.g. 'flatten,torch fused' for a head-to-head",
  )
  parser.add_argument(
    "--best-of",
    type=int,
    default=1,
    help="each sample the fastest of this many calls in a row (less of other jobs' noise, "
    "warmer caches)",
  )
  args = parser.parse_args()

  sizes = [16, 20] if args.quick else [16, 18, 20, 22, 24]
  if args.sizes is not None:  # "" for none: the tree alone
    sizes = [int(s) for s in args.sizes.split(",") if s]
  repeats = args.repeats or (5 if args.quick else 15)
  leaves = args.compile_leaves or (300 if args.quick else 1000)

  device = jax.devices()[0]
  peak = args.peak_gbps or KNOWN_PEAK_GBPS.get(device.device_kind)
  load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
  print(
    f"device: {device.platform} / {device.device_kind} ({jax.device_count()} devices); "
    f"jax {jax.__version__}, optax {optax.__version__}; load average {load:.1f} on "
    f"{os.cpu_count()} CPUs"
  )
  if device.platform != "cpu" and not peak:
    print("  (pass --peak-gbps to see bandwidth as a fraction of the device's peak)")
  only = [o.strip() for o in args.only.split(",")] if args.only else None
  for k in sizes:
    time_case(f"2^{k}", single_array(2**k), repeats, not args.no_torch, peak, args.best_of, only)
  if not args.no_tree:
    time_case("model-like tree", model_like(), repeats, not args.no_torch, peak, args.best_of, only)
  if not args.no_compile:
    time_compile(leaves, 1 if args.quick else 3)


if __name__ == "__main__":
  main()
