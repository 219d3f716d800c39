import os
from pathlib import Path

import pytest
import torch
from torchvision.datasets import cifar

from nkat_lightning.data.synthetic import write_all

os.environ.setdefault("WANDB_MODE", "offline")
# The cores shared out among pytest-xdist's workers, for this process and the commands its tests
# start (OMP_NUM_THREADS): more threads than cores make OpenMP's waiting threads spin against
# each other, which slowed the heaviest tests ten-fold.
THREADS = max(1, min(2, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", 1))))
torch.set_num_threads(THREADS)
os.environ["OMP_NUM_THREADS"] = str(THREADS)

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    return write_all(tmp_path_factory.mktemp("data"))


@pytest.fixture(autouse=True)
def skip_cifar_md5(monkeypatch):
    """The synthetic CIFAR-10 pickles cannot match the real MD5 sums; tests only."""
    monkeypatch.setattr(cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path))
