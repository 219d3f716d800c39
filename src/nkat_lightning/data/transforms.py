"""Per-image transforms of the augmentation packs, built from torchvision.transforms.v2.

Batch-level Mixup/CutMix run in the LightningModule (they need the whole batch).
"""

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
    """The per-image ops of the ``aug`` pack, around the eval transform.

    Natural images (CIFAR-10) get a padded random crop and horizontal flips; digits and
    letters get a small random affine and never a flip. torchvision's RandAugment scales its
    translations with the image size, so it suits 28/32-px images as it is. Cutout is
    RandomErasing of a fixed square, applied after normalisation (erased to the mean).
    """
    ops: list = []
    if data.natural_images:
        if aug.get("crop_padding", 0):
            ops.append(v2.RandomCrop(data.img_size, padding=aug["crop_padding"]))
        if aug.get("hflip", 0):
            ops.append(v2.RandomHorizontalFlip(p=aug["hflip"]))
        if aug.get("channel_shuffle", 0) and data.in_chans == 3:
            ops.append(v2.RandomApply([v2.RandomChannelPermutation()], p=aug["channel_shuffle"]))
    elif aug.get("affine_degrees", 0) or aug.get("affine_translate", 0):
        translate = aug.get("affine_translate", 0.0)
        ops.append(
            v2.RandomAffine(degrees=aug.get("affine_degrees", 0), translate=(translate, translate))
        )
    randaugment = aug.get("randaugment") or {}
    if randaugment.get("n", 0):
        ops.append(v2.RandAugment(num_ops=randaugment["n"], magnitude=randaugment.get("m", 9)))
    ops += _to_normalized_tensor(data)
    if aug.get("cutout", 0):
        area = (aug["cutout"] / data.img_size) ** 2
        ops.append(v2.RandomErasing(p=1.0, scale=(area, area), ratio=(1.0, 1.0), value=0))
    return v2.Compose(ops)
