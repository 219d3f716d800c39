"""Augmentation packs, Mixup/CutMix soft targets and EMA."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from timm.loss import SoftTargetCrossEntropy
from torchvision.transforms import v2

from helpers import FAST, TINY_MODEL, compose_train
from nkat_lightning.config.checks import validate_config
from nkat_lightning.data.transforms import BatchTransform, PerImageRandAugment, build_image_transform
from nkat_lightning.errors import ConfigError
from nkat_lightning.training.evaluate import evaluate
from nkat_lightning.training.fit import train
from nkat_lightning.training.module import NKATLitModule

CIFAR = SimpleNamespace(natural_images=True, img_size=32, in_chans=3)
GLYPH = SimpleNamespace(natural_images=False, img_size=28, in_chans=1)


def aug_of(pack: str, tmp_path, *overrides: str) -> dict:
    return validate_config(compose_train([f"aug={pack}", *overrides], tmp_path))["aug"]


def op_types(transform) -> list[type]:
    return [type(t) for t in transform.transforms]


def test_strong_pack_holds_the_seed_values(tmp_path):
    aug = aug_of("strong", tmp_path)
    assert (aug["randaugment"], aug["mixup"], aug["cutmix"], aug["cutout"]) == (
        {"n": 2, "m": 9}, 0.1, 0.2, 8)


def test_strong_on_natural_images(tmp_path):
    aug = aug_of("strong", tmp_path)
    ops = op_types(build_image_transform(aug, CIFAR))
    assert ops == [v2.RandomCrop, v2.RandomHorizontalFlip]
    randaugment = BatchTransform(aug, (0.5,) * 3, (0.25,) * 3, 32).randaugment
    assert (randaugment.num_ops, randaugment.magnitude) == (2, 9)


def test_glyphs_are_never_flipped(tmp_path):
    ops = op_types(build_image_transform(aug_of("strong", tmp_path), GLYPH))
    assert v2.RandomHorizontalFlip not in ops and v2.RandomAffine in ops


def test_knobs_switch_ops_off(tmp_path):
    aug = aug_of("strong", tmp_path, "aug.randaugment.n=0", "aug.crop_padding=0")
    ops = op_types(build_image_transform(aug, CIFAR))
    assert ops == [v2.RandomHorizontalFlip]
    assert BatchTransform(aug, (0.5,) * 3, (0.25,) * 3, 32).randaugment is None
    assert build_image_transform(aug_of("none", tmp_path), CIFAR) is None


def test_cutout_erases_one_square_of_the_given_side_per_image():
    transform = BatchTransform({"cutout": 8}, mean=(0.2,) * 3, std=(0.5,) * 3, img_size=32)
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
    transform = build_image_transform(aug, CIFAR)
    image = torch.stack([torch.full((32, 32), v, dtype=torch.uint8) for v in (10, 120, 240)])
    orders = {tuple(transform(image)[:, 0, 0].tolist()) for _ in range(30)}
    assert len(orders) > 1 and all(sorted(o) == sorted(next(iter(orders))) for o in orders)
    assert build_image_transform(aug, GLYPH) is None  # no colours to shuffle


def test_per_image_randaugment_draws_ops_per_image():
    images = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8).repeat(64, 1, 1, 1)
    torch.manual_seed(0)
    out = PerImageRandAugment(num_ops=2, magnitude=9)(images)
    assert out.shape == images.shape and out.dtype == torch.uint8
    distinct = {tuple(image.flatten()[:64].tolist()) for image in out}
    assert len(distinct) > 10  # torchvision's RandAugment would give one result for the batch


@pytest.mark.parametrize("op", ["Posterize", "Equalize", "Contrast", "Rotate"])
def test_per_image_randaugment_matches_torchvision_per_image(op, monkeypatch):
    """With the space narrowed to one op, each image gets exactly what torchvision's
    RandAugment gives that image alone (signed ops: compare with either sign)."""
    space = {op: v2.RandAugment._AUGMENTATION_SPACE[op]}
    monkeypatch.setattr(v2.RandAugment, "_AUGMENTATION_SPACE", space)
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    out = PerImageRandAugment(num_ops=1, magnitude=9)(images)
    reference = v2.RandAugment(num_ops=1, magnitude=9)
    magnitudes = space[op][0](31, 32, 32)
    magnitude = 0.0 if magnitudes is None else float(magnitudes[9])
    signs = (1, -1) if space[op][1] else (1,)
    for image, result in zip(images, out, strict=True):
        candidates = [reference._apply_image_or_video_transform(
            image, op, sign * magnitude, interpolation=reference.interpolation,
            fill=reference._fill) for sign in signs]
        assert any(torch.equal(result, c) for c in candidates)


def test_ema_decay_warms_up_then_holds():
    from nkat_lightning.training.ema import ema_multi_avg_fn, warmup_decay
    assert warmup_decay(0.9995, 0) == pytest.approx(0.1)
    assert warmup_decay(0.9995, 90) == pytest.approx(0.91)
    assert warmup_decay(0.9995, 10**6) == 0.9995
    averaged, current = [torch.zeros(3)], [torch.ones(3)]
    ema_multi_avg_fn(0.9995)(averaged, current, torch.tensor(0))
    torch.testing.assert_close(averaged[0], torch.full((3,), 0.9))  # 1 - decay 0.1
