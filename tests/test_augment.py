"""Augmentation packs, Mixup/CutMix soft targets and EMA."""

from pathlib import Path

import numpy as np
import pytest
import torch
from timm.loss import SoftTargetCrossEntropy

from helpers import FAST, TINY_MODEL, compose_train
from nkat_lightning.config.checks import validate_config
from nkat_lightning.config.schema import AugConfig
from nkat_lightning.data import transforms
from nkat_lightning.data.transforms import (
    BLENDS,
    GEOMETRIC,
    OPS,
    BatchTransform,
    PerImageRandAugment,
    build_augmentation,
    fixed_op,
    geometric_theta,
    op_parameters,
    random_affine,
    random_channel_shuffle,
    random_crop,
    random_cutout_,
    random_flip,
    warp,
)
from nkat_lightning.errors import ConfigError
from nkat_lightning.training.evaluate import evaluate
from nkat_lightning.training.fit import train
from nkat_lightning.training.module import NKATLitModule


def aug_of(pack: str, tmp_path, *overrides: str) -> dict:
    return validate_config(compose_train([f"aug={pack}", *overrides], tmp_path))["aug"]


def op_names(aug: dict, natural_images: bool = True, in_chans: int = 3) -> list[str]:
    return [name for name, _ in build_augmentation(AugConfig.from_dict(aug), natural_images,
                                                   in_chans)]


def test_strong_pack_holds_the_seed_values(tmp_path):
    aug = aug_of("strong", tmp_path)
    assert (aug["randaugment"], aug["mixup"], aug["cutmix"], aug["cutout"]) == (
        {"n": 2, "m": 9}, 0.1, 0.2, 8)


def test_strong_on_natural_images(tmp_path):
    aug = aug_of("strong", tmp_path)
    assert op_names(aug) == ["crop", "flip", "randaugment"]
    randaugment = dict(build_augmentation(AugConfig.from_dict(aug), True, 3))["randaugment"]
    assert (randaugment.n, randaugment.m) == (2, 9)


def test_glyphs_are_never_flipped(tmp_path):
    assert op_names(aug_of("strong", tmp_path), natural_images=False, in_chans=1) == [
        "affine", "randaugment"]


def test_knobs_switch_ops_off(tmp_path):
    aug = aug_of("strong", tmp_path, "aug.randaugment.n=0", "aug.crop_padding=0")
    assert op_names(aug) == ["flip"]
    assert op_names(aug_of("none", tmp_path)) == []


def test_cutout_erases_one_square_of_the_given_side_per_image():
    transform = BatchTransform({"cutout": 8}, mean=(0.2,) * 3, std=(0.5,) * 3)
    images = torch.full((6, 3, 32, 32), 200, dtype=torch.uint8)
    out = transform(images, train=True)
    erased = (out == 0).all(1)  # erased to the mean: 0 after normalisation
    assert erased.flatten(1).sum(1).tolist() == [64] * 6
    assert len({tuple(e.nonzero()[0].tolist()) for e in erased}) > 1  # boxes differ per image
    assert not (transform(images, train=False) == 0).any()


@pytest.mark.parametrize(("override", "key"), [("aug.hflip=1.5", "aug.hflip"),
                                               ("aug.mixup=-1", "aug.mixup"),
                                               ("aug.cutout=40", "aug.cutout"),
                                               ("optim.ema=1.0", "optim.ema")])
def test_bad_aug_values_are_config_errors(override, key, tmp_path):
    with pytest.raises(ConfigError, match=key):
        validate_config(compose_train(["data=cifar10", override], tmp_path))


def test_mixup_gives_soft_targets_with_label_smoothing(tmp_path):
    resolved = validate_config(compose_train(["aug=strong", *TINY_MODEL], tmp_path))
    module = NKATLitModule(resolved["model"], resolved["optim"], aug=resolved["aug"])
    assert isinstance(module.criterion, SoftTargetCrossEntropy)
    x, y = torch.randn(8, 1, 28, 28), torch.arange(8) % 10
    np.random.seed(0)  # timm draws lambda from numpy; Beta(0.1, 0.1) can give lambda == 1 (no mix)
    draws = [module.mixup(x.clone(), y) for _ in range(10)]
    for _, targets in draws:
        assert targets.shape == (8, 10)
        torch.testing.assert_close(targets.sum(1), torch.ones(8))
        assert float(targets.min()) > 0  # label smoothing spreads mass over every class
    assert sum(not torch.equal(mixed, x) for mixed, _ in draws) >= 5


def test_ema_weights_are_validated_and_checkpointed(synthetic_root, tmp_path):
    cfg = compose_train(["data=mnist", "optim.ema=0.5", "model.conv_stem=tiny", *TINY_MODEL,
                         *FAST, "trainer.limit_test_batches=null"], tmp_path,
                        data_root=synthetic_root)
    results = train(cfg)
    checkpoint = torch.load(results["best_ckpt"], weights_only=True)
    ema, current = checkpoint["state_dict"], checkpoint["current_model_state"]
    assert ema.keys() == current.keys()
    assert any(not torch.equal(ema[k], current[k]) for k in ema if ema[k].is_floating_point())
    # the test after fit ran on the EMA weights, as a later eval of the checkpoint does
    assert evaluate(Path(results["best_ckpt"]))["loss"] == pytest.approx(results["test_loss"])


def test_channel_shuffle_permutes_rgb_only(tmp_path):
    aug = aug_of("none", tmp_path, "aug.channel_shuffle=1.0")
    assert op_names(aug) == ["channel_shuffle"] and op_names(aug, in_chans=1) == []
    images = torch.stack([torch.full((32, 32), v) for v in (0.1, 0.5, 0.9)])[None].repeat(40, 1, 1, 1)
    out = random_channel_shuffle(images, p=1.0)
    orders = {tuple(image[:, 0, 0].tolist()) for image in out}
    assert len(orders) > 1 and all(sorted(o) == sorted(orders.pop()) for o in list(orders))
    assert torch.equal(random_channel_shuffle(images, p=0.0), images)


def test_flip_mirrors_each_image_with_its_probability():
    images = torch.rand(200, 1, 8, 8)
    out = random_flip(images, p=0.5)
    flipped = [torch.equal(o, i.flip(-1)) for o, i in zip(out, images, strict=True)]
    kept = [torch.equal(o, i) for o, i in zip(out, images, strict=True)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True)) and 60 < sum(flipped) < 140
    assert torch.equal(random_flip(images, p=1.0), images.flip(-1))


def test_crop_takes_each_image_from_its_own_offset_in_the_padded_image():
    images = torch.rand(30, 3, 10, 10)
    out = random_crop(images, padding=2)
    padded = torch.nn.functional.pad(images, (2,) * 4)
    offsets = set()
    for index, (o, p) in enumerate(zip(out, padded, strict=True)):
        found = [(t, x) for t in range(5) for x in range(5) if torch.equal(o, p[:, t:t + 10, x:x + 10])]
        assert found, index
        offsets.add(found[0])
    assert len(offsets) > 5


def test_affine_without_rotation_or_shift_is_the_identity_and_moves_pixels_otherwise():
    images = torch.rand(8, 1, 28, 28)
    torch.testing.assert_close(random_affine(images, degrees=0.0, translate=0.0), images)
    moved = random_affine(images, degrees=10.0, translate=0.1)
    assert all(not torch.allclose(m, i) for m, i in zip(moved, images, strict=True))


def replay_draws(seed: int, n: int, batch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The (op, sign) each image draws per layer, from the RNG as PerImageRandAugment uses it."""
    torch.manual_seed(seed)
    draws = []
    for _ in range(n):
        drawn = torch.randint(len(OPS), (batch,))
        draws.append((drawn, torch.where(torch.rand(batch) < 0.5, -1.0, 1.0)))
    return draws


@pytest.fixture(params=["C++ kernel", "torch ops"])
def cpu_path(request, monkeypatch):
    """The test runs on the CPU kernels (``csrc/``) and on torch's ops (the reference, and the
    GPU path) alike."""
    if request.param == "torch ops":
        monkeypatch.setattr(transforms, "cpu_kernel", lambda: None)
    else:
        assert transforms.cpu_kernel() is not None  # the C++ compiler is part of the setup
    return request.param


@pytest.mark.parametrize("channels", [1, 3])
def test_each_image_gets_exactly_its_own_op_as_if_alone(cpu_path, channels):
    """One layer at m = 15: every image equals its drawn op applied to it alone with
    torchvision's functional ops (blends: the op at factor 1 +- 0.45; geometric: the nearest
    warp of that image alone), whichever implementation ran."""
    images = torch.rand(140, channels, 16, 16)
    images[:8] = (images[:8] * 255).round() / 255  # 8-bit levels, as the loaders give them
    torch.manual_seed(3)
    out = PerImageRandAugment(n=1, m=15)(images)
    ((drawn, sign),) = replay_draws(3, 1, 140)
    seen = set()
    for image, result, op, s in zip(images, out, drawn.tolist(), sign.tolist(), strict=True):
        name = OPS[op]
        seen.add(name)
        if name in BLENDS:
            expected = BLENDS[name](image[None], 1.0 + s * 0.45).clamp(0, 1)
        elif name in GEOMETRIC:
            magnitude = torch.tensor([s * GEOMETRIC[name] * 15 / 30])
            expected = warp(image[None], geometric_theta(torch.tensor([op]), magnitude), "nearest")
            # a source pixel exactly half-way between two is a rounding tie: allow a few
            assert (result[None] - expected).abs().gt(1e-5).float().mean() < 0.02, name
            continue
        else:
            parameter = op_parameters(torch.tensor([op]), torch.tensor([s]), 15)
            assert float(parameter) == {"Posterize": 6.0, "Solarize": 0.5}.get(name, 0.0)
            expected = fixed_op(name, image[None], float(parameter)).clamp(0, 1)
        torch.testing.assert_close(result[None], expected, atol=1e-5, rtol=1e-5, msg=name)
    assert seen == set(OPS)


def test_randaugment_at_magnitude_zero_leaves_images_whose_ops_need_a_magnitude(cpu_path):
    images = torch.rand(64, 3, 16, 16)
    torch.manual_seed(5)
    out = PerImageRandAugment(n=2, m=0)(images)
    draws = replay_draws(5, 2, 64)
    free = {OPS.index("AutoContrast"), OPS.index("Equalize")}  # act without a magnitude
    for index in range(64):
        if not any(int(drawn[index]) in free for drawn, _ in draws):
            torch.testing.assert_close(out[index], images[index])


def test_per_image_randaugment_draws_ops_per_image(cpu_path):
    images = torch.rand(1, 3, 32, 32).repeat(64, 1, 1, 1)
    torch.manual_seed(0)
    out = PerImageRandAugment(n=2, m=9)(images)
    assert out.shape == images.shape and out.dtype == images.dtype
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    distinct = {tuple(image.flatten()[:64].tolist()) for image in out}
    assert len(distinct) > 10  # ops drawn once per batch would give one result for all


def test_translations_move_by_whole_pixels_with_zeros_behind():
    images = torch.rand(2, 1, 8, 8)
    ops = torch.tensor([OPS.index("TranslateX")] * 2)
    out = warp(images, geometric_theta(ops, torch.tensor([2 / 8, -2 / 8])), "nearest")
    assert torch.equal(out[0, ..., :, 2:], images[0, ..., :, :-2]) or \
        torch.equal(out[0, ..., :, :-2], images[0, ..., :, 2:])
    assert (out[0] == 0).sum() == 16 and (out[1] == 0).sum() == 16


def test_ema_decay_warms_up_then_holds():
    from nkat_lightning.training.ema import ema_multi_avg_fn, warmup_decay
    assert warmup_decay(0.9995, 0) == pytest.approx(0.1)
    assert warmup_decay(0.9995, 90) == pytest.approx(0.91)
    assert warmup_decay(0.9995, 10**6) == 0.9995
    averaged, current = [torch.zeros(3)], [torch.ones(3)]
    ema_multi_avg_fn(0.9995)(averaged, current, torch.tensor(0))
    torch.testing.assert_close(averaged[0], torch.full((3,), 0.9))  # 1 - decay 0.1


def test_cutout_squares_reach_every_corner_and_stay_inside(cpu_path):
    images = torch.ones(400, 1, 10, 10)
    erased = random_cutout_(images, 9) == 0
    assert (erased.flatten(1).sum(1) == 81).all()  # never clipped by the border
    places = {(int(e[0].any(1).int().argmax()), int(e[0].any(0).int().argmax())) for e in erased}
    assert places == {(0, 0), (0, 1), (1, 0), (1, 1)}  # every (top, left) that fits occurs
    whole = random_cutout_(torch.ones(3, 2, 5, 5), 5)  # a square as large as the image
    assert not whole.any()


def test_randaugment_edge_cases(cpu_path):
    images = torch.rand(4, 3, 8, 8)
    torch.testing.assert_close(PerImageRandAugment(n=0, m=9)(images), images)
    assert PerImageRandAugment(n=2, m=9)(torch.rand(0, 1, 8, 8)).shape == (0, 1, 8, 8)
    tiny = PerImageRandAugment(n=3, m=30)(torch.rand(16, 3, 1, 1))  # 1x1 images: no crash
    assert tiny.shape == (16, 3, 1, 1) and 0 <= float(tiny.min()) <= float(tiny.max()) <= 1
    strided = images.permute(0, 1, 3, 2)  # not contiguous: copied, never read out of order
    torch.manual_seed(0)
    first = PerImageRandAugment(n=2, m=9)(strided)
    torch.manual_seed(0)
    torch.testing.assert_close(first, PerImageRandAugment(n=2, m=9)(strided.contiguous()))


PACKS = sorted(path.stem for path in (Path(__file__).parents[1] / "conf" / "aug").glob("*.yaml"))


# every pack as it is and without RandAugment, and the op combinations no pack makes alone
PACK_VARIANTS = [(pack, extra) for pack in PACKS for extra in ([], ["aug.randaugment.n=0"])] + [
    ("strong", ["aug.channel_shuffle=0.5"]), ("basic", ["aug.channel_shuffle=0.5"]),
    ("basic", ["aug.hflip=0"]), ("basic", ["aug.crop_padding=0"]),
    ("none", ["aug.randaugment.n=2"]), ("none", ["aug.cutout=4"])]


class CountingKernels:
    """The C++ ops, counting which of them run."""

    def __init__(self) -> None:
        self.kernels, self.calls = transforms.cpu_kernel(), []

    def __getattr__(self, name):
        op = getattr(self.kernels, name)
        return lambda *args: (self.calls.append(name), op(*args))[1]


@pytest.mark.parametrize(("pack", "extra"), PACK_VARIANTS)
@pytest.mark.parametrize(("natural_images", "shape"), [
    (True, (24, 3, 32, 32)), (True, (24, 1, 28, 28)), (False, (24, 1, 28, 28)),
    (False, (5, 3, 17, 9))])
def test_cpu_kernels_give_the_torch_ops_images_for_every_pack(
        tmp_path, monkeypatch, pack, extra, natural_images, shape):
    """Every pack's training transform, on the CPU kernels and on torch's ops, from one seed:
    the same images, so the two paths also draw the same random numbers in the same order.
    Without RandAugment exactly (crop, flip, Cutout) or to float rounding (the bilinear affine);
    with it, RandAugment's nearest warp may round a half-way pixel the other way (its own tests
    allow 2 % of pixels), so the variants without it are the exact check."""
    aug = aug_of(pack, tmp_path, *extra)
    transform = BatchTransform(aug, mean=(0.4,) * shape[1], std=(0.3,) * shape[1],
                               natural_images=natural_images)
    images = torch.randint(0, 256, shape, dtype=torch.uint8)
    counting = CountingKernels()
    monkeypatch.setattr(transforms, "cpu_kernel", lambda: counting)
    torch.manual_seed(3)
    kernel = transform(images, train=True)
    spatial = "affine" if transform.augmentation[:1] and transform.augmentation[0][0] == "affine" \
        else "crop_flip"
    expected = ([spatial] if transform.augmentation else []) + (
        ["randaugment_"] if aug["randaugment"]["n"] else []) + (["cutout_"] if aug["cutout"] else [])
    assert counting.calls == expected  # the kernels did run
    monkeypatch.setattr(transforms, "cpu_kernel", lambda: None)
    torch.manual_seed(3)
    reference = transform(images, train=True)
    close = torch.isclose(kernel, reference, rtol=0, atol=1e-4)
    if aug["randaugment"]["n"]:
        assert close.float().mean() > 0.98
    else:
        assert close.all()
        assert torch.equal(kernel, reference) or not natural_images


@pytest.mark.parametrize("scale", [0.3, 1.0, 4.0])
@pytest.mark.parametrize("shift", [0.0, 0.5, 3.0])
def test_affine_kernel_resamples_as_grid_sample_inside_and_far_outside(scale, shift):
    """Matrices that shrink, keep or blow up the image and move it partly or wholly out of
    view: the kernel's zero border and clamped coordinates read 0 wherever grid_sample's zeros
    padding does."""
    images = torch.randint(0, 256, (16, 3, 12, 20), dtype=torch.uint8)
    theta = torch.randn(16, 2, 3) * scale
    theta[:, :, 2] = (torch.rand(16, 2) * 2 - 1) * shift
    expected = warp(images.float() / 255, theta)
    torch.testing.assert_close(transforms.cpu_kernel().affine(images, theta), expected,
                               rtol=0, atol=2e-5)


@pytest.mark.parametrize("padding", [0, 1, 3, 8, 30])
def test_crop_flip_kernel_equals_the_torch_crop_then_flip(padding):
    """Paddings up to larger than the image (every crop then lies partly or wholly in the
    zero border)."""
    images = torch.randint(0, 256, (40, 2, 7, 9), dtype=torch.uint8)
    torch.manual_seed(5)
    floats = transforms.functional.to_dtype(images, torch.float32, scale=True)  # as the loader's
    expected = random_flip(random_crop(floats, padding), p=0.5)
    torch.manual_seed(5)
    top, left = transforms.crop_offsets(len(images), padding)
    flip = transforms.flip_draws(len(images), 0.5)
    out = transforms.cpu_kernel().crop_flip(images, top, left, flip, padding)
    assert torch.equal(out, expected)


def test_spatial_kernels_take_empty_tiny_strided_and_float64_input():
    kernels = transforms.cpu_kernel()
    none = torch.zeros(0, 3, 8, 8, dtype=torch.uint8)
    empty = torch.zeros(0, dtype=torch.long)
    assert kernels.crop_flip(none, empty, empty, empty.bool(), 2).shape == (0, 3, 8, 8)
    assert kernels.affine(none, torch.zeros(0, 2, 3)).shape == (0, 3, 8, 8)
    tiny = torch.randint(0, 256, (4, 1, 1, 1), dtype=torch.uint8)
    theta = torch.randn(4, 2, 3, dtype=torch.float64)
    torch.testing.assert_close(kernels.affine(tiny, theta), warp(tiny.float() / 255, theta.float()),
                               rtol=0, atol=2e-5)
    strided = torch.randint(0, 256, (6, 8, 8, 3), dtype=torch.uint8).permute(0, 3, 1, 2)
    top, flip = torch.tensor([0, 1, 2, 3, 4, 0]), torch.tensor([True, False] * 3)
    assert torch.equal(kernels.crop_flip(strided, top, top.flip(0), flip, 2),
                       kernels.crop_flip(strided.contiguous(), top, top.flip(0), flip, 2))


def test_spatial_kernels_refuse_or_zero_what_they_cannot_resample():
    kernels = transforms.cpu_kernel()
    images = torch.randint(1, 256, (3, 2, 6, 6), dtype=torch.uint8)
    theta = torch.tensor([[1.0, 0, 0], [0, 1, 0]]).repeat(3, 1, 1)
    theta[0, 0, 0], theta[1, 1, 2], theta[2, 0, 1] = float("nan"), float("inf"), -float("inf")
    out = kernels.affine(images, theta)
    assert torch.isfinite(out).all() and not out[0].any()  # NaN coordinates read the zero border
    with pytest.raises(RuntimeError, match=r"theta must be \(N, 2, 3\)"):
        kernels.affine(images, torch.zeros(3, 3, 2))
    top = torch.tensor([0, 5, 0])
    with pytest.raises(RuntimeError, match=r"top and left must lie in \[0, 2 \* padding\]"):
        kernels.crop_flip(images, top, torch.zeros(3, dtype=torch.long), torch.zeros(3).bool(), 2)
    with pytest.raises(RuntimeError, match="the square must lie inside the image"):
        kernels.cutout_(images.float(), torch.tensor([0, 0, 4]), torch.zeros(3, dtype=torch.long), 3)


def test_equalize_kernel_takes_values_outside_0_1_as_the_end_levels():
    """Values outside [0, 1] (the packs never make them) count as 0 or 1 (a NaN as 0), so every
    level indexes the histogram."""
    images = torch.rand(1, 1, 8, 8) * 2 - 0.5
    images[0, 0, 0, :2] = torch.tensor([float("nan"), 3.0])
    clamped = images.nan_to_num(0.0).clamp(0, 1)
    equalize = torch.full((1, 1), transforms.KIND["Equalize"])
    for batch in (images, clamped):
        transforms.cpu_kernel().randaugment_(batch, equalize, torch.zeros(1, 1),
                                             torch.zeros(1, 1, 2, 3))
    assert torch.equal(images, clamped)
