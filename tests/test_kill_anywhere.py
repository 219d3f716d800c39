"""Kill anywhere: a seeded training on synthetic data is SIGKILLed at random moments of its
work (in training, validation, test, checkpoint and results writes: checkpoints are written
every few milliseconds here; the moments are drawn after the process has started its run, not
while it imports) and the same command is run again until it finishes; it always finishes,
with the epoch and step counts of an uninterrupted run."""

import json
import os
import random
import signal
import subprocess
import time

import pytest
import torch

from helpers import SUBPROCESS_ENV, TINY_MODEL, module_command
from nkat_lightning.data.synthetic import write_mnist_like

KILLER_SEEDS = [0, 1, 2]
MAX_KILLS = 3


def command(data, run_dir):
    return module_command(
        "nkat_lightning.train", "data=mnist", *TINY_MODEL, "seed=3", "trainer.accelerator=cpu",
        "trainer.devices=1", "data.batch_size=16", "data.val_size=32", "trainer.max_epochs=3",
        "trainer.limit_val_batches=2", "trainer.limit_test_batches=2",
        "trainer.enable_progress_bar=false", "callbacks.newest_checkpoint.minutes=0.0001",
        f"paths.data_dir={data}", f"hydra.run.dir={run_dir}")


def runs_started(run_dir) -> int:
    """How many processes have started their run in ``run_dir`` (each logs one "fit" line,
    after its imports and checks, just before it fits)."""
    log = run_dir / "train.log"
    return log.read_text().count(" - fit ") if log.is_file() else 0


def start(cmd, cwd) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=cwd, env=SUBPROCESS_ENV, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_until_started(process, run_dir, before: int) -> float:
    """Wait until ``process`` has started its run; the moment it did."""
    while runs_started(run_dir) == before:
        assert process.poll() is None or runs_started(run_dir) > before, "it ended unstarted"
        time.sleep(0.005)
    return time.monotonic()


def run_to_the_end(cmd, cwd, run_dir) -> float:
    """Run ``cmd`` to its end; the seconds of its work, from its start to its exit."""
    process = start(cmd, cwd)
    started = wait_until_started(process, run_dir, runs_started(run_dir))
    assert process.wait(timeout=600) == 0
    return time.monotonic() - started


@pytest.mark.slow
def test_killed_anywhere_the_same_command_always_finishes_the_run(tmp_path):
    data = tmp_path / "data"
    write_mnist_like(data, "MNIST", n_train=432, n_test=64)
    reference_dir = tmp_path / "reference"
    duration = run_to_the_end(command(data, reference_dir), tmp_path, reference_dir)
    reference = json.loads((reference_dir / "results.json").read_text())

    for killer_seed in KILLER_SEEDS:
        rng = random.Random(killer_seed)
        run_dir = tmp_path / f"killed{killer_seed}"
        kills = 0
        while kills < MAX_KILLS and not (run_dir / "results.json").is_file():
            before = runs_started(run_dir)
            process = start(command(data, run_dir), tmp_path)
            started = wait_until_started(process, run_dir, before)
            try:
                # within the first half of an uninterrupted run's work: a busy machine can make
                # an attempt faster than the reference, and a resumed one has less to do
                process.wait(timeout=max(0.0, started + rng.uniform(0.05, 0.5) * duration
                                         - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=60)
                kills += 1
        assert kills >= 1
        if not (run_dir / "results.json").is_file():
            run_to_the_end(command(data, run_dir), tmp_path, run_dir)
        results = json.loads((run_dir / "results.json").read_text())
        assert (results["epochs"], results["global_step"]) == (
            reference["epochs"], reference["global_step"]), f"killer seed {killer_seed}, {kills} kills"
        assert results["test_acc"] is not None
        assert not list((run_dir / "checkpoints").glob(".*.partial"))


@pytest.mark.slow
def test_killed_after_each_epoch_the_resumed_run_ends_exactly_as_the_uninterrupted_one(tmp_path):
    """Kills right after each epoch's checkpoint (only epoch-end checkpoints here): every
    resume starts on an epoch boundary, and the random states travel in the checkpoint, so the
    final metrics equal the uninterrupted run's."""
    data = tmp_path / "data"
    write_mnist_like(data, "MNIST", n_train=432, n_test=64)
    slow_checkpoints = ["callbacks.newest_checkpoint.minutes=10"]
    reference_dir, run_dir = tmp_path / "reference", tmp_path / "killed"
    run_to_the_end([*command(data, reference_dir), *slow_checkpoints], tmp_path, reference_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    for epoch in range(2):  # killed in epochs 1 and 2, after the checkpoints of epochs 0 and 1
        process = subprocess.Popen([*command(data, run_dir), *slow_checkpoints], cwd=tmp_path,
                                   env=SUBPROCESS_ENV, start_new_session=True,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while not (last.is_file() and saved_epoch(last) == epoch):
            assert process.poll() is None, "the run ended before it could be killed"
            time.sleep(0.01)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    run_to_the_end([*command(data, run_dir), *slow_checkpoints], tmp_path, run_dir)
    reference = json.loads((reference_dir / "results.json").read_text())
    results = json.loads((run_dir / "results.json").read_text())
    assert results["metrics"] == reference["metrics"]
    assert (results["epochs"], results["global_step"]) == (reference["epochs"], reference["global_step"])


def saved_epoch(path) -> int | None:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)["epoch"]
    except (OSError, RuntimeError, EOFError):  # replaced while being read
        return None
