"""What ``python -m nkat_lightning.analyze`` computes inside a trained NKAT-ViT.

Attention roll-out, attention entropy and sparsity, the reliability diagram's bins and the
learned NKAT parameters. Nothing here draws; ``analyze.py`` plots and writes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from nkat_lightning.models import NKATViT


def rows_normalised(attn: torch.Tensor) -> torch.Tensor:
    """Attention rows scaled to sum to 1 (the NKAT factor 1 + c * theta scales whole rows)."""
    attn = attn.float()
    return attn / attn.sum(-1, keepdim=True).clamp_min(1e-12)


def attention_rollout(maps: list[torch.Tensor], grid: tuple[int, int], img_size: int,
                      prefix_tokens: int = 1) -> torch.Tensor:
    """Roll-out (Abnar & Zuidema, 2020) of the class token over the patches, per image.

    ``maps`` are the layers' attention weights (B, heads, N, N). Rows are renormalised (the
    NKAT factor makes them sum to other than 1), heads averaged, the residual path added as
    0.5 A + 0.5 I, and the layers multiplied in order. The class token's row over
    the patch tokens, on the token grid, is upsampled to the image and scaled to [0, 1].
    Written here because neither timm nor torchvision has it.
    """
    rollout = None
    for attn in maps:
        a = 0.5 * rows_normalised(attn).mean(1) + 0.5 * torch.eye(attn.shape[-1],
                                                                  device=attn.device)
        rollout = a if rollout is None else a @ rollout
    cls_row = rollout[:, 0, prefix_tokens:].reshape(-1, 1, *grid)
    heat = F.interpolate(cls_row, size=(img_size, img_size), mode="bilinear", align_corners=False)
    heat = heat[:, 0]
    low = heat.amin((1, 2), keepdim=True)
    high = heat.amax((1, 2), keepdim=True)
    return (heat - low) / (high - low).clamp_min(1e-12)


def attention_statistics(maps: list[torch.Tensor]) -> list[dict]:
    """Per layer: mean entropy of the attention rows (nats), the same over log(N) (1 = uniform),
    and the share of attention weights that are exactly zero (removed by top-k / top-p)."""
    stats = []
    for attn in maps:
        p = rows_normalised(attn)
        entropy = -(p * p.clamp_min(1e-12).log()).sum(-1)
        stats.append({
            "entropy": float(entropy.mean()),
            "normalized_entropy": float(entropy.mean() / math.log(p.shape[-1])),
            "zero_fraction": float((p == 0).float().mean()),
        })
    return stats


def nkat_parameters(net: NKATViT) -> list[dict]:
    """Per layer: temperature, modulation coefficient c and the learned alpha, beta (None when
    the modulation is off)."""
    rows = []
    for index, attn in enumerate(net.nkat_attentions()):
        modulated = bool(attn.nkat_strength)
        rows.append({
            "layer": index,
            "temperature": float(attn.temperature.detach()),
            "temperature_learnable": isinstance(attn.log_temperature, torch.nn.Parameter),
            "coefficient": attn.nkat_coefficient,
            "alpha": float(attn.alpha.detach()) if modulated else None,
            "beta": float(attn.beta.detach()) if modulated else None,
        })
    return rows


def reliability_bins(probs: torch.Tensor, targets: torch.Tensor, n_bins: int = 15) -> list[dict]:
    """Top-1 confidence bins of equal width: count, mean confidence and accuracy per bin (the
    bars of a reliability diagram; torchmetrics computes the ECE but does not expose these)."""
    confidence, predicted = probs.max(1)
    correct = (predicted == targets).float()
    edges = torch.linspace(0, 1, n_bins + 1)
    index = torch.bucketize(confidence, edges[1:-1], right=True)
    bins = []
    for b in range(n_bins):
        mask = index == b
        count = int(mask.sum())
        bins.append({
            "low": float(edges[b]), "high": float(edges[b + 1]), "count": count,
            "confidence": float(confidence[mask].mean()) if count else None,
            "accuracy": float(correct[mask].mean()) if count else None,
        })
    return bins


def scaled_temperatures(net: NKATViT, factor: float) -> None:
    """Multiply every layer's attention temperature by ``factor`` (in place)."""
    for attn in net.nkat_attentions():
        attn.set_temperature(float(attn.temperature) * factor)
