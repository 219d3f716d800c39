"""NKAT attention: multi-head self-attention with temperature, top-k / top-p filters and
the per-layer NKAT modulation.

Drop-in for timm's ``Attention`` (same constructor keywords), so timm's ``Block`` and
``VisionTransformer`` build it through their ``attn_layer`` extension point.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from nkat_lightning.config.schema import AttentionConfig
from nkat_lightning.models.filtering import filtered_rows, filtered_softmax

COLOUR_GROUPS = 4  # split heads: one group per RGB channel plus one shared group


def colour_group_mask(out_features: int, in_features: int, in_groups: int) -> torch.Tensor:
    """(out, in) 0/1 mask: outputs split into the 4 colour groups, inputs into ``in_groups``
    (3 colour channels, or the 4 feature groups); output group g < 3 sees only input group g,
    the shared output group sees every input."""
    block = torch.zeros(COLOUR_GROUPS, in_groups)
    block[torch.arange(3), torch.arange(3)] = 1
    block[3] = 1
    rows = block.repeat_interleave(out_features // COLOUR_GROUPS, 0)
    return rows.repeat_interleave(in_features // in_groups, 1)


class MaskedWeight:
    """A layer whose weights outside ``mask`` (out, in) are zero: zeroed when the mask is set,
    and multiplied by it in every forward, so they neither act nor learn. (Not torch's
    ``parametrize``: a parametrized module is of a class made at run time, which does not
    pickle.)"""

    weight: torch.Tensor

    def set_mask(self, mask: torch.Tensor) -> None:
        mask = mask.reshape(mask.shape + (1,) * (self.weight.ndim - 2))
        self.register_buffer("mask", mask, persistent=False)
        self.zero_masked()

    def zero_masked(self) -> None:
        """Zero the weights outside the mask again (after a re-initialisation, e.g. timm's)."""
        with torch.no_grad():
            self.weight.mul_(self.mask)

    def masked_weight(self) -> torch.Tensor:
        return self.weight * self.mask


class MaskedLinear(MaskedWeight, nn.Linear):
    def __init__(self, in_features: int, out_features: int, mask: torch.Tensor,
                 bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.set_mask(mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.masked_weight(), self.bias)


class MaskedConv2d(MaskedWeight, nn.Conv2d):
    @classmethod
    def of(cls, conv: nn.Conv2d, mask: torch.Tensor) -> MaskedConv2d:
        """``conv``, its weights kept, masked (built without drawing new random weights)."""
        masked = torch.nn.utils.skip_init(
            cls, conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
            padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
            bias=conv.bias is not None, padding_mode=conv.padding_mode)
        masked.load_state_dict(conv.state_dict())
        masked.set_mask(mask)
        return masked

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.masked_weight(), self.bias)


class NKATModulation(torch.autograd.Function):
    """``1 + c * (alpha * tanh(mean(x)) + beta * sigmoid(var(x)))`` over the last dimension of
    ``x``, shape (B, N), in fp32 (or fp64), with its gradient written out.

    Hand-written because on the CPU autograd's graph of these many small (B, N) ops cost more
    than the matmuls of a 16-token model's attention: here the gradient for ``x`` is one
    ``addcmul``. The statistics come from two plain reductions (variance as mean square minus
    squared mean: the input is a LayerNorm output, whose mean is small against its spread),
    since ``torch.var_mean``'s inner-dimension loop is ~50x slower on the CPU. First-order
    gradients only.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor, c: float):
        dtype = torch.promote_types(x.dtype, torch.float32)
        mean = x.mean(dim=-1, dtype=dtype)
        var = torch.linalg.vector_norm(x, dim=-1, dtype=dtype).square_().div_(x.shape[-1])
        var = var.sub_(mean.square()).clamp_min_(0.0)
        tanh_mean, sigmoid_var = mean.tanh(), var.sigmoid()
        ctx.save_for_backward(x, mean, tanh_mean, sigmoid_var, alpha, beta)
        ctx.c = c
        theta = torch.addcmul(alpha * tanh_mean, beta, sigmoid_var)
        return theta.mul_(c).add_(1.0)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, mean, tanh_mean, sigmoid_var, alpha, beta = ctx.saved_tensors
        need_x, need_alpha, need_beta, _ = ctx.needs_input_grad
        grad_theta = grad * ctx.c
        grad_x = grad_alpha = grad_beta = None
        if need_x:
            grad_mean = grad_theta * alpha * (1.0 - tanh_mean.square())
            grad_var = grad_theta * beta * sigmoid_var * (1.0 - sigmoid_var)
            n = x.shape[-1]  # d mean / dx = 1/n, d var / dx = 2 (x - mean) / n
            shift = ((grad_mean - 2.0 * mean * grad_var) / n).unsqueeze(-1)
            grad_x = torch.addcmul(shift, x, (2.0 / n) * grad_var.unsqueeze(-1)).to(x.dtype)
        if need_alpha:
            grad_alpha = (grad_theta * tanh_mean).sum().to(alpha.dtype)
        if need_beta:
            grad_beta = (grad_theta * sigmoid_var).sum().to(beta.dtype)
        return grad_x, grad_alpha, grad_beta, None


class NKATAttention(nn.Module):
    """Self-attention with the NKAT extensions.

    - ``temperature``: logits are divided by it (< 1 sharpens); learnable if asked.
    - ``top_k`` / ``top_p``: keep the ``k`` largest logits per query row, then the nucleus of
      mass ``p``; the rest get -inf. ``filter_mode="train"`` applies them in training only.
    - NKAT modulation: with ``c = nkat_strength * nkat_decay ** layer_index`` and per token
      ``theta = alpha * tanh(mean(x)) + beta * sigmoid(var(x))`` over the features of the
      attention input, attention weights are multiplied by ``(1 + c * theta)`` along each query
      row. Because that factor is constant along a row it equals scaling the attention output,
      so the fused ``scaled_dot_product_attention`` path serves every case without filters.
    - ``split_heads``: the heads form 4 equal groups, one per RGB channel and one shared; the
      q/k/v of a colour group are computed only from that group's slice of the features (the
      embedding puts each colour channel into its own slice), the shared group sees all.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        qk_norm: bool = False,
        proj_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        norm_layer: type[nn.Module] | None = None,
        *,
        config: AttentionConfig | None = None,
        layer_index: int = 0,
        **_: object,
    ) -> None:
        """timm's ``Attention`` keywords, then the NKAT settings (``config``; the defaults
        when omitted) and the block's index. ``dim % num_heads`` and the split-head grouping
        are checked once, by ``ModelConfig``."""
        super().__init__()
        config = config or AttentionConfig()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        if config.split_heads:  # q, k and v rows each split into the colour groups
            mask = colour_group_mask(dim, dim, COLOUR_GROUPS).repeat(3, 1)
            self.qkv = MaskedLinear(dim, dim * 3, mask, bias=qkv_bias)
        else:
            self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        norm = norm_layer or nn.LayerNorm
        self.q_norm = norm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = norm(self.head_dim) if qk_norm else nn.Identity()
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.proj_drop = nn.Dropout(proj_drop)

        log_t = torch.tensor(math.log(config.temperature))
        if config.learnable_temperature:
            self.log_temperature = nn.Parameter(log_t)
        else:  # kept in the state dict; forward reads the float copy (no tensor op, no sync)
            self.register_buffer("log_temperature", log_t)
        self.fixed_temperature = None if config.learnable_temperature else float(config.temperature)
        self.top_k = config.top_k
        self.top_p = config.top_p if config.top_p is not None and config.top_p < 1.0 else None
        self.filter_mode = config.filter_mode
        self.nkat_strength = config.nkat_strength
        self.nkat_decay = config.nkat_decay
        self.layer_index = layer_index
        if config.nkat_strength:
            self.alpha = nn.Parameter(torch.tensor(0.1))
            self.beta = nn.Parameter(torch.tensor(0.05))
        self.keep_attention_map = False
        self.attention_map: torch.Tensor | None = None

    @classmethod
    def layer_type(cls, config: AttentionConfig) -> type:
        """A class for timm's ``attn_layer`` (timm calls ``issubclass`` on it and passes only
        its own keywords) whose instances are plain ``NKATAttention`` with ``config`` bound: the
        model holds no class made at run time, so it pickles (``torch.save(model)``, spawn)."""

        def new(_layer_type, *args, **kwargs) -> NKATAttention:
            return cls(*args, config=config, **kwargs)

        return type("NKATAttentionLayer", (), {"__new__": new})

    @property
    def temperature(self) -> torch.Tensor:
        return self.log_temperature.exp()

    def set_temperature(self, value: float) -> None:
        """Set the temperature (learned or fixed) in place."""
        with torch.no_grad():
            self.log_temperature.fill_(math.log(value))
        if self.fixed_temperature is not None:
            self.fixed_temperature = float(value)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if self.fixed_temperature is not None:
            self.fixed_temperature = float(self.log_temperature.exp())

    def logit_scale(self) -> float | torch.Tensor:
        """head_dim^-0.5 / temperature: a float for a fixed temperature, so the fused kernel
        takes it as its ``scale``; a tensor (with its gradient) for a learned one."""
        if self.fixed_temperature is not None:
            return self.scale / self.fixed_temperature
        return self.scale / self.temperature

    @property
    def nkat_coefficient(self) -> float:
        return self.nkat_strength * self.nkat_decay**self.layer_index

    def filters_active(self) -> bool:
        if self.top_k is None and self.top_p is None:
            return False
        return self.filter_mode == "always" or self.training

    def modulation(self, x: torch.Tensor) -> torch.Tensor | None:
        """Per-token factor ``1 + c * theta`` of shape (B, 1, N, 1), or None when off."""
        if not self.nkat_strength:
            return None
        factor = NKATModulation.apply(x, self.alpha, self.beta, self.nkat_coefficient)
        return factor.to(x.dtype)[:, None, :, None]

    def filtered_attention(self, q, k, v, scale: float, attn_mask, dropout_p: float) -> torch.Tensor:
        """Attention with the top-k/top-p filters: one ``q @ k^T`` picks the kept logits, then
        either the fused kernel runs with them as its additive mask (training, and every
        device but the CPU: its backward is the fused one, and on a GPU the mask keeps it on
        the memory-efficient kernel), or, in CPU inference, the filtered softmax times ``v``
        (the logits are at hand, so the fused kernel would only compute them again)."""
        with torch.no_grad():
            logits = (q * scale) @ k.transpose(-2, -1)
            if attn_mask is not None:
                logits = logits + attn_mask
        needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
        if q.device.type == "cpu" and not needs_grad and not dropout_p:
            return filtered_softmax(logits, self.top_k, self.top_p).to(v.dtype) @ v
        mask = filtered_rows(logits, self.top_k, self.top_p, probabilities=False)
        if attn_mask is not None:
            mask = mask + attn_mask
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask.to(q.dtype),
                                              dropout_p=dropout_p, scale=scale)

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        if is_causal:
            raise ValueError("NKATAttention is bidirectional; is_causal=True is not supported")
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        scale = self.logit_scale()
        if isinstance(scale, torch.Tensor):  # learned temperature: scale q, keep the gradient
            q, scale = q * scale.to(q.dtype), 1.0
        factor = self.modulation(x)

        dropout_p = self.attn_drop.p if self.training else 0.0
        if self.keep_attention_map:  # the weights themselves, for analysis
            logits = (q * scale) @ k.transpose(-2, -1)
            if attn_mask is not None:
                logits = logits + attn_mask
            if self.filters_active():
                attn = filtered_softmax(logits, self.top_k, self.top_p)
            else:
                attn = logits.softmax(dim=-1)
            if factor is not None:
                attn = attn * factor
            self.attention_map = attn.detach()
            out = self.attn_drop(attn) @ v
        elif self.filters_active():
            out = self.filtered_attention(q, k, v, scale, attn_mask, dropout_p)
            if factor is not None:
                out = out * factor
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                                 dropout_p=dropout_p, scale=scale)
            if factor is not None:
                out = out * factor
        out = out.transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(out))
