"""The seed's two-stage selective objective, as a Hydra app for the Optuna sweeper:

    python -m nkat_lightning.selective -m hparams_search=stage2_selective

Each trial is a suite (``<trial folder>/<data set>/run``) that trains the gate data set
(CIFAR-10) first, with exactly the trial's composed config: the search file's groups and fixed
values, the sampled parameters and the command line's overrides; only the data set changes.
Below ``selective.gate`` on its best validation TPE the trial is FILTERED: a pruning decision,
so it stops there and Optuna records it PRUNED with the user attribute ``filtered`` (its
reason); its scoreboard says FILTERED. A trial that passes trains the other data sets and
returns Global TPE over their best validation accuracies (test figures are reported beside
them, never optimised). With ``hydra/sweeper/pruner=...`` the pruner may also stop a trial
after any epoch. ``model.patch_size`` is searched for the gate data set only; the others keep
their data set's default for the chosen stem (the seed: "CIFAR only").
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from nkat_lightning.errors import UserError
from nkat_lightning.search.scoreboard import filtered_reason
from nkat_lightning.search.suite import chooses_data_set, run_suite
from nkat_lightning.training.pruning import SweepTrial


class TrialFiltered(UserError):
    """Outside a pruning sweep: the gate data set's validation TPE stayed below the gate."""


def suite_overrides(task_overrides: list[str], gate_data_set: str) -> list[str]:
    """The trial's own overrides (``hparams_search=...`` included, so every data set composes
    the same search config) minus the data set, which the suite chooses; the patch size is
    bound to the gate data set."""
    overrides = []
    for item in task_overrides:
        if chooses_data_set(item):
            continue
        overrides.append(f"{gate_data_set}:{item}" if item.startswith("model.patch_size=") else item)
    return overrides


@contextmanager
def keep_job_hydra_config():
    """Composing each data set's config replaces Hydra's global config; give the job its own
    back (the sweeper's storage, the run mode) when the suite is done."""
    saved = HydraConfig.instance().cfg
    try:
        yield
    finally:
        HydraConfig.instance().cfg = saved


def selective_objective(cfg: DictConfig) -> float:
    settings = cfg.selective
    gate_data_set = settings.gate_data_set
    data_sets = [gate_data_set, *(d for d in settings.data_sets if d != gate_data_set)]
    trial = SweepTrial.of_this_job()
    with keep_job_hydra_config():
        board = run_suite(suite_overrides(list(HydraConfig.get().overrides.task), gate_data_set),
                          Path(HydraConfig.get().runtime.output_dir), data_sets,
                          data_root=Path(cfg.paths.data_dir), gate=settings.gate, trial=trial)
    if board["filtered"]:
        filtered = board["filtered"]
        if trial is None:
            raise TrialFiltered(filtered_reason(filtered))
        trial.prune(filtered["step"], filtered["val_tpe"], filtered=filtered_reason(filtered))
        return filtered["val_tpe"]
    if board["pruned"]:
        trial.prune_run(board["pruned"])
        return board["pruned"]["value"]
    if not board["complete"]:
        reason = "; ".join(f"{name}: {why.splitlines()[0]}" for name, why in board["failed"].items())
        if trial is not None:
            trial.trial.set_user_attr("failed", reason)
        raise UserError(reason)
    value = board["scores"]["global_tpe"]["validation"]
    if value is None:
        raise UserError("the objective reads validation accuracy, and a data set's run validated "
                        "nothing (trainer.limit_val_batches=0?)")
    return value
