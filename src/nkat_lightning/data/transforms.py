"""The augmentation packs, on whole batches wherever the batch is (the GPU when there is one).

Every random op is drawn per image and applied to the whole batch at once with torch's ops, the
same on every device: a crop, flip, channel order or affine per image from one tensor op each,
RandAugment with one batched call for all images that drew the same kind of op
(``PerImageRandAugment``), Cutout one masked fill. Normalisation comes after the random ops,
then Cutout. Mixup/CutMix run in the LightningModule, since they mix labels too.

Why not Kornia's ``kornia.augmentation``, which is made for batched per-sample augmentation:
on the CPU its per-call overhead is several milliseconds (``benchmarks/pipeline.py`` prints
both side by side), a tenth of a compact model's step. torchvision's v2 transforms draw one
set of parameters per call, shared by the batch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from nkat_lightning.config.schema import AugConfig

functional = v2.functional

# RandAugment's ops, as the paper and torchvision define them, with their magnitude at full
# strength (m = 30; None: no magnitude). Geometric ops (random sign) warp; blend ops (random
# sign) mix an image with a degenerate copy (torchvision's op at factor 0) by 1 + magnitude.
GEOMETRIC = {"ShearX": 0.3, "ShearY": 0.3, "TranslateX": 150 / 331, "TranslateY": 150 / 331,
             "Rotate": 30.0}  # translations as a fraction of the image size, rotation in degrees
BLENDS = {"Brightness": functional.adjust_brightness, "Color": functional.adjust_saturation,
          "Contrast": functional.adjust_contrast, "Sharpness": functional.adjust_sharpness}
BLEND_MAGNITUDE = 0.9
FIXED = {"Identity": None, "Posterize": 4.0, "Solarize": 1.0, "AutoContrast": None,
         "Equalize": None}
OPS = [*GEOMETRIC, *BLENDS, *FIXED]
FULL_MAGNITUDE = torch.tensor([*GEOMETRIC.values(), *[BLEND_MAGNITUDE] * len(BLENDS),
                               *[0.0 if full is None else full for full in FIXED.values()]])
def smoothed(images: torch.Tensor) -> torch.Tensor:
    """torchvision's ``adjust_sharpness`` at factor 0 (its degenerate image: the 3x3 smoothing
    filter [1 1 1; 1 5 1; 1 1 1] / 13 inside a one-pixel border), from shifted sums: the same
    values, where torchvision's per-channel conv2d costs several times as much on the CPU."""
    h, w = images.shape[-2:]
    out = images.clone()
    if h <= 2 or w <= 2:
        return out
    rows = images[..., :-2, :] + images[..., 1:-1, :] + images[..., 2:, :]
    box = rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:]
    out[..., 1:-1, 1:-1] = (box + 4 * images[..., 1:-1, 1:-1]) / 13
    return out


def posterize(images: torch.Tensor, bits: int) -> torch.Tensor:
    """torchvision's posterize, and the identity at 8 bits, as it is for the 8-bit images
    these come from (torchvision's float posterize would round k/255 down to k/256)."""
    return images if bits >= 8 else functional.posterize(images, bits)


def fixed_op(name: str, images: torch.Tensor, parameter: float) -> torch.Tensor:
    """A ``FIXED`` op with its parameter (``op_parameters``): torchvision's functional op."""
    if name == "Posterize":
        return posterize(images, int(parameter))
    if name == "Solarize":
        return functional.solarize(images, parameter)
    if name == "AutoContrast":
        return functional.autocontrast(images)
    if name == "Equalize":
        return functional.equalize(images)
    return images


def op_parameters(drawn: torch.Tensor, sign: torch.Tensor, m: float) -> torch.Tensor:
    """Each image's parameter for its op (an index into ``OPS``) at magnitude ``m`` of 30:
    geometric ops their signed magnitude, blends their factor, Posterize its bits, Solarize its
    threshold, the others 0."""
    magnitude = FULL_MAGNITUDE[drawn] * m / 30
    blend = (drawn >= len(GEOMETRIC)) & (drawn < len(GEOMETRIC) + len(BLENDS))
    parameter = torch.where(drawn < len(GEOMETRIC), sign * magnitude, torch.zeros_like(magnitude))
    parameter = torch.where(blend, 1.0 + sign * magnitude, parameter)
    parameter = torch.where(drawn == OPS.index("Posterize"), 8.0 - magnitude.round(), parameter)
    return torch.where(drawn == OPS.index("Solarize"), 1.0 - magnitude, parameter)


def geometric_theta(ops: torch.Tensor, magnitudes: torch.Tensor) -> torch.Tensor:
    """(n, 2, 3) ``affine_grid`` matrices, in [-1, 1] coordinates of a square image, for each
    image's geometric op (an index into ``GEOMETRIC``; any other index: the identity) and
    signed magnitude: shears about the top-left corner, translations, rotations about the
    centre (degrees)."""
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
    and their signs drawn per image as the paper and timm do. Geometric ops warp with nearest
    resampling, as torchvision's RandAugment. Per layer, one warp for every image that drew a
    geometric op and one call per other op for the images that drew it."""

    def __init__(self, n: int, m: int) -> None:
        self.n, self.m = n, m
        # every (op, sign) pair's parameter and matrix, looked up per image: [op, sign < 0]
        ops = torch.arange(len(OPS)).repeat_interleave(2)
        signs = torch.tensor([1.0, -1.0]).repeat(len(OPS))
        self.parameters = op_parameters(ops, signs, m).view(len(OPS), 2)
        self.thetas = geometric_theta(ops, self.parameters.flatten()).view(len(OPS), 2, 2, 3)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        images = images.clone(memory_format=torch.contiguous_format)
        if self.n == 0:
            return images
        b = len(images)
        draws = [(torch.randint(len(OPS), (b,)), (torch.rand(b) < 0.5).long())
                 for _ in range(self.n)]  # per layer: each image's op, then its sign
        drawn = torch.stack([ops for ops, _ in draws], dim=1)  # (b, n)
        negative = torch.stack([sign for _, sign in draws], dim=1)
        parameter, theta = self.parameters[drawn, negative], self.thetas[drawn, negative]
        for layer in range(self.n):
            self.apply_layer(images, drawn[:, layer], parameter[:, layer], theta[:, layer])
        return images

    @staticmethod
    def apply_layer(images: torch.Tensor, drawn: torch.Tensor, parameter: torch.Tensor,
                    theta: torch.Tensor) -> None:
        """One layer with torch's ops, in place: at most 10 batched calls."""
        geometric = (drawn < len(GEOMETRIC)).nonzero().squeeze(1)
        if len(geometric):
            rows = geometric.to(images.device)
            images[rows] = warp(images[rows], theta[geometric], "nearest")
        for index in drawn[drawn >= len(GEOMETRIC)].unique().tolist():
            rows = (drawn == index).nonzero().squeeze(1)
            name, subset = OPS[index], rows.to(images.device)
            if name in BLENDS:
                factor = parameter[rows].to(images)[:, None, None, None]
                chosen = images[subset]
                degenerate = (smoothed(chosen) if name == "Sharpness" else
                              BLENDS[name](chosen, 0.0))
                result = degenerate + factor * (chosen - degenerate)
            else:
                result = fixed_op(name, images[subset], float(parameter[rows[0]]))
            images[subset] = result.clamp_(0.0, 1.0)


def crop_offsets(b: int, padding: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image's crop offset (top, left) in its zero-padded copy, (b,) each."""
    return torch.randint(2 * padding + 1, (b,)), torch.randint(2 * padding + 1, (b,))


def flip_draws(b: int, p: float) -> torch.Tensor:
    """Which images are mirrored, (b,) bool."""
    return torch.rand(b) < p


def affine_theta(b: int, degrees: float, translate: float) -> torch.Tensor:
    """Each image's rotation about its centre by up to ``degrees`` and shift by up to
    ``translate`` of its size, uniform: (b, 2, 3) ``affine_grid`` matrices."""
    angle = torch.deg2rad((torch.rand(b) * 2 - 1) * degrees)
    shift = (torch.rand(b, 2) * 2 - 1) * translate * 2  # in [-1, 1] coordinates: size = 2
    cos, sin = angle.cos(), angle.sin()
    return torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                        torch.stack([sin, cos, shift[:, 1]], 1)], 1)


def random_crop(images: torch.Tensor, padding: int) -> torch.Tensor:
    """A crop of each image's own size at a random offset of the zero-padded image, per image
    (one gather for the batch)."""
    b, c, h, w = images.shape
    top, left = (offset[:, None, None] for offset in crop_offsets(b, padding))
    padded = F.pad(images, (padding,) * 4).flatten(2)  # (b, c, (h + 2p) * (w + 2p))
    index = (top + torch.arange(h)[:, None]) * (w + 2 * padding) + left + torch.arange(w)
    index = index.flatten(1)[:, None].expand(b, c, h * w).to(images.device)
    return padded.gather(2, index).view(b, c, h, w)


def random_flip(images: torch.Tensor, p: float) -> torch.Tensor:
    """Each image mirrored left-right with probability ``p``."""
    flip = flip_draws(len(images), p).to(images.device)[:, None, None, None]
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
    return warp(images, affine_theta(len(images), degrees, translate))


def random_cutout_(images: torch.Tensor, size: int) -> torch.Tensor:
    """One ``size`` x ``size`` square per image, at a random place inside it, set to 0 (the
    mean, after normalisation), in place, with one masked fill: timm's ``RandomErasing`` at
    a fixed square area, whose loop over the images costs about ten times as much on the CPU
    (``benchmarks/pipeline.py`` prints both)."""
    b, _, h, w = images.shape
    top, left = torch.randint(h - size + 1, (b,)), torch.randint(w - size + 1, (b,))
    device = images.device  # drawn on the CPU, as every op here, then the mask built there
    top, left = top.to(device)[:, None, None, None], left.to(device)[:, None, None, None]
    rows, cols = torch.arange(h, device=device)[:, None], torch.arange(w, device=device)
    box = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)
    return images.masked_fill_(box, 0.0)


def build_augmentation(aug: AugConfig, natural_images: bool, in_chans: int
                       ) -> list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]]:
    """The random ops of the ``aug`` pack for float batches in [0, 1], named, in order.

    Natural images (CIFAR-10, Fashion-MNIST) get a padded random crop, horizontal flips and
    RGB channel shuffles; digits and letters a small random affine and never a flip.
    RandAugment comes last.
    """
    ops: list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]] = []
    if natural_images:
        if aug.crop_padding:
            ops.append(("crop", functools.partial(random_crop, padding=aug.crop_padding)))
        if aug.hflip:
            ops.append(("flip", functools.partial(random_flip, p=aug.hflip)))
        if aug.channel_shuffle and in_chans == 3:
            ops.append(("channel_shuffle", functools.partial(random_channel_shuffle,
                                                             p=aug.channel_shuffle)))
    elif aug.affine_degrees or aug.affine_translate:
        ops.append(("affine", functools.partial(random_affine, degrees=aug.affine_degrees,
                                                translate=aug.affine_translate)))
    if aug.randaugment.n:
        ops.append(("randaugment", PerImageRandAugment(aug.randaugment.n, aug.randaugment.m)))
    return ops


#: Ops that only move or zero pixels: exact on the loaders' uint8 batch, where they move a
#: quarter of the bytes they would move on floats, so they run before the conversion.
PIXEL_MOVES = ("crop", "flip", "channel_shuffle")


class BatchTransform:
    """uint8 batch -> normalised float batch, on all images at once wherever the batch is. In
    training it applies the pack's random ops before normalising (those that only move pixels
    on the uint8 batch, before its conversion) and Cutout of ``aug.cutout`` px after."""

    def __init__(self, aug: AugConfig | dict, mean: Sequence[float], std: Sequence[float],
                 natural_images: bool = False) -> None:
        aug = AugConfig.coerce(aug)
        self.mean, self.std = list(mean), list(std)
        self.cutout = aug.cutout
        self.augmentation = build_augmentation(aug, natural_images, len(self.mean))

    def __call__(self, images: torch.Tensor, train: bool) -> torch.Tensor:
        ops = self.augmentation if train else []
        moves = next((i for i, (name, _) in enumerate(ops) if name not in PIXEL_MOVES), len(ops))
        for _, op in ops[:moves]:
            images = op(images)
        x = functional.to_dtype(images, torch.float32, scale=True)
        for _, op in ops[moves:]:
            x = op(x)
        x = functional.normalize(x, self.mean, self.std, inplace=x is not images)
        if train and self.cutout:
            x = random_cutout_(x, self.cutout)
        return x
