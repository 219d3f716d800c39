"""Every command line shown in the README and in each command's docstring runs, in document
order in one folder (so the runs and sweeps it starts are what later lines read), with sizes
shrunk by appended overrides; and every command answers ``--help``."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import shlex
import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import nkat_lightning
from helpers import FAST, run_hydra_main

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = sorted(m.name for m in pkgutil.iter_modules(nkat_lightning.__path__)
                  if not m.ispkg and hasattr(importlib.import_module(f"nkat_lightning.{m.name}"),
                                             "main"))
SHRINK = ["model.embed_dim=16", "model.depth=1", "model.num_heads=2", *FAST]
#: What a documented line needs that no test machine has: it is shown, not run.
NEEDS_SERVICE = {"postgresql": "a PostgreSQL server", "hydra/launcher=slurm": "a SLURM cluster"}
DEFAULT_RUN = "logs/train/fashion_mnist/default"


def documented_lines() -> list[str]:
    """``python -m nkat_lightning...`` lines of the README (code blocks and inline code) and of
    each command's docstring; continuations joined, comments dropped, synopses (``[...]``)
    left out."""
    texts = [(ROOT / "README.md").read_text()]
    texts += [importlib.import_module(f"nkat_lightning.{name}").__doc__ or "" for name in COMMANDS]
    found = []
    for text in texts:
        text = text.replace("\\\n", " ")
        spans = re.findall(r"`(python -m nkat_lightning[^`]*)`", text)
        lines = re.findall(r"^\s*(python -m nkat_lightning\.[^\n]*)$", text, flags=re.MULTILINE)
        for line in [*lines, *spans]:
            line = " ".join(line.split("#", 1)[0].split())
            if " [" not in line and line not in found:
                found.append(line)
    return found


LINES = documented_lines()


def test_the_documented_lines_are_found():
    used = {line.split()[2].removeprefix("nkat_lightning.") for line in LINES}
    assert set(COMMANDS) <= used and len(LINES) >= 15


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_answers_help(name, monkeypatch, capsys):
    main = importlib.import_module(f"nkat_lightning.{name}").main
    with pytest.raises(SystemExit) as exit_info:
        if "argv" in inspect.signature(main).parameters:
            main(["--help"])
        else:
            run_hydra_main(monkeypatch, main, "--help")
    assert exit_info.value.code in (0, None)
    assert "usage" in capsys.readouterr().out.lower() or name in ("train", "selective")


def placeholders(tokens: list[str], data_root: Path) -> list[str]:
    multirun = sorted(Path("logs/train/multirun").glob("*"))
    known = {"<data set>": "mnist", "<run folder>": DEFAULT_RUN,
             "<date>": multirun[-1].name if multirun else "none-yet"}
    text = " ".join(tokens)
    for placeholder, value in known.items():
        text = text.replace(placeholder, value)
    assert "<" not in text, f"unknown placeholder in a documented command: {text}"
    return [token.replace("=/data", f"={data_root}") for token in shlex.split(text)]


def unnamed(shrink: list[str]) -> str:
    """The override that keeps the shrinking overrides out of run folder names, so a run
    lands where the documented command puts it."""
    keys = OmegaConf.load(ROOT / "conf/hydra/default.yaml").job.config.override_dirname.exclude_keys
    added = [item.split("=", 1)[0] for item in shrink]
    return f"hydra.job.config.override_dirname.exclude_keys=[{','.join([*keys, *added])}]"


def run_line(line: str, data_root: Path, monkeypatch) -> None:
    tokens = placeholders(line.split()[3:], data_root)
    name = line.split()[2].removeprefix("nkat_lightning.")
    main = importlib.import_module(f"nkat_lightning.{name}").main
    shrink = [*SHRINK, f"paths.data_dir={data_root}"]
    if any(token.startswith("hparams_search=") for token in tokens):
        shrink.append("hydra.sweeper.n_trials=1")  # an Optuna sweep: one trial
    shrink.append(unnamed(shrink))
    try:
        if name in ("train", "selective"):
            run_hydra_main(monkeypatch, main, *tokens, *shrink)
        elif name == "suite":
            main([*tokens, *shrink])
        else:
            main(tokens)
    except SystemExit as exit_info:
        assert exit_info.code in (0, None), f"{line} exited with {exit_info.code}"


@pytest.mark.slow
def test_every_documented_command_runs(synthetic_root, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NKAT_ROOT", raising=False)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    # the quick start's main job first (``make train``: the command with no overrides), whose
    # folder the eval / analyze / curves lines read; its checkpoints stand for path/to/*.ckpt
    run_line("python -m nkat_lightning.train", synthetic_root, monkeypatch)
    Path("path/to").mkdir(parents=True)
    for checkpoint in ("last", "best"):
        source = next(Path(DEFAULT_RUN, "checkpoints").glob(f"{checkpoint}*.ckpt"))
        shutil.copy(source, f"path/to/{checkpoint}.ckpt")
    ran, shown = [], []
    for line in LINES:
        service = next((why for key, why in NEEDS_SERVICE.items() if key in line), None)
        if service:
            shown.append(f"{line} (needs {service})")
            continue
        run_line(line, synthetic_root, monkeypatch)
        ran.append(line)
    capsys.readouterr()
    assert len(ran) >= 15 and len(shown) <= 3, shown
