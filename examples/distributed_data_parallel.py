"""Data-parallel training with AMSGrad on JAX's distributed runtime.

Every process runs this same script. The processes form one global mesh over all
their devices; each process feeds only its own slice of the batch; params are
replicated; the AMSGrad state is split over the data axis (ZeRO-1), so each
device keeps 1/n of ``mu``, ``nu`` and ``nu_max``. ``jax.jit`` with shardings
does the rest: XLA averages the gradients across processes (an all-reduce) and
gathers the updated params.

Two processes on one machine (CPU, collectives over gloo on 127.0.0.1)::

  python examples/distributed_data_parallel.py --num-processes 2 --process-id 0 &
  python examples/distributed_data_parallel.py --num-processes 2 --process-id 1

On a GPU or TPU cluster the script runs unchanged: start one process per host
(or per GPU) with ``--coordinator host:port`` (process 0's address) and the
same two flags, or with ``--cluster`` where ``jax.distributed.initialize()``
reads them from the environment (SLURM, Open MPI, Kubernetes, Cloud TPU).
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import amsgrad_optax


def make_problem(seed: int = 0, n: int = 256, d: int = 32, h: int = 64, k: int = 8):
  """Returns (x, y, params): a regression data set and an MLP's initial params."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d)).astype(np.float32)
  w_true = rng.normal(size=(d, k)).astype(np.float32) / np.sqrt(d)
  y = (np.tanh(x @ w_true) + 0.1 * rng.normal(size=(n, k))).astype(np.float32)
  params = {
    "w1": (rng.normal(size=(d, h)) / np.sqrt(d)).astype(np.float32),
    "b1": np.zeros((h,), np.float32),
    "w2": (rng.normal(size=(h, k)) / np.sqrt(h)).astype(np.float32),
    "b2": np.zeros((k,), np.float32),
  }
  return x, y, params


def loss_fn(params, x, y):
  hidden = jnp.tanh(x @ params["w1"] + params["b1"][None, :])
  pred = hidden @ params["w2"] + params["b2"][None, :]
  return jnp.mean((pred - y) ** 2)


def train(
  mesh: Mesh,
  x_local: np.ndarray,
  y_local: np.ndarray,
  global_batch: int,
  params: dict,
  *,
  steps: int = 20,
  learning_rate: float = 1e-2,
) -> tuple[dict, float]:
  """Trains on ``mesh``, this process feeding rows ``x_local`` of the global batch.

  Returns the final params (as NumPy) and the final loss.
  """
  replicated = NamedSharding(mesh, P())
  rows = NamedSharding(mesh, P("data"))
  tx = amsgrad_optax.amsgrad(learning_rate)

  with jax.set_mesh(mesh):
    x = jax.make_array_from_process_local_data(rows, x_local, (global_batch, x_local.shape[1]))
    y = jax.make_array_from_process_local_data(rows, y_local, (global_batch, y_local.shape[1]))
    params = jax.tree.map(
      lambda p: jax.make_array_from_callback(p.shape, replicated, lambda idx: p[idx]), params
    )
    param_shardings = jax.tree.map(lambda _: replicated, params)
    state_shardings = amsgrad_optax.state_sharding(jax.eval_shape(tx.init, params), mesh, "data")
    state = jax.jit(tx.init, out_shardings=state_shardings)(params)

    def step(params, state, x, y):
      loss, grads = jax.value_and_grad(loss_fn)(params, x, y)  # a mean over the global batch
      updates, state = tx.update(grads, state, params)
      return optax.apply_updates(params, updates), state, loss

    step = jax.jit(
      step,
      out_shardings=(param_shardings, state_shardings, replicated),
      donate_argnums=(0, 1),
    )
    loss = None
    for _ in range(steps):
      params, state, loss = step(params, state, x, y)
    # Replicated: every process holds the whole result.
    params = jax.tree.map(lambda p: np.asarray(p.addressable_data(0)), params)
    return params, float(loss.addressable_data(0))


def _pin_gloo_to(hostname: str) -> None:
  """Makes the CPU backend's gloo collectives listen and connect on ``hostname`` only.

  By default gloo uses the address the machine's hostname resolves to, which is
  not the loopback everywhere. JAX has no public switch for this: the hook
  replaces its CPU backend factory, and is used only for the one-machine setup.
  """
  from jax._src import distributed, xla_bridge
  from jax._src.lib import _jax

  def factory():
    collectives = _jax.make_gloo_tcp_collectives(
      distributed_client=distributed.global_state.client, hostname=hostname
    )
    return xla_bridge.make_cpu_client(collectives=collectives)

  xla_bridge.register_backend_factory("cpu", factory, priority=0, fail_quietly=False)


def _positive_int(text: str) -> int:
  """An argparse type: an integer >= 1 (argparse then exits 2 with a one-line error)."""
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
  if value < 1:
    raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
  return value


def _parse(argv: list[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
    description=__doc__.split("\n\n")[0],
    formatter_class=argparse.ArgumentDefaultsHelpFormatter,
  )
  parser.add_argument(
    "--num-processes",
    type=_positive_int,
    default=1,
    help="how many processes run this script together",
  )
  parser.add_argument(
    "--process-id", type=int, default=0, help="this process's index, 0 .. --num-processes - 1"
  )
  parser.add_argument(
    "--port",
    type=int,
    default=12355,
    help="all processes on this machine: the coordinator's port on 127.0.0.1",
  )
  parser.add_argument(
    "--coordinator",
    default=None,
    help="processes on several hosts: process 0's host:port (instead of --port)",
  )
  parser.add_argument(
    "--cluster",
    action="store_true",
    help="let jax.distributed.initialize() read the cluster's environment (SLURM, Open MPI, "
    "Kubernetes, Cloud TPU) instead of the three flags above",
  )
  parser.add_argument("--steps", type=_positive_int, default=20, help="training steps")
  parser.add_argument("--learning-rate", type=float, default=1e-2, help="AMSGrad's learning rate")
  parser.add_argument("--out", default=None, help="write the final params here (.npz)")
  args = parser.parse_args(argv)
  if not args.cluster and not 0 <= args.process_id < args.num_processes:
    parser.error(
      f"argument --process-id: must be in [0, {args.num_processes}) for "
      f"--num-processes {args.num_processes}, got {args.process_id}"
    )
  return args


def main(argv: list[str] | None = None) -> int:
  args = _parse(argv)

  # CPU collectives between processes; GPUs and TPUs use their own (NCCL, ICI).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if args.cluster:
    jax.distributed.initialize()
  elif args.coordinator is not None:
    jax.distributed.initialize(
      coordinator_address=args.coordinator,
      num_processes=args.num_processes,
      process_id=args.process_id,
    )
  elif args.num_processes > 1:
    # One machine: the coordinator and gloo listen on the loopback only.
    address = f"127.0.0.1:{args.port}"
    _pin_gloo_to("127.0.0.1")
    jax.distributed.initialize(
      coordinator_address=address,
      num_processes=args.num_processes,
      process_id=args.process_id,
      coordinator_bind_address=address,
    )

  mesh = jax.make_mesh(
    (jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Explicit,)
  )
  x, y, params = make_problem()
  n = x.shape[0]
  if n % jax.device_count():
    raise SystemExit(f"the batch of {n} rows does not split over {jax.device_count()} devices")
  # This process's rows: those of its devices along the mesh's data axis.
  per_device = n // jax.device_count()
  mine = [i for i, d in enumerate(mesh.devices.flat) if d.process_index == jax.process_index()]
  index = np.concatenate([np.arange(i * per_device, (i + 1) * per_device) for i in mine])
  final, loss = train(
    mesh, x[index], y[index], n, params, steps=args.steps, learning_rate=args.learning_rate
  )
  print(
    f"process {jax.process_index()}/{jax.process_count()}: {jax.device_count()} devices, "
    f"{len(index)} local rows, loss after {args.steps} steps {loss:.6f}",
    flush=True,
  )
  if args.out:
    base, ext = os.path.splitext(args.out)
    np.savez(f"{base}.{jax.process_index()}{ext or '.npz'}", loss=loss, **final)
  if jax.process_count() > 1:
    jax.distributed.shutdown()
  return 0


if __name__ == "__main__":
  sys.exit(main())
