"""A data set held as one uint8 tensor, read a batch at a time.

torchvision's MNIST/CIFAR-10 classes turn every image into a PIL image and back; at 28-32 px
that costs more than the model's step on 2 cores. This class keeps torchvision's loaded arrays
and returns a whole batch from one indexing (``__getitems__``), with per-image ops only where
the augmentation pack has some.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import Dataset


def images_and_targets(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (N, C, H, W) images and int64 targets of a torchvision MNIST-family or CIFAR
    data set (``data`` is (N, H, W) or (N, H, W, C))."""
    images = torch.as_tensor(np.asarray(dataset.data))
    images = images[:, None] if images.ndim == 3 else images.permute(0, 3, 1, 2)
    return images.contiguous(), torch.as_tensor(dataset.targets, dtype=torch.long)


def return_batch(batch):
    """``collate_fn`` for data sets whose ``__getitems__`` already returns the batch."""
    return batch


class UInt8ImageDataset(Dataset):
    """Images (N, C, H, W) uint8 and targets (N,); ``transform`` maps one uint8 image."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, classes: list[str],
                 transform: Callable | None = None) -> None:
        self.images, self.targets, self.classes = images, targets, classes
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index]
        return (self.transform(image) if self.transform else image), self.targets[index]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        images = self.images[index]
        if self.transform is not None:
            images = torch.stack([self.transform(image) for image in images])
        return images, self.targets[index]
