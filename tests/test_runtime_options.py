"""``model.compile`` and ``model.channels_last``: how the network runs, not what it is."""

import pytest
import torch

from helpers import FAST, TINY_MODEL, compose_train, probe_forward
from nkat_lightning.models import ModelConfig, NKATViT
from nkat_lightning.training.fit import train
from nkat_lightning.training.module import NKATLitModule

STEM_MODEL = [*TINY_MODEL, "model.conv_stem=tiny"]


def plain_network(checkpoint_path: str) -> tuple[NKATViT, dict]:
    """The checkpoint's weights loaded strictly into a plain, uncompiled NKAT-ViT."""
    checkpoint = torch.load(checkpoint_path, weights_only=True)
    net = NKATViT(ModelConfig.from_dict(checkpoint["hyper_parameters"]["model"]))
    weights = {k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items()
               if k.startswith("net.")}  # the module also saves its best-so-far metric
    net.load_state_dict(weights, strict=True)
    return net.eval(), checkpoint


@pytest.mark.slow
def test_compiled_run_trains_compiled_and_saves_plain_checkpoints(synthetic_root, tmp_path):
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    cfg = compose_train(["data=mnist", *STEM_MODEL, *FAST, "model.compile=true", "optim.ema=0.9",
                         "model.top_k=3", "model.top_p=0.9", "model.nkat_strength=0.5"],
                        tmp_path, data_root=synthetic_root)
    results = train(cfg)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # the compiled path ran
    net, checkpoint = plain_network(results["best_ckpt"])
    assert not any("_orig_mod" in key for key in checkpoint["state_dict"])
    assert checkpoint["hyper_parameters"]["model"]["compile"] is True
    module = NKATLitModule(**checkpoint["hyper_parameters"])
    module.load_state_dict(checkpoint["state_dict"])  # strict: the names are the plain ones
    x = torch.randn(4, 1, 28, 28)
    module.setup("test")
    assert module.net._compiled_call_impl is None  # eval and analyze run the plain network
    module.setup("fit")
    with torch.no_grad():
        torch.testing.assert_close(module.eval()(x), net(x), rtol=1e-4, atol=1e-4)
    torch._dynamo.reset()


def test_channels_last_changes_the_layout_not_the_result(synthetic_root, tmp_path, monkeypatch):
    seen = probe_forward(monkeypatch)
    cfg = compose_train(["data=mnist", *STEM_MODEL, *FAST, "model.channels_last=true"],
                        tmp_path, data_root=synthetic_root)
    results = train(cfg)
    assert seen and all(s["input_channels_last"] and s["weight_channels_last"] for s in seen)
    net, checkpoint = plain_network(results["best_ckpt"])
    module = NKATLitModule(**checkpoint["hyper_parameters"]).eval()
    module.load_state_dict(checkpoint["state_dict"])
    stem_conv = module.net.patch_embed.backbone[1][1].conv  # 32 -> 64 channels
    assert stem_conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(module(x), net(x), rtol=1e-5, atol=1e-5)


def test_runtime_options_leave_the_network_unchanged():
    settings = {"embed_dim": 32, "depth": 1, "num_heads": 2}
    torch.manual_seed(0)
    plain = NKATViT(ModelConfig(**settings))
    torch.manual_seed(0)
    run_options = NKATViT(ModelConfig(**settings, compile=True, channels_last=True))
    assert plain.state_dict().keys() == run_options.state_dict().keys()
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(value, run_options.state_dict()[key])


def test_bf16_mixed_trains_every_attention_path_on_cpu(synthetic_root, tmp_path, monkeypatch):
    """bf16 autocast through the filtered softmax, the modulation and the learned temperature:
    the forward runs under bf16 autocast, and fp32 master weights are saved."""
    seen = probe_forward(monkeypatch)
    cfg = compose_train(["data=mnist", *STEM_MODEL, *FAST, "trainer.precision=bf16-mixed",
                         "model.top_k=3", "model.top_p=0.9", "model.nkat_strength=0.5",
                         "model.learnable_temperature=true"], tmp_path, data_root=synthetic_root)
    results = train(cfg)
    assert 0 <= results["test_acc"] <= 1
    assert seen and all(s["autocast"] == torch.bfloat16 and s["logits"] == torch.bfloat16
                        for s in seen)
    checkpoint = torch.load(results["best_ckpt"], weights_only=True)
    assert all(value.dtype != torch.bfloat16 for value in checkpoint["state_dict"].values())


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_adamw_is_fused_where_torch_has_the_kernel(device):
    model = {**vars(ModelConfig(depth=1, embed_dim=16, num_heads=2))}
    module = NKATLitModule(model, {"lr": 1e-3, "weight_decay": 0.05}).to(device)
    fused = module.build_optimizer().defaults["fused"]
    assert fused is (True if device == "cpu" else None)


def test_mixed_precision_with_gradient_clipping_trains(synthetic_root, tmp_path):
    """Lightning refuses to clip for a fused AdamW under mixed precision: the module then
    builds the per-tensor one."""
    cfg = compose_train(["data=mnist", *TINY_MODEL, *FAST, "trainer.precision=bf16-mixed",
                         "trainer.gradient_clip_val=1.0"], tmp_path, data_root=synthetic_root)
    results = train(cfg)
    assert results["global_step"] > 0 and 0.0 <= results["test_acc"] <= 1.0
