"""The seed's two-stage selective objective, as a Hydra app for the Optuna sweeper:

    python -m nkat_lightning.selective -m hparams_search=stage2_selective

Each trial is a suite (``<trial folder>/<data set>/run``) that trains the gate data set
(CIFAR-10) first. Below ``selective.gate`` on its local TPE the trial is FILTERED: it stops
there, Optuna records it as failed with the reason ``FILTERED: ...`` and the user attribute
``filtered``, and its scoreboard says so. A trial that passes trains the other data sets and
returns Global TPE. ``model.patch_size`` is searched for the gate data set only; the others
keep their data set's default for the chosen stem (the seed: "CIFAR only").
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import hydra
import optuna
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from nkat_lightning.config import CONFIG_DIR
from nkat_lightning.errors import UserError
from nkat_lightning.runner import report_user_errors
from nkat_lightning.suite import run_suite

#: Overrides that choose what the suite itself decides (the data set, the sweep).
NOT_PASSED_ON = ("data=", "hparams_search=", "hydra.", "selective.")


class TrialFiltered(UserError):
    """The gate data set's local TPE stayed below the gate; the trial went no further."""


def suite_overrides(task_overrides: list[str], gate_data_set: str) -> list[str]:
    """The trial's overrides for the suite, with the patch size bound to the gate data set."""
    overrides = []
    for item in task_overrides:
        if item.startswith(NOT_PASSED_ON):
            continue
        overrides.append(f"{gate_data_set}:{item}" if item.startswith("model.patch_size=") else item)
    return overrides


def mark_trial(key: str, reason: str) -> None:
    """Set a user attribute (``filtered`` or ``failed``) on this job's Optuna trial, found among
    the running trials by its parameters, so that every reader of the study storage sees it."""
    hydra_cfg = HydraConfig.get()
    storage_url = hydra_cfg.sweeper.get("storage")
    if not storage_url:
        return  # an in-memory study is not visible outside the sweeper anyway
    storage = optuna.storages.get_storage(storage_url)
    study_id = storage.get_study_id_from_name(hydra_cfg.sweeper.study_name)
    overrides = set(hydra_cfg.overrides.task)
    for trial in storage.get_all_trials(study_id, deepcopy=False,
                                        states=(optuna.trial.TrialState.RUNNING,)):
        if {f"{name}={value}" for name, value in trial.params.items()} <= overrides:
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
            storage.set_trial_user_attr(trial_id, key, reason)


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
    with keep_job_hydra_config():
        board = run_suite(suite_overrides(list(HydraConfig.get().overrides.task), gate_data_set),
                          Path(HydraConfig.get().runtime.output_dir), data_sets,
                          data_root=Path(cfg.paths.data_dir), gate=settings.gate)
    if board["filtered"]:
        gate = board["filtered"]
        reason = (f"FILTERED: {gate['data_set']} local TPE {gate['local_tpe']:.3f} < gate "
                  f"{gate['gate']}")
        mark_trial("filtered", reason)
        raise TrialFiltered(reason)
    if not board["complete"]:
        reason = "; ".join(f"{name}: {why.splitlines()[0]}" for name, why in board["failed"].items())
        mark_trial("failed", reason)
        raise UserError(reason)
    return board["scores"]["global_tpe"]["value"]


@hydra.main(config_path=CONFIG_DIR, config_name="train")
@report_user_errors
def main(cfg: DictConfig) -> float:
    if "selective" not in cfg:
        raise UserError("the selective objective needs its settings: add hparams_search=stage2_selective")
    return selective_objective(cfg)  # run_suite rejects unknown data sets


if __name__ == "__main__":
    main()
