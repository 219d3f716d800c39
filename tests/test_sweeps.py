"""Sweeps through the Optuna Hydra sweeper: the seed's two-stage selective search, the
Pareto search, and the report on a sweep."""

import json
import subprocess
from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf

from helpers import (
    FAST,
    SUBPROCESS_ENV,
    TINY_MODEL,
    module_command,
    run_hydra_main,
    start_then_signal,
)
from nkat_lightning import report, selective
from nkat_lightning import train as train_entry
from nkat_lightning.search.selective import suite_overrides

SHRUNK = ["model.embed_dim=32", "model.depth=1", *FAST]  # sizes only; the search's own config


def test_patch_size_goes_to_the_gate_data_set_only():
    task = ["hparams_search=stage2_selective", "model.patch_size=2", "model.depth=5", "data=mnist"]
    assert suite_overrides(task, "cifar10") == [
        "hparams_search=stage2_selective", "cifar10:model.patch_size=2", "model.depth=5"]


@pytest.mark.slow
def test_selective_search_completes_filters_and_fails_trials_of_one_study(monkeypatch,
                                                                         synthetic_root, tmp_path):
    """The real stage2_selective, one trial per command into one study: a gate every trial
    passes, a gate none passes (FILTERED: pruned), and a model that cannot be built."""
    sweep = tmp_path / "sweep"
    common = ["-m", "hparams_search=stage2_selective", "hydra.sweeper.n_trials=1", *SHRUNK,
              "trainer.max_epochs=2", f"paths.data_dir={synthetic_root}", f"hydra.sweep.dir={sweep}"]
    for extra in ("selective.gate=0", "selective.gate=1e6", "model.num_heads=3"):
        run_hydra_main(monkeypatch, selective.main, *common, extra)
    study = optuna.load_study(study_name="stage2_selective",
                              storage=f"sqlite:///{sweep / 'optuna.db'}")
    passed, filtered, failed = study.trials
    assert passed.state == optuna.trial.TrialState.COMPLETE
    boards = {p.parent: json.loads(p.read_text()) for p in sweep.glob("*/scoreboard.json")}
    [(trial_dir, board)] = [(d, b) for d, b in boards.items() if b["complete"]]
    assert passed.value == pytest.approx(board["scores"]["global_tpe"]["validation"])
    assert list(passed.intermediate_values) == list(range(8))  # 2 epochs of each data set
    cifar = OmegaConf.load(trial_dir / "cifar10" / "run" / "config.yaml")
    assert (cifar.model.num_heads, cifar.aug.cutout, cifar.aug.randaugment.n) == (8, 8, 2)
    assert filtered.state == optuna.trial.TrialState.PRUNED
    assert filtered.user_attrs["filtered"].startswith("FILTERED: cifar10 validation TPE")
    assert list(filtered.intermediate_values) == [0, 1]  # CIFAR-10 only
    assert failed.state == optuna.trial.TrialState.FAIL and "filtered" not in failed.user_attrs
    assert "model.embed_dim" in failed.user_attrs["failed"]  # the config error, per data set
    boards = {p.parent.name: p.read_text() for p in sweep.glob("*/scoreboard.md")}
    assert sum("FILTERED" in b for b in boards.values()) == 1
    assert sum("| global_tpe |" in b for b in boards.values()) == 1

    report.main([str(sweep)])
    text = (sweep / "report.md").read_text()
    assert "3 trials (maximize): 1 COMPLETE, 1 FAIL, 1 FILTERED" in text
    assert f"- #{passed.number}: value {passed.value:.4g}" in text
    assert f"| {filtered.number} | FILTERED | " in text and "FILTERED: cifar10 validation TPE" in text
    assert (sweep / "history.png").is_file() and "![optimisation history](history.png)" in text


@pytest.mark.slow
def test_a_selective_trial_that_the_pruner_stops_ends_its_suite(monkeypatch, synthetic_root,
                                                                tmp_path):
    sweep = tmp_path / "sweep"
    run_hydra_main(monkeypatch, selective.main, "-m", "hparams_search=stage2_selective",
                   "hydra.sweeper.n_trials=1", *SHRUNK, "trainer.max_epochs=2",
                   "hydra.sweeper.pruner._target_=optuna.pruners.ThresholdPruner",
                   "+hydra.sweeper.pruner.lower=1e6", f"paths.data_dir={synthetic_root}",
                   f"hydra.sweep.dir={sweep}")
    [trial] = optuna.load_study(study_name="stage2_selective",
                                storage=f"sqlite:///{sweep / 'optuna.db'}").trials
    assert trial.state == optuna.trial.TrialState.PRUNED and "filtered" not in trial.user_attrs
    assert (trial.user_attrs["pruned_data_set"], trial.user_attrs["pruned_at_epoch"]) == ("cifar10", 0)
    [board] = sweep.glob("*/scoreboard.json")
    saved = json.loads(board.read_text())
    assert saved["skipped"] == ["mnist", "fashion_mnist", "emnist"] and not saved["failed"]
    markdown = (board.parent / "scoreboard.md").read_text()
    assert "PRUNED: cifar10 stopped after epoch 0 (val/tpe_best" in markdown
    report.main([str(sweep)])
    assert "pruned after cifar10 epoch 0" in (sweep / "report.md").read_text()


def test_report_needs_a_study(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        report.main([str(tmp_path)])
    assert exit_info.value.code == 2 and "optuna.db" in capsys.readouterr().err


@pytest.mark.slow
def test_pareto_sweep_reports_its_front_and_says_it_cannot_prune(monkeypatch, capsys,
                                                                  synthetic_root, tmp_path):
    sweep = tmp_path / "sweep"
    run_hydra_main(monkeypatch, train_entry.main, "-m", "hparams_search=pareto",
                   "hydra/sweeper/pruner=median", "hydra.sweeper.n_trials=2", "data=mnist",
                   "model.depth=1", *FAST, f"paths.data_dir={synthetic_root}",
                   f"hydra.sweep.dir={sweep}")
    out = capsys.readouterr()
    assert "Optuna cannot prune a multi-objective study: this sweep runs without " \
        "hydra.sweeper.pruner (MedianPruner)" in out.out + out.err
    study = optuna.load_study(study_name="pareto_mnist", storage=f"sqlite:///{sweep / 'optuna.db'}")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert all(t.values[1] > 1000 for t in study.trials)  # the parameter count, not a proxy
    assert "solutions" in (sweep / "optimization_results.yaml").read_text()
    report.main([str(sweep)])
    assert (sweep / "pareto.png").is_file()
    assert "2 trials (maximize, minimize): 2 COMPLETE" in (sweep / "report.md").read_text()
    assert all(not t.intermediate_values for t in study.trials)


@pytest.mark.slow
def test_sweep_continues_its_study_and_reuses_finished_trials(monkeypatch, synthetic_root, tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "hparams_search=compact", "hydra.sweeper.n_trials=2", "data=mnist",
            f"paths.data_dir={synthetic_root}", *TINY_MODEL[:1], "model.depth=1", *FAST,
            f"hydra.sweep.dir={sweep}"]
    run_hydra_main(monkeypatch, train_entry.main, *args)
    best = (sweep / "optimization_results.yaml").read_text()
    assert "best_value" in best and "optim.lr" in best
    assert len(list(sweep.glob("*/results.json"))) == 2

    run_hydra_main(monkeypatch, train_entry.main, *args)  # the same command again
    study = optuna.load_study(study_name="compact_mnist", storage=f"sqlite:///{sweep / 'optuna.db'}")
    first, again = study.trials[:2], study.trials[2:]
    assert len(again) == 2  # n_trials more, seeded: the start-up trials are proposed again
    assert [t.params for t in again] == [t.params for t in first]
    assert [t.value for t in again] == [t.value for t in first]
    assert len(list(sweep.glob("*/results.json"))) == 2  # their runs were reused, not repeated


def job_interval(run_dir: Path) -> tuple[float, float]:
    """When a Hydra job started (its .hydra/config.yaml, written before the task runs) and
    when it ended (its results.json)."""
    return ((run_dir / ".hydra" / "config.yaml").stat().st_mtime,
            (run_dir / "results.json").stat().st_mtime)


@pytest.mark.slow
def test_two_trials_run_in_parallel_through_the_joblib_launcher_and_report_to_their_study(
        monkeypatch, synthetic_root, tmp_path):
    sweep = tmp_path / "sweep"
    run_hydra_main(monkeypatch, train_entry.main, "-m", "hparams_search=compact",
                   "hydra/sweeper/pruner=median",
                   "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2",
                   "hydra.launcher.inner_max_num_threads=1", "hydra.sweeper.n_trials=2",
                   "data=mnist", "model.depth=1", *FAST, "trainer.max_epochs=10",
                   f"paths.data_dir={synthetic_root}", f"hydra.sweep.dir={sweep}")
    study = optuna.load_study(study_name="compact_mnist", storage=f"sqlite:///{sweep / 'optuna.db'}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert [list(t.intermediate_values) for t in study.trials] == [list(range(10))] * 2
    runs = sorted(sweep.glob("*/results.json"))
    assert [p.parent.name[:2] for p in runs] == ["0_", "1_"]
    (start_a, end_a), (start_b, end_b) = (job_interval(p.parent) for p in runs)
    assert start_a < end_b and start_b < end_a  # the two jobs overlapped in time


@pytest.mark.slow
def test_a_killed_sweep_continues_and_resumes_its_interrupted_trial(synthetic_root, tmp_path):
    """SIGKILL during the first trial; the same command again continues the study, and the
    seeded sampler's first proposal resumes the killed trial's run from its last.ckpt."""
    sweep = tmp_path / "sweep"
    command = module_command(
        "nkat_lightning.train", "-m", "hparams_search=compact", "hydra.sweeper.n_trials=1",
        "data=mnist", "model.depth=1", *TINY_MODEL[:1], *FAST, "trainer.max_epochs=40",
        f"paths.data_dir={synthetic_root}", f"hydra.sweep.dir={sweep}")
    start_then_signal(command, tmp_path, lambda: any(sweep.glob("0_*/checkpoints/last.ckpt")))
    [run_dir] = sweep.glob("0_*")
    assert not (run_dir / "results.json").exists()

    again = subprocess.run(command, cwd=tmp_path, env=SUBPROCESS_ENV, capture_output=True,
                           text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    study = optuna.load_study(study_name="compact_mnist", storage=f"sqlite:///{sweep / 'optuna.db'}")
    killed, continued = study.trials
    assert killed.state == optuna.trial.TrialState.RUNNING  # Optuna cannot know it died
    assert continued.state == optuna.trial.TrialState.COMPLETE
    assert continued.params == killed.params
    assert "resuming from" in (run_dir / "train.log").read_text()
    results = (run_dir / "results.json").read_text()
    assert '"epochs": 40' in results


def test_the_study_lands_in_the_sweep_folder_even_when_the_clock_ticks(monkeypatch,
                                                                        synthetic_root, tmp_path):
    """The default sweep folder is named by ``now``. With a clock that moves a second at every
    reading, the study (optuna.db) still lands beside its trials, so ``report`` finds it."""
    import datetime as real_datetime

    import hydra.core.utils

    class TickingClock(real_datetime.datetime):
        ticks = 0

        @classmethod
        def now(cls, tz=None):
            cls.ticks += 1
            return real_datetime.datetime(2026, 1, 1, 12, 0, 0) + real_datetime.timedelta(
                seconds=cls.ticks)

    monkeypatch.setattr(hydra.core.utils, "datetime", TickingClock)
    run_hydra_main(monkeypatch, train_entry.main, "-m", "hparams_search=compact",
                   "hydra.sweeper.n_trials=1", "data=mnist", f"paths.data_dir={synthetic_root}",
                   f"paths.log_dir={tmp_path / 'logs'}", *TINY_MODEL[:1], "model.depth=1", *FAST)
    multirun = tmp_path / "logs" / "train" / "multirun"
    sweep_folders = {path.parent.parent for path in multirun.glob("*/*/results.json")}
    assert len(sweep_folders) == 1
    assert (sweep_folders.pop() / "optuna.db").is_file()
