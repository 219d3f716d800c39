"""What a run keeps through faults: last.ckpt is always the newest state (one generation
back kept), a broken newest checkpoint is skipped, the best-so-far survives a resume, a full
disk ends in one line, one process per run folder, and the same command finds its folder."""

import json
import logging
import signal
import subprocess

import pytest
import torch
import torch.nn.functional as F

from helpers import FAST, SUBPROCESS_ENV, TINY_MODEL, compose_train, module_command, run_hydra_main
from nkat_lightning import train as train_entry
from nkat_lightning.training import checkpointing
from nkat_lightning.training.fit import train
from nkat_lightning.training.module import NKATLitModule
from nkat_lightning.training.run_lock import run_folder_lock

RUN = ["data=mnist", *TINY_MODEL, *FAST]


def saved(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_last_ckpt_is_the_newest_state_even_when_validation_does_not_improve(synthetic_root,
                                                                             tmp_path):
    # a learning rate of ~0: validation stays the same, so no new best checkpoint after epoch 0
    results = train(compose_train([*RUN, "trainer.max_epochs=3", "optim.lr=1e-12"], tmp_path,
                                  data_root=synthetic_root))
    checkpoints = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == [
        "best-epoch000.ckpt", "last.ckpt", "last.prev.ckpt"]  # no last-v1.ckpt
    assert saved(checkpoints / "last.ckpt")["global_step"] == results["global_step"] == 6
    assert saved(checkpoints / "last.prev.ckpt")["global_step"] == 4


def test_last_ckpt_never_disappears_while_a_new_one_replaces_it(tmp_path, monkeypatch):
    # a reader polling last.ckpt (or a kill between two renames) must always find a file
    last, replace = tmp_path / "last.ckpt", checkpointing.os.replace
    missing = []

    def watched_replace(source, target):
        missing.append(not last.is_file())
        replace(source, target)

    monkeypatch.setattr(checkpointing.os, "replace", watched_replace)
    io = checkpointing.AtomicCheckpointIO()
    for step in range(3):
        io.save_checkpoint({"global_step": step}, last)
    assert missing[0] and not any(missing[1:])  # only the very first write finds none
    assert saved(last)["global_step"] == 2
    assert saved(tmp_path / "last.prev.ckpt")["global_step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt", "last.prev.ckpt"]


def test_a_file_system_without_hard_links_still_keeps_the_previous_generation(tmp_path,
                                                                              monkeypatch):
    def no_links(*args):
        raise OSError("Operation not permitted")

    monkeypatch.setattr(checkpointing.os, "link", no_links)
    io, last = checkpointing.AtomicCheckpointIO(), tmp_path / "last.ckpt"
    for step in range(2):
        io.save_checkpoint({"global_step": step}, last)
    assert saved(last)["global_step"] == 1 and saved(tmp_path / "last.prev.ckpt")["global_step"] == 0


def test_a_broken_newest_checkpoint_is_skipped_for_the_one_before(synthetic_root, tmp_path,
                                                                  caplog):
    train(compose_train([*RUN, "trainer.max_epochs=2"], tmp_path, data_root=synthetic_root))
    run_dir = tmp_path / "run"
    (run_dir / "results.json").unlink()
    last = run_dir / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # a copy that broke off
    caplog.set_level(logging.INFO)
    results = train(compose_train([*RUN, "trainer.max_epochs=3"], tmp_path, data_root=synthetic_root))
    assert f"skipping {last}: not a readable checkpoint" in caplog.text
    assert f"resuming from {last.with_name('last.prev.ckpt')}" in caplog.text
    assert (results["epochs"], results["global_step"]) == (3, 6)  # as an uninterrupted run


def test_the_best_so_far_survives_a_resume(synthetic_root, tmp_path, monkeypatch):
    def ctrl_c_in_the_second_epoch(self, batch, batch_idx):
        if self.current_epoch == 1:
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(NKATLitModule, "on_train_batch_start", ctrl_c_in_the_second_epoch, raising=False)
        with pytest.raises(SystemExit):
            train(compose_train([*RUN, "trainer.max_epochs=2"], tmp_path, data_root=synthetic_root))
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Lightning ignores Ctrl-C after one
    run_dir = tmp_path / "run"
    first_best = saved(next((run_dir / "checkpoints").glob("best-*.ckpt")))
    first_acc = float(first_best["callbacks"][next(k for k in first_best["callbacks"]
                                                   if k.startswith("ModelCheckpoint"))]["best_model_score"])
    assert first_acc > 0

    def nothing_right(self, batch, batch_idx):  # after the resume, validation gets all wrong
        x, y = batch
        self.val_acc(F.one_hot((y + 1) % 10, 10).float(), y)
        self.log("val/acc", self.val_acc, on_step=False, on_epoch=True)

    monkeypatch.setattr(NKATLitModule, "validation_step", nothing_right)
    results = train(compose_train([*RUN, "trainer.max_epochs=2"], tmp_path, data_root=synthetic_root))
    assert results["epochs"] == 2 and results["metrics"]["val/acc"] == 0
    assert results["val_acc_best"] == pytest.approx(first_acc)  # not reset by the resume


def test_a_full_disk_ends_in_one_line_and_keeps_the_last_good_checkpoint(synthetic_root,
                                                                         tmp_path, monkeypatch):
    train(compose_train([*RUN, "trainer.max_epochs=1"], tmp_path, data_root=synthetic_root))
    run_dir = tmp_path / "run"
    (run_dir / "results.json").unlink()
    good = (run_dir / "checkpoints" / "last.ckpt").read_bytes()

    def no_space(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpointing.torch, "save", no_space)
    with pytest.raises(checkpointing.CheckpointWriteError, match="No space left on device") as error:
        train(compose_train([*RUN, "trainer.max_epochs=2"], tmp_path, data_root=synthetic_root))
    assert "last.ckpt is kept" in str(error.value) and "\n" not in str(error.value)
    assert (run_dir / "checkpoints" / "last.ckpt").read_bytes() == good
    assert not list((run_dir / "checkpoints").glob(".*.partial"))


def test_a_second_process_on_a_run_folder_in_use_stops_in_one_line(synthetic_root, tmp_path,
                                                                   monkeypatch, capsys, caplog):
    run_dir = tmp_path / "run"
    args = [*RUN, f"paths.data_dir={synthetic_root}", f"hydra.run.dir={run_dir}"]
    with run_folder_lock(run_dir):  # as a run in another terminal holds it
        with pytest.raises(SystemExit) as exit_info:
            run_hydra_main(monkeypatch, train_entry.main, *args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "is in use by PID" in err and "Traceback" not in err
    assert not (run_dir / "checkpoints").exists()

    (run_dir / ".lock").write_text(json.dumps({"pid": 1, "host": "h", "since": "then"}))
    run_hydra_main(monkeypatch, train_entry.main, *args)  # a lock left by a killed run
    out = capsys.readouterr()
    assert "from PID 1 on h since then, which is gone" in out.out + out.err + caplog.text
    assert (run_dir / "results.json").is_file() and (run_dir / ".lock").read_text() == ""


@pytest.mark.slow
def test_the_same_command_finds_its_folder_and_another_override_gets_a_new_one(synthetic_root,
                                                                             tmp_path):
    def run(*extra: str) -> subprocess.CompletedProcess:
        done = subprocess.run(module_command("nkat_lightning.train", *RUN, *extra,
                                             f"paths.data_dir={synthetic_root}"),
                              cwd=tmp_path, env=SUBPROCESS_ENV, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return done

    run()
    [folder] = (tmp_path / "logs" / "train" / "mnist").iterdir()
    again = run()
    assert "This run already finished" in again.stdout + again.stderr
    run("seed=7")
    assert len(list((tmp_path / "logs" / "train" / "mnist").iterdir())) == 2
    assert (folder / "results.json").is_file()


def test_last_ckpt_holds_the_validated_state_even_when_a_timed_save_took_the_last_batch(
        synthetic_root, tmp_path):
    results = train(compose_train([*RUN, "callbacks.newest_checkpoint.minutes=0.000001"],
                                  tmp_path, data_root=synthetic_root))  # a timed save every batch
    state = saved(tmp_path / "run" / "checkpoints" / "last.ckpt")["state_dict"]
    assert float(state["val_acc_best.max_value"]) == pytest.approx(results["val_acc_best"])


def test_a_run_resumed_after_its_last_epoch_still_reports_its_best(synthetic_root, tmp_path):
    first = train(compose_train(RUN, tmp_path, data_root=synthetic_root))
    (tmp_path / "run" / "results.json").unlink()  # killed while testing or writing its results
    again = train(compose_train(RUN, tmp_path, data_root=synthetic_root))
    assert again["val_acc_best"] == pytest.approx(first["val_acc_best"])
    assert again["metrics"]["val/tpe_best"] == pytest.approx(first["metrics"]["val/tpe_best"])
    assert again["test_acc"] == pytest.approx(first["test_acc"])
