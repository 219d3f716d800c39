"""CIFAR-10: pickled batches under ``root/cifar-10-batches-py``."""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

from torchvision import datasets

from nkat_lightning.data.base import ImageDataModule

BATCH_FILES = [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"]


class CIFAR10DataModule(ImageDataModule):
    folder = "cifar-10-batches-py"

    def make_dataset(self, train: bool, transform=None, download: bool = False):
        return datasets.CIFAR10(str(self.root), train=train, transform=transform, download=download)

    def native_files(self) -> list[str]:
        return list(BATCH_FILES)

    def prepare_from(self, source: Path) -> bool:
        """Accepts the official ``cifar-10-python.tar.gz`` or an extracted batch folder."""
        archive = source / datasets.CIFAR10.filename
        if archive.is_file():
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(self.root, filter="data")
            return True
        batches = source / self.folder if (source / self.folder).is_dir() else source
        if not all((batches / name).is_file() for name in BATCH_FILES):
            return False
        target = self.root / self.folder
        target.mkdir(parents=True, exist_ok=True)
        for name in BATCH_FILES:
            shutil.copy2(batches / name, target / name)
        return True
