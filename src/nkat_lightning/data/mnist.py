"""MNIST and Fashion-MNIST: IDX files under ``root/<folder>/raw``."""

from __future__ import annotations

from torchvision import datasets

from nkat_lightning.data.base import ImageDataModule

IDX_FILES = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
]


class MNISTDataModule(ImageDataModule):
    folder = "MNIST"
    dataset_class = datasets.MNIST

    def make_dataset(self, train: bool, transform=None, download: bool = False):
        return self.dataset_class(str(self.root), train=train, transform=transform, download=download)

    def native_files(self) -> list[str]:
        return list(IDX_FILES)


class FashionMNISTDataModule(MNISTDataModule):
    folder = "FashionMNIST"
    dataset_class = datasets.FashionMNIST
