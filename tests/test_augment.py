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
    functional,
    geometric_theta,
    op_parameters,
    random_affine,
    random_channel_shuffle,
    random_crop,
    random_cutout_,
    random_flip,
    smoothed,
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


@pytest.mark.parametrize("channels", [1, 3])
def test_each_image_gets_exactly_its_own_op_as_if_alone(channels):
    """One layer at m = 15: every image equals its drawn op applied to it alone with
    torchvision's functional ops (blends: the op at factor 1 +- 0.45; geometric: the nearest
    warp of that image alone)."""
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


def test_randaugment_at_magnitude_zero_leaves_images_whose_ops_need_a_magnitude():
    images = torch.rand(64, 3, 16, 16)
    torch.manual_seed(5)
    out = PerImageRandAugment(n=2, m=0)(images)
    draws = replay_draws(5, 2, 64)
    free = {OPS.index("AutoContrast"), OPS.index("Equalize")}  # act without a magnitude
    for index in range(64):
        if not any(int(drawn[index]) in free for drawn, _ in draws):
            torch.testing.assert_close(out[index], images[index])


def test_per_image_randaugment_draws_ops_per_image():
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


def test_cutout_squares_reach_every_corner_and_stay_inside():
    images = torch.ones(400, 1, 10, 10)
    erased = random_cutout_(images, 9) == 0
    assert (erased.flatten(1).sum(1) == 81).all()  # never clipped by the border
    places = {(int(e[0].any(1).int().argmax()), int(e[0].any(0).int().argmax())) for e in erased}
    assert places == {(0, 0), (0, 1), (1, 0), (1, 1)}  # every (top, left) that fits occurs
    whole = random_cutout_(torch.ones(3, 2, 5, 5), 5)  # a square as large as the image
    assert not whole.any()


def test_randaugment_edge_cases():
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


@pytest.mark.parametrize("pack", PACKS)
@pytest.mark.parametrize(("natural_images", "shape"), [(True, (6, 3, 32, 32)),
                                                       (False, (6, 1, 28, 28))])
def test_every_pack_is_seeded_and_keeps_the_batch_shape(pack, natural_images, shape, tmp_path):
    transform = BatchTransform(aug_of(pack, tmp_path), mean=(0.4,) * shape[1],
                               std=(0.3,) * shape[1], natural_images=natural_images)
    images = torch.randint(0, 256, shape, dtype=torch.uint8)
    torch.manual_seed(1)
    first = transform(images, train=True)
    torch.manual_seed(1)
    torch.testing.assert_close(transform(images, train=True), first)  # the same draws
    assert first.shape == shape and first.dtype == torch.float32 and first.isfinite().all()
    evaluated = transform(images, train=False)
    random_ops = bool(transform.augmentation or transform.cutout)  # (digits are never flipped)
    assert torch.equal(first, evaluated) == (not random_ops)


@pytest.mark.parametrize("shape", [(5, 3, 32, 32), (2, 1, 3, 3), (2, 1, 2, 7), (0, 3, 8, 8)])
def test_smoothing_is_torchvisions_sharpness_at_zero(shape):
    images = torch.rand(shape)
    torch.testing.assert_close(smoothed(images), functional.adjust_sharpness(images, 0.0))


def test_pixel_moves_on_uint8_give_the_float_result(tmp_path):
    """Crop, flip and channel shuffle run on the uint8 batch before its conversion: the same
    images as running every op on the floats, from the same draws."""
    aug = aug_of("strong", tmp_path, "aug.channel_shuffle=0.5", "aug.cutout=0")
    transform = BatchTransform(aug, mean=(0.0,) * 3, std=(1.0,) * 3, natural_images=True)
    assert [name for name, _ in transform.augmentation][:3] == list(transforms.PIXEL_MOVES)
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    torch.manual_seed(4)
    moved_first = transform(images, train=True)
    torch.manual_seed(4)
    x = images.float() / 255
    for _, op in transform.augmentation:
        x = op(x)
    torch.testing.assert_close(moved_first, x)
