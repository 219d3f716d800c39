"""Checkpoints that survive interruption: atomic writes, a periodic last.ckpt, a checkpoint
on Ctrl-C / SIGTERM, and the choice of which one a re-run resumes from."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import torch
from lightning.pytorch.callbacks import ModelCheckpoint, OnExceptionCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

INTERRUPTED = "interrupted"  # checkpoints/interrupted.ckpt
LAST = "last"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes next to the target, flushes to disk, then renames: a kill at any moment leaves
    either the previous checkpoint or the new one, never half a file. (Lightning's own write
    goes through a temporary file in the system temp folder, whose move onto another file
    system is a copy, not a rename.)"""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        with open(partial, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)


def periodic_checkpoint(dirpath: str, minutes: float) -> ModelCheckpoint:
    """``last.ckpt`` every ``minutes`` of training, mid-epoch too (besides every epoch end)."""
    return ModelCheckpoint(dirpath=dirpath, save_top_k=0, save_last=True,
                           train_time_interval=timedelta(minutes=minutes))


class InterruptCheckpoint(OnExceptionCheckpoint):
    """On Ctrl-C or SIGTERM during training, saves ``interrupted.ckpt`` before the run exits
    (Lightning stops after the current batch). Nothing is saved when other exceptions end the
    run (a NaN loss keeps the last good checkpoint), nor during validation or testing, when
    the module may hold the EMA weights instead of its own (the newest last.ckpt serves
    then). Removed again when the run finishes."""

    def __init__(self, dirpath: str) -> None:
        super().__init__(dirpath=dirpath, filename=INTERRUPTED)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        interrupted = isinstance(exception, KeyboardInterrupt | SIGTERMException)
        training = trainer.state.fn == TrainerFn.FITTING and trainer.training
        if interrupted and training:
            super().on_exception(trainer, pl_module, exception)


def checkpoint_to_resume(checkpoint_dir: Path) -> Path | None:
    """The newest of ``interrupted.ckpt`` and ``last.ckpt``, or None."""
    found = [checkpoint_dir / f"{name}.ckpt" for name in (INTERRUPTED, LAST)]
    found = [path for path in found if path.is_file()]
    return max(found, key=lambda path: path.stat().st_mtime) if found else None
