"""Loggers: W&B offline without a key (no network), its groups and tags, the suite's W&B
scoreboard, and TensorBoard beside CSV."""

import logging
from types import SimpleNamespace

import pytest
from hydra.types import RunMode

from helpers import FAST, TINY_MODEL, compose_train, finished_run
from nkat_lightning.search import wandb_scoreboard
from nkat_lightning.search.scoreboard import build_scoreboard, write_scoreboard
from nkat_lightning.training import fit as train_module
from nkat_lightning.training import loggers
from nkat_lightning.training.fit import train

EXPECTED_HISTORY = {"train/loss_epoch", "train/acc", "val/loss", "val/acc", "val/acc_best",
                    "val/tpe", "val/tpe_best", "test/acc", "test/loss", "test/tpe",
                    "model/params", "model/lambda"}


@pytest.fixture
def no_wandb_account(tmp_path, monkeypatch):
    """No API key, no ~/.netrc, and a W&B server address where nothing listens."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")


@pytest.mark.slow
def test_wandb_goes_offline_and_logs_config_and_metrics(no_wandb_account, synthetic_root,
                                                         tmp_path, monkeypatch, capsys):
    seen = {}
    finish = train_module.finish_loggers

    def record_then_finish(run_loggers):
        [wandb_logger] = [lg for lg in run_loggers if type(lg).__name__ == "WandbLogger"]
        run = wandb_logger.experiment
        seen.update(summary=set(run.summary.keys()), config=dict(run.config), offline=run.offline)
        finish(run_loggers)

    monkeypatch.setattr(train_module, "finish_loggers", record_then_finish)
    cfg = compose_train(["data=mnist", "logger=wandb", *TINY_MODEL, *FAST], tmp_path,
                        data_root=synthetic_root)
    train(cfg)
    assert seen["offline"] and "wandb sync" in capsys.readouterr().err
    assert EXPECTED_HISTORY <= seen["summary"]
    assert seen["config"]["model"]["embed_dim"] == 32 and seen["config"]["seed"] == 42
    assert "trainer" in seen["config"]  # the whole resolved config, not only the module's
    assert len(list((tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb"))) == 1
    assert (tmp_path / "run" / "csv" / "metrics.csv").is_file()  # CSV runs alongside


@pytest.mark.slow
def test_wandb_with_a_key_and_no_reachable_server_goes_offline_at_once(no_wandb_account,
                                                                       synthetic_root, tmp_path,
                                                                       monkeypatch, caplog):
    """A cluster node with the key in its environment and no internet: wandb itself would retry
    for about two minutes and then raise."""
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    caplog.set_level(logging.INFO)
    results = train(compose_train(["data=mnist", "logger=wandb", *TINY_MODEL, *FAST], tmp_path,
                                  data_root=synthetic_root))
    assert "W&B: 127.0.0.1:9 is unreachable" in caplog.text and "logging offline" in caplog.text
    assert results["test_acc"] is not None
    assert len(list((tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb"))) == 1


def test_runs_of_a_sweep_or_suite_share_a_group_and_carry_tags(monkeypatch):
    assert loggers.group_and_tags("auto", ["a"]) == (None, ["a"])  # a single run
    assert loggers.group_and_tags("suite-x", []) == ("suite-x", ["suite"])
    sweep = SimpleNamespace(mode=RunMode.MULTIRUN, sweep=SimpleNamespace(dir="/s/2026-11-25_10"))
    monkeypatch.setattr(loggers.HydraConfig, "initialized", staticmethod(lambda: True))
    monkeypatch.setattr(loggers.HydraConfig, "get", staticmethod(lambda: sweep))
    assert loggers.group_and_tags("auto", ["a"]) == ("2026-11-25_10", ["a", "sweep"])


@pytest.mark.slow
def test_suite_scoreboard_goes_to_wandb_as_a_table(no_wandb_account, tmp_path):
    board = build_scoreboard({"mnist": finished_run(0.91, 0.9),
                              "cifar10": {"status": "failed", "reason": "no data"}},
                             ["mnist", "cifar10"])
    paths = write_scoreboard(board, tmp_path)
    wandb_scoreboard.log_scoreboard(board, paths["plot"], tmp_path, "suite-test")
    [run] = (tmp_path / "wandb").glob("offline-run-*")
    assert list(run.glob("run-*.wandb"))


def test_tensorboard_logger_writes_events(synthetic_root, tmp_path):
    cfg = compose_train(["data=mnist", "logger=tensorboard", *TINY_MODEL, *FAST], tmp_path,
                        data_root=synthetic_root)
    train(cfg)
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
