"""Per-image transforms of the augmentation packs, built from torchvision.transforms.v2."""

from __future__ import annotations

import torch
from torchvision.transforms import v2


def _to_normalized_tensor(data) -> list:
    return [
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=data.mean, std=data.std),
    ]


def build_eval_transform(data) -> v2.Compose:
    """Tensor conversion and per-data-set normalisation only."""
    return v2.Compose(_to_normalized_tensor(data))


def build_train_transform(aug: dict, data) -> v2.Compose:
    """The geometric ops of the ``aug`` pack, then the eval transform.

    Natural images (CIFAR-10) get a padded random crop and horizontal flips; digits and
    letters get a small random affine and never a flip.
    """
    ops: list = []
    if data.natural_images:
        if aug.get("crop_padding", 0):
            ops.append(v2.RandomCrop(data.img_size, padding=aug["crop_padding"]))
        if aug.get("hflip", 0):
            ops.append(v2.RandomHorizontalFlip(p=aug["hflip"]))
    elif aug.get("affine_degrees", 0) or aug.get("affine_translate", 0):
        translate = aug.get("affine_translate", 0.0)
        ops.append(
            v2.RandomAffine(degrees=aug.get("affine_degrees", 0), translate=(translate, translate))
        )
    return v2.Compose(ops + _to_normalized_tensor(data))
