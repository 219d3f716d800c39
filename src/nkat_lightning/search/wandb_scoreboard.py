"""The suite's scoreboard as a Weights & Biases table, in a run of the suite's W&B group."""

from __future__ import annotations

from pathlib import Path

from nkat_lightning.search.scoreboard import data_set_status, verdict
from nkat_lightning.training.loggers import resolve_offline


def log_scoreboard(board: dict, plot: Path, out: Path, group: str,
                   project: str = "nkat-lightning", offline: bool | str = "auto") -> None:
    """The suite's scoreboard as a W&B table (one row per data set, validation and test) plus
    its plot and the global scores (``suite/<score>`` on validation, ``suite/<score>_test``),
    in a run of job type 'scoreboard' in the suite's group."""
    import wandb

    offline = resolve_offline(offline, str(out))
    run = wandb.init(project=project, group=group, job_type="scoreboard",
                     name=f"{group}-scoreboard", dir=str(out), tags=["suite"],
                     mode="offline" if offline else "online")
    columns = ["val_acc", "test_acc", "params", "lambda", "val_tpe", "test_tpe"]
    table = wandb.Table(columns=["data set", "status", *columns])
    for name in board["data_sets"]:
        row = board["per_data_set"].get(name, {})
        table.add_data(name, data_set_status(board, name), *(row.get(key) for key in columns))
    payload = {"scoreboard": table, "scoreboard_plot": wandb.Image(str(plot))}
    run.summary["verdict"] = verdict(board)  # complete, FILTERED: ..., PRUNED: ... or incomplete
    for key, score in (board["scores"] or {}).items():  # validation selects; test beside it
        payload[f"suite/{key}"] = score["validation"]
        payload[f"suite/{key}_test"] = score["test"]
    run.log(payload)
    run.finish()
