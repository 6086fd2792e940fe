"""Blocked causal attention (``gptlab.model.attention``) against PyTorch's own scaled dot-product
attention: outputs and all three gradients, in float64 so that any wrong block, mask or fold shows
far above rounding; and the GPT's training path, which takes it at contexts of 256 to 512."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gptlab.generate.compiled import has_cpp_compiler
from gptlab.model import GPT, GPTConfig, attention


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """SDPA with ``is_causal``, on q (B, T, H, D), k and v (B, T, K, D) → (B, T, H·D)."""
    B, T, H, D = q.shape
    y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                       is_causal=True, enable_gqa=k.size(2) != H)
    return y.transpose(1, 2).reshape(B, T, H * D)


def outputs_and_grads(fn, qkv: torch.Tensor, heads: tuple[int, int, int], grad_out: torch.Tensor):
    qkv = qkv.detach().requires_grad_()
    q, k, v = qkv.split(heads, dim=2)  # strided views, as the model hands them over
    y = fn(q, k, v)
    y.backward(grad_out)
    return y.detach(), qkv.grad


@pytest.mark.parametrize(("T", "H", "K", "blocks"), [
    (16, 4, 2, 4),  # grouped-query: two query heads per key/value head, folded into one product
    (16, 4, 4, 4),  # multi-head
    (12, 6, 1, 3),  # multi-query, three blocks
    (8, 2, 2, 1),  # one block: the whole square, masked
    (32, 4, 2, 8),
])
def test_matches_sdpa_forward_and_backward(T, H, K, blocks):
    g = torch.Generator().manual_seed(T * 100 + H * 10 + K)
    B, D = 3, 8
    qkv = torch.randn(B, T, H + 2 * K, D, generator=g, dtype=torch.float64)
    grad_out = torch.randn(B, T, H * D, generator=g, dtype=torch.float64)
    y_ref, grad_ref = outputs_and_grads(reference, qkv, (H, K, K), grad_out)
    y, grad = outputs_and_grads(lambda q, k, v: attention.blocked_causal_attention(q, k, v, blocks),
                                qkv, (H, K, K), grad_out)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(grad, grad_ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("T", [64, 256])
def test_bf16_is_as_accurate_as_sdpa_in_bf16(T):
    """In bf16 (products in bf16, softmax and the blocks' sums in fp32) the output and the
    gradients stay as close to the float64 result as PyTorch's own attention run in bf16: within
    twice its error plus one bf16 rounding, and within 2^-5 of the largest value."""
    g = torch.Generator().manual_seed(T)
    B, H, K, D = 2, 4, 2, 64
    qkv = torch.randn(B, T, H + 2 * K, D, generator=g, dtype=torch.float64)
    grad_out = torch.randn(B, T, H * D, generator=g, dtype=torch.float64)
    y_ref, grad_ref = outputs_and_grads(reference, qkv, (H, K, K), grad_out)
    low = [qkv.bfloat16(), grad_out.bfloat16()]
    y, grad = outputs_and_grads(attention.blocked_causal_attention, low[0], (H, K, K), low[1])
    y_sdpa, grad_sdpa = outputs_and_grads(reference, low[0], (H, K, K), low[1])
    assert y.dtype == grad.dtype == torch.bfloat16

    def error(a: torch.Tensor, ref: torch.Tensor) -> float:
        return float((a.double() - ref).abs().max() / ref.abs().max())

    for ours, theirs, ref in ((y, y_sdpa, y_ref), (grad, grad_sdpa, grad_ref)):
        assert error(ours, ref) <= min(2 * error(theirs, ref) + 2**-8, 2**-5)


def test_queries_never_see_later_keys():
    B, T, H, D = 2, 16, 2, 4
    q, k, v = (torch.randn(B, T, H, D, dtype=torch.float64) for _ in range(3))
    y = attention.blocked_causal_attention(q, k, v)
    k2, v2 = k.clone(), v.clone()
    k2[:, 9:] += 5.0  # change every key and value from position 9 on
    v2[:, 9:] -= 3.0
    y2 = attention.blocked_causal_attention(q, k2, v2)
    assert torch.equal(y[:, :9], y2[:, :9])
    assert not torch.allclose(y[:, 9:], y2[:, 9:])


def test_fits_only_training_at_short_float_contexts_on_the_cpu():
    def q_and_k(B=8, T=256, H=4, K=2, dtype=torch.float32, grad=True, v_dtype=None):
        return (torch.empty(B, T, H, 64, dtype=dtype, requires_grad=grad), torch.empty(B, T, K, 64, dtype=dtype),
                torch.empty(B, T, K, 64, dtype=v_dtype or dtype))

    assert attention.fits(*q_and_k())
    assert not attention.fits(*q_and_k(grad=False))  # no backward to come: the flash kernel's forward is faster
    assert not attention.fits(*q_and_k(T=128))  # below MIN_CONTEXT the flash kernel is as fast
    assert not attention.fits(*q_and_k(T=258))  # not a multiple of the blocks
    assert not attention.fits(*q_and_k(B=1, T=1024))  # above MAX_CONTEXT the flash kernel skips blocks itself
    assert not attention.fits(*q_and_k(B=32, T=512))  # the kept probabilities would pass the cap
    assert attention.fits(*q_and_k(dtype=torch.bfloat16))
    assert attention.fits(*q_and_k(T=64, dtype=torch.bfloat16))  # the flash kernel is slow in bf16: blocks pay from 64
    assert not attention.fits(*q_and_k(T=32, dtype=torch.bfloat16))
    assert not attention.fits(*q_and_k(dtype=torch.float16))
    assert not attention.fits(*q_and_k(v_dtype=torch.bfloat16))  # mixed, as under autocast: its backward would fail
    assert not attention.fits(*q_and_k(H=4, K=3))


def test_the_gpt_trains_through_it_as_through_sdpa(monkeypatch):
    """At context 256 the training forward takes the blocked path; its loss and every gradient
    equal those of the same model made to use SDPA."""
    config = GPTConfig(vocab_size=50, block_size=256, n_layer=2, n_head=4, n_kv_head=2, n_embd=32,
                       norm="rmsnorm", positions="rotary", mlp="swiglu", bias=False, tie_embeddings=False)
    torch.manual_seed(0)
    model = GPT(config).train().double()
    idx = torch.randint(0, 50, (2, 256))
    x, y = idx, idx.roll(-1, dims=1)
    calls = []
    blocked = attention.blocked_causal_attention
    monkeypatch.setattr(attention, "blocked_causal_attention", lambda *a: calls.append(1) or blocked(*a))

    def loss_and_grads():
        model.zero_grad()
        loss = model(x, y)[1]
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    loss, grads = loss_and_grads()
    assert len(calls) == config.n_layer
    monkeypatch.setattr(attention, "fits", lambda q, k, v: False)
    loss_ref, grads_ref = loss_and_grads()
    assert len(calls) == config.n_layer  # the second pass went through SDPA
    torch.testing.assert_close(loss, loss_ref, rtol=0, atol=1e-12)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, grads_ref[name], rtol=0, atol=1e-12, msg=name)


@pytest.mark.skipif(not has_cpp_compiler(), reason="torch.compile's CPU backend needs a C++ compiler")
def test_torch_compile_traces_it_whole():
    """``--compile`` training relies on dynamo tracing the autograd.Function, forward and backward,
    in one graph (``fullgraph``): compiled results equal eager ones."""
    g = torch.Generator().manual_seed(7)
    B, T, H, K, D = 2, 16, 4, 2, 8
    qkv = torch.randn(B, T, H + 2 * K, D, generator=g)
    grad_out = torch.randn(B, T, H * D, generator=g)
    compiled = torch.compile(attention.blocked_causal_attention, fullgraph=True)
    y_eager, grad_eager = outputs_and_grads(attention.blocked_causal_attention, qkv, (H, K, K), grad_out)
    y, grad = outputs_and_grads(compiled, qkv, (H, K, K), grad_out)
    torch.testing.assert_close(y, y_eager, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad, grad_eager, rtol=1e-5, atol=1e-5)
