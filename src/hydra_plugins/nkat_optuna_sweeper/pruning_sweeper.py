"""Hydra's Optuna sweeper with Optuna's pruners (``hydra.sweeper.pruner``).

Hydra's sweeper has no pruner option and hides each trial from its job, so a job cannot report
to its trial nor be pruned. This subclass hands every job its trial (the study's storage, name
and the trial number, as environment variables of the job, ``hydra.job.env_set``); the job
reports its validation metric after each epoch, asks the study's pruner, and when pruned stops
and tells the study PRUNED itself (``nkat_lightning.training.pruning``). Because the job has already
finished the trial, the sweeper's own later ``tell`` skips it. That works with every launcher
(basic, joblib, submitit) and every shared storage (SQLite, PostgreSQL).
"""

from __future__ import annotations

import functools
import logging
import re
import traceback
from dataclasses import dataclass
from typing import Any

import optuna
from hydra.core.config_store import ConfigStore
from hydra.errors import CompactHydraException
from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl
from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from omegaconf import OmegaConf

log = logging.getLogger(__name__)

#: The environment variables that tell a job which trial of which study it runs.
TRIAL_ENV = {"number": "NKAT_OPTUNA_TRIAL", "study": "NKAT_OPTUNA_STUDY",
             "storage": "NKAT_OPTUNA_STORAGE"}


@dataclass
class PruningOptunaSweeperConf(OptunaSweeperConf):
    _target_: str = "hydra_plugins.nkat_optuna_sweeper.pruning_sweeper.PruningOptunaSweeper"
    # An Optuna pruner ({_target_: optuna.pruners.MedianPruner, ...}); null or NopPruner: none
    pruner: Any = None


ConfigStore.instance().store(group="hydra/sweeper", name="optuna_pruning",
                             node=PruningOptunaSweeperConf, provider="nkat_lightning")


class SweepConfigError(CompactHydraException):
    """A sweeper setting that cannot work; Hydra prints it as one line."""


def single_objective(direction: Any) -> bool:
    if OmegaConf.is_config(direction):
        direction = OmegaConf.to_object(direction)
    return not isinstance(direction, list | tuple) or len(direction) == 1


def build_pruner(pruner_cfg: Any, direction: Any) -> optuna.pruners.BasePruner:
    """The configured Optuna pruner; ``NopPruner`` when none is set or the study has several
    objectives (Optuna prunes single-objective studies only)."""
    if not pruner_cfg or not single_objective(direction):
        return optuna.pruners.NopPruner()
    try:
        return instantiate(pruner_cfg, _execution_whitelist_=("optuna.pruners.*",))
    except Exception as error:  # a wrong argument, a class that is not a pruner
        cause = error.__cause__ or error
        raise SweepConfigError(f"hydra.sweeper.pruner cannot be built: {cause}") from None


def quoted(value: str) -> str:
    """A Hydra override value that keeps ``:``, ``/``, ``=`` and spaces as they are (in
    Hydra's quoted strings only a quote, and backslashes before it, need escaping)."""
    return "'" + re.sub(r"(\\*)('|$)", lambda m: m.group(1) * 2 + ("\\'" if m.group(2) else ""),
                        value) + "'"


def adopt_study(study: optuna.Study, pruner: optuna.pruners.BasePruner) -> None:
    """Fit the sweeper's study (made by Hydra's sweeper, which knows no pruner) to pruning:
    it gets the pruner (Hyperband's brackets also steer the sampler), and its ``tell`` skips
    trials that their job finished already (a pruned job tells PRUNED itself, and ``tell`` of a
    finished trial would fail: Optuna's ``skip_if_finished``)."""
    study.pruner = pruner
    if "tell" not in vars(study):
        study.tell = functools.partial(optuna.Study.tell, study, skip_if_finished=True)


class PruningSweeperImpl(OptunaSweeperImpl):
    def __init__(self, pruner: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pruner_cfg = pruner
        self.pruner = build_pruner(pruner, self.direction)

    def setup(self, *, hydra_context, task_function, config) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        # The storage again, from the config that the launcher and every trial read. Hydra
        # resolved it on a copy when it built the sweeper, and ``now`` in the default SQLite
        # path could then name another second than the sweep folder: the study landed in a
        # folder of its own.
        self.storage = config.hydra.sweeper.storage

    def _configure_trials(self, trials, *args, **kwargs):
        for trial in trials:  # before the parameters are sampled
            adopt_study(trial.study, self.pruner)
        overrides = super()._configure_trials(trials, *args, **kwargs)
        with_trial = []
        for trial, job_overrides in zip(trials, overrides, strict=True):
            handle = {"number": str(trial.number), "study": trial.study.study_name,
                      "storage": str(self.storage)}
            with_trial.append((*job_overrides, *(f"++hydra.job.env_set.{TRIAL_ENV[key]}={quoted(value)}"
                                                 for key, value in handle.items())))
        return with_trial

    def sweep(self, arguments: list[str]) -> None:
        if self.storage is None:
            raise SweepConfigError(
                "hydra.sweeper.storage=null: the trials report to their study through a storage; "
                "keep the default (SQLite in the sweep folder) or give a database URL")
        requested = build_pruner(self.pruner_cfg, "maximize")
        if type(requested) is not type(self.pruner):
            log.warning(f"Optuna cannot prune a multi-objective study: this sweep runs without "
                        f"hydra.sweeper.pruner ({type(requested).__name__})")
        log.info(f"Pruner: {type(self.pruner).__name__}")
        try:
            super().sweep(arguments)
        except ValueError as error:  # from study.best_trial when no trial completed
            if not any(frame.name == "best_trial" for frame in traceback.extract_tb(error.__traceback__)):
                raise
            log.warning("No trial completed (all were pruned, filtered or failed): there is no "
                        "best trial. `python -m nkat_lightning.report %s` lists them.",
                        self.sweep_dir)
            OmegaConf.save(OmegaConf.create({"name": "optuna", "best_params": None,
                                             "best_value": None}),
                           f"{self.sweep_dir}/optimization_results.yaml")


class PruningOptunaSweeper(OptunaSweeper):
    """``OptunaSweeper`` plus ``pruner``."""

    def __init__(self, pruner: Any = None, **kwargs: Any) -> None:
        kwargs["sampler"] = instantiate(
            kwargs["sampler"],
            _execution_whitelist_=("hydra_plugins.hydra_optuna_sweeper.*", "optuna.samplers.*"))
        self.sweeper = PruningSweeperImpl(pruner=pruner, **kwargs)
