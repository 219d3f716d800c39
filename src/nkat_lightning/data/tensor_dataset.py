"""A data set held as one uint8 tensor, read a batch at a time.

torchvision's MNIST/CIFAR-10 classes turn every image into a PIL image and back; at 28-32 px
that costs more than the model's step on 2 cores. This class keeps torchvision's loaded arrays
and returns a whole batch from one indexing (``__getitems__``); augmentation runs on the batch
afterwards (``transforms.BatchTransform``).
"""

from __future__ import annotations

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
    """Images (N, C, H, W) uint8 and targets (N,)."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, classes: list[str]) -> None:
        self.images, self.targets, self.classes = images, targets, classes

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.targets[index]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        return self.images[index], self.targets[index]
