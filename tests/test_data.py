import gzip
import os
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from helpers import compose_train
from nkat_lightning.data import (
    CIFAR10DataModule,
    EMNISTDataModule,
    FashionMNISTDataModule,
    MNISTDataModule,
    build_datamodule,
)
from nkat_lightning.data.synthetic import write_mnist_like
from nkat_lightning.errors import DataNotFoundError

EXPECTED = {  # data option -> (class, channels, size, classes)
    "mnist": (MNISTDataModule, 1, 28, 10),
    "fashion_mnist": (FashionMNISTDataModule, 1, 28, 10),
    "emnist": (EMNISTDataModule, 1, 28, 47),
    "cifar10": (CIFAR10DataModule, 3, 32, 10),
}


def make_datamodule(data: str, root, tmp_path, *overrides: str):
    cfg = compose_train([f"data={data}", "data.batch_size=16", "data.val_size=40",
                         "data.offline_dirs=[]", "data.download=false", *overrides],
                        tmp_path, data_root=root)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    return build_datamodule(resolved["data"], resolved["aug"])


@pytest.mark.parametrize("data", EXPECTED)
def test_datamodule_reads_native_files(data, synthetic_root, tmp_path):
    cls, chans, size, classes = EXPECTED[data]
    dm = make_datamodule(data, synthetic_root, tmp_path)
    assert type(dm) is cls
    dm.prepare_data()
    dm.setup("fit")
    dm.setup("test")
    assert len(dm.val_set) == 40
    assert len(dm.train_set) == len(dm.train_set.dataset) - 40
    assert set(dm.train_set.indices).isdisjoint(dm.val_set.indices)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (16, chans, size, size) and x.dtype == torch.uint8
    assert y.shape == (16,) and 0 <= int(y.min()) and int(y.max()) < classes
    xt, _ = next(iter(dm.test_dataloader()))
    assert xt.shape[1:] == (chans, size, size)
    model_input = dm.to_model_input(xt, train=False)
    assert model_input.dtype == torch.float32
    expected = (xt[:, 0].float() / 255 - dm.mean[0]) / dm.std[0]
    torch.testing.assert_close(model_input[:, 0], expected)


def test_batched_read_equals_per_image_read(synthetic_root, tmp_path):
    dm = make_datamodule("cifar10", synthetic_root, tmp_path, "aug=none")
    dm.setup("test")
    images, targets = dm.test_set.__getitems__([3, 0, 7])
    for row, index in enumerate([3, 0, 7]):
        image, target = dm.test_set[index]
        assert torch.equal(images[row], image) and targets[row] == target


def test_split_is_reproducible_and_seeded(synthetic_root, tmp_path):
    def val_indices(seed):
        dm = make_datamodule("mnist", synthetic_root, tmp_path, f"data.split_seed={seed}")
        dm.setup("fit")
        return dm.val_set.indices
    assert val_indices(0) == val_indices(0)
    assert val_indices(0) != val_indices(1)


def test_eval_transform_has_no_augmentation(synthetic_root, tmp_path):
    dm = make_datamodule("cifar10", synthetic_root, tmp_path, "aug=basic")
    dm.setup("fit")
    images = next(iter(dm.val_dataloader()))[0][:8]
    first = [dm.to_model_input(images, train=False) for _ in range(3)]
    assert all(torch.equal(first[0], other) for other in first)
    train = [dm.to_model_input(images, train=True) for _ in range(3)]
    assert any(not torch.equal(train[0], other) for other in train)
    assert all(t.shape == first[0].shape and t.dtype == torch.float32 for t in train)


@pytest.mark.parametrize("split", ["letters", "balanced"])
def test_emnist_orientation_and_labels(split, synthetic_root, tmp_path):
    dm = make_datamodule("emnist", synthetic_root, tmp_path, f"data.split={split}",
                         "aug=none")
    dm.setup("test")
    labels = dm.test_set.targets
    assert int(labels.min()) == 0 and int(labels.max()) == dm.config.num_classes - 1
    assert len(dm.test_set.classes) == dm.config.num_classes
    # class 1's square is in the first row of cells, second column: after the transpose fix
    # the bright block lies right of the top-left corner, as written before transposing.
    image = dm.test_set.images[(labels == 1).nonzero()[0, 0], 0].numpy()
    cells = int(np.ceil(np.sqrt(dm.config.num_classes if split == "balanced" else 27)))
    step = 28 // cells
    assert image[:step, step : 2 * step].min() == 255


def gzipped_offline_copy(tmp_path, folder: str) -> tuple:
    """Debian's layout: the four IDX files gzipped in one folder; returns it and the originals."""
    staging = tmp_path / "staging"
    write_mnist_like(staging, folder)
    offline = tmp_path / "offline"
    offline.mkdir()
    for raw in (staging / folder / "raw").iterdir():
        with open(raw, "rb") as src, gzip.open(offline / f"{raw.name}.gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
    return offline, staging / folder / "raw"


def test_offline_copy_is_prepared_into_root(tmp_path):
    """Debian's layout: the four .gz files in one folder; prepared into root/<folder>/raw."""
    debian, originals = gzipped_offline_copy(tmp_path, "FashionMNIST")
    root = tmp_path / "root"
    dm = make_datamodule("fashion_mnist", root, tmp_path,
                         f"data.offline_dirs=[{tmp_path / 'nowhere'},{debian}]")
    dm.prepare_data()
    assert sorted(p.name for p in (root / "FashionMNIST" / "raw").iterdir()) == sorted(
        p.name for p in originals.iterdir())
    dm.setup("test")
    assert len(dm.test_set) == 80


@pytest.mark.parametrize("data", EXPECTED)
def test_missing_data_is_one_clear_error(data, tmp_path):
    dm = make_datamodule(data, tmp_path / "empty", tmp_path,
                         f"data.offline_dirs=[{tmp_path / 'nowhere'}]")
    with pytest.raises(DataNotFoundError) as info:
        dm.prepare_data()
    message = str(info.value)
    assert f"'{dm.name}' is not available" in message
    assert "nowhere: no such folder" in message
    assert "download: switched off" in message
    assert "Fix:" in message


def test_corrupt_data_file_is_one_clear_error(tmp_path):
    write_mnist_like(tmp_path / "root", "MNIST")
    images = tmp_path / "root" / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:1000])  # truncated, as by an interrupted copy
    dm = make_datamodule("mnist", tmp_path / "root", tmp_path, "data.offline_dirs=[]")
    with pytest.raises(DataNotFoundError, match=r"MNIST: unreadable \(RuntimeError: shape"):
        dm.prepare_data()


def test_truncated_offline_archive_is_reported_not_raised(tmp_path):
    offline, _ = gzipped_offline_copy(tmp_path, "MNIST")
    archive = offline / "train-images-idx3-ubyte.gz"
    archive.write_bytes(archive.read_bytes()[:200])  # an interrupted download
    dm = make_datamodule("mnist", tmp_path / "root", tmp_path, f"data.offline_dirs=[{offline}]")
    with pytest.raises(DataNotFoundError, match=r"offline copy in .*offline: could not be copied"):
        dm.prepare_data()


@pytest.mark.parametrize(("device", "devices", "cores", "expected"),
                         [("cpu", 1, 2, 0), ("cpu", 1, 64, 0), ("cuda", 1, 16, 4),
                          ("cuda", 8, 16, 1), ("cuda", 1, 2, 1), ("cuda", 2, 2, 0)])
def test_auto_loader_workers_follow_the_device_and_cores(device, devices, cores, expected,
                                                         synthetic_root, tmp_path, monkeypatch):
    dm = make_datamodule("mnist", synthetic_root, tmp_path)
    assert dm.config.num_workers == "auto" and dm.loader_workers() == 0  # no trainer yet: as the CPU
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    dm.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)),
                                 num_devices=devices, global_rank=0)
    assert dm.loader_workers() == expected
    dm.trainer = None
    assert make_datamodule("mnist", synthetic_root, tmp_path, "data.num_workers=3").loader_workers() == 3
