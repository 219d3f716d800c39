import itertools
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from timm.layers import LayerNorm2d

from nkat_lightning.config.compose import CONFIG_DIR
from nkat_lightning.config.schema import STEM_LAYERS, stem_output_size
from nkat_lightning.errors import ConfigError
from nkat_lightning.models import AttentionConfig, ModelConfig, NKATAttention, NKATViT
from nkat_lightning.models.attention import NKATModulation
from nkat_lightning.models.embedding import ColourLayerNorm

CONV_STEMS = tuple(STEM_LAYERS)


def vit(**settings) -> NKATViT:
    return NKATViT(ModelConfig(**settings))


def attention(dim: int, num_heads: int = 8, layer_index: int = 0, **settings) -> NKATAttention:
    return NKATAttention(dim, num_heads=num_heads, layer_index=layer_index,
                         config=AttentionConfig(**settings))

SHAPES = {name: (data.img_size, data.in_chans, data.default_patch_size)  # as the configs say
          for name, data in ((n, OmegaConf.load(Path(CONFIG_DIR) / "data" / f"{n}.yaml"))
                             for n in ("mnist", "cifar10"))}
MODES = {
    "plain": {},
    "filters": {"top_k": 6, "top_p": 0.8, "temperature": 0.65},
    "nkat": {"nkat_strength": 0.5, "nkat_decay": 0.99},
    "all": {"top_k": 6, "top_p": 0.8, "nkat_strength": 0.5, "learnable_temperature": True},
}
TINY = {"embed_dim": 32, "depth": 2, "num_heads": 2}


@pytest.mark.parametrize(("data", "stem", "mode"),
                         list(itertools.product(SHAPES, CONV_STEMS, MODES)))
def test_forward_every_stem_shape_and_mode(data, stem, mode):
    size, chans, patches = SHAPES[data]
    model = vit(img_size=size, in_chans=chans, num_classes=7, conv_stem=stem,
                    patch_size=patches[stem], **TINY, **MODES[mode])
    logits = model(torch.randn(3, chans, size, size))
    assert logits.shape == (3, 7)
    assert torch.isfinite(logits).all()
    logits.sum().backward()
    side = stem_output_size(size, stem) // patches[stem]
    assert model.patch_embed.num_patches == side * side
    assert model.pos_embed.shape[1] == side * side + 1


@pytest.mark.parametrize("stem", [s for s in CONV_STEMS if STEM_LAYERS[s]])
@pytest.mark.parametrize("width", [1, 8, 48])
def test_stem_width_scales_every_stem_layer_and_keeps_the_token_grid(stem, width):
    model = vit(conv_stem=stem, stem_width=width, patch_size=1, **TINY)
    widths = [m.conv.out_channels for m in model.patch_embed.backbone[1]]
    ratio = width / STEM_LAYERS[stem][0][0]
    assert widths == [max(1, round(out * ratio)) for out, _ in STEM_LAYERS[stem]]
    assert widths[0] == width
    assert model.patch_embed.proj.in_channels == widths[-1]
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert model.patch_embed.num_patches == vit(conv_stem=stem, patch_size=1,
                                                **TINY).patch_embed.num_patches


def test_color_norm_is_auto_for_rgb_only():
    rgb = vit(img_size=32, in_chans=3, conv_stem="off", patch_size=4, **TINY)
    grey = vit(img_size=28, in_chans=1, conv_stem="off", patch_size=7, **TINY)
    assert type(rgb.patch_embed.backbone[0]).__name__ == "ColourLayerNorm"
    assert type(grey.patch_embed.backbone[0]).__name__ == "Identity"
    off = vit(img_size=32, in_chans=3, conv_stem="off", patch_size=4, color_norm=False, **TINY)
    assert type(off.patch_embed.backbone[0]).__name__ == "Identity"


def test_colour_layer_norm_equals_timms_layer_norm_2d():
    torch.manual_seed(0)
    ours, timms = ColourLayerNorm(3), LayerNorm2d(3)
    with torch.no_grad():
        for norm in (ours, timms):
            norm.weight.copy_(torch.tensor([0.5, 1.0, 2.0]))
            norm.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    x = torch.rand(4, 3, 8, 8, requires_grad=True)
    x.data[:, :, :2] = 0.5  # grey pixels: no spread across the channels
    y, (grad,) = ours(x), torch.autograd.grad(ours(x).square().sum(), x)
    torch.testing.assert_close(y, timms(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad, torch.autograd.grad(timms(x).square().sum(), x)[0],
                               rtol=1e-4, atol=1e-4)
    assert y.is_contiguous()


def test_seed_baseline_has_about_8m_parameters():
    model = vit(img_size=32, in_chans=3, conv_stem="tiny", patch_size=2, embed_dim=384,
                    depth=7, num_heads=8)
    assert 7.5e6 < sum(p.numel() for p in model.parameters()) < 9e6


def test_patch_grid_error_names_size_stride_and_patch():
    with pytest.raises(ConfigError) as info:
        ModelConfig(img_size=28, conv_stem="tiny", patch_size=2)
    message = str(info.value)
    assert "\n" not in message
    assert "28-px" in message and "stride 4x" in message and "model.patch_size: 2" in message


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_filtered_attention_runs_in_the_model_dtype(dtype):
    attn = attention(16, num_heads=2, top_k=2, top_p=0.9, nkat_strength=0.5).to(dtype)
    assert attn(torch.randn(2, 5, 16, dtype=dtype)).dtype == dtype


def test_modulation_is_first_order_only():
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    alpha, beta = torch.tensor(0.1, dtype=torch.float64), torch.tensor(0.2, dtype=torch.float64)
    (grad,) = torch.autograd.grad(NKATModulation.apply(x, alpha, beta, 0.5).sum(), x,
                                  create_graph=True)
    with pytest.raises(RuntimeError, match="twice|once_differentiable|does not require grad"):
        torch.autograd.grad(grad.sum(), x)


def _attention(**kwargs) -> NKATAttention:
    torch.manual_seed(0)
    return attention(16, num_heads=2, layer_index=2, **kwargs).eval()


@pytest.mark.parametrize("kwargs", [{}, {"temperature": 0.7}, {"nkat_strength": 0.5,
                                                                "nkat_decay": 0.9}])
def test_fused_and_explicit_paths_agree(kwargs):
    attn = _attention(**kwargs)
    x = torch.randn(3, 5, 16)
    fused = attn(x)
    attn.keep_attention_map = True
    explicit = attn(x)
    torch.testing.assert_close(fused, explicit, rtol=1e-5, atol=1e-6)
    assert attn.attention_map.shape == (3, 2, 5, 5)


def test_modulation_scales_rows_by_one_plus_c_theta():
    attn = _attention(nkat_strength=0.5, nkat_decay=0.9)
    attn.keep_attention_map = True
    x = torch.randn(2, 4, 16)
    attn(x)
    var, mean = torch.var_mean(x, dim=-1, unbiased=False)
    theta = 0.1 * torch.tanh(mean) + 0.05 * torch.sigmoid(var)
    expected = 1 + 0.5 * 0.9**2 * theta
    torch.testing.assert_close(attn.attention_map.sum(-1), expected[:, None, :].expand(2, 2, 4))


def test_modulation_statistics_hold_for_offset_and_bf16_inputs():
    attn = _attention(nkat_strength=0.5)
    x = 3.0 + 0.1 * torch.randn(2, 4, 16)  # mean far above the spread: no cancellation loss
    var, mean = torch.var_mean(x, dim=-1, unbiased=False)
    expected = 1 + 0.5 * (0.1 * torch.tanh(mean) + 0.05 * torch.sigmoid(var))
    torch.testing.assert_close(attn.modulation(x)[:, 0, :, 0], expected)
    half = attn.modulation(x.bfloat16())
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half[:, 0, :, 0].float(), expected, rtol=1e-2, atol=1e-2)


def test_modulation_gradient_matches_autograd_of_the_definition():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 7, dtype=torch.float64, requires_grad=True)
    alpha = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    beta = torch.tensor(-0.7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: NKATModulation.apply(*a, 0.8), (x, alpha, beta))
    var, mean = torch.var_mean(x, dim=-1, unbiased=False)
    reference = 1 + 0.8 * (alpha * torch.tanh(mean) + beta * torch.sigmoid(var))
    weights = torch.randn(3, 5, dtype=torch.float64)
    ours = NKATModulation.apply(x, alpha, beta, 0.8)
    torch.testing.assert_close(ours, reference)
    for a, b in zip(torch.autograd.grad((ours * weights).sum(), (x, alpha, beta)),
                    torch.autograd.grad((reference * weights).sum(), (x, alpha, beta)), strict=True):
        torch.testing.assert_close(a, b)


def test_filters_change_output_and_respect_filter_mode():
    x = torch.randn(2, 9, 16)
    plain = _attention()(x)
    always = _attention(top_k=2)(x)
    assert not torch.allclose(plain, always)
    train_only = _attention(top_k=2, filter_mode="train")
    torch.testing.assert_close(train_only(x), plain)  # eval mode: filters off
    train_only.train()
    train_only.keep_attention_map = True
    train_only(x)
    assert ((train_only.attention_map > 0).sum(-1) == 2).all()


def test_learnable_temperature_gets_gradient():
    attn = _attention(temperature=0.65, learnable_temperature=True)
    assert attn.temperature.item() == pytest.approx(0.65)
    attn(torch.randn(2, 4, 16)).sum().backward()
    assert attn.log_temperature.grad is not None


def test_attention_maps_per_layer():
    model = vit(img_size=28, in_chans=1, conv_stem="off", patch_size=7, **TINY, top_k=4)
    maps = model.attention_maps(torch.randn(2, 1, 28, 28))
    assert len(maps) == 2 and maps[0].shape == (2, 2, 17, 17)
    assert ((maps[0] > 0).sum(-1) <= 4).all()
    assert all(a.attention_map is None for a in model.nkat_attentions())


def test_split_heads_keep_colour_groups_apart():
    torch.manual_seed(0)
    kwargs = {"img_size": 32, "in_chans": 3, "conv_stem": "off", "patch_size": 4, "embed_dim": 32,
              "depth": 1,
              "num_heads": 4, "color_norm": False}
    split = vit(split_heads=True, **kwargs)
    x = torch.randn(2, 3, 32, 32)
    assert split(x).shape == (2, 10)
    # the red slice of the embedding (first quarter) ignores the green and blue channels
    tokens = split.patch_embed(x)
    recoloured = x.clone()
    recoloured[:, 1:] = torch.randn(2, 2, 32, 32)
    torch.testing.assert_close(split.patch_embed(recoloured)[..., :8], tokens[..., :8])
    assert not torch.allclose(split.patch_embed(recoloured)[..., 24:], tokens[..., 24:])
    # colour heads' q/k/v see only their own feature slice, the shared heads see all
    weight = split.blocks[0].attn.qkv.weight
    assert weight[:8, 8:].abs().max() == 0 and weight[24:32].abs().min() > 0
    # weights outside the mask never act: changing them changes nothing
    before = split(x)
    with torch.no_grad():
        weight.add_(torch.randn_like(weight) * (1 - split.blocks[0].attn.qkv.mask))
    torch.testing.assert_close(split(x), before)


def test_split_heads_need_four_head_groups():
    with pytest.raises(ConfigError, match="divisible by 4"):
        vit(img_size=32, in_chans=3, patch_size=4, embed_dim=36, num_heads=6,
                split_heads=True)


def test_fixed_and_learned_temperature_give_the_same_output():
    torch.manual_seed(0)
    fixed = attention(32, num_heads=4, temperature=0.65)
    learned = attention(32, num_heads=4, temperature=0.65, learnable_temperature=True)
    learned.load_state_dict(fixed.state_dict())
    x = torch.randn(2, 9, 32)
    torch.testing.assert_close(fixed(x), learned(x))


def test_fixed_temperature_follows_loads_and_settings():
    source, target = attention(32, temperature=0.5), attention(32, temperature=1.0)
    target.load_state_dict(source.state_dict())
    assert target.fixed_temperature == pytest.approx(0.5)
    target.set_temperature(2.0)
    assert target.fixed_temperature == pytest.approx(2.0)
    assert float(target.temperature) == pytest.approx(2.0)


def test_avg_pooling_feeds_the_head_the_mean_of_the_patch_tokens():
    model = vit(img_size=28, in_chans=1, conv_stem="off", patch_size=7, global_pool="avg", **TINY).eval()
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        tokens = model.forward_features(x)  # (3, 1 class token + 16 patches, dim)
        # timm normalises after pooling (fc_norm) when it averages
        torch.testing.assert_close(model(x), model.head(model.fc_norm(tokens[:, 1:].mean(1))))
        assert not torch.allclose(model(x), model.head(model.fc_norm(tokens[:, 0])))
