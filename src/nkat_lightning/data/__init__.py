from nkat_lightning.data.base import ImageDataModule, build_datamodule
from nkat_lightning.data.cifar10 import CIFAR10DataModule
from nkat_lightning.data.emnist import EMNISTDataModule
from nkat_lightning.data.mnist import FashionMNISTDataModule, MNISTDataModule

__all__ = [
    "CIFAR10DataModule",
    "EMNISTDataModule",
    "FashionMNISTDataModule",
    "ImageDataModule",
    "MNISTDataModule",
    "build_datamodule",
]
