"""Top-k then top-p filtering of attention logits: which logits a row keeps.

Two implementations of one definition (keep the ``k`` largest logits, exactly ``k`` even when
they tie, then the smallest prefix of those whose softmax mass reaches ``p``, the first always):

- on the CPU, ``csrc/filtered_rows.cpp``, built on first use (``nkat_lightning.native``):
  torch's CPU ``topk`` alone costs about three times a whole fused attention at 49 tokens;
- anywhere else, while exporting (ONNX, ``torch.export``), or where no C++ compiler is at
  hand, torch's ``topk`` (fast on a GPU).

Both return either an additive mask (0 kept, -inf dropped) for ``scaled_dot_product_attention``
or the softmax over the kept logits (0 dropped).
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from nkat_lightning.native import build_cpu_op

SOURCE = Path(__file__).with_name("csrc") / "filtered_rows.cpp"
KERNEL_SWITCH = "NKAT_CPU_FILTER_KERNEL"  # "0": use torch's topk on the CPU too


@functools.cache
def cpu_kernel():
    """``torch.ops.nkat.filtered_rows``, built on first use; None (said once) where it cannot
    be built or ``NKAT_CPU_FILTER_KERNEL=0``."""
    return build_cpu_op("filtered_rows", [SOURCE], KERNEL_SWITCH,
                        "top-k/top-p attention on the CPU uses torch's slower topk", "C++ filter")


def torch_filtered_rows(logits: torch.Tensor, top_k: int, top_p: float,
                        probabilities: bool) -> torch.Tensor:
    """The same result from torch's ops: one ``topk`` (a partial sort) serves both filters."""
    values, order = logits.topk(top_k, dim=-1)
    shifted = (values - values[..., :1]).to(torch.promote_types(logits.dtype, torch.float32))
    weights = shifted.exp()  # softmax numerators, largest first, in fp32 at least
    keep = torch.ones_like(weights, dtype=torch.bool)
    if top_p < 1.0:
        mass = weights.cumsum(dim=-1)
        keep = mass - weights < top_p * mass[..., -1:]  # mass before a rank < p
    nan_rows = logits.isnan().any(dim=-1, keepdim=True)  # softmax makes the whole row NaN
    if probabilities:
        weights = weights * keep
        kept = (weights / weights.sum(dim=-1, keepdim=True)).to(logits.dtype)
        result = kept.new_zeros(logits.shape).scatter(-1, order, kept)
        return result.masked_fill(nan_rows, float("nan"))
    kept = torch.zeros_like(values).masked_fill(~keep, float("-inf"))
    result = torch.full_like(logits, float("-inf")).scatter(-1, order, kept)
    return result.masked_fill(nan_rows, 0.0)


@torch.compiler.disable  # runs eagerly under model.compile: the C++ op has no tracing rule
def filtered_rows(logits: torch.Tensor, top_k: int | None, top_p: float | None,
                  probabilities: bool) -> torch.Tensor:
    """Additive mask (``probabilities=False``) or filtered softmax of ``logits`` over the last
    dimension; no gradient (see ``FilteredSoftmax``)."""
    k = logits.shape[-1] if top_k is None else min(top_k, logits.shape[-1])
    p = 1.0 if top_p is None else float(top_p)
    exporting = torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export()
    kernel = cpu_kernel() if logits.device.type == "cpu" and not exporting else None
    with torch.no_grad():
        if kernel is not None:
            return kernel(logits, k, p, probabilities)
        return torch_filtered_rows(logits, k, p, probabilities)


class FilteredSoftmax(torch.autograd.Function):
    """``softmax(logits)`` with every logit the filters drop set to -inf, gradient included:
    the kept set is piecewise constant, so the gradient is softmax's over the kept entries."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, top_k: int | None, top_p: float | None):
        probabilities = filtered_rows(logits, top_k, top_p, probabilities=True)
        ctx.save_for_backward(probabilities)
        return probabilities

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (probabilities,) = ctx.saved_tensors
        inner = (grad * probabilities).sum(dim=-1, keepdim=True)
        return probabilities * (grad - inner), None, None


def filtered_softmax(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Softmax over the logits kept by top-k and then top-p, zero elsewhere, along the last
    dimension: ``softmax(logits)`` with every other logit set to -inf, gradient included."""
    return FilteredSoftmax.apply(logits, top_k, top_p)
