from nkat_lightning.config.schema import AttentionConfig, ModelConfig
from nkat_lightning.models.attention import NKATAttention
from nkat_lightning.models.filtering import filtered_softmax
from nkat_lightning.models.nkat_vit import NKATViT

__all__ = ["AttentionConfig", "ModelConfig", "NKATAttention", "NKATViT", "filtered_softmax"]
