"""The model leaves the run: it pickles with every NKAT setting, and every checkpoint a run
writes loads with ``torch.load(weights_only=True)`` and ``NKATLitModule.load_from_checkpoint``."""

import dataclasses
import io

import pytest
import torch

from helpers import FAST, TINY_MODEL, assert_checkpoint_loads, compose_train
from nkat_lightning.config.schema import AttentionConfig, ModelConfig
from nkat_lightning.models import NKATViT
from nkat_lightning.training.fit import train

#: A value other than the default for every NKAT attention setting.
NON_DEFAULT = {"temperature": 0.7, "learnable_temperature": True, "top_k": 4, "top_p": 0.8,
               "filter_mode": "train", "nkat_strength": 0.5, "nkat_decay": 0.9,
               "split_heads": True}
RGB = {"img_size": 32, "in_chans": 3, "conv_stem": "off", "patch_size": 8, "embed_dim": 32,
       "depth": 2, "num_heads": 4}


def test_every_attention_setting_is_covered():
    assert set(NON_DEFAULT) == {f.name for f in dataclasses.fields(AttentionConfig)}


@pytest.mark.parametrize("name", NON_DEFAULT)
def test_the_network_pickles_with_each_nkat_setting(name):
    torch.manual_seed(0)
    model = NKATViT(ModelConfig(**RGB, **{name: NON_DEFAULT[name]})).eval()
    copy = pickle_round_trip(model).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(copy(x), model(x))


def test_the_default_network_pickles_with_every_setting_at_once():
    model = NKATViT(ModelConfig(**RGB, **NON_DEFAULT))
    assert type(pickle_round_trip(model).blocks[0].attn) is type(model.blocks[0].attn)


def pickle_round_trip(model):
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def test_every_checkpoint_of_a_run_with_ema_and_nkat_loads_both_ways(synthetic_root, tmp_path):
    cfg = compose_train(["data=mnist", *TINY_MODEL, *FAST, "trainer.max_epochs=2", "optim.ema=0.9",
                         "model.top_k=4", "model.top_p=0.9", "model.nkat_strength=0.5",
                         "model.learnable_temperature=true"], tmp_path, data_root=synthetic_root)
    train(cfg)
    checkpoints = sorted((tmp_path / "run" / "checkpoints").glob("*.ckpt"))
    assert {p.name for p in checkpoints} >= {"last.ckpt", "last.prev.ckpt"}
    assert any(p.name.startswith("best-") for p in checkpoints)
    for path in checkpoints:
        assert_checkpoint_loads(path)
