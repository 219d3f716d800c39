"""Top-k then top-p filtering of attention logits: which logits a row keeps.

One definition (keep the ``k`` largest logits, exactly ``k`` even when they tie, then the
smallest prefix of those whose softmax mass reaches ``p``, the first always), as one custom op,
``torch.ops.nkat.filtered_rows`` (``torch.library``), so ``torch.compile`` traces through it
(its fake implementation gives the output's shape) and autograd knows its gradient:

- on the CPU, ``csrc/filtered_rows.cpp``, built on first use (``nkat_lightning.native``):
  torch's CPU ``topk`` alone costs about three times a whole fused attention at 49 tokens;
- on every other device, or where no C++ compiler is at hand, torch's ``topk`` (fast on a GPU).

While exporting (ONNX, ``torch.export``) the torch ops are traced in place of the op, so the
exported graph holds only standard operators. The op returns either an additive mask (0 kept,
-inf dropped) for ``scaled_dot_product_attention``, or the softmax over the kept logits (0
dropped).
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
    """``torch.ops.nkat.filtered_rows_cpu``, built on first use; None (said once) where it
    cannot be built or ``NKAT_CPU_FILTER_KERNEL=0``."""
    return build_cpu_op("filtered_rows_cpu", [SOURCE], KERNEL_SWITCH,
                        "top-k/top-p attention on the CPU uses torch's slower topk", "C++ filter")


def torch_filtered_rows(logits: torch.Tensor, top_k: int, top_p: float,
                        probabilities: bool) -> torch.Tensor:
    """The op with torch's ops: one ``topk`` (a partial sort) serves both filters."""
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


@torch.library.custom_op("nkat::filtered_rows", mutates_args=())
def filtered_rows_op(logits: torch.Tensor, k: int, p: float, probabilities: bool
                     ) -> torch.Tensor:
    """Every device but the CPU: torch's ops."""
    return torch_filtered_rows(logits, k, p, probabilities)


@filtered_rows_op.register_kernel("cpu")
def _filtered_rows_cpu(logits: torch.Tensor, k: int, p: float, probabilities: bool
                       ) -> torch.Tensor:
    kernel = cpu_kernel()
    if kernel is None:
        return torch_filtered_rows(logits, k, p, probabilities)
    return kernel(logits, k, p, probabilities)


@filtered_rows_op.register_fake
def _filtered_rows_fake(logits: torch.Tensor, k: int, p: float, probabilities: bool
                        ) -> torch.Tensor:
    return torch.empty_like(logits)


def _setup_context(ctx, inputs, output) -> None:
    ctx.probabilities = inputs[3]
    if ctx.probabilities:
        ctx.save_for_backward(output)


def _backward(ctx, grad: torch.Tensor):
    """The kept set is piecewise constant in the logits: the softmax's gradient over the kept
    entries for the probabilities, none for the mask."""
    if not ctx.probabilities:
        return None, None, None, None
    (probabilities,) = ctx.saved_tensors
    inner = (grad * probabilities).sum(dim=-1, keepdim=True)
    return probabilities * (grad - inner), None, None, None


filtered_rows_op.register_autograd(_backward, setup_context=_setup_context)


def filtered_rows(logits: torch.Tensor, top_k: int | None, top_p: float | None,
                  probabilities: bool) -> torch.Tensor:
    """Additive mask (``probabilities=False``, no gradient) or filtered softmax of ``logits``
    over the last dimension."""
    k = logits.shape[-1] if top_k is None else min(top_k, logits.shape[-1])
    p = 1.0 if top_p is None else float(top_p)
    if torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export():
        return torch_filtered_rows(logits, k, p, probabilities)
    return filtered_rows_op(logits, k, p, probabilities)


def filtered_softmax(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Softmax over the logits kept by top-k and then top-p, zero elsewhere, along the last
    dimension: ``softmax(logits)`` with every other logit set to -inf, gradient included."""
    return filtered_rows(logits, top_k, top_p, probabilities=True)
