"""Every command, as its console script names it in pyproject.toml: ``--help`` and a config
error answer without importing the training stack (torch, Lightning), so they answer at once.
(``benchmarks/startup.py`` times them beside ``import lightning``.)"""

import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

SCRIPTS = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())[
    "project"]["scripts"]
HEAVY = ("torch", "lightning")
HYDRA_APPS = [name for name, target in SCRIPTS.items()
              if "@hydra.main" in Path(__file__).parents[1].joinpath(
                  "src", *target.split(":")[0].split(".")).with_suffix(".py").read_text()]


def heavy_modules_after(script: str, *args: str, cwd: Path) -> tuple[int, list[str], str]:
    """Exit code, the training-stack modules imported, and stderr of ``script ARGS``."""
    module, function = SCRIPTS[script].split(":")
    code = (f"import sys; sys.argv = {[script, *args]!r}; import {module} as command\n"
            f"try:\n    command.{function}()\nexcept SystemExit as stop:\n    code = stop.code\n"
            f"print(code, sorted(n for n in sys.modules if n.split('.')[0] in {HEAVY!r}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                          timeout=300)
    code, _, loaded = done.stdout.strip().splitlines()[-1].partition(" ")
    return int(code or 0), eval(loaded), done.stderr


def test_every_module_with_a_main_has_a_console_script():
    package = Path(__file__).parents[1] / "src" / "nkat_lightning"
    commands = {p.stem for p in package.glob("*.py") if "def main(" in p.read_text()
                or "main = command(" in p.read_text()}
    assert {f"nkat-{name}" for name in commands} == set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_answers_without_the_training_stack(script, tmp_path):
    code, heavy, _ = heavy_modules_after(script, "--help", cwd=tmp_path)
    assert code in (0, None) and heavy == []


@pytest.mark.parametrize("script", HYDRA_APPS)
def test_a_config_error_answers_without_the_training_stack(script, tmp_path):
    code, heavy, stderr = heavy_modules_after(script, "model.depth=0", cwd=tmp_path)
    assert code == 2 and heavy == []
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert not (tmp_path / "logs").exists() or not any((tmp_path / "logs").rglob("*.yaml"))
