"""Muon: the orthogonalization against an SVD, the optimizer against torch.optim.Muon and AdamW."""

import pytest
import torch

from gptlab.model.config import GPTConfig
from gptlab.model.gpt import GPT
from gptlab.train import muon
from gptlab.train.muon import NS_COEFFICIENTS, MuonAdamW, orthogonalize
from gptlab.train.trainer import TrainConfig, make_optimizer


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])  # bf16: what CUDA runs
@pytest.mark.parametrize("shape", [(3, 24, 40), (2, 40, 24), (1, 16, 16)])
def test_orthogonalize_approximates_the_polar_factor(shape, dtype):
    torch.manual_seed(0)
    g = torch.randn(shape)
    out = orthogonalize(g, steps=5, dtype=dtype)
    assert out.shape == g.shape and out.dtype == g.dtype
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    polar = u @ vh
    sv = torch.linalg.svdvals(out)
    # the quintic iteration lands every singular value near 1 (roughly 0.7 .. 1.2), not exactly on it
    assert sv.min() > 0.6 and sv.max() < 1.25
    cosine = (out * polar).sum(dim=(-2, -1)) / (out.norm(dim=(-2, -1)) * polar.norm(dim=(-2, -1)))
    assert (cosine > 0.95).all()


@pytest.mark.parametrize("shape", [(3, 24, 40), (2, 40, 24)])
def test_orthogonalize_is_the_quintic_iteration(shape):
    """The batched products with folded scalings compute the reference's iteration exactly
    (float64): X <- aX + (bA + cA^2)X with A = XX^T, on the wide orientation."""
    a, b, c = NS_COEFFICIENTS
    torch.manual_seed(0)
    g = torch.randn(shape, dtype=torch.float64)
    x = g.mT if shape[1] > shape[2] else g
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    for _ in range(5):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    expected = x.mT if shape[1] > shape[2] else x
    torch.testing.assert_close(orthogonalize(g, steps=5, dtype=torch.float64), expected, rtol=0, atol=1e-12)


def test_muon_group_matches_torch_muon():
    """torch.optim.Muon runs the same update with bf16 Newton-Schulz: agree to bf16 precision."""
    torch.manual_seed(0)
    w0 = torch.randn(32, 48)
    ours_p, ref_p = torch.nn.Parameter(w0.clone()), torch.nn.Parameter(w0.clone())
    ours = MuonAdamW([{"params": [ours_p], "muon": True, "weight_decay": 0.1}], lr=0.02)
    ref = torch.optim.Muon([ref_p], lr=0.02, weight_decay=0.1, adjust_lr_fn="match_rms_adamw")
    for step in range(4):
        grad = torch.randn(32, 48)
        ours_p.grad, ref_p.grad = grad.clone(), grad.clone()
        ours.step()
        ref.step()
        change, ref_change = ours_p.detach() - w0, ref_p.detach() - w0
        assert (change - ref_change).norm() / ref_change.norm() < 0.02, step
    assert not torch.equal(ours_p, w0)


def test_matrices_orthogonalized_a_few_at_a_time_get_the_same_update(monkeypatch):
    """Same-shape matrices are stacked up to STACK_ELEMENTS numbers at a time (the memory bound
    of large models): one or two at a time give the update of one stack, to the rounding of the
    float32 iterations (1e-6 here, against updates of about 0.02: a matrix given another's update
    would be off by that much)."""
    torch.manual_seed(0)
    weights = [torch.randn(16, 24, dtype=torch.float64) for _ in range(5)]
    grads = [torch.randn(16, 24, dtype=torch.float64) for _ in range(5)]

    def stepped(stack_elements: int) -> list[torch.Tensor]:
        monkeypatch.setattr(muon, "STACK_ELEMENTS", stack_elements)
        params = [torch.nn.Parameter(w.clone()) for w in weights]
        opt = MuonAdamW([{"params": params, "muon": True, "weight_decay": 0.1}], lr=0.02)
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step()
        return [p.detach() for p in params]

    together, one_by_one, in_twos = stepped(1 << 25), stepped(1), stepped(2 * 16 * 24)
    for a, b, c in zip(together, one_by_one, in_twos):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-6)
        torch.testing.assert_close(c, a, rtol=0, atol=1e-6)


def test_adamw_groups_step_exactly_like_torch_adamw():
    torch.manual_seed(0)
    matrix, vector = torch.randn(8, 8), torch.randn(8)
    ours = [torch.nn.Parameter(matrix.clone()), torch.nn.Parameter(vector.clone())]
    ref = [torch.nn.Parameter(matrix.clone()), torch.nn.Parameter(vector.clone())]
    hidden = torch.nn.Parameter(torch.randn(8, 8))
    groups = lambda ps: [{"params": [ps[0]], "weight_decay": 0.1}, {"params": [ps[1]], "weight_decay": 0.0}]
    opt = MuonAdamW([{"params": [hidden], "muon": True}, *groups(ours)], lr=1e-2, betas=(0.9, 0.99), foreach=True)
    ref_opt = torch.optim.AdamW(groups(ref), lr=1e-2, betas=(0.9, 0.99), foreach=True)
    for _ in range(3):
        grads = [torch.randn(8, 8), torch.randn(8)]
        for p, q, g in zip(ours, ref, grads):
            p.grad, q.grad = g.clone(), g.clone()
        hidden.grad = torch.randn(8, 8)
        opt.step()
        ref_opt.step()
    for p, q in zip(ours, ref):
        assert torch.equal(p, q)
    assert len(opt.param_groups) == 3  # the Muon group is back after every step


def test_make_optimizer_puts_block_matrices_on_muon():
    model = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=16))
    opt = make_optimizer(model, TrainConfig(optimizer="muon"), torch.device("cpu"))
    assert isinstance(opt, MuonAdamW)
    muon = {id(p) for g in opt.param_groups if g.get("muon") for p in g["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in muon}
    assert names == {f"transformer.h.{i}.{m}.weight" for i in range(2)
                     for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")}
    every = {id(p) for g in opt.param_groups for p in g["params"]}
    assert every == {id(p) for p in model.parameters()}  # each parameter once (wte is tied to lm_head)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(every)
    assert type(make_optimizer(model, TrainConfig(optimizer="adamw"), torch.device("cpu"))) is torch.optim.AdamW


def test_muon_rejects_non_matrices():
    with pytest.raises(ValueError, match="2-D"):
        MuonAdamW([{"params": [torch.nn.Parameter(torch.zeros(4))], "muon": True}], lr=1e-3)
