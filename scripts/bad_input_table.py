"""Tries every bad input a new user is likely to give, and writes the errors to a table.

Each case is a line of code run against a small model; the table records the
exception and its exact message. ``tests/test_bad_input.py`` checks that the
committed ``docs/bad_input.md`` is what this script writes, so the table cannot
go stale.

Run:

  PYTHONPATH=. python scripts/bad_input_table.py           # rewrite docs/bad_input.md
  PYTHONPATH=. python scripts/bad_input_table.py --check   # exit 1 if it differs
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from typing import NamedTuple

import jax

# The test session's settings (conftest.py), so that the messages agree.
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")

ROOT = pathlib.Path(__file__).resolve().parents[1]
TABLE = ROOT / "docs" / "bad_input.md"

SETUP = """\
import jax, jax.numpy as jnp, optax
import amsgrad_optax
from amsgrad_optax import amsgrad

params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
grads = jax.tree.map(jnp.ones_like, params)
tx = amsgrad(1e-3)
state = tx.init(params)
"""


class Case(NamedTuple):
  argument: str  # the argument the message must name; "" if no error is expected
  tried: str
  code: str


CASES = (
  # learning_rate
  Case("learning_rate", "a string", 'amsgrad("1e-3")'),
  Case("learning_rate", "None", "amsgrad(None)"),
  Case("learning_rate", "negative", "amsgrad(-1e-3)"),
  Case("learning_rate", "NaN", 'amsgrad(float("nan"))'),
  Case("learning_rate", "an array of rates", "amsgrad(jnp.array([1e-3, 1e-4]))"),
  Case(
    "learning_rate",
    "a schedule returning an array",
    "amsgrad(lambda count: jnp.full(3, 1e-3)).update(grads, state, params)",
  ),
  Case(
    "learning_rate",
    "a schedule returning a string",
    'amsgrad(lambda count: "1e-3").update(grads, state, params)',
  ),
  # b1, b2 and the other hyperparameters
  Case("b1", "1.0", "amsgrad(1e-3, b1=1.0)"),
  Case("b1", "negative", "amsgrad(1e-3, b1=-0.1)"),
  Case("b1", "NaN", 'amsgrad(1e-3, b1=float("nan"))'),
  Case("b1", "a string", 'amsgrad(1e-3, b1="0.9")'),
  Case("b1", "None", "amsgrad(1e-3, b1=None)"),
  Case("b1", "complex", "amsgrad(1e-3, b1=0.9 + 0j)"),
  Case("b1", "PyTorch's betas tuple", "amsgrad(1e-3, (0.9, 0.999))"),
  Case("b1", "a schedule", "amsgrad(1e-3, b1=optax.linear_schedule(0.9, 0.99, 100))"),
  Case("b2", "1.0", "amsgrad(1e-3, b2=1.0)"),
  Case("b2", "above 1", "amsgrad(1e-3, b2=1.5)"),
  Case("b2", "1.0 in float32 (valid in float64)", "amsgrad(1e-3, b2=0.99999999)"),
  Case("b1", "1.0 in float32 (valid in float64)", "amsgrad(1e-3, b1=0.999999999)"),
  Case(
    "b2", "1.0 in its own dtype, bfloat16", "amsgrad(1e-3, b2=jnp.asarray(0.999, jnp.bfloat16))"
  ),
  Case("eps", "inf in float32", "amsgrad(1e-3, eps=1e39)"),
  Case("learning_rate", "inf in float32", "amsgrad(1e300)"),
  Case(
    "learning_rate",
    "inf in the gradients' float16",
    "amsgrad(1e5).update(jnp.ones(2, jnp.float16), amsgrad(1e5).init(jnp.ones(2, jnp.float16)))",
  ),
  Case("eps", "negative", "amsgrad(1e-3, eps=-1e-8)"),
  Case("eps", "infinite", 'amsgrad(1e-3, eps=float("inf"))'),
  Case("eps_root", "negative", "amsgrad(1e-3, eps_root=-1e-8)"),
  Case("weight_decay", "negative", "amsgrad(1e-3, weight_decay=-1e-4)"),
  Case("weight_decay", "a string", 'amsgrad(1e-3, weight_decay="1e-4")'),
  Case("b1_decay", "above 1", "amsgrad(1e-3, b1_decay=1.5)"),
  Case("decoupled_weight_decay", "a string", 'amsgrad(1e-3, decoupled_weight_decay="yes")'),
  Case("skip_nonfinite", "a string", 'amsgrad(1e-3, skip_nonfinite="yes")'),
  Case("convention", "unknown", 'amsgrad(1e-3, convention="torch")'),
  Case("convention", "capitalised", 'amsgrad(1e-3, convention="PyTorch")'),
  Case("convention", "None", "amsgrad(1e-3, convention=None)"),
  Case("mu_dtype", "an integer dtype", "amsgrad(1e-3, mu_dtype=jnp.int32)"),
  Case("mu_dtype", "not a dtype", 'amsgrad(1e-3, mu_dtype="fp8")'),
  Case("mu_dtype", "a number", "amsgrad(1e-3, mu_dtype=0.1)"),
  Case("nu_dtype", "complex", "amsgrad(1e-3, nu_dtype=jnp.complex64)"),
  # Keywords and positions from other libraries
  Case("beta1", "an unknown keyword (Keras)", "amsgrad(1e-3, beta1=0.9)"),
  Case("lr", "PyTorch's lr keyword", "amsgrad(lr=1e-3)"),
  Case("amsgrad", "too many positional arguments", "amsgrad(1e-3, 0.9, 0.999, 1e-8, 0.0, 1e-4)"),
  # init
  Case("params", "integer params", 'tx.init({"w": jnp.arange(3)})'),
  Case("params", "boolean params", 'tx.init({"mask": jnp.array([True, False])})'),
  Case("params", "a string leaf", 'tx.init({"w": "weights"})'),
  Case(
    "mask",
    "a mask tree that does not match",
    'amsgrad(1e-3, weight_decay=1e-4, mask={"w": True}).init(params)',
  ),
  # update
  Case("updates", "a different tree", 'tx.update({"w": grads["w"]}, state, params)'),
  Case(
    "updates",
    "a leaf of another shape",
    'tx.update({"w": jnp.ones((3, 2)), "b": grads["b"]}, state, params)',
  ),
  Case(
    "updates",
    "integer gradients",
    'tx.update({"w": jnp.ones((2, 3), jnp.int32), "b": grads["b"]}, state, params)',
  ),
  Case(
    "updates",
    "complex gradients for real params",
    "tx.update(jax.tree.map(lambda g: g.astype(jnp.complex64), grads), state, params)",
  ),
  Case("state", "grads and state swapped", "tx.update(state, grads, params)"),
  Case("state", "params passed as the state", "tx.update(grads, params, params)"),
  Case("state", "None", "tx.update(grads, None, params)"),
  Case(
    "state", "another optimizer's state", "tx.update(grads, optax.adam(1e-3).init(params), params)"
  ),
  Case(
    "state",
    "a plain state after turning skip_nonfinite on",
    "amsgrad(1e-3, skip_nonfinite=True).update(grads, state, params)",
  ),
  Case("", "params passed where updates belong", "tx.update(params, state, params)"),
  Case(
    "params",
    "params left out with weight decay",
    "t = amsgrad(1e-3, weight_decay=1e-4); t.update(grads, t.init(params))",
  ),
  # the other public functions
  Case("skip_nonfinite", "not a transformation", "amsgrad_optax.skip_nonfinite(1e-3)"),
  Case("init_value", "negative", "amsgrad_optax.inverse_sqrt_schedule(-1.0)"),
  Case("b1", "1.0 for AdamNC", "amsgrad_optax.adamnc(1e-3, b1=1.0)"),
  # diagnostics: nothing is assumed
  Case(
    "convention",
    "diagnostics with only the learning rate",
    "amsgrad_optax.diagnostics(state, learning_rate=1e-3)",
  ),
  Case(
    "eps",
    "diagnostics without eps, eps_root, b1, b1_decay, b2",
    'amsgrad_optax.diagnostics(state, learning_rate=1e-3, convention="optax")',
  ),
  Case(
    "eps",
    "diagnostics with another eps than the optimizer's",
    "amsgrad_optax.diagnostics(state, tx, eps=1e-3)",
  ),
  Case(
    "b2",
    "diagnostics with b2 = 1",
    'amsgrad_optax.diagnostics(state, convention="paper", learning_rate=1e-3, eps=1e-8, '
    "eps_root=0.0, b2=1.0)",
  ),
  Case(
    "tx",
    "diagnostics given a transformation without a record",
    "amsgrad_optax.diagnostics(state, optax.chain(tx))",
  ),
  # restoring states
  Case(
    "count",
    "a restored step count below 0",
    "amsgrad_optax.restore_state(state, (state[0]._replace(count=jnp.int32(-5)), state[1]))",
  ),
  Case(
    "nu_max",
    "a state whose nu_max is below nu",
    "amsgrad_optax.check_state_values(state[0]._replace(nu=grads))",
  ),
  # 8-bit state
  Case("state_bits", "4", "amsgrad(1e-3, state_bits=4)"),
  Case("block_size", "zero", "amsgrad(1e-3, state_bits=8, block_size=0)"),
  Case("block_size", "a float", "amsgrad(1e-3, state_bits=8, block_size=128.0)"),
)


def run_case(case: Case) -> tuple[str, str]:
  """Returns (exception type, message), or ("", "") if the code raised nothing."""
  namespace: dict = {}
  exec(SETUP, namespace)  # noqa: S102 - the cases are this file's own code
  try:
    exec(case.code, namespace)  # noqa: S102
  except Exception as e:  # noqa: BLE001 - every error is what we record
    return type(e).__name__, str(e)
  return "", ""


def _cell(text: str) -> str:
  text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
  return text.replace("|", "\\|").replace("\n", "<br>")


def render() -> str:
  """Returns the markdown of docs/bad_input.md."""
  lines = [
    "# Bad input: what each mistake raises",
    "",
    "Every case below was run by `scripts/bad_input_table.py` against",
    "",
    "```python",
    SETUP.rstrip(),
    "```",
    "",
    "and the table is its output (`tests/test_bad_input.py` checks that it is current).",
    "Each error names the argument, shows the value and says what is allowed. A",
    "hyperparameter that is traced (under `jax.jit`, `jax.vmap` or",
    "`optax.inject_hyperparams`) has no value to check until it runs; its shape is",
    "still checked. Python's own messages (unknown keywords, too many positional",
    "arguments) are left as Python words them. Passing params where the gradients",
    "belong cannot be detected: they have the same tree, shapes and dtypes.",
    "",
    "| # | argument | what was tried | code | raises | message |",
    "| --- | --- | --- | --- | --- | --- |",
  ]
  for i, case in enumerate(CASES, start=1):
    kind, message = run_case(case)
    lines.append(
      f"| {i} | `{case.argument or '-'}` | {case.tried} | `{_cell(case.code)}` | "
      f"{kind or 'nothing'} | {_cell(message) or '(no error: see above)'} |"
    )
  return "\n".join(lines) + "\n"


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--check", action="store_true", help="compare, do not write")
  args = parser.parse_args()
  text = render()
  if args.check:
    current = TABLE.read_text() if TABLE.exists() else ""
    if current != text:
      print(f"{TABLE} is stale: run PYTHONPATH=. python scripts/bad_input_table.py")
      return 1
    return 0
  TABLE.parent.mkdir(exist_ok=True)
  TABLE.write_text(text)
  print(f"wrote {TABLE} ({len(CASES)} cases)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
