"""Every experiment config runs a few batches on synthetic data; stage 2 carries the seed's flags."""

import math
import re
from pathlib import Path

import pytest
import torch

from helpers import compose_train
from nkat_lightning.config.checks import validate_config
from nkat_lightning.config.compose import CONFIG_DIR
from nkat_lightning.data import build_datamodule
from nkat_lightning.models import ModelConfig, NKATViT
from nkat_lightning.training.fit import train
from nkat_lightning.training.module import NKATLitModule

EXPERIMENTS = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"))
FEW_BATCHES = ["trainer.max_epochs=1", "trainer.limit_train_batches=2",
               "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
               "trainer.accelerator=cpu", "trainer.devices=1", "data.num_workers=0",
               "data.batch_size=8", "data.eval_batch_size=16", "data.val_size=16",
               "callbacks=minimal", "trainer.enable_progress_bar=false",
               "trainer.enable_model_summary=false"]


def eval_loss_before_and_after(module: NKATLitModule, batch, steps: int) -> tuple[float, float]:
    """The evaluation loss on ``batch`` before and after ``steps`` of the module's own training
    steps on it (its augmentation-free input, its loss, Mixup and optimiser, its learning rate)."""
    x, y = batch

    def loss() -> float:
        with torch.no_grad():
            return float(module.eval().eval_criterion(module(x), y))

    before = loss()
    optimizer = module.build_optimizer()
    module.train()
    for step in range(steps):
        optimizer.zero_grad()
        module.training_step((x.clone(), y), step).backward()
        optimizer.step()
    return before, loss()


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_runs_a_few_batches_and_its_training_lowers_the_loss(experiment,
                                                                         synthetic_root, tmp_path):
    cfg = compose_train([f"experiment={experiment}", *FEW_BATCHES], tmp_path,
                        data_root=synthetic_root)
    results = train(cfg)
    assert results["global_step"] == 2 and math.isfinite(results["test_loss"])
    # training moves: a few of the experiment's own steps on one batch lower its loss there
    resolved = validate_config(cfg)
    datamodule = build_datamodule(resolved["data"], resolved["aug"])
    datamodule.setup("fit")
    images, labels = next(iter(datamodule.train_dataloader()))
    torch.manual_seed(0)
    module = NKATLitModule(resolved["model"], resolved["optim"], resolved["data"], resolved["aug"])
    before, after = eval_loss_before_and_after(
        module, (datamodule.to_model_input(images, train=False), labels), steps=5)
    assert after < before - 0.01, (before, after)
    if cfg.get("gate"):
        gate = cfg.gate  # selection: validation only, test reported beside it
        assert gate.metric.startswith("val") and results["test_acc"] is not None
        assert results["gate"]["passed"] == (results[gate.metric] >= gate.threshold)


def test_stage2_sets_every_seed_flag(tmp_path):
    resolved = validate_config(compose_train(["experiment=stage2_cifar10"], tmp_path))
    model, aug, optim = resolved["model"], resolved["aug"], resolved["optim"]
    assert resolved["data"]["name"] == "cifar10"
    assert (model["conv_stem"], model["patch_size"], model["embed_dim"], model["depth"]) == (
        "tiny", 2, 384, 7)
    assert (model["temperature"], model["top_k"], model["top_p"]) == (0.65, 6, 0.80)
    assert (model["nkat_strength"], model["nkat_decay"]) == (0.0024, 0.99)
    assert (model["dropout_attn"], model["dropout_embed"]) == (0.17, 0.08)
    assert (aug["mixup"], aug["cutmix"], aug["randaugment"]) == (0.1, 0.2, {"n": 2, "m": 9})
    assert (optim["lr"], optim["warmup_epochs"], optim["ema"]) == (2e-4, 5, 0.9995)
    assert (resolved["trainer"]["max_epochs"], resolved["trainer"]["gradient_clip_val"]) == (40, 1.0)


def test_smoke_is_stage2_for_ten_epochs_with_the_gate(tmp_path):
    resolved = validate_config(compose_train(["experiment=stage2_cifar10_smoke"], tmp_path))
    assert resolved["trainer"]["max_epochs"] == 10 and resolved["model"]["depth"] == 7
    assert resolved["gate"] == {"metric": "val_acc_best", "threshold": 0.45}


@pytest.mark.parametrize("experiment", [e for e in EXPERIMENTS if re.search(r"_\d+k$", e)])
def test_an_experiment_named_by_its_size_has_that_many_parameters(experiment, tmp_path):
    resolved = validate_config(compose_train([f"experiment={experiment}"], tmp_path))
    params = sum(p.numel() for p in NKATViT(ModelConfig.from_dict(resolved["model"])).parameters())
    assert round(params / 1000) == int(re.search(r"_(\d+)k$", experiment).group(1)), params
