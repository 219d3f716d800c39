"""Does the training loop keep up with the bare model step? Measured side by side in one run.

For every data set (``conf/data``) and every augmentation pack (``conf/aug``), with the default
job's model for that data set, prints images/s of (a) the data pipeline alone (the train
DataLoader and the batch transform with the pack's augmentation), (b) the model's training
step alone on a fixed batch (``training_step``, backward, AdamW), (c) the real training loop
(Lightning fit: loader, augmentation, step, metrics, logging), (b) and (c) alternating step by
step in one fit (a bare step after every loop step, timed apart), and the ratio (c)/(b) (the
median over rounds of each round's (c) over its own (b), with the range of those ratios) against
its target (``TARGETS``: >= 0.95, and >= 0.88 for the strong pack, whose RandAugment costs
several ms a batch on the CPU); then what each pack adds to the batch transform, ms per batch
(this framework's ops, and Kornia's version of its random ops), and RandAugment and Cutout
alone (Cutout also as timm's RandomErasing, which loops over the images).

Data: synthetic files in each data set's native format (IDX / CIFAR-10 pickles, read by
torchvision's loaders), since the real CIFAR-10 is not available offline here.

    python benchmarks/pipeline.py [--batches 30] [--rounds 3] [--batch-size 128]
                                  [--data mnist ...] [--packs ...]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback
from torchvision.datasets import cifar

from nkat_lightning.config.checks import validate_config
from nkat_lightning.config.compose import CONFIG_DIR, compose_train_config
from nkat_lightning.config.schema import AugConfig
from nkat_lightning.data import build_datamodule, transforms
from nkat_lightning.data.synthetic import write_all
from nkat_lightning.training.fit import build_trainer
from nkat_lightning.training.module import NKATLitModule

DATA_SETS = sorted(path.stem for path in (Path(CONFIG_DIR) / "data").glob("*.yaml"))
PACKS = sorted(path.stem for path in (Path(CONFIG_DIR) / "aug").glob("*.yaml"))
TARGETS = {"strong": 0.88}  # (c)/(b) per pack; every other pack 0.95
DEFAULT_TARGET = 0.95
WARMUP = 5


class BareStep:
    """The model's training step alone on a fixed batch (``training_step``, backward, the run's
    own AdamW), on a model of its own outside any Trainer."""

    def __init__(self, module: NKATLitModule, batch) -> None:
        self.module, self.batch, self.steps = module, batch, 0
        self.optimizer = module.build_optimizer()
        module.train()
        module.log = lambda *args, **kwargs: None  # outside a Trainer: no logging
        for _ in range(WARMUP):
            self()

    def __call__(self) -> float:
        """One step; its wall time, s."""
        start = time.perf_counter()
        with torch.enable_grad():
            loss = self.module.training_step((self.batch[0].clone(), self.batch[1]), self.steps)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        self.steps += 1
        return time.perf_counter() - start


class InterleavedTimer(Callback):
    """After the first ``WARMUP`` batches: the loop's time per batch, from one batch's start to
    the next's (loader, transform, step, hooks, logging, progress bar), and after each batch one
    bare step (``BareStep``), timed apart and left out of the loop's time. Alternating step by
    step, a slow spell of the machine hits both alike (rounds of whole runs still differed by up
    to 0.12 in their ratio)."""

    def __init__(self, bare_step: BareStep) -> None:
        self.bare_step = bare_step
        self.loop: list[float] = []
        self.bare: list[float] = []
        self.last: float | None = None

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        now = time.perf_counter()
        if self.last is not None:
            self.loop.append(now - self.last - self.bare[-1])
        self.last = now if batch_idx >= WARMUP else None

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if self.last is not None:
            self.bare.append(self.bare_step())


def pipeline_rate(datamodule, batches: int) -> float:
    """Batches as the model gets them: the loader, then normalisation (and Cutout)."""
    loader = iter(datamodule.train_dataloader())
    for _ in range(WARMUP):
        next(loader)
    start, images = time.perf_counter(), 0
    for _ in range(batches):
        images += datamodule.to_model_input(next(loader)[0], train=True).shape[0]
    return images / (time.perf_counter() - start)


def interleaved_rates(overrides: list[str], root: Path, datamodule, bare_step: BareStep,
                      batches: int) -> tuple[float, float]:
    """Images/s of (b) the bare step and (c) the run's own Trainer (its callbacks, loggers and
    progress bar; one epoch, no validation, in a new run folder, since a run finds its last
    checkpoint in its folder), alternating (``InterleavedTimer``): ``batches`` loop steps, and
    a bare step after each (one more after the last, whose loop time no next batch closes)."""
    cfg = compose_train_config(overrides, Path(tempfile.mkdtemp(dir=root.parent)), root)
    resolved = validate_config(cfg)
    module = NKATLitModule(resolved["model"], resolved["optim"], aug=resolved["aug"])
    timer = InterleavedTimer(bare_step)
    trainer = build_trainer(cfg, resolved, [timer], accelerator="cpu", devices=1, max_epochs=1,
                            limit_train_batches=WARMUP + batches + 1, limit_val_batches=0,
                            num_sanity_val_steps=0)
    trainer.fit(module, datamodule=datamodule)
    images = len(bare_step.batch[0])
    return images * len(timer.bare) / sum(timer.bare), images * len(timer.loop) / sum(timer.loop)


def milliseconds(function, repeats: int = 20) -> float:
    function()
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - start) / repeats * 1e3


def kornia_pack(aug: AugConfig, natural_images: bool, in_chans: int, size: int):
    """The same pack's random ops from ``kornia.augmentation`` (its RandAugment draws its ops
    once per batch), or None without Kornia or without random ops."""
    try:
        import kornia.augmentation as K
        from kornia.augmentation.auto import RandAugment
    except ImportError:
        return None
    ops = []
    if natural_images:
        if aug.crop_padding:
            ops.append(K.RandomCrop((size, size), padding=aug.crop_padding))
        if aug.hflip:
            ops.append(K.RandomHorizontalFlip(p=aug.hflip))
        if aug.channel_shuffle and in_chans == 3:
            ops.append(K.RandomChannelShuffle(p=aug.channel_shuffle))
    elif aug.affine_degrees or aug.affine_translate:
        t = aug.affine_translate
        ops.append(K.RandomAffine(aug.affine_degrees, translate=(t, t), p=1.0))
    if aug.randaugment.n and in_chans == 3:  # its colour ops need RGB
        ops.append(RandAugment(aug.randaugment.n, aug.randaugment.m))
    return torch.nn.Sequential(*ops) if ops else None


def augmentation_ms(datamodule, images: torch.Tensor) -> tuple[float, float | None]:
    """What the pack adds to the batch transform, ms per batch: the training transform less the
    evaluation one (uint8 batch to normalised floats); then Kornia's version of the pack's
    random ops, where it can do the pack, on the float batch."""
    transform = datamodule.batch_transform

    def added() -> float:
        if not transform.augmentation and not transform.cutout:
            return 0.0  # the same transform both ways
        return milliseconds(lambda: transform(images, True)) - milliseconds(
            lambda: transform(images, False))

    kornia = kornia_pack(datamodule.aug, datamodule.config.natural_images,
                         datamodule.config.in_chans, datamodule.config.img_size)
    floats = images.float() / 255
    return added(), milliseconds(lambda: kornia(floats)) if kornia is not None else None


def op_ms(shape: tuple[int, ...]) -> tuple[float, float, float]:
    """ms per batch of ``shape``: RandAugment 2 9, then Cutout 8 px as this framework's masked
    fill and as timm's ``RandomErasing``, which loops over the images."""
    from timm.data.random_erasing import RandomErasing

    images = torch.rand(shape)
    randaugment = transforms.PerImageRandAugment(2, 9)
    area = (8 / shape[-1]) ** 2
    eraser = RandomErasing(probability=1.0, min_area=area, max_area=area, min_aspect=1.0,
                           mode="const", device="cpu")
    return (milliseconds(lambda: randaugment(images)),
            milliseconds(lambda: transforms.random_cutout_(images, 8)),
            milliseconds(lambda: eraser(images.clone())))


def positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=positive, default=30, help="timed steps per round")
    parser.add_argument("--num-workers", default="auto",
                        help="data.num_workers (auto: 0 on the CPU); workers go on loading "
                             "during the bare steps, which flatters (c)")
    parser.add_argument("--batch-size", type=positive, default=128,
                        help="data.batch_size (even: the strong pack's Mixup pairs images)")
    parser.add_argument("--rounds", type=positive, default=3,
                        help="runs of (b) and (c); medians")
    parser.add_argument("--data", nargs="+", default=DATA_SETS, choices=DATA_SETS)
    parser.add_argument("--packs", nargs="+", default=PACKS, choices=PACKS)
    args = parser.parse_args()
    # synthetic CIFAR-10 pickles cannot match the real MD5 sums
    cifar.check_integrity = lambda path, md5=None: Path(path).is_file()
    with tempfile.TemporaryDirectory() as tmp:
        root = write_all(Path(tmp) / "data",
                         n_train=(WARMUP + args.batches + 2) * args.batch_size + 64)
        rows = []
        for data in args.data:
            for pack in args.packs:
                label = f"{data}, aug={pack}"
                overrides = [f"data={data}", f"aug={pack}", f"data.num_workers={args.num_workers}",
                             "data.val_size=64", f"data.batch_size={args.batch_size}"]
                cfg = compose_train_config(overrides, Path(tempfile.mkdtemp(dir=tmp)), root)
                resolved = validate_config(cfg)
                datamodule = build_datamodule(resolved["data"], resolved["aug"])
                datamodule.prepare_data()
                datamodule.setup("fit")
                x, y = next(iter(datamodule.train_dataloader()))
                batch = (datamodule.to_model_input(x, train=True), y)
                bare_step = BareStep(NKATLitModule(resolved["model"], resolved["optim"],
                                                   aug=resolved["aug"]), batch)
                a = pipeline_rate(datamodule, args.batches)
                augment = augmentation_ms(datamodule, x)
                b, c = zip(*(interleaved_rates(overrides, root, datamodule, bare_step, args.batches)
                             for _ in range(args.rounds)), strict=True)
                ratios = [loop / model for model, loop in zip(b, c, strict=True)]  # paired
                rows.append((label, TARGETS.get(pack, DEFAULT_TARGET), a, statistics.median(b),
                             statistics.median(c), statistics.median(ratios), min(ratios),
                             max(ratios), *augment))
    print(f"\n{'case':30} {'(a) data':>10} {'(b) model':>10} {'(c) loop':>10} {'(c)/(b)':>8}"
          f" {'range':>13} {'target':>8}   {'aug ms':>6} {'Kornia':>7}")
    missed = []
    for label, target, a, b, c, ratio, low, high, ours, kornia in rows:
        verdict = "OK" if ratio >= target else "BELOW"
        if verdict == "BELOW":
            missed.append(label)
        print(f"{label:30} {a:10.0f} {b:10.0f} {c:10.0f} {ratio:8.3f} {low:6.3f}-{high:.3f} "
              f">= {target:.2f} {verdict:5} {ours:6.2f} "
              f"{'-' if kornia is None else f'{kornia:7.1f}':>7}")
    print(f"images/s, batch {args.batch_size}, {torch.get_num_threads()} threads, data.num_workers="
          f"{args.num_workers}, medians of {args.rounds} interleaved rounds; targets met in "
          f"{len(rows) - len(missed)} of {len(rows)} cases"
          + "".join(f"\n  missed: {label}" for label in missed))
    for shape in ((args.batch_size, 1, 28, 28), (args.batch_size, 3, 32, 32)):
        randaugment, masked_fill, erasing = op_ms(shape)
        print(f"{tuple(shape)}: RandAugment 2 9 {randaugment:.2f} ms; Cutout 8 px "
              f"{masked_fill:.2f} ms (masked fill), {erasing:.2f} ms (timm's RandomErasing)")


if __name__ == "__main__":
    main()
