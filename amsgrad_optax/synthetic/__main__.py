"""``python -m amsgrad_optax.synthetic``: the same as ``amsgrad-synthetic``."""

from amsgrad_optax.synthetic._cli import main

if __name__ == "__main__":
  raise SystemExit(main())
