"""The four-data-set suite and its scoreboard."""

import json
import math

import pytest

from helpers import FAST, TINY_MODEL, finished_run
from nkat_lightning.errors import ConfigError
from nkat_lightning.search import suite
from nkat_lightning.search.scoreboard import build_scoreboard, to_markdown
from nkat_lightning.search.suite import overrides_for, run_suite
from nkat_lightning.suite import main
from nkat_lightning.training.metrics import tpe


def test_per_data_set_overrides_reach_only_their_data_set():
    overrides = ["model.depth=2", "cifar10:model.patch_size=4", "emnist:data.split=letters"]
    assert overrides_for("cifar10", overrides) == [
        "data=cifar10", "model.depth=2", "model.patch_size=4", "test_after_fit=true"]
    assert overrides_for("mnist", overrides) == ["data=mnist", "model.depth=2", "test_after_fit=true"]


def test_global_scores_select_on_validation_and_report_test_beside_it():
    # same lambda everywhere: TPE ratios are accuracy ratios; validation mean acc 0.7
    board = build_scoreboard({"mnist": finished_run(0.9, 0.8), "cifar10": finished_run(0.5, 0.3)},
                             ["mnist", "cifar10"])
    scores = board["scores"]
    assert board["complete"] and board["selected_on"] == "validation"
    assert scores["robustness"]["validation"] == pytest.approx(0.5 / 0.7)
    assert scores["robustness"]["test"] == pytest.approx(0.3 / 0.55)
    assert scores["consistency"]["validation"] == pytest.approx(1 - 0.2 / 0.7)
    assert scores["global_tpe"]["validation"] == pytest.approx(0.7 / math.log10(1.5))
    markdown = to_markdown(board)
    assert "Scores over 2 data set(s): mnist, cifar10." in markdown
    assert "| robustness | 0.714 NG | 0.545 NG | >= 0.75 |" in markdown
    assert "| mnist | 0.9000 | 0.8000 | 500,000 |" in markdown and "reads validation only" in markdown
    partial = build_scoreboard({"mnist": finished_run(0.9, 0.9),
                                "cifar10": {"status": "failed", "reason": "no data"}},
                               ["mnist", "cifar10"])
    assert partial["scores"] is None and partial["covered"] == ["mnist"]
    assert "covers 1 of 2 data sets" in to_markdown(partial)
    assert "cifar10 failed:\n\n    no data" in to_markdown(partial)


@pytest.mark.parametrize(("val_acc", "test_acc", "filtered"), [(0.9, 0.1, False), (0.1, 0.9, True)])
def test_the_gate_reads_validation_only(val_acc, test_acc, filtered, monkeypatch, tmp_path):
    runs = []

    def run_one(name, *args):
        runs.append(name)
        return finished_run(val_acc, test_acc) | {"epochs": 1, "max_epochs": 1}

    monkeypatch.setattr(suite, "run_one", run_one)
    gate = tpe(0.5, 0.5)
    board = suite.run_suite([], tmp_path, ["cifar10", "mnist"], gate=gate)
    assert bool(board["filtered"]) == filtered and runs == (["cifar10"] if filtered else
                                                             ["cifar10", "mnist"])
    if filtered:
        assert board["filtered"]["val_tpe"] == pytest.approx(tpe(0.1, 0.5))
        assert "FILTERED: cifar10 validation TPE" in (tmp_path / "scoreboard.md").read_text()
    else:
        assert board["scores"]["global_tpe"]["validation"] == pytest.approx(tpe(0.9, 0.5))


def test_the_suite_picks_data_sets_itself(tmp_path, capsys):
    with pytest.raises(ConfigError, match="--data-sets"):
        run_suite(["data=mnist"], tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["--data-sets", "mnist,svhn", "--out", str(tmp_path)])
    assert exit_info.value.code == 2 and "svhn" in capsys.readouterr().err


@pytest.mark.slow
def test_suite_reports_a_missing_data_set_then_resumes_to_a_full_scoreboard(synthetic_root, tmp_path):
    shared = [*TINY_MODEL, *FAST]
    missing = ["cifar10:data.root=" + str(tmp_path / "nowhere"), "cifar10:data.offline_dirs=[]",
               "cifar10:data.download=false"]
    board = run_suite([*shared, *missing], tmp_path / "suite", data_root=synthetic_root)
    assert board["covered"] == ["mnist", "fashion_mnist", "emnist"] and board["scores"] is None
    assert "not available" in board["failed"]["cifar10"]
    first = {d: (tmp_path / "suite" / d / "run" / "results.json").stat().st_mtime_ns
             for d in board["covered"]}

    board = run_suite(shared, tmp_path / "suite", data_root=synthetic_root)
    assert board["complete"] and set(board["scores"]) == {"global_tpe", "consistency", "robustness"}
    for name, mtime in first.items():  # finished data sets are not trained again
        assert (tmp_path / "suite" / name / "run" / "results.json").stat().st_mtime_ns == mtime
    saved = json.loads((tmp_path / "suite" / "scoreboard.json").read_text())
    cifar = json.loads((tmp_path / "suite" / "cifar10" / "run" / "results.json").read_text())
    assert saved["per_data_set"]["cifar10"]["test_acc"] == cifar["test_acc"]
    assert saved["per_data_set"]["cifar10"]["val_acc"] == cifar["val_acc_best"]
    assert (tmp_path / "suite" / "scoreboard.png").stat().st_size > 0
    assert "| global_tpe |" in (tmp_path / "suite" / "scoreboard.md").read_text()


def test_scoreboard_goes_to_wandb_only_when_the_runs_did(tmp_path):
    from omegaconf import OmegaConf

    from nkat_lightning.search.suite import run_wandb_settings
    OmegaConf.save({"logger": {"csv": {}, "wandb": {"project": "p", "offline": True}}},
                   tmp_path / "config.yaml")
    runs = {"mnist": {"status": "failed", "reason": "x"},
            "cifar10": {"status": "ok", "run_dir": str(tmp_path)}}
    assert run_wandb_settings(runs) == {"project": "p", "offline": True}
    OmegaConf.save({"logger": {"csv": {}}}, tmp_path / "config.yaml")
    assert run_wandb_settings(runs) is None
