"""A run folder's result files: results.json (written atomically), the resolved config, and
the summary table printed at the end."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table

from nkat_lightning.errors import UserError

RESULTS_FILE = "results.json"
CONFIG_FILE = "config.yaml"  # the resolved config a run trained with
#: The settings that say what a run trains, not how it runs: a finished run in a command's folder
#: with other values of these (a default changed since) is another run.
DEFINING_SETTINGS = ("model", "aug", "optim", "seed", "data.name", "trainer.max_epochs")


class OtherRunError(UserError):
    """The command's run folder holds a finished run of other settings."""


def dotted(tree, prefix: str = "") -> dict:
    """Every leaf of nested dicts under its dotted key."""
    if not isinstance(tree, dict):
        return {prefix.rstrip("."): tree}
    return {key: value for name, child in tree.items()
            for key, value in dotted(child, f"{prefix}{name}.").items()}


def check_same_run(run_dir: Path, resolved: dict) -> None:
    """Raise one line where ``run_dir``'s stored config differs from ``resolved`` in a
    ``DEFINING_SETTINGS`` value, naming the first few differences."""
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        return
    stored, now = dotted(OmegaConf.to_container(OmegaConf.load(path))), dotted(resolved)
    changes = [f"{key}: {stored.get(key)} -> {now.get(key)}"
               for key in sorted(set(stored) & set(now))  # a key added since: no change
               if key.startswith(DEFINING_SETTINGS) and stored.get(key) != now.get(key)]
    if changes:
        more = f" (and {len(changes) - 3} more)" if len(changes) > 3 else ""
        raise OtherRunError(
            f"{run_dir} holds a finished run of other settings ({'; '.join(changes[:3])}{more}), "
            "from before a default changed or another hydra.run.dir; move that folder, give "
            "hydra.run.dir=<new folder>, or resume=never to train again there")


def save_resolved_config(resolved: dict, run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(resolved), run_dir / CONFIG_FILE)


def write_json(path: Path, payload: dict) -> None:
    """Write atomically: a crash mid-write never leaves half a file; a failed write (disk full)
    is one line, and its temporary file is removed."""
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_text(json.dumps(payload, indent=2) + "\n")
        tmp.replace(path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise UserError(f"could not write {path}: {error.strerror or error}; free space (or fix "
                        "the folder's permissions) and run the same command again") from None


def print_results(title: str, results: dict, keys: list[str]) -> None:
    table = Table(title=title, show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in keys:
        value = results.get(key)
        if isinstance(value, float):
            value = f"{value:.4f}"
        table.add_row(key, "-" if value is None else str(value))
    Console().print(table)
