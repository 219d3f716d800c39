"""The augmentation packs, on whole batches wherever the batch is (the GPU when there is one).

Every random op is drawn per image and applied to the whole batch at once: a crop, flip,
channel order or affine per image from one tensor op each, RandAugment's ops per image with
one batched call for all images that drew the same kind of op (``PerImageRandAugment``).
Normalisation follows, then Cutout (timm's ``RandomErasing``, one box per image). Mixup/CutMix
run in the LightningModule, since they mix labels too.

Why not Kornia's ``kornia.augmentation``, which is made for batched per-sample augmentation:
on the CPU its per-call overhead is several milliseconds (``benchmarks/pipeline.py`` prints
both side by side), a tenth of a compact model's step; these ops cost well under a
millisecond. torchvision's v2 transforms draw one set of parameters per call, shared by the
batch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from timm.data.random_erasing import RandomErasing
from torchvision.transforms import v2

functional = v2.functional

# RandAugment's ops, as the paper and torchvision define them, with their magnitude at full
# strength (m = 30; None: no magnitude) and whether it takes a random sign. Geometric ops warp,
# blend ops mix an image with a degenerate copy (torchvision's op at factor 0) by 1 + magnitude.
GEOMETRIC = {"ShearX": 0.3, "ShearY": 0.3, "TranslateX": 150 / 331, "TranslateY": 150 / 331,
             "Rotate": 30.0}  # translations as a fraction of the image size, rotation in degrees
BLENDS = {"Brightness": functional.adjust_brightness, "Color": functional.adjust_saturation,
          "Contrast": functional.adjust_contrast, "Sharpness": functional.adjust_sharpness}
FIXED: dict[str, tuple[Callable[[torch.Tensor, float], torch.Tensor], float | None]] = {
    "Identity": (lambda x, _: x, None),
    "Posterize": (lambda x, m: posterize(x, 8 - round(m)), 4.0),
    "Solarize": (lambda x, m: functional.solarize(x, 1.0 - m), 1.0),
    "AutoContrast": (lambda x, _: functional.autocontrast(x), None),
    "Equalize": (lambda x, _: functional.equalize(x), None),
}
OPS = [*GEOMETRIC, *BLENDS, *FIXED]
FULL_GEOMETRIC = torch.tensor(list(GEOMETRIC.values()))


def posterize(images: torch.Tensor, bits: int) -> torch.Tensor:
    """torchvision's posterize, and the identity at 8 bits, as it is for the 8-bit images
    these come from (torchvision's float posterize would round k/255 down to k/256)."""
    return images if bits >= 8 else functional.posterize(images, bits)


def geometric_theta(ops: torch.Tensor, magnitudes: torch.Tensor) -> torch.Tensor:
    """(n, 2, 3) ``affine_grid`` matrices, in [-1, 1] coordinates of a square image, for each
    image's geometric op (an index into ``GEOMETRIC``) and signed magnitude: shears about the
    top-left corner, translations, rotations about the centre (degrees)."""
    shear_x, shear_y, translate_x, translate_y, rotate = (ops == i for i in range(len(GEOMETRIC)))
    angle = torch.deg2rad(magnitudes * rotate)
    cos, sin = angle.cos(), angle.sin()
    return torch.stack([
        torch.stack([cos, -sin + magnitudes * shear_x,
                     magnitudes * shear_x + 2 * magnitudes * translate_x], dim=1),
        torch.stack([sin + magnitudes * shear_y, cos,
                     magnitudes * shear_y + 2 * magnitudes * translate_y], dim=1),
    ], dim=1)


def warp(images: torch.Tensor, theta: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Each image resampled through its own affine matrix, zeros outside."""
    grid = F.affine_grid(theta.to(images), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode=mode, padding_mode="zeros", align_corners=False)


class PerImageRandAugment:
    """RandAugment (``n`` ops of magnitude ``m`` out of 30) on a float batch in [0, 1], the ops
    and their signs drawn per image as the paper and timm do. Per op layer, one warp
    (nearest, as torchvision's RandAugment) serves every image that drew a geometric op, one
    blend per colour op and one call per other op the images that drew it: at most 9 batched
    calls."""

    def __init__(self, n: int, m: int) -> None:
        self.n, self.m = n, m

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        images = images.clone()
        for _ in range(self.n):
            drawn = torch.randint(len(OPS), (len(images),))
            sign = torch.where(torch.rand(len(images)) < 0.5, -1.0, 1.0)
            geometric = (drawn < len(GEOMETRIC)).nonzero().squeeze(1)
            if len(geometric):
                ops = drawn[geometric]
                magnitudes = sign[geometric] * FULL_GEOMETRIC[ops] * self.m / 30
                rows = geometric.to(images.device)
                images[rows] = warp(images[rows], geometric_theta(ops, magnitudes), "nearest")
            for index in drawn[drawn >= len(GEOMETRIC)].unique().tolist():
                rows = (drawn == index).nonzero().squeeze(1)
                name, subset = OPS[index], rows.to(images.device)
                if name in BLENDS:
                    factor = (1.0 + sign[rows] * 0.9 * self.m / 30).to(images)[:, None, None, None]
                    degenerate = BLENDS[name](images[subset], 0.0)
                    result = degenerate + factor * (images[subset] - degenerate)
                else:
                    apply, full = FIXED[name]
                    result = apply(images[subset], 0.0 if full is None else full * self.m / 30)
                images[subset] = result.clamp_(0.0, 1.0)
        return images


def random_crop(images: torch.Tensor, padding: int) -> torch.Tensor:
    """A crop of each image's own size at a random offset of the zero-padded image, per image
    (one gather for the batch)."""
    b, c, h, w = images.shape
    padded = F.pad(images, (padding,) * 4).flatten(2)  # (b, c, (h + 2p) * (w + 2p))
    top = torch.randint(2 * padding + 1, (b, 1, 1))
    left = torch.randint(2 * padding + 1, (b, 1, 1))
    index = (top + torch.arange(h)[:, None]) * (w + 2 * padding) + left + torch.arange(w)
    index = index.flatten(1)[:, None].expand(b, c, h * w).to(images.device)
    return padded.gather(2, index).view(b, c, h, w)


def random_flip(images: torch.Tensor, p: float) -> torch.Tensor:
    """Each image mirrored left-right with probability ``p``."""
    flip = (torch.rand(len(images)) < p).to(images.device)[:, None, None, None]
    return torch.where(flip, images.flip(-1), images)


def random_channel_shuffle(images: torch.Tensor, p: float) -> torch.Tensor:
    """With probability ``p`` each image's channels in a random order of its own."""
    b, c = images.shape[:2]
    order = torch.rand(b, c).argsort(dim=1)
    keep = torch.rand(b) >= p
    order[keep] = torch.arange(c)
    return images.gather(1, order.to(images.device)[:, :, None, None].expand_as(images))


def random_affine(images: torch.Tensor, degrees: float, translate: float) -> torch.Tensor:
    """Each image rotated about its centre by up to ``degrees`` and shifted by up to
    ``translate`` of its size, uniformly at random, bilinear, zeros outside."""
    b = len(images)
    angle = torch.deg2rad((torch.rand(b) * 2 - 1) * degrees)
    shift = (torch.rand(b, 2) * 2 - 1) * translate * 2  # in [-1, 1] coordinates: size = 2
    cos, sin = angle.cos(), angle.sin()
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    return warp(images, theta)


def build_augmentation(aug: dict, natural_images: bool, in_chans: int
                       ) -> list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]]:
    """The random ops of the ``aug`` pack for float batches in [0, 1], named, in order.

    Natural images (CIFAR-10, Fashion-MNIST) get a padded random crop, horizontal flips and
    RGB channel shuffles; digits and letters a small random affine and never a flip.
    RandAugment comes last.
    """
    ops: list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]] = []
    if natural_images:
        if aug.get("crop_padding", 0):
            ops.append(("crop", functools.partial(random_crop, padding=aug["crop_padding"])))
        if aug.get("hflip", 0):
            ops.append(("flip", functools.partial(random_flip, p=aug["hflip"])))
        if aug.get("channel_shuffle", 0) and in_chans == 3:
            ops.append(("channel_shuffle", functools.partial(random_channel_shuffle,
                                                             p=aug["channel_shuffle"])))
    elif aug.get("affine_degrees", 0) or aug.get("affine_translate", 0):
        ops.append(("affine", functools.partial(random_affine,
                                                degrees=aug.get("affine_degrees", 0.0),
                                                translate=aug.get("affine_translate", 0.0))))
    randaugment = aug.get("randaugment") or {}
    if randaugment.get("n", 0):
        ops.append(("randaugment", PerImageRandAugment(randaugment["n"], randaugment.get("m", 9))))
    return ops


class BatchTransform:
    """uint8 batch -> normalised float batch, on all images at once wherever the batch is. In
    training it applies the pack's random ops before normalising and Cutout of ``aug.cutout``
    px after."""

    def __init__(self, aug: dict, mean: Sequence[float], std: Sequence[float], img_size: int,
                 natural_images: bool = False) -> None:
        self.mean, self.std = list(mean), list(std)
        cutout = aug.get("cutout", 0)
        self.cutout_area = (cutout / img_size) ** 2 if cutout else 0.0
        self._erasers: dict[torch.device, RandomErasing] = {}
        self.augmentation = build_augmentation(aug, natural_images, len(self.mean))

    def __call__(self, images: torch.Tensor, train: bool) -> torch.Tensor:
        x = functional.to_dtype(images, torch.float32, scale=True)
        for _, op in self.augmentation if train else ():
            x = op(x)
        x = functional.normalize(x, self.mean, self.std)
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
