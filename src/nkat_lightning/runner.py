"""What every entry point shares: building objects from the config, user-facing errors,
and the run folder's result files."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from nkat_lightning.errors import UserError

RESULTS_FILE = "results.json"
#: Packages whose classes a config may name as ``_target_`` (Hydra 1.4's execution whitelist).
TRUSTED_TARGETS = ["nkat_lightning.*", "lightning.*", "torch.*", "timm.*", "optuna.*"]


def build(config, **kwargs):
    """``hydra.utils.instantiate`` limited to the trusted packages."""
    return instantiate(config, _execution_whitelist_=TRUSTED_TARGETS, **kwargs)


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def report_user_errors(task):
    """Print a ``UserError`` as one message and exit 2 instead of a traceback; in a multirun
    re-raise it so the sweeper records the trial as failed."""

    @functools.wraps(task)
    def wrapper(cfg: DictConfig):
        try:
            return task(cfg)
        except UserError as error:
            if in_multirun():
                raise
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)

    return wrapper


def instantiate_all(group: DictConfig | None) -> list:
    """Instantiate each ``_target_`` entry of a callbacks/logger group."""
    if not group:
        return []
    return [build(entry) for entry in group.values() if entry and "_target_" in entry]


def finish_loggers(loggers: list[Logger]) -> None:
    """Close W&B runs so the next run of a multirun gets its own."""
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger":
            import wandb

            wandb.finish()


def save_resolved_config(resolved: dict, run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(resolved), run_dir / "config.yaml")


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
