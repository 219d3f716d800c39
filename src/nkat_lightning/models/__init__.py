from nkat_lightning.models.attention import NKATAttention, filtered_softmax
from nkat_lightning.models.nkat_vit import NKATViT, check_patch_grid

__all__ = ["NKATAttention", "NKATViT", "check_patch_grid", "filtered_softmax"]
