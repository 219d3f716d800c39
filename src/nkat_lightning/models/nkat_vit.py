"""The NKAT-ViT: timm's ``VisionTransformer`` assembled with the NKAT embedding and attention."""

from __future__ import annotations

import functools

import torch
from timm.models.vision_transformer import VisionTransformer

from nkat_lightning.config.schema import ModelConfig
from nkat_lightning.models.attention import MaskedWeight, NKATAttention
from nkat_lightning.models.embedding import NKATEmbed


class NKATViT(VisionTransformer):
    """Compact ViT with optional conv stem, colour-wise LayerNorm and NKAT attention, built
    from a checked ``ModelConfig`` (its runtime options, compile and channels_last, are the
    LightningModule's business)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(
            img_size=config.img_size,
            patch_size=config.patch_size,
            in_chans=config.in_chans,
            num_classes=config.num_classes,
            embed_dim=config.embed_dim,
            depth=config.depth,
            num_heads=config.num_heads,
            mlp_ratio=config.mlp_ratio,
            attn_drop_rate=config.dropout_attn,
            pos_drop_rate=config.dropout_embed,
            drop_path_rate=config.drop_path,
            global_pool=config.global_pool,
            embed_layer=functools.partial(NKATEmbed, config=config),
            attn_layer=NKATAttention.layer_type(config),
        )
        self.config = config
        for index, attn in enumerate(self.nkat_attentions()):
            attn.layer_index = index
        for module in self.modules():  # timm's weight init ran after the layers masked theirs
            if isinstance(module, MaskedWeight):
                module.zero_masked()

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
