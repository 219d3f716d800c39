"""The job's side of a pruning sweep: the Optuna trial this job runs, and the callback that
reports to it and stops the run when the study's pruner says so.

A hand-written callback instead of optuna-integration's ``PyTorchLightningPruningCallback``:
that one raises out of ``fit`` (losing the epoch's checkpoint and the run's results) and counts
steps from 0 in every run, which a suite's trial (several data sets, one budget) cannot use.
"""

from __future__ import annotations

import math

import lightning as L
import optuna
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import Callback

from hydra_plugins.nkat_optuna_sweeper.pruning_sweeper import TRIAL_ENV, build_pruner


class SweepTrial:
    """The Optuna trial that a pruning sweep launched this job for."""

    def __init__(self, study: optuna.Study, number: int) -> None:
        self.study = study
        self.number = number
        trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
        self.trial = optuna.trial.Trial(study, trial_id)

    @classmethod
    def of_this_job(cls) -> SweepTrial | None:
        """This job's trial, or None outside a sweep by ``hydra/sweeper=nkat_optuna``."""
        if not HydraConfig.initialized():
            return None
        hydra_cfg = HydraConfig.get()
        handle = {key: hydra_cfg.job.env_set.get(name) for key, name in TRIAL_ENV.items()}
        if handle["number"] is None:
            return None
        pruner = build_pruner(hydra_cfg.sweeper.get("pruner"), hydra_cfg.sweeper.direction)
        study = optuna.load_study(study_name=handle["study"], storage=handle["storage"],
                                  pruner=pruner)
        return cls(study, int(handle["number"]))

    def frozen(self) -> optuna.trial.FrozenTrial:
        return self.study._storage.get_trial(self.trial._trial_id)

    def report(self, value: float, step: int) -> bool:
        """Report ``value`` at ``step`` (once per step); True when the pruner prunes the trial."""
        if step not in self.frozen().intermediate_values:
            self.trial.report(value, step)
        return self.trial.should_prune()

    def prune(self, **user_attrs) -> None:
        """Record ``user_attrs`` (e.g. ``pruned_at_epoch``, ``filtered``) and finish the trial as
        PRUNED; its value is the last reported one."""
        for key, value in user_attrs.items():
            self.trial.set_user_attr(key, value)
        self.study.tell(self.trial, state=optuna.trial.TrialState.PRUNED)

    def prune_run(self, pruned: dict) -> None:
        """Finish the trial as PRUNED where its run stopped (``results["pruned"]``); a run that
        a continued sweep finds pruned already reports its last value to the new trial first."""
        self.report(pruned["value"], pruned["step"])
        where = {"pruned_data_set": pruned["data_set"]} if "data_set" in pruned else {}
        self.prune(pruned_at_epoch=pruned["epoch"], **where)


class PruneOnValidation(Callback):
    """After each validation, reports ``monitor`` to the trial at step ``step_offset + epoch``
    and, if the pruner prunes the trial, stops the run at the end of this epoch (checkpoints and
    results are written as for any finished run). ``pruned`` then holds where it stopped."""

    def __init__(self, trial: SweepTrial, monitor: str, step_offset: int = 0) -> None:
        self.trial, self.monitor, self.step_offset = trial, monitor, step_offset
        self.pruned: dict | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        step = self.step_offset + trainer.current_epoch
        prune = False
        if trainer.is_global_zero and value is not None and math.isfinite(float(value)):
            prune = self.trial.report(float(value), step)
        if trainer.strategy.broadcast(prune, src=0):
            self.pruned = {"epoch": trainer.current_epoch, "step": step, "metric": self.monitor,
                           "value": float(value)}
            trainer.should_stop = True
