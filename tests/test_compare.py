"""``python -m nkat_lightning.compare``: groups runs by their overrides minus the seed, averages
finished runs only, and tests each group against the baseline."""

from __future__ import annotations

import json
import statistics

import pytest
from scipy import stats

from helpers import FAST, TINY_MODEL, run_hydra_main
from nkat_lightning import compare as compare_entry
from nkat_lightning import train as train_entry
from nkat_lightning.errors import UserError
from nkat_lightning.search.compare import compare


def fake_run(root, number: int, overrides: list[str], results: dict | None):
    """A run folder as Hydra and train() leave it."""
    run = root / f"{number}_{','.join(overrides)}"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if results is not None:
        (run / "results.json").write_text(json.dumps(results))
    return run


def figures(val: float, test: float) -> dict:
    return {"val_acc_best": val, "test_acc": test, "test_tpe": test * 2, "params": 1000,
            "wall_time_s": 10.0, "seed": 0}


def test_groups_average_finished_runs_and_test_against_the_baseline(tmp_path):
    plain = [(0.80, 0.79), (0.82, 0.80), (0.81, 0.81)]
    top_k = [(0.85, 0.84), (0.86, 0.86), (0.84, 0.85)]
    number = 0
    for (val, test), seed in zip(plain, range(3), strict=True):
        fake_run(tmp_path, number, [f"seed={seed}", "model.top_k=null"], figures(val, test))
        number += 1
    for (val, test), seed in zip(top_k, range(3), strict=True):
        fake_run(tmp_path, number, [f"seed={seed}", "model.top_k=6"], figures(val, test))
        number += 1
    fake_run(tmp_path, number, ["seed=3", "model.top_k=6"], None)  # killed
    fake_run(tmp_path, number + 1, ["seed=4", "model.top_k=6"], {**figures(0.9, 0.9),
                                                                  "pruned": {"epoch": 0}})
    result = compare([tmp_path], baseline="model.top_k=null")
    groups = {g["group"]: g for g in result["groups"]}
    assert result["baseline"] == "model.top_k=null" and groups["model.top_k=6"]["n"] == 3
    assert groups["model.top_k=6"]["test_acc"]["mean"] == pytest.approx(0.85)
    assert groups["model.top_k=6"]["test_acc"]["std"] == pytest.approx(
        statistics.stdev([t for _, t in top_k]))
    versus = groups["model.top_k=6"]["vs_baseline"]["val_acc_best"]
    expected = stats.ttest_ind([v for v, _ in top_k], [v for v, _ in plain], equal_var=False)
    assert versus["diff"] == pytest.approx(0.04) and versus["p"] == pytest.approx(expected.pvalue)
    assert sorted(r["status"] for r in result["not_averaged"]) == ["pruned", "unfinished"]


def test_a_baseline_that_matches_no_group_is_one_line(tmp_path, capsys):
    fake_run(tmp_path, 0, ["model.top_k=6"], figures(0.8, 0.8))
    with pytest.raises(UserError, match="matches 0 groups"):
        compare([tmp_path], baseline="model.top_k=3")
    with pytest.raises(SystemExit) as exit_info:
        compare_entry.main([str(tmp_path / "nowhere")])
    assert exit_info.value.code == 2 and "no such folder" in capsys.readouterr().err


@pytest.mark.slow
def test_compare_reads_a_real_seed_sweep(synthetic_root, tmp_path, monkeypatch, capsys):
    sweep = tmp_path / "sweep"
    run_hydra_main(monkeypatch, train_entry.main, "-m", "seed=0,1", "model.top_k=null,2",
                   "data=mnist", *TINY_MODEL, *FAST, f"paths.data_dir={synthetic_root}",
                   f"hydra.sweep.dir={sweep}")
    compare_entry.main([str(sweep), "--baseline", "model.top_k=null"])
    out = capsys.readouterr().out
    assert "| `model.top_k=2` | 2 |" in out and "| `model.top_k=null` | 2 |" in out
    saved = json.loads((sweep / "compare.json").read_text())
    assert [g["n"] for g in saved["groups"]] == [2, 2] and not saved["not_averaged"]
    assert (sweep / "compare.png").stat().st_size > 10_000 and (sweep / "compare.md").is_file()
