"""The GPU path (``pytest -m gpu``, run by ``make gpu-check``): each test skips without CUDA."""

import subprocess

import pytest
import torch

from helpers import SUBPROCESS_ENV, TINY_MODEL, compose_train, module_command, probe_forward
from nkat_lightning.models import ModelConfig, NKATViT
from nkat_lightning.training.fit import train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(),
                       reason="needs a CUDA device: run make gpu-check on a GPU machine"),
]

ON_GPU = ["trainer=gpu", "trainer.max_epochs=1", "trainer.limit_train_batches=3",
          "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "data.num_workers=0",
          "data.batch_size=16", "data.val_size=32", "callbacks=minimal",
          "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
NKAT = ["model.top_k=3", "model.top_p=0.9", "model.nkat_strength=0.5", "model.temperature=0.7"]


def fit(overrides: list[str], tmp_path, synthetic_root) -> dict:
    cfg = compose_train(["data=mnist", *TINY_MODEL, "model.conv_stem=tiny", *ON_GPU, *overrides],
                        tmp_path, data_root=synthetic_root)
    return train(cfg)


@pytest.mark.parametrize("precision", ["bf16-mixed", "32-true"])
def test_fit_and_test_on_the_gpu(precision, synthetic_root, tmp_path, monkeypatch):
    seen = probe_forward(monkeypatch)
    results = fit([f"trainer.precision={precision}", *NKAT], tmp_path, synthetic_root)
    assert results["test_acc"] is not None and 0 <= results["test_acc"] <= 1
    dtype = torch.bfloat16 if precision == "bf16-mixed" else torch.float32
    assert seen and all(s["logits"] == dtype for s in seen)
    assert all(s["autocast"] == (torch.bfloat16 if precision == "bf16-mixed" else False)
               for s in seen)
    checkpoint = torch.load(results["best_ckpt"], weights_only=True, map_location="cpu")
    assert all(t.dtype == torch.float32 for t in checkpoint["state_dict"].values()
               if t.is_floating_point())  # mixed precision keeps fp32 master weights


def test_compiled_run_on_the_gpu(synthetic_root, tmp_path, monkeypatch):
    """As its CPU twin: the compiled network ran (in one graph: the filter is a custom op)."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    seen = probe_forward(monkeypatch)
    results = fit(["trainer.precision=bf16-mixed", "model.compile=true", *NKAT], tmp_path,
                  synthetic_root)
    assert results["test_acc"] is not None
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1
    assert not torch._dynamo.utils.counters["graph_break"]
    assert any(s["compiled"] and s["autocast"] == torch.bfloat16 for s in seen)
    torch._dynamo.reset()


def test_channels_last_on_the_gpu(synthetic_root, tmp_path, monkeypatch):
    seen = probe_forward(monkeypatch)
    results = fit(["trainer.precision=bf16-mixed", "model.channels_last=true"], tmp_path,
                  synthetic_root)
    assert results["test_acc"] is not None
    assert seen and all(s["input_channels_last"] and s["weight_channels_last"] for s in seen)


def test_ema_averages_on_the_gpu_and_its_weights_are_saved_and_tested(synthetic_root, tmp_path):
    results = fit(["optim.ema=0.5", "trainer.precision=bf16-mixed"], tmp_path, synthetic_root)
    checkpoint = torch.load(results["best_ckpt"], weights_only=True, map_location="cpu")
    averaged, raw = checkpoint["state_dict"], checkpoint["current_model_state"]
    moved = [k for k, v in raw.items() if v.is_floating_point() and not torch.equal(v, averaged[k])]
    assert moved  # the saved (validated, tested) weights are the average, not the raw ones
    assert results["test_acc"] is not None


@pytest.mark.parametrize("settings", [
    {"top_k": 5, "top_p": 0.8},
    {"nkat_strength": 0.5, "nkat_decay": 0.9},
    {"top_k": 5, "top_p": 0.8, "nkat_strength": 0.5, "temperature": 0.7},
], ids=["filters", "modulation", "all"])
def test_nkat_attention_in_bf16_matches_fp32(settings):
    torch.manual_seed(0)
    model = NKATViT(ModelConfig(img_size=32, in_chans=3, conv_stem="off", patch_size=4, embed_dim=64, depth=2,
                                num_heads=4, **settings)).cuda().eval()
    with torch.no_grad():  # spread the logits as training does: at init they nearly tie
        for block in model.blocks:
            block.attn.qkv.weight.mul_(4)
    x = torch.randn(64, 3, 32, 32, device="cuda")
    with torch.no_grad():
        reference = model(x)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            mixed = model(x)
    assert mixed.dtype == torch.bfloat16 and torch.isfinite(mixed).all()
    similarity = torch.nn.functional.cosine_similarity(mixed.float(), reference, dim=1)
    # top-k/top-p are thresholds: bf16 rounding flips a kept token in a few rows (on the CPU,
    # 2-3 of 64 samples move); every other row must agree as closely as the plain model's
    assert similarity.median() > 0.999 and (similarity > 0.99).float().mean() >= 0.9
    assert (mixed.argmax(1) == reference.argmax(1)).float().mean() >= 0.85


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="DDP needs 2 GPUs; this host has fewer")
def test_ddp_with_two_processes(synthetic_root, tmp_path):
    done = subprocess.run(
        module_command("nkat_lightning.train", "data=mnist", *TINY_MODEL, *ON_GPU,
                       "trainer=ddp", "trainer.devices=2", f"paths.data_dir={synthetic_root}",
                       f"hydra.run.dir={tmp_path / 'run'}"),
        cwd=tmp_path, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "run" / "results.json").is_file()
