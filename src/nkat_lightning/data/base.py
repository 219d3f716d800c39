"""The shared DataModule: where data comes from, the train/val split and the loaders.

Each data set is a small subclass that names its torchvision class and its native files.
"""

from __future__ import annotations

import abc
import functools
import gzip
import os
import shutil
import signal
import socket
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.utilities.seed import pl_worker_init_function
from torch.utils.data import DataLoader, Dataset, Subset, random_split

from nkat_lightning.config.instantiate import build
from nkat_lightning.config.schema import AugConfig, DataConfig, schema_of
from nkat_lightning.data.tensor_dataset import UInt8ImageDataset, images_and_targets, return_batch
from nkat_lightning.data.transforms import BatchTransform
from nkat_lightning.errors import ConfigError, DataNotFoundError, describe

DOWNLOAD_TIMEOUT_S = 30


def init_loader_worker(worker_id: int, rank: int = 0) -> None:
    """Loader workers leave SIGTERM and Ctrl-C to the main process, which stops after the batch
    and saves ``interrupted.ckpt``; a scheduler signals the whole process group, and a worker
    killed by it would end the run with a traceback instead. Seeds the worker as Lightning's
    own init function would (``seed_everything(workers=True)``), which this one replaces."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if int(os.environ.get("PL_SEED_WORKERS", 0)):
        pl_worker_init_function(worker_id, rank=rank)

class ImageDataModule(L.LightningDataModule, abc.ABC):
    """Train/val split of the official training set, the official test set for test.

    Loaders yield uint8 batches (see ``UInt8ImageDataset``); ``on_after_batch_transfer``
    normalises them on the device, after RandAugment and before Cutout in training.

    Data is looked for, in order: an already prepared ``root``; the original archive files in
    one of ``offline_dirs`` (prepared into ``root``); torchvision's download (checksums
    verified). When all fail, ``prepare_data`` raises one ``DataNotFoundError`` that lists
    what was tried.
    """

    #: torchvision's folder under ``root`` that holds the prepared files.
    folder: str = ""

    def __init__(self, config: DataConfig | dict, aug: AugConfig | dict | None = None) -> None:
        """``config``: the data group (a dict is checked into its schema); ``aug``: the
        augmentation pack for training (``AugConfig()``, the default job's ``flip``, when
        omitted; evaluation never augments)."""
        super().__init__()
        self.config = config = schema_of("data", config).coerce(config)
        self.aug = aug = AugConfig.coerce(aug or {})
        self.name = config.name
        self.root = Path(config.root).expanduser()
        self.mean, self.std = tuple(config.mean), tuple(config.std)
        self.batch_transform = BatchTransform(aug, self.mean, self.std, config.natural_images)
        self.batch_size = config.batch_size
        self.eval_batch_size = config.eval_batch_size
        self.pin_memory = (torch.cuda.is_available() if config.pin_memory == "auto"
                           else bool(config.pin_memory))
        self.offline_dirs = [Path(d).expanduser() for d in config.offline_dirs]
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    # -- what a subclass provides -------------------------------------------------------------

    @abc.abstractmethod
    def make_dataset(self, train: bool, transform=None, download: bool = False) -> Dataset:
        """The torchvision data set read from ``root`` (downloading it when asked)."""

    @abc.abstractmethod
    def native_files(self) -> list[str]:
        """Names of the original files that ``root/folder/raw`` must hold."""

    def prepare_from(self, source: Path) -> bool:
        """Copy this data set's original files from ``source`` into ``root``, decompressing
        ``.gz`` copies. True when every file was found."""
        found = {}
        for name in self.native_files():
            for candidate in (source / name, source / f"{name}.gz"):
                if candidate.is_file():
                    found[name] = candidate
                    break
        if len(found) < len(self.native_files()):
            return False
        raw_dir = self.root / self.folder / "raw"
        raw_dir.mkdir(parents=True, exist_ok=True)
        for name, path in found.items():
            opener = gzip.open if path.suffix == ".gz" else open
            tmp = raw_dir / f"{name}.part"
            with opener(path, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
            tmp.replace(raw_dir / name)
        return True

    # -- shared machinery -----------------------------------------------------------------------

    def prepared_problem(self) -> str | None:
        """Why ``root`` does not hold a readable copy ("not found", or what reading failed
        with, for a truncated or corrupt file); None when it does."""
        missing = [name for name in self.native_files()
                   if not any((self.root / self.folder).rglob(name))]
        if missing:
            return f"not found ({', '.join(missing)})"
        try:
            self.make_dataset(train=True)
            self.make_dataset(train=False)
        except Exception as error:  # torchvision's readers fail in many ways on a bad file
            return f"unreadable ({describe(error)})"
        return None

    def prepare_offline_copy(self, source: Path) -> str | None:
        """Prepare ``root`` from the original files in ``source``; None when that worked,
        else what went wrong."""
        if not source.is_dir():
            return "no such folder"
        try:
            if not self.prepare_from(source):
                return "original files not found"
        except Exception as error:  # a truncated .gz or archive
            return f"could not be copied ({describe(error)})"
        problem = self.prepared_problem()
        return None if problem is None else f"copied, but the copy is {problem}"

    def prepare_data(self) -> None:
        problem = self.prepared_problem()
        if problem is None:
            return
        tried = [f"prepared files under {self.root / self.folder}: {problem}"]
        for source in self.offline_dirs:
            state = self.prepare_offline_copy(source)
            if state is None:
                return
            tried.append(f"offline copy in {source}: {state}")
        if self.config.download:
            error = self._try_download()
            if error is None:
                return
            tried.append(f"torchvision download: {error}")
        else:
            tried.append("torchvision download: switched off (data.download=false)")
        raise DataNotFoundError(self.name, tried, self.missing_data_hint())

    def missing_data_hint(self) -> str:
        return (
            f"put the original files in one of data.offline_dirs, prepare {self.root / self.folder} "
            "yourself, or run once with network access (data.download=true)"
        )

    def _try_download(self) -> str | None:
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
        try:
            self.make_dataset(train=True, download=True)
            self.make_dataset(train=False, download=True)
        except Exception as error:  # network errors come in many types; all mean "not here"
            return describe(error)
        finally:
            socket.setdefaulttimeout(previous)
        return None

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit", "validate") and self.train_set is None:
            train_full = self.make_dataset(train=True)
            images, targets = images_and_targets(train_full)
            val_size = self.config.val_size
            if not 0 < val_size < len(targets):
                raise ConfigError(
                    f"data.val_size: {val_size} leaves no training image; give 1 to "
                    f"{len(targets) - 1} (this data set has {len(targets)} training images)")
            generator = torch.Generator().manual_seed(self.config.split_seed)
            train_idx, val_idx = random_split(
                range(len(targets)), [len(targets) - val_size, val_size],
                generator=generator,
            )
            full = UInt8ImageDataset(images, targets, train_full.classes)
            self.train_set = Subset(full, list(train_idx))
            self.val_set = Subset(full, list(val_idx))
        if stage in (None, "test", "predict") and self.test_set is None:
            test_full = self.make_dataset(train=False)
            self.test_set = UInt8ImageDataset(*images_and_targets(test_full), test_full.classes)

    def to_model_input(self, images: torch.Tensor, train: bool) -> torch.Tensor:
        """The loaders' uint8 images as the model's normalised float input."""
        return self.batch_transform(images, train)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, targets = batch
        return self.to_model_input(images, train=self.trainer.training), targets

    def loader_workers(self) -> int:
        """``num_workers``, with ``auto`` resolved: 0 where the model runs on the CPU (its
        threads use every core, and a batch is one indexing of an in-memory uint8 tensor, with
        augmentation on the batch after it), else min(4, cores per device - 1), so batches are
        indexed and pinned while the main process keeps the GPU busy."""
        if self.config.num_workers != "auto":
            return int(self.config.num_workers)
        if self.trainer is None or self.trainer.strategy.root_device.type == "cpu":
            return 0
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return max(0, min(4, (cores or 1) // max(1, self.trainer.num_devices) - 1))

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        workers = self.loader_workers()
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            drop_last=train,
            num_workers=workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.config.persistent_workers and workers > 0,
            collate_fn=return_batch,
            worker_init_fn=functools.partial(init_loader_worker, rank=self.trainer.global_rank
                                             if self.trainer else 0) if workers else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, train=False)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()


def build_datamodule(data: DataConfig | dict, aug: AugConfig | dict | None = None
                     ) -> ImageDataModule:
    """The DataModule the data group names (``_target_``, a trusted class), built from the
    checked config, with the augmentation pack ``aug`` for training (the default job's when
    omitted)."""
    config = schema_of("data", data).coerce(data)
    return build({"_target_": config._target_, "_partial_": True})(config, aug)
