"""Every row of the README's bad-input table, run as the user types it: the run stops before
any work with that message on one line and no traceback."""

import re
from pathlib import Path

import pytest

from helpers import run_hydra_main
from nkat_lightning import train as train_entry

README = Path(__file__).resolve().parents[1] / "README.md"


def bad_input_rows() -> list[tuple[str, str]]:
    text = README.read_text()
    table = text[text.index("<!-- bad-input table"):text.index("<!-- end of bad-input table")]
    return re.findall(r"^\| `([^`]+)` \| `([^`]+)` \|$", table, flags=re.MULTILINE)


def test_the_table_is_there():
    assert len(bad_input_rows()) >= 20


@pytest.mark.parametrize(("overrides", "message"), bad_input_rows())
def test_bad_input_stops_before_work_with_one_line(overrides, message, monkeypatch, capsys,
                                                   tmp_path):
    run_dir = tmp_path / "run"
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        run_hydra_main(monkeypatch, train_entry.main, *overrides.split(),
                       f"paths.data_dir={tmp_path / 'no-data'}", f"hydra.run.dir={run_dir}")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert message in next(line for line in err.splitlines() if line.strip())
    assert not run_dir.exists() and not (tmp_path / "no-data").exists()  # no empty run folder


def test_only_a_folder_holding_nothing_but_hydras_files_is_removed(tmp_path):
    from nkat_lightning.training.fit import remove_if_empty_run_folder
    empty, kept = tmp_path / "empty", tmp_path / "kept"
    for folder in (empty, kept):
        (folder / ".hydra").mkdir(parents=True)
        (folder / ".hydra" / "config.yaml").write_text("a: 1\n")
        (folder / "train.log").write_text("started\n")
    (kept / "notes.txt").write_text("the user's own file\n")
    remove_if_empty_run_folder(empty)
    remove_if_empty_run_folder(kept)
    assert not empty.exists() and (kept / "notes.txt").is_file() and (kept / ".hydra").is_dir()
