"""``python -m nkat_lightning.analyze`` on a tiny trained run, and the pieces it computes."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from helpers import FAST, TINY_MODEL, compose_train
from nkat_lightning.analysis.figures import TEMPERATURE_FACTORS, analyze
from nkat_lightning.analysis.statistics import attention_rollout, attention_statistics, reliability_bins
from nkat_lightning.training.fit import train


@pytest.fixture(scope="module")
def nkat_run(synthetic_root, tmp_path_factory):
    """A tiny run with every NKAT extension on: learnable temperature, top-k, modulation."""
    out = tmp_path_factory.mktemp("analyze")
    cfg = compose_train(["data=mnist", *TINY_MODEL, *FAST, "model.top_k=3",
                         "model.nkat_strength=0.5", "model.learnable_temperature=true",
                         "trainer.limit_test_batches=null"], out, data_root=synthetic_root)
    return Path(cfg.paths.output_dir), train(cfg)


def test_analyze_writes_files_that_make_sense(nkat_run):
    run_dir, results = nkat_run
    analysis = analyze(run_dir, images=4)
    saved = json.loads((run_dir / "analysis" / "analysis.json").read_text())
    assert saved["accuracy"] == pytest.approx(results["test_acc"])
    for name in ("rollout", "confusion_matrix", "per_class_accuracy", "calibration", "layers"):
        assert (run_dir / "analysis" / f"{name}.png").stat().st_size > 1000
    assert sum(map(sum, analysis["confusion_matrix"])) == analysis["images"] == 80
    assert 0 <= analysis["ece"] <= 1
    maps = torch.tensor(analysis["rollout"]["maps"])
    assert maps.shape == (4, 28, 28)
    assert torch.allclose(maps.amin((1, 2)), torch.zeros(4))
    assert torch.allclose(maps.amax((1, 2)), torch.ones(4))
    assert [row["factor"] for row in analysis["temperature_sweep"]] == TEMPERATURE_FACTORS
    unscaled = analysis["temperature_sweep"][TEMPERATURE_FACTORS.index(1.0)]
    assert unscaled["accuracy"] == pytest.approx(analysis["accuracy"])
    nkat = analysis["nkat_parameters"]
    assert len(nkat) == 2 and all(row["temperature_learnable"] for row in nkat)
    assert all(row["alpha"] is not None and row["beta"] is not None for row in nkat)
    # top-k 3 of 17 tokens: 14 of every 17 attention weights are exactly zero
    assert all(s["zero_fraction"] == pytest.approx(14 / 17) for s in analysis["attention"])


@pytest.mark.slow
def test_analyze_logs_its_images_to_wandb_offline(nkat_run, tmp_path, monkeypatch):
    run_dir = shutil.copytree(nkat_run[0], tmp_path / "run")
    config = OmegaConf.load(run_dir / "config.yaml")
    config.logger.wandb = {"project": "nkat-lightning", "group": "auto", "offline": "auto"}
    OmegaConf.save(config, run_dir / "config.yaml")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    analyze(run_dir, images=2)
    [run] = (run_dir / "wandb").glob("offline-run-*")
    assert list(run.glob("run-*.wandb"))
    assert len(list(run.glob("files/media/images/*.png"))) == 5


def test_rollout_of_identity_attention_is_the_class_tokens_own():
    """With attention to self only, the class token's roll-out over the patches is flat (0)."""
    eye = torch.eye(5).expand(2, 3, 5, 5)
    heat = attention_rollout([eye, eye], grid=(2, 2), img_size=4)
    assert heat.shape == (2, 4, 4) and torch.count_nonzero(heat) == 0


def test_uniform_attention_has_full_entropy_and_no_zeros():
    [stats] = attention_statistics([torch.full((1, 2, 4, 4), 0.25)])
    assert stats["normalized_entropy"] == pytest.approx(1.0) and stats["zero_fraction"] == 0


def test_reliability_bins_count_every_prediction():
    probs = torch.tensor([[0.95, 0.05], [0.55, 0.45], [0.2, 0.8]])
    bins = reliability_bins(probs, torch.tensor([0, 1, 1]), n_bins=10)
    assert sum(b["count"] for b in bins) == 3
    assert bins[9]["accuracy"] == 1.0 and bins[5]["accuracy"] == 0.0
