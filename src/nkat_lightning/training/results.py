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
