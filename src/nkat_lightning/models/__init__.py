from nkat_lightning.models.attention import NKATAttention, nucleus_topk_mask
from nkat_lightning.models.nkat_vit import NKATViT, check_patch_grid

__all__ = ["NKATAttention", "NKATViT", "check_patch_grid", "nucleus_topk_mask"]
