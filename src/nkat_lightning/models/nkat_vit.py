"""The NKAT-ViT: timm's ``VisionTransformer`` assembled with the NKAT embedding and attention."""

from __future__ import annotations

import functools

import torch
from timm.models.vision_transformer import VisionTransformer

from nkat_lightning.models.attention import NKATAttention
from nkat_lightning.models.embedding import CONV_STEMS, NKATEmbed, stem_output_size

#: Keys of the ``model`` config that say how to run the network, not what it is.
RUNTIME_OPTIONS = ("compile", "channels_last")


def architecture(model_cfg: dict) -> dict:
    """The ``model`` config without its runtime options: the keywords of ``NKATViT``."""
    return {key: value for key, value in model_cfg.items() if key not in RUNTIME_OPTIONS}


def check_patch_grid(img_size: int, conv_stem: str, patch_size: int) -> None:
    """Raise ValueError, in one line, unless ``patch_size`` tiles the stem's feature map."""
    if conv_stem not in CONV_STEMS:
        raise ValueError(f"model.conv_stem={conv_stem!r} is unknown; allowed: {', '.join(CONV_STEMS)}")
    side = stem_output_size(img_size, conv_stem)
    if patch_size < 1 or side % patch_size:
        divisors = [d for d in range(1, side + 1) if side % d == 0]
        raise ValueError(
            f"model.patch_size={patch_size} does not tile the token grid: the {img_size}-px image "
            f"leaves conv stem '{conv_stem}' (reduction {img_size // side}x) as a {side}x{side} "
            f"map; use a divisor of {side} ({', '.join(map(str, divisors))}) or drop the "
            f"override to get the data set's default"
        )


def _nkat_attention_class(**settings: object) -> type[NKATAttention]:
    """An ``NKATAttention`` subclass with ``settings`` bound, so timm's ``attn_layer``
    (which must be a class) builds it."""
    init = functools.partialmethod(NKATAttention.__init__, **settings)
    return type("ConfiguredNKATAttention", (NKATAttention,), {"__init__": init})


class NKATViT(VisionTransformer):
    """Compact ViT with optional conv stem, colour-wise LayerNorm and NKAT attention."""

    def __init__(
        self,
        img_size: int = 28,
        in_chans: int = 1,
        num_classes: int = 10,
        patch_size: int = 7,
        conv_stem: str = "off",
        color_norm: bool | str = "auto",
        embed_dim: int = 128,
        depth: int = 4,
        num_heads: int = 4,
        mlp_ratio: float = 2.0,
        dropout_attn: float = 0.0,
        dropout_embed: float = 0.0,
        drop_path: float = 0.0,
        temperature: float = 1.0,
        learnable_temperature: bool = False,
        top_k: int | None = None,
        top_p: float | None = None,
        filter_mode: str = "always",
        nkat_strength: float = 0.0,
        nkat_decay: float = 1.0,
        split_heads: bool = False,
    ) -> None:
        check_patch_grid(img_size, conv_stem, patch_size)
        if color_norm == "auto":
            color_norm = in_chans == 3
        attention = _nkat_attention_class(
            temperature=temperature,
            learnable_temperature=learnable_temperature,
            top_k=top_k,
            top_p=top_p,
            filter_mode=filter_mode,
            nkat_strength=nkat_strength,
            nkat_decay=nkat_decay,
            split_heads=split_heads,
        )
        super().__init__(
            img_size=img_size,
            patch_size=patch_size,
            in_chans=in_chans,
            num_classes=num_classes,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            attn_drop_rate=dropout_attn,
            pos_drop_rate=dropout_embed,
            drop_path_rate=drop_path,
            embed_layer=functools.partial(
                NKATEmbed, conv_stem=conv_stem, color_norm=bool(color_norm),
                split_colours=split_heads,
            ),
            attn_layer=attention,
        )
        for index, attn in enumerate(self.nkat_attentions()):
            attn.layer_index = index

    def nkat_attentions(self) -> list[NKATAttention]:
        return [block.attn for block in self.blocks]

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Attention weights of every layer for ``x``, each (B, heads, tokens, tokens)."""
        attentions = self.nkat_attentions()
        for attn in attentions:
            attn.keep_attention_map = True
        try:
            self.forward(x)
            return [attn.attention_map for attn in attentions]
        finally:
            for attn in attentions:
                attn.keep_attention_map = False
                attn.attention_map = None
