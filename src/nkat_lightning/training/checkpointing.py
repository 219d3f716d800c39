"""Checkpoints that survive interruption: atomic writes, a ``last.ckpt`` that is always the
newest state (with one previous generation), a checkpoint on Ctrl-C / SIGTERM, and the choice
of the newest readable one a re-run resumes from."""

from __future__ import annotations

import logging
import os
import zipfile
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
from lightning.fabric.utilities.seed import _collect_rng_states, _set_rng_states
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, OnExceptionCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from nkat_lightning.errors import UserError

INTERRUPTED = "interrupted"  # checkpoints/interrupted.ckpt
LAST = "last"
PREVIOUS = "last.prev"  # the generation before last.ckpt
log = logging.getLogger(__name__)  # Hydra shows it and writes it to train.log


class CheckpointWriteError(UserError):
    """A checkpoint could not be written (disk full, permissions); the older ones are intact."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes next to the target, flushes to disk, then renames: a kill at any moment leaves
    either the previous checkpoint or the new one, never half a file. Replacing ``last.ckpt``
    keeps the one before as ``last.prev.ckpt`` while ``last.ckpt`` stays in place. (Lightning's own write
    goes through a temporary file in the system temp folder, whose move onto another file
    system is a copy, not a rename.)"""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        path = Path(path)
        partial = path.with_name(f".{path.name}.partial")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(partial, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            if path.name == f"{LAST}.ckpt" and path.is_file() and unreadable(path) is None:
                keep_previous_generation(path)
            os.replace(partial, path)  # the target exists at every moment, old or new
        except (OSError, RuntimeError) as error:  # torch reports a failed write as RuntimeError
            partial.unlink(missing_ok=True)
            kept = checkpoint_to_resume(path.parent, quiet=True)
            raise CheckpointWriteError(
                f"could not write the checkpoint {path}: {error}; the run stopped, "
                f"{f'{kept} is kept' if kept else 'no earlier checkpoint exists'}. Free space "
                "(or fix the folder's permissions) and run the same command again to resume"
            ) from None


def keep_previous_generation(path: Path) -> None:
    """Hard-links ``path`` as ``last.prev.ckpt`` so that ``path`` itself never disappears
    (a rename would leave a moment without ``last.ckpt``); renames where links are refused."""
    previous, link = path.with_name(f"{PREVIOUS}.ckpt"), path.with_name(f".{PREVIOUS}.link")
    link.unlink(missing_ok=True)
    try:
        os.link(path, link)
    except OSError:  # a file system without hard links
        os.replace(path, previous)
        return
    os.replace(link, previous)


class NewestCheckpoint(ModelCheckpoint):
    """``last.ckpt``, always the newest training state: written at every epoch end whatever
    validation did, and every ``minutes`` of training mid-epoch; the one before it is kept as
    ``last.prev.ckpt``, so a fault during a write never leaves only a broken file. (Lightning's
    ``save_last`` writes ``last.ckpt`` only when the same callback also wrote a top-k
    checkpoint, i.e. only when validation improved.)"""

    def __init__(self, dirpath: str, minutes: float) -> None:
        super().__init__(dirpath=dirpath, save_top_k=0, save_last=True,
                         enable_version_counter=False, train_time_interval=timedelta(minutes=minutes))

    def _save_newest(self, trainer, at_train_epoch_end: bool) -> None:
        # not Lightning's same-step skip: a timed save on an epoch's last batch holds the state
        # before validation, and a resume from it would skip that validation
        skip = bool(trainer.fast_dev_run) or trainer.state.fn != TrainerFn.FITTING or \
            trainer.sanity_checking
        if not skip and self._should_save_on_train_epoch_end(trainer) == at_train_epoch_end:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_validation_end(self, trainer, pl_module) -> None:
        self._save_newest(trainer, at_train_epoch_end=False)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._save_newest(trainer, at_train_epoch_end=True)


class RandomStateCheckpoint(Callback):
    """Saves the Python, NumPy and torch (and CUDA) random states in every checkpoint and sets
    them again on resume, which Lightning does not: a run resumed from an epoch-end checkpoint
    then draws the same shuffles, augmentations and dropout masks as the uninterrupted run.
    Stored as tensors and lists, so checkpoints still load with ``weights_only=True``. Set
    again only when fitting (testing a checkpoint must not rewind the random stream)."""

    fitting = False

    def setup(self, trainer, pl_module, stage: str) -> None:  # before a checkpoint is restored
        self.fitting = stage == "fit"

    def state_dict(self) -> dict:
        states = _collect_rng_states()
        kind, keys, position, has_gauss, gauss = states["numpy"]
        states["numpy"] = [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss]
        version, internal, python_gauss = states["python"]
        states["python"] = [version, list(internal), python_gauss]
        return states

    def load_state_dict(self, state_dict: dict) -> None:
        if not self.fitting:
            return
        states = dict(state_dict)
        kind, keys, position, has_gauss, gauss = states["numpy"]
        states["numpy"] = (kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss)
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        states["torch.cuda"] = states.get("torch.cuda", [])[:gpus]  # resumed on fewer GPUs
        if len(states["torch.cuda"]) < gpus:
            states.pop("torch.cuda")
        _set_rng_states(states)


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


def unreadable(path: Path) -> str | None:
    """Why ``path`` is not a whole checkpoint (torch's zip archive, every member's CRC checked),
    or None when it is."""
    try:
        with zipfile.ZipFile(path) as archive:
            broken = archive.testzip()
    except Exception as error:  # whatever a damaged archive raises
        return str(error) or type(error).__name__
    return f"member {broken} is corrupt" if broken else None


def checkpoint_to_resume(checkpoint_dir: Path, quiet: bool = False) -> Path | None:
    """The newest readable of ``interrupted.ckpt``, ``last.ckpt`` and ``last.prev.ckpt``, or
    None; each newer one that is broken is skipped with one line saying why."""
    found = [checkpoint_dir / f"{name}.ckpt" for name in (INTERRUPTED, LAST, PREVIOUS)]
    for path in sorted((p for p in found if p.is_file()), key=lambda p: p.stat().st_mtime,
                       reverse=True):
        reason = unreadable(path)
        if reason is None:
            return path
        if not quiet:
            log.warning(f"skipping {path}: not a readable checkpoint ({reason})")
    return None


class CheckpointMismatchError(UserError):
    """A file given as a checkpoint is none, or belongs to a model of another shape."""


def read_checkpoint(path: Path | str) -> dict:
    """A training checkpoint, loaded weights-only on the CPU; anything else is one line."""
    path = Path(path)
    reason = unreadable(path)
    if reason is None:
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # whatever torch's unpickler refuses
            reason = str(error).splitlines()[0] or type(error).__name__
    if reason is None and not {"state_dict", "hyper_parameters"} <= set(checkpoint):
        reason = "it holds no model state and settings"
    if reason is not None:
        raise CheckpointMismatchError(
            f"{path}: not a checkpoint of this framework ({reason}); give a .ckpt file that a "
            "training run wrote (<run folder>/checkpoints)")
    return checkpoint


def state_differences(expected: dict, found: dict) -> list[str]:
    """How the tensors of ``found`` differ from ``expected``: shapes, missing and extra keys
    (the best-so-far metric, which older checkpoints lack, aside)."""
    differences = [f"{key} is {tuple(found[key].shape)} there, {tuple(value.shape)} here"
                   for key, value in expected.items()
                   if key in found and tuple(found[key].shape) != tuple(value.shape)]
    differences += [f"{key} is missing" for key in expected
                    if key not in found and not key.startswith("val_acc_best")]
    differences += [f"{key} is not in this model" for key in found if key not in expected]
    return differences


def check_checkpoint_fits(module: torch.nn.Module, path: Path | str) -> None:
    """Raise one line unless ``path`` is a checkpoint of ``module``'s exact shape."""
    differences = state_differences(module.state_dict(), read_checkpoint(path)["state_dict"])
    if differences:
        more = f" (and {len(differences) - 3} more)" if len(differences) > 3 else ""
        raise CheckpointMismatchError(
            f"{path}: not a checkpoint of this model: {'; '.join(differences[:3])}{more}; "
            "train with the settings it was trained with, or resume=never to start afresh")
