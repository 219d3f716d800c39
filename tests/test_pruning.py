"""Optuna pruning in Hydra sweeps: every pruner option builds its Optuna pruner and runs a
sweep; a pruned trial stops early, is recorded PRUNED with its epoch, and a continued study
reuses it; a NaN trial still fails alone."""

import itertools
import json
from pathlib import Path

import optuna
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from helpers import FAST, run_hydra_main
from hydra_plugins.nkat_optuna_sweeper.pruning_sweeper import build_pruner
from nkat_lightning import report
from nkat_lightning import train as train_entry
from nkat_lightning.config.compose import CONFIG_DIR
from nkat_lightning.training.module import NKATLitModule

PRUNERS = sorted(p.stem for p in (Path(CONFIG_DIR) / "hydra" / "sweeper" / "pruner").glob("*.yaml"))
States = optuna.trial.TrialState


def sweeper_config(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR):
        return compose("train", overrides=list(overrides), return_hydra_config=True).hydra.sweeper


@pytest.mark.parametrize("option", PRUNERS)
def test_every_pruner_option_builds_its_optuna_pruner(option):
    sweeper = sweeper_config("hparams_search=compact", f"hydra/sweeper/pruner={option}")
    pruner = build_pruner(sweeper.pruner, sweeper.direction)
    assert type(pruner).__name__ == sweeper.pruner._target_.rsplit(".", 1)[1]
    pareto = sweeper_config("hparams_search=pareto", f"hydra/sweeper/pruner={option}")
    assert isinstance(build_pruner(pareto.pruner, pareto.direction), optuna.pruners.NopPruner)


def compact_sweep(sweep: Path, data_root: Path, *extra: str) -> list[str]:
    return ["-m", "hparams_search=compact", "data=mnist", "model.embed_dim=32", "model.depth=1",
            *FAST, f"paths.data_dir={data_root}", f"hydra.sweep.dir={sweep}", *extra]


def load(sweep: Path, name: str = "compact_mnist") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{sweep / 'optuna.db'}")


@pytest.mark.slow
def test_a_pruned_trial_stops_early_is_recorded_pruned_and_a_continued_study_resumes_it(
        monkeypatch, synthetic_root, tmp_path):
    sweep = tmp_path / "sweep"
    # Optuna's ThresholdPruner, set on the command line: no accuracy reaches 2, so every trial
    # is pruned at its first validation
    args = compact_sweep(sweep, synthetic_root, "hydra.sweeper.n_trials=2", "trainer.max_epochs=4",
                         "hydra.sweeper.pruner._target_=optuna.pruners.ThresholdPruner",
                         "+hydra.sweeper.pruner.lower=2.0")
    run_hydra_main(monkeypatch, train_entry.main, *args)
    trials = load(sweep).trials
    assert [t.state for t in trials] == [States.PRUNED] * 2
    for trial in trials:
        assert list(trial.intermediate_values) == [0] and trial.user_attrs["pruned_at_epoch"] == 0
        [run] = sweep.glob(f"{trial.number}_*/results.json")
        results = json.loads(run.read_text())
        assert results["epochs"] == 1 and results["test_acc"] is None  # stopped, not tested
        assert results["pruned"]["value"] == pytest.approx(trial.value)
        assert (run.parent / "checkpoints" / "last.ckpt").is_file()
    assert "best_value: null" in (sweep / "optimization_results.yaml").read_text()
    report.main([str(sweep)])
    text = (sweep / "report.md").read_text()
    assert "2 trials (maximize): 2 PRUNED" in text and "pruned after epoch 0" in text

    # the same command: the study goes on; the seeded sampler proposes the same parameters, so
    # each pruned run resumes from its checkpoint and its new trial judges the next epoch
    run_hydra_main(monkeypatch, train_entry.main, *args)
    again = load(sweep).trials[2:]
    assert [t.params for t in again] == [t.params for t in trials]
    for trial in again:
        assert trial.state == States.PRUNED and list(trial.intermediate_values) == [1]
        [run] = sweep.glob(f"{trial.number - 2}_*/results.json")
        assert json.loads(run.read_text())["epochs"] == 2
        assert "resuming from" in (run.parent / "train.log").read_text()


@pytest.mark.slow
def test_the_pruner_never_stops_a_run_at_its_last_epoch(monkeypatch, synthetic_root, tmp_path):
    sweep = tmp_path / "sweep"
    run_hydra_main(monkeypatch, train_entry.main, *compact_sweep(
        sweep, synthetic_root, "hydra.sweeper.n_trials=1",
        "hydra.sweeper.pruner._target_=optuna.pruners.ThresholdPruner",
        "+hydra.sweeper.pruner.lower=2.0"))
    [trial] = load(sweep).trials
    assert trial.state == States.COMPLETE and list(trial.intermediate_values) == [0]


@pytest.mark.slow
@pytest.mark.parametrize("option", PRUNERS)
def test_every_pruner_runs_a_sweep_in_which_a_nan_trial_fails_alone(option, monkeypatch,
                                                                     synthetic_root, tmp_path):
    started, on_train_start = itertools.count(), NKATLitModule.on_train_start

    def second_trial_goes_nan(self):
        on_train_start(self)
        if next(started) == 1:
            del self.criterion
            self.criterion = lambda logits, target: logits.sum() * float("nan")

    monkeypatch.setattr(NKATLitModule, "on_train_start", second_trial_goes_nan)
    sweep = tmp_path / "sweep"
    run_hydra_main(monkeypatch, train_entry.main, *compact_sweep(
        sweep, synthetic_root, "hydra.sweeper.n_trials=4", "trainer.max_epochs=2",
        f"hydra/sweeper/pruner={option}"))
    trials = load(sweep).trials
    assert trials[1].state == States.FAIL
    assert all(t.state in (States.COMPLETE, States.PRUNED) for t in trials[:1] + trials[2:])
    for trial in trials[:1] + trials[2:]:  # every epoch reported, up to where it stopped
        last = 1 if trial.state == States.COMPLETE else trial.user_attrs["pruned_at_epoch"]
        assert list(trial.intermediate_values) == list(range(last + 1))


@pytest.mark.parametrize(("override", "message"), [
    ("hydra.sweeper.storage=null", "hydra.sweeper.storage=null: the trials report to their study"),
    ("hydra.sweeper.pruner.n_startup_trials=-1", "hydra.sweeper.pruner cannot be built: Number of "
                                                 "startup trials cannot be negative"),
])
def test_a_sweeper_setting_that_cannot_work_is_one_line(override, message, monkeypatch, capsys,
                                                       tmp_path):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit):
        run_hydra_main(monkeypatch, train_entry.main, "-m", "hparams_search=compact",
                       "hydra/sweeper/pruner=median", override, f"hydra.sweep.dir={tmp_path}")
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
