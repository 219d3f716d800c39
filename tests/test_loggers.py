import pytest

from helpers import FAST, TINY_MODEL, compose_train
from nkat_lightning.train import train


@pytest.mark.slow
def test_wandb_goes_offline_without_api_key(synthetic_root, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc with a key
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    cfg = compose_train(["data=mnist", "logger=wandb", *TINY_MODEL, *FAST], tmp_path,
                        data_root=synthetic_root)
    train(cfg)
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert (tmp_path / "run" / "csv" / "metrics.csv").is_file()  # CSV runs alongside


def test_tensorboard_logger_writes_events(synthetic_root, tmp_path):
    cfg = compose_train(["data=mnist", "logger=tensorboard", *TINY_MODEL, *FAST], tmp_path,
                        data_root=synthetic_root)
    train(cfg)
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
