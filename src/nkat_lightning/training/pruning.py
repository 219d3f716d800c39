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
from lightning.pytorch.utilities import rank_zero_only

from hydra_plugins.nkat_optuna_sweeper.pruning_sweeper import TRIAL_ENV, build_pruner


class SweepTrial:
    """The Optuna trial that a pruning sweep launched this job for."""

    def __init__(self, study: optuna.Study, number: int) -> None:
        self.study = study
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

    def report(self, value: float, step: int) -> None:
        """Report ``value`` at ``step``, once per step (a resumed run may validate a step again)."""
        if step not in self.frozen().intermediate_values:
            self.trial.report(value, step)

    def should_prune(self) -> bool:
        return self.trial.should_prune()

    def prune(self, step: int | None = None, value: float | None = None, **user_attrs) -> None:
        """Finish the trial as PRUNED, with ``user_attrs`` (``pruned_at_epoch``, ``filtered``);
        its value is the last reported one (``value`` at ``step`` is reported first, for a run
        found finished). Only global rank zero tells, and a finished trial stays as it is."""
        if rank_zero_only.rank != 0 or self.frozen().state.is_finished():
            return
        if step is not None:
            self.report(value, step)
        for key, attr in user_attrs.items():
            self.trial.set_user_attr(key, attr)
        self.study.tell(self.trial, state=optuna.trial.TrialState.PRUNED)

    def prune_run(self, pruned: dict) -> None:
        """Finish the trial as PRUNED where its run stopped (``results["pruned"]``)."""
        where = {"pruned_data_set": pruned["data_set"]} if "data_set" in pruned else {}
        self.prune(pruned["step"], pruned["value"], pruned_at_epoch=pruned["epoch"], **where)


class PruneOnValidation(Callback):
    """After each validation, reports ``monitor`` to the trial at step ``step_offset + epoch``
    and, if the pruner prunes the trial, stops the run at the end of this epoch (checkpoints and
    results are written; the same command resumes it). Never at the run's last epoch: its
    budget is spent, and the finished run is worth more than a pruned one. ``pruned`` then
    holds where it stopped."""

    def __init__(self, trial: SweepTrial, monitor: str, step_offset: int = 0) -> None:
        self.trial, self.monitor, self.step_offset = trial, monitor, step_offset
        self.pruned: dict | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        epoch = trainer.current_epoch
        step = self.step_offset + epoch
        last_epoch = trainer.max_epochs is not None and epoch + 1 >= trainer.max_epochs
        prune = False
        if trainer.is_global_zero and value is not None and math.isfinite(float(value)):
            self.trial.report(float(value), step)
            prune = not last_epoch and self.trial.should_prune()
        if trainer.strategy.broadcast(prune, src=0):
            self.pruned = {"epoch": epoch, "step": step, "metric": self.monitor,
                           "value": float(value)}
            trainer.should_stop = True
