"""Does the data pipeline keep up with the model? Measured side by side in one run.

For each case prints images/s of (a) the data pipeline alone (the train DataLoader), (b) the
model's training step alone on a fixed batch, (c) the real training loop (Lightning fit), and
the ratio (c)/(b); the target is >= 0.90.

Data: synthetic files in each data set's native format (MNIST IDX / CIFAR-10 pickles, read by
torchvision's loaders), since the real CIFAR-10 is not available offline here.

    python benchmarks/pipeline.py [--batches 30] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torchvision.datasets import cifar

from nkat_lightning.config.checks import validate_config
from nkat_lightning.config.compose import compose_train_config
from nkat_lightning.config.instantiate import build
from nkat_lightning.data.synthetic import write_cifar10, write_mnist_like
from nkat_lightning.training.module import NKATLitModule

CASES = [  # (label, overrides): the default pack on MNIST shape, strong on CIFAR-10 shape
    ("mnist-shape, default (aug=none)", ["data=mnist"]),
    ("mnist-shape, aug=basic", ["data=mnist", "aug=basic"]),
    ("cifar10-shape, compact, aug=strong", ["experiment=compact_cifar10", "aug=strong"]),
]
WARMUP = 5


class StepTimer(Callback):
    """Wall time of training batches after the first ``WARMUP`` ones."""

    def __init__(self) -> None:
        self.start = self.end = 0.0
        self.images = 0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx == WARMUP:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if batch_idx >= WARMUP:
            self.images += batch[0].shape[0]
            self.end = time.perf_counter()

    def rate(self) -> float:
        return self.images / (self.end - self.start)


def pipeline_rate(datamodule, batches: int) -> float:
    """Batches as the model gets them: the loader, then normalisation (and Cutout)."""
    loader = iter(datamodule.train_dataloader())
    for _ in range(WARMUP):
        next(loader)
    start, images = time.perf_counter(), 0
    for _ in range(batches):
        images += datamodule.to_model_input(next(loader)[0], train=True).shape[0]
    return images / (time.perf_counter() - start)


def model_rate(module: NKATLitModule, batch, batches: int) -> float:
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)
    module.train()
    module.log = lambda *args, **kwargs: None  # outside a Trainer: no logging
    for step in range(WARMUP + batches):
        if step == WARMUP:
            start = time.perf_counter()
        x, y = batch[0].clone(), batch[1]
        loss = module.training_step((x, y), step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return batch[0].shape[0] * batches / (time.perf_counter() - start)


def loop_rate(cfg, resolved, datamodule, batches: int) -> float:
    module = NKATLitModule(resolved["model"], resolved["optim"], aug=resolved["aug"])
    timer = StepTimer()
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=1,
                        limit_train_batches=WARMUP + batches, limit_val_batches=0,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[timer])
    trainer.fit(module, datamodule=datamodule)
    return timer.rate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=3, help="(b), (c) pairs; medians")
    args = parser.parse_args()
    # synthetic CIFAR-10 pickles cannot match the real MD5 sums
    cifar.check_integrity = lambda path, md5=None: Path(path).is_file()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        n = (WARMUP + args.batches + 2) * 128
        write_mnist_like(root, "MNIST", n_train=n + 64, n_test=64)
        write_cifar10(root, n_per_batch=n // 5 + 64, n_test=64)
        rows = []
        for label, overrides in CASES:
            cfg = compose_train_config(
                [*overrides, f"data.num_workers={args.num_workers}", "data.val_size=64"],
                Path(tmp) / label.replace(" ", "_"), root)
            resolved = validate_config(cfg)
            datamodule = build(cfg.data, aug=resolved["aug"], _convert_="all")
            datamodule.prepare_data()
            datamodule.setup("fit")
            x, y = next(iter(datamodule.train_dataloader()))
            batch = (datamodule.to_model_input(x, train=True), y)
            module = NKATLitModule(resolved["model"], resolved["optim"], aug=resolved["aug"])
            a = pipeline_rate(datamodule, args.batches)
            b, c = [], []
            for _ in range(args.rounds):  # interleaved: a slow spell hits (b) and (c) alike
                b.append(model_rate(module, batch, args.batches))
                c.append(loop_rate(cfg, resolved, datamodule, args.batches))
            rows.append((label, a, statistics.median(b), statistics.median(c)))
    print(f"\n{'case':34} {'(a) data':>10} {'(b) model':>10} {'(c) loop':>10} {'(c)/(b)':>8}")
    for label, a, b, c in rows:
        print(f"{label:34} {a:10.0f} {b:10.0f} {c:10.0f} {c / b:8.2f}")
    print(f"images/s, batch 128, {torch.get_num_threads()} threads, "
          f"data.num_workers={args.num_workers}, median of {args.rounds} interleaved rounds; "
          "target (c)/(b) >= 0.90")


if __name__ == "__main__":
    main()
