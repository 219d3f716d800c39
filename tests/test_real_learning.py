"""Real learning on the REAL Fashion-MNIST (Debian package dataset-fashion-mnist)."""

from pathlib import Path

import pytest

from helpers import compose_train
from nkat_lightning.training.fit import train

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.slow
def test_short_run_on_real_fashion_mnist_learns(tmp_path):
    assert (DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file(), (
        "install the real data first: apt-get install dataset-fashion-mnist")
    cfg = compose_train(
        ["data=fashion_mnist", "aug=none", "data.batch_size=64", "trainer.max_epochs=1",
         "trainer.limit_train_batches=300", "trainer.limit_val_batches=4",
         "trainer.limit_test_batches=4", "trainer.accelerator=cpu", "trainer.devices=1",
         "callbacks=minimal", "trainer.enable_progress_bar=false", "optim.warmup_epochs=0.1",
         "trainer.enable_model_summary=false"],
        tmp_path, data_root=tmp_path / "data")
    results = train(cfg)
    assert (tmp_path / "data" / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte").is_file()
    assert results["test_acc"] >= 0.75, results
