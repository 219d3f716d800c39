import os
from pathlib import Path

import pytest
import torch
from torchvision.datasets import cifar

from nkat_lightning.data.synthetic import write_all

os.environ.setdefault("WANDB_MODE", "offline")
torch.set_num_threads(min(2, torch.get_num_threads()))

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    return write_all(tmp_path_factory.mktemp("data"))


@pytest.fixture(autouse=True)
def skip_cifar_md5(monkeypatch):
    """The synthetic CIFAR-10 pickles cannot match the real MD5 sums; tests only."""
    monkeypatch.setattr(cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path))
