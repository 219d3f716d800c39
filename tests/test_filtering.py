"""Top-k/top-p filtering: both implementations (the CPU kernel, torch's topk) against a plain
per-row reference, and every attention path that uses them against the definition."""

import itertools
import logging

import pytest
import torch

from nkat_lightning.models import AttentionConfig, NKATAttention, filtered_softmax, filtering
from nkat_lightning.models.filtering import filtered_rows, torch_filtered_rows


@pytest.fixture(params=["cpu kernel", "torch topk"])
def implementation(request, monkeypatch):
    """Runs a test with each implementation behind ``filtered_rows``."""
    if request.param == "torch topk":
        monkeypatch.setattr(filtering, "cpu_kernel", lambda: None)
    return request.param


def reference_mask(logits: torch.Tensor, k: int | None, p: float | None) -> torch.Tensor:
    """Straightforward per-row top-k then top-p, for comparison."""
    keep = torch.zeros_like(logits, dtype=torch.bool)
    for index in itertools.product(*map(range, logits.shape[:-1])):
        row = logits[index]
        order = sorted(range(len(row)), key=lambda i: -row[i].item())
        if k is not None:
            order = order[:k]
        kept, mass = [], 0.0
        probs = torch.softmax(row[order], dim=0)
        for rank, i in enumerate(order):
            kept.append(i)
            mass += probs[rank].item()
            if p is not None and mass >= p:
                break
        keep[index][kept] = True
    return keep


def reference_softmax(logits: torch.Tensor, k, p) -> torch.Tensor:
    return logits.masked_fill(~reference_mask(logits, k, p), float("-inf")).softmax(dim=-1)


def test_the_cpu_kernel_builds_here():
    """Where a C++ compiler is (CI installs one), the kernel is what runs, not the fallback."""
    assert filtering.cpu_kernel() is not None


@pytest.mark.parametrize(("k", "p"), [(3, None), (None, 0.6), (5, 0.8), (1, 0.9), (None, 1.0),
                                      (11, 0.95)])
def test_filtered_softmax_matches_reference_values_and_gradients(implementation, k, p):
    torch.manual_seed(0)
    logits = (torch.randn(2, 3, 9, 11) * 2).requires_grad_()
    weights = torch.randn(2, 3, 9, 11)
    fast = filtered_softmax(logits, k, p if p != 1.0 else None)
    assert torch.equal(fast > 0, reference_mask(logits.detach(), k, p))
    (fast_grad,) = torch.autograd.grad((fast * weights).sum(), logits)
    expected = reference_softmax(logits, k, p)
    (expected_grad,) = torch.autograd.grad((expected * weights).sum(), logits)
    torch.testing.assert_close(fast, expected)
    torch.testing.assert_close(fast_grad, expected_grad)


# rows and row lengths around the kernel's block of 32 rows and its SIMD widths
@pytest.mark.parametrize(("shape", "k", "p"), [((1, 1), 1, 0.5), ((31, 7), 7, None),
                                               ((33, 49), 6, 0.8), ((2, 65, 65), 8, 0.9),
                                               ((70, 17), 17, 0.99), ((3, 5, 257), 6, None)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_both_outputs_agree_with_the_reference_for_every_shape_and_dtype(implementation, shape, k,
                                                                        p, dtype):
    torch.manual_seed(1)
    logits = (torch.randn(shape) * 3).to(dtype)
    probabilities = filtered_rows(logits, k, p, probabilities=True)
    mask = filtered_rows(logits, k, p, probabilities=False)
    keep = reference_mask(logits.float(), k, p) if dtype != torch.float64 else \
        reference_mask(logits, k, p)
    assert probabilities.dtype == mask.dtype == dtype
    if dtype in (torch.float32, torch.float64):  # low precision rounds ties into the logits
        assert torch.equal(probabilities > 0, keep)
    assert torch.equal(mask == 0, probabilities > 0)
    assert torch.isneginf(mask[mask != 0]).all()
    expected = logits.float().masked_fill(mask != 0, float("-inf")).softmax(dim=-1)
    torch.testing.assert_close(probabilities.float(), expected,
                               **({} if dtype in (torch.float32, torch.float64)
                                  else {"rtol": 1e-2, "atol": 1e-3}))


def test_top_k_keeps_exactly_k_even_with_ties(implementation):
    logits = torch.zeros(40, 10)
    assert ((filtered_softmax(logits, 3, None) > 0).sum(-1) == 3).all()
    assert ((filtered_rows(logits, 3, 0.99, probabilities=False) == 0).sum(-1) == 3).all()


def test_top_p_keeps_smallest_prefix_reaching_p(implementation):
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    # p off the exact prefix masses (0.5, 0.8, 0.95): at equality the verdict rests on the last
    # bit of fp32 exp/log, which differs between torch builds (0.5 came back as 0.49999997)
    for p, kept in [(0.49, 1), (0.51, 2), (0.79, 2), (0.81, 3), (0.96, 4), (0.01, 1)]:
        expected = [True] * kept + [False] * (4 - kept)
        assert (filtered_softmax(logits, None, p) > 0).tolist() == [expected]


def test_a_row_with_nan_stays_nan_as_softmax_would(implementation):
    logits = torch.randn(3, 12)
    logits[1, 5] = float("nan")
    probabilities = filtered_softmax(logits, 4, 0.9)
    assert probabilities[1].isnan().all() and not probabilities[[0, 2]].isnan().any()
    mask = filtered_rows(logits, 4, 0.9, probabilities=False)
    assert (mask[1] == 0).all()  # keeps all: the fused kernel then gives NaN itself


def test_an_unbuildable_kernel_says_so_once_and_falls_back(monkeypatch, caplog):
    import torch.utils.cpp_extension

    def no_compiler(**_):
        raise RuntimeError("Error building extension\nc++: not found")

    monkeypatch.setattr(torch.utils.cpp_extension, "load", no_compiler)
    filtering.cpu_kernel.cache_clear()
    try:
        with caplog.at_level(logging.WARNING):
            assert filtering.cpu_kernel() is None
            assert filtering.cpu_kernel() is None
        warnings = [r.getMessage() for r in caplog.records if "C++ filter" in r.getMessage()]
        assert warnings == ["top-k/top-p attention on the CPU uses torch's slower topk: the C++ "
                            "filter could not be built (Error building extension)"]
        logits = torch.randn(4, 9)
        torch.testing.assert_close(filtered_softmax(logits, 3, 0.8),
                                   torch_filtered_rows(logits, 3, 0.8, probabilities=True))
    finally:
        filtering.cpu_kernel.cache_clear()


def test_the_switch_turns_the_kernel_off(monkeypatch):
    monkeypatch.setenv(filtering.KERNEL_SWITCH, "0")
    filtering.cpu_kernel.cache_clear()
    try:
        assert filtering.cpu_kernel() is None
    finally:
        filtering.cpu_kernel.cache_clear()


def filtered_attention(**settings) -> NKATAttention:
    torch.manual_seed(0)
    config = AttentionConfig(top_k=5, top_p=0.85, **settings)
    return NKATAttention(32, num_heads=4, layer_index=1, config=config)


@pytest.mark.parametrize("settings", [{}, {"temperature": 0.65}, {"learnable_temperature": True},
                                      {"nkat_strength": 0.5}])
def test_every_filtered_path_gives_the_definition_and_its_gradient(implementation, settings):
    """Training (the fused kernel with the filter's mask), CPU inference (filtered softmax
    times v) and the analysis path (explicit weights) agree in value and gradient."""
    attn = filtered_attention(**settings)
    x = torch.randn(3, 23, 32, requires_grad=True)

    attn.keep_attention_map = True  # the explicit definition: weights, then weights @ v
    expected = attn(x)
    (expected_grad,) = torch.autograd.grad(expected.square().sum(), x)
    attn.keep_attention_map = False

    fused = attn(x)  # grad needed: the fused kernel with the mask
    (fused_grad,) = torch.autograd.grad(fused.square().sum(), x)
    torch.testing.assert_close(fused, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused_grad, expected_grad, rtol=1e-4, atol=1e-5)

    attn.eval()
    with torch.inference_mode():
        torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_compiled_top_k_top_p_has_no_graph_break(implementation, training):
    """The filter is a custom op (fake and autograd registered): a compiled NKAT-ViT with top-k
    and top-p is one graph (``fullgraph=True`` refuses any break), and its outputs and
    gradients are the eager model's."""
    from nkat_lightning.models import ModelConfig, NKATViT

    torch._dynamo.reset()
    torch.manual_seed(0)
    model = NKATViT(ModelConfig(embed_dim=32, num_heads=2, top_k=4, top_p=0.9)).train(training)
    x = torch.randn(3, 1, 28, 28)
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.random.fork_rng():
        eager = model(x)
    torch.testing.assert_close(compiled(x), eager)
    if training:
        compiled(x).sum().backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        model.zero_grad()
        model(x).sum().backward()
        for compiled_grad, p in zip(grads, [p for p in model.parameters() if p.grad is not None],
                                    strict=True):
            torch.testing.assert_close(compiled_grad, p.grad)
