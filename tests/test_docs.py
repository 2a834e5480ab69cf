"""The documentation covers the public API."""

import pathlib
import re

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


ROOT = DOCS.parent


def _readme_setup_commands():
  readme = (ROOT / "README.md").read_text()
  block = readme.split("## Set up", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
  return [line.split("  #", 1)[0].strip() for line in block.splitlines() if line.strip()]


def test_readme_has_the_two_setup_commands_and_ci_runs_the_test_one_verbatim():
  commands = _readme_setup_commands()
  assert len(commands) == 2, commands
  assert commands[0].endswith("amsgrad-synthetic"), commands[0]
  assert commands[1] in (ROOT / ".ci" / "run").read_text().splitlines()


def test_readme_links_point_at_files_that_exist():
  readme = (ROOT / "README.md").read_text()
  targets = re.findall(r"\]\(((?:docs|examples|notebooks)/[^)#]+)", readme)
  assert targets, "the README links into the docs"
  missing = [t for t in targets if not (ROOT / t).exists()]
  assert not missing, f"README links to missing files: {missing}"
