"""The augmentation packs, split where each part runs fastest.

Cheap per-image ops (crop, flip, affine, channel shuffle) run on uint8 tensors with
torchvision.transforms.v2 inside the data set's batched read. RandAugment, normalisation and
Cutout (timm's ``RandomErasing``, one box per image) run on the whole batch once it is on the
device. Mixup/CutMix run in the LightningModule, since they mix labels too.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.data.random_erasing import RandomErasing
from torchvision.transforms import v2


def build_image_transform(aug: dict, data) -> v2.Compose | None:
    """The per-image uint8 ops of the ``aug`` pack, or None when it has none.

    Natural images (CIFAR-10) get a padded random crop and horizontal flips; digits and
    letters get a small random affine and never a flip.
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
    return v2.Compose(ops) if ops else None


class PerImageRandAugment(v2.RandAugment):
    """torchvision's RandAugment for a uint8 batch (B, C, H, W), with the op and its sign drawn
    for every image as per-image calls would, then applied at once to all images that drew the
    same: at most 2 x 23 batched calls (14 ops, 9 of them in two signs) instead of 2 per
    image. (torchvision's own class draws once per call, so one batch would share its ops;
    timm's works on single PIL images.)

    Every op of the space acts on each image of a batch separately (contrast, equalize and
    autocontrast use per-image statistics), so grouping changes nothing but the speed.
    torchvision scales translations with the image size, so 28/32-px images need no resizing.
    """

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        b, _, height, width = images.shape
        names = list(self._AUGMENTATION_SPACE)
        images = images.clone()
        for _ in range(self.num_ops):
            drawn = torch.randint(len(names), (b,), device=images.device)
            negative = torch.rand(b, device=images.device) <= 0.5
            for index in drawn.unique().tolist():
                name = names[index]
                magnitudes_fn, signed = self._AUGMENTATION_SPACE[name]
                magnitudes = magnitudes_fn(self.num_magnitude_bins, height, width)
                magnitude = 0.0 if magnitudes is None else float(magnitudes[self.magnitude])
                signs = (1.0, -1.0) if signed and magnitudes is not None else (1.0,)
                for sign in signs:
                    rows = drawn == index
                    if len(signs) == 2:
                        rows &= negative if sign < 0 else ~negative
                    if rows.any():
                        images[rows] = self._apply_image_or_video_transform(
                            images[rows], name, sign * magnitude,
                            interpolation=self.interpolation, fill=self._fill)
        return images


class BatchTransform:
    """uint8 batch -> normalised float batch, on all images at once wherever the batch is (the
    GPU when there is one). In training it applies RandAugment before normalising and Cutout of
    ``aug.cutout`` px after."""

    def __init__(self, aug: dict, mean: Sequence[float], std: Sequence[float],
                 img_size: int) -> None:
        self.mean, self.std = list(mean), list(std)
        cutout = aug.get("cutout", 0)
        self.cutout_area = (cutout / img_size) ** 2 if cutout else 0.0
        self._erasers: dict[torch.device, RandomErasing] = {}
        randaugment = aug.get("randaugment") or {}
        self.randaugment = None
        if randaugment.get("n", 0):
            self.randaugment = PerImageRandAugment(num_ops=randaugment["n"],
                                                   magnitude=randaugment.get("m", 9))

    def __call__(self, images: torch.Tensor, train: bool) -> torch.Tensor:
        if train and self.randaugment is not None:
            images = self.randaugment(images)
        x = v2.functional.to_dtype(images, torch.float32, scale=True)
        x = v2.functional.normalize(x, self.mean, self.std)
        if train and self.cutout_area:
            x = self._eraser(x.device)(x)
        return x

    def _eraser(self, device: torch.device) -> RandomErasing:
        """timm's ``RandomErasing`` for ``device`` (it draws its fill there), built once."""
        if device not in self._erasers:
            self._erasers[device] = RandomErasing(
                probability=1.0, min_area=self.cutout_area, max_area=self.cutout_area,
                min_aspect=1.0, mode="const", device=device)  # a square erased to the mean (0)
        return self._erasers[device]
