"""EMNIST: IDX files ``emnist-<split>-...`` under ``root/EMNIST/raw``, stored transposed."""

from __future__ import annotations

import zipfile
from pathlib import Path

from torchvision import datasets

from nkat_lightning.data.base import ImageDataModule


class EMNISTDataModule(ImageDataModule):
    folder = "EMNIST"

    @property
    def split(self) -> str:
        return self.config.split

    def make_dataset(self, train: bool, transform=None, download: bool = False):
        dataset = datasets.EMNIST(
            str(self.root), split=self.split, train=train, transform=transform, download=download
        )
        dataset.data = dataset.data.transpose(1, 2).contiguous()  # files hold images transposed
        if self.split == "letters":  # labels 1..26 -> 0..25
            dataset.targets = dataset.targets - 1
            dataset.classes = dataset.classes[1:]
        return dataset

    def native_files(self) -> list[str]:
        return [
            f"emnist-{self.split}-{part}-{kind}-ubyte"
            for part in ("train", "test")
            for kind in ("images-idx3", "labels-idx1")
        ]

    def prepare_from(self, source: Path) -> bool:
        """Also accepts the official archive ``gzip.zip`` (members ``gzip/<name>.gz``)."""
        archive = source / "gzip.zip"
        if not archive.is_file():
            return super().prepare_from(source)
        extracted = self.root / self.folder / "archive"
        with zipfile.ZipFile(archive) as zf:
            for name in self.native_files():
                member = f"gzip/{name}.gz"
                if member in zf.namelist():
                    zf.extract(member, extracted)
        return super().prepare_from(extracted / "gzip")
