"""The error boundary beyond the schema: libraries' refusals of the user's settings, unknown
keys, files that are not checkpoints or checkpoints of another model, data-dependent values;
and what it must not hide (a genuine bug, or anything under HYDRA_FULL_ERROR=1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import FAST, TINY_MODEL, compose_train, run_hydra_main
from nkat_lightning import analyze as analyze_entry
from nkat_lightning import eval as eval_entry
from nkat_lightning import train as train_entry
from nkat_lightning.errors import ConfigError
from nkat_lightning.training import fit
from nkat_lightning.training.fit import train


def one_line_exit(capsys, run) -> str:
    with pytest.raises(SystemExit) as exit_info:
        run()
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert exit_info.value.code == 2 and "Traceback" not in err and len(lines) == 1, err
    return lines[0]


@pytest.fixture
def tiny_checkpoint(synthetic_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    results = train(compose_train(["data=mnist", *TINY_MODEL, *FAST], out,
                                  data_root=synthetic_root))
    return results["best_ckpt"]


@pytest.mark.parametrize(("overrides", "start"), [
    (["trainer.precision=17"], "error: trainer: Trainer refused the settings (ValueError: Precision 17"),
    (["+trainer.foo=1"], "error: trainer: Trainer refused the settings (TypeError"),
    (["trainer.max_epochs=-5"], "error: trainer: Trainer refused the settings"),
    (["model.dpth=3"], "error: model.dpth: no such setting; did you mean model.depth?"),
    (["+model.foo=1"], "error: model.foo: no such setting"),
    (["aug.randaugment.q=1"], "error: aug.randaugment.q: no such setting"),
    (["data=svhn"], "error: data: there is no 'svhn'; give one of cifar10, emnist"),
    (["model.depth==3"], "error: Error parsing override 'model.depth==3'"),
    (["data.val_size=5000"], "error: data.val_size: 5000 leaves no training image"),
])
def test_mistakes_outside_the_schema_end_in_one_line(overrides, start, synthetic_root, tmp_path,
                                                     monkeypatch, capsys):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    line = one_line_exit(capsys, lambda: run_hydra_main(
        monkeypatch, train_entry.main, "data=mnist", *TINY_MODEL, *FAST, *overrides,
        f"paths.data_dir={synthetic_root}", f"hydra.run.dir={tmp_path / 'run'}"))
    assert line.startswith(start), line


@pytest.mark.parametrize("command", [eval_entry, analyze_entry])
@pytest.mark.parametrize("beside_a_run", [False, True])
def test_a_file_that_is_no_checkpoint_is_one_line(command, beside_a_run, tiny_checkpoint,
                                                   tmp_path, capsys):
    folder = Path(tiny_checkpoint).parent if beside_a_run else tmp_path  # with config.yaml
    fake = folder / "notes.ckpt"
    fake.write_text("not a checkpoint")
    line = one_line_exit(capsys, lambda: command.main([str(fake)]))
    assert line.startswith(f"error: {fake}: not a checkpoint of this framework")


def test_resuming_from_another_models_checkpoint_says_what_differs(tiny_checkpoint,
                                                                   synthetic_root, tmp_path,
                                                                   monkeypatch, capsys):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    line = one_line_exit(capsys, lambda: run_hydra_main(
        monkeypatch, train_entry.main, "data=mnist", "model.embed_dim=16", "model.depth=2",
        "model.num_heads=2", *FAST, f"resume={tiny_checkpoint}",
        f"paths.data_dir={synthetic_root}", f"hydra.run.dir={tmp_path / 'run'}"))
    assert f"{tiny_checkpoint}: not a checkpoint of this model: net." in line
    assert "there, " in line and "resume=never" in line


def test_a_genuine_bug_keeps_its_traceback(synthetic_root, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(fit, "fit_and_test", broken)
    with pytest.raises(ZeroDivisionError):
        run_hydra_main(monkeypatch, train_entry.main, "data=mnist", *FAST,
                       f"paths.data_dir={synthetic_root}", f"hydra.run.dir={tmp_path / 'run'}")


def test_hydra_full_error_shows_the_traceback_of_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(ConfigError, match="optim.lr"):
        run_hydra_main(monkeypatch, train_entry.main, "optim.lr=0",
                       f"hydra.run.dir={tmp_path / 'run'}")
