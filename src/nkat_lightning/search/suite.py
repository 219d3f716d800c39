"""The four-data-set suite: one configuration trained and tested on each data set in turn,
then the scoreboard (the command is ``python -m nkat_lightning.suite``).

Overrides apply to every data set; ``<data set>:<override>`` (e.g. ``cifar10:model.patch_size=4``
or ``emnist:data.split=letters``) applies to one. Each data set trains in an ordinary run folder
``<out>/<data set>/run``; running the same command again skips finished data sets and resumes an
interrupted one from its last checkpoint.
"""

from __future__ import annotations

import re
import sys
import traceback
from pathlib import Path

from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from nkat_lightning.config.compose import compose_train_config
from nkat_lightning.config.schema import DATA_SETS
from nkat_lightning.errors import ConfigError, UserError
from nkat_lightning.search.scoreboard import build_scoreboard, to_markdown, write_scoreboard
from nkat_lightning.search.wandb_scoreboard import log_scoreboard
from nkat_lightning.training.fit import train
from nkat_lightning.training.loggers import SUITE_GROUP_PREFIX
from nkat_lightning.training.pruning import SweepTrial
from nkat_lightning.training.results import CONFIG_FILE


def chooses_data_set(override: str) -> bool:
    """Whether ``override`` picks the data set (``data=...``, ``+data=...``, ``~data``)."""
    return override.split("=", 1)[0].lstrip("+~") == "data"


def overrides_for(name: str, overrides: list[str]) -> list[str]:
    """The shared overrides plus those prefixed with ``<name>:``, then ``data=<name>``."""
    chosen = []
    for item in overrides:
        prefix, sep, rest = item.partition(":")
        if sep and prefix in DATA_SETS:
            if prefix == name:
                chosen.append(rest)
        else:
            chosen.append(item)
    return [f"data={name}", *chosen, "test_after_fit=true"]


def run_one(name: str, overrides: list[str], out: Path, data_root: Path | None,
            trial: SweepTrial | None = None, step_offset: int = 0) -> dict:
    """One data set's run, with its epoch budget (``max_epochs``); a failure becomes
    ``{"status": "failed", "reason": ...}``, a run that the sweep's pruner stopped
    ``{"status": "pruned", ...}``."""
    try:
        try:
            cfg = compose_train_config(overrides_for(name, overrides), out / name, data_root)
        except (HydraException, OmegaConfBaseException) as error:
            raise ConfigError(str(error).splitlines()[0]) from None
        results = train(cfg, trial, step_offset)
        return {"status": "pruned" if results.get("pruned") else "ok", **results,
                "max_epochs": cfg.trainer.get("max_epochs") or results["epochs"]}
    except UserError as error:
        return {"status": "failed", "reason": str(error)}
    except Exception as error:  # a crash in one data set must not lose the others
        (out / name).mkdir(parents=True, exist_ok=True)
        (out / name / "error.txt").write_text(traceback.format_exc())
        return {"status": "failed",
                "reason": f"{type(error).__name__}: {error} (traceback in {out / name / 'error.txt'})"}


def run_wandb_settings(runs: dict) -> dict | None:
    """The W&B project and offline choice of the suite's runs (from a finished run's saved
    config), or None when they did not log to W&B."""
    for run in runs.values():
        config = Path(run.get("run_dir") or "") / CONFIG_FILE
        if run["status"] == "ok" and config.is_file():
            wandb = (OmegaConf.load(config).get("logger") or {}).get("wandb")
            return None if wandb is None else {"project": wandb.get("project"),
                                               "offline": wandb.get("offline", "auto")}
    return None


def run_suite(overrides: list[str], out: Path, data_sets: list[str] = DATA_SETS,
              data_root: Path | None = None, gate: float | None = None,
              trial: SweepTrial | None = None) -> dict:
    """Run every data set, write ``scoreboard.{json,md,png}`` into ``out``; return the board.

    With ``gate``, the first data set's best validation TPE must reach it or the rest is
    skipped and the board says FILTERED (the seed's two-stage selective objective). With the
    ``trial`` of a pruning sweep, every run reports to it, its steps counting on from the
    epoch budgets of the data sets before it; a pruned or failed run ends the suite (the trial
    cannot complete any more)."""
    if any(chooses_data_set(item) for item in overrides):
        raise ConfigError("the suite chooses the data set itself; pick them with --data-sets")
    unknown = sorted(set(data_sets) - set(DATA_SETS))
    if unknown:
        raise ConfigError(f"unknown data set(s) {unknown}; choose from {DATA_SETS}")
    group = next((item.split("=", 1)[1] for item in overrides if item.startswith("group=")), None)
    if group is None:  # a suite's W&B runs share a group
        group = SUITE_GROUP_PREFIX + re.sub(r"[^A-Za-z0-9_.-]", "_", out.resolve().name)
        overrides = [*overrides, f"group={group}"]
    runs, filtered, pruned, stop, epochs_before = {}, None, None, False, 0
    for index, name in enumerate(data_sets, 1):
        if stop:
            runs[name] = {"status": "skipped"}
            continue
        print(f"suite [{index}/{len(data_sets)}] {name}", flush=True)
        run = run_one(name, overrides, out, data_root, trial, epochs_before)
        if gate is not None and index == 1 and run["status"] == "ok" and run["val_tpe_best"] is None:
            run = {"status": "failed", "reason": "no validation figure: the gate reads the best "
                   "validation TPE, and this run validated nothing (trainer.limit_val_batches=0?)"}
        runs[name] = run
        if run["status"] == "failed":
            print(f"suite: {name} failed: {run['reason']}", file=sys.stderr)
        elif run["status"] == "pruned":
            pruned = {"data_set": name, **run["pruned"]}
        elif gate is not None and index == 1 and run["val_tpe_best"] < gate:
            filtered = {"data_set": name, "val_tpe": run["val_tpe_best"], "gate": gate,
                        "step": epochs_before + run["epochs"] - 1}
        stop = bool(filtered or pruned or (trial is not None and run["status"] == "failed"))
        epochs_before += run.get("max_epochs", 0)
    board = build_scoreboard(runs, data_sets, filtered, pruned)
    paths = write_scoreboard(board, out)
    wandb_settings = run_wandb_settings(runs)
    if wandb_settings is not None:
        log_scoreboard(board, paths["plot"], out, group, **wandb_settings)
    print(to_markdown(board))
    print("scoreboard: " + ", ".join(str(p) for p in paths.values()))
    return board
