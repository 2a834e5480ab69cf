"""The documentation covers the public API."""

import pathlib

import amsgrad_optax

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"


def test_every_public_name_is_in_the_api_reference():
  api = (DOCS / "api.md").read_text()
  missing = [name for name in amsgrad_optax.__all__ if f"amsgrad_optax.{name}" not in api]
  assert not missing, f"add these to docs/api.md: {missing}"


def test_every_public_callable_has_a_runnable_example():
  for name in amsgrad_optax.__all__:
    obj = getattr(amsgrad_optax, name)
    if callable(obj) and not isinstance(obj, type):
      assert ">>> " in (obj.__doc__ or ""), f"{name} has no Examples block"
