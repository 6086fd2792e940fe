import pytest
import torch
import torch.nn.functional as F

from gptlab.model.linear import CHUNK_MIN_WEIGHTS, SPLIT_MAX_ROWS, Linear, linear, split_count


@pytest.fixture
def threads():
    """Run with a given number of torch threads, restoring the old number afterwards."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.mark.parametrize("n_threads", [2, 3, 4])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("extra_rows", [0, 1, 3], ids=["even", "odd", "3-more"])
def test_a_few_rows_split_across_threads_equal_f_linear(threads, n_threads, with_bias, extra_rows):
    threads(n_threads)
    torch.manual_seed(0)
    weight = torch.randn(n_threads * CHUNK_MIN_WEIGHTS // 128 + extra_rows, 128)
    bias = torch.randn(weight.size(0)) if with_bias else None
    for shape in [(128,), (1, 128), (1, 1, 128), (3, 128), (2, 1, 128), (4, 5, 128), (SPLIT_MAX_ROWS, 128)]:
        x = torch.randn(shape)
        with torch.no_grad():
            assert split_count(x, weight) == n_threads
            y = linear(x, weight, bias)
        assert y.shape == F.linear(x, weight, bias).shape
        torch.testing.assert_close(y, F.linear(x, weight, bias), rtol=1e-5, atol=1e-5)


def test_split_path_is_the_one_taken(threads, monkeypatch):
    """A few rows, no grad, 2 threads, a large weight: bmm does the work (and F.linear is not called)."""
    threads(2)
    calls = []
    monkeypatch.setattr(F, "linear", lambda *a: calls.append(a))
    big, small = (torch.randn(2 * CHUNK_MIN_WEIGHTS // 64 + n, 64) for n in (0, -2))
    with torch.no_grad():
        linear(torch.randn(1, 64), big)
        linear(torch.randn(SPLIT_MAX_ROWS, 64), big)
    assert calls == []
    with torch.no_grad():
        linear(torch.randn(SPLIT_MAX_ROWS + 1, 64), big)  # many rows: a real matmul
        linear(torch.randn(1, 64), small)  # too small to be worth waking the threads
    linear(torch.randn(1, 64), big)  # autograd on
    threads(1)
    with torch.no_grad():
        linear(torch.randn(1, 64), big)
    assert len(calls) == 4


def test_each_thread_gets_enough_weights_to_be_worth_waking(threads):
    threads(8)
    x = torch.randn(1, 64)
    with torch.no_grad():
        assert split_count(x, torch.empty(8 * CHUNK_MIN_WEIGHTS // 64, 64)) == 8
        assert split_count(x, torch.empty(3 * CHUNK_MIN_WEIGHTS // 64, 64)) == 3
        assert split_count(x, torch.empty(CHUNK_MIN_WEIGHTS // 64, 64)) == 0  # one chunk: no split


def test_linear_module_is_an_nn_linear_with_the_same_state_dict():
    layer = Linear(8, 6)
    plain = torch.nn.Linear(8, 6)
    assert isinstance(layer, torch.nn.Linear)
    assert layer.state_dict().keys() == plain.state_dict().keys()
    x = torch.randn(3, 8, requires_grad=True)
    layer(x).sum().backward()
    assert x.grad is not None and layer.weight.grad is not None


def test_a_compiled_model_has_no_graph_break_from_it():
    """torch.compile (default on CUDA) must see one graph, in training and in inference."""
    from gptlab.model.config import GPTConfig
    from gptlab.model.gpt import GPT

    model = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=512))
    x = torch.randint(0, 64, (1, 16))
    assert torch._dynamo.explain(model)(x, x).graph_break_count == 0
    with torch.no_grad():
        assert torch._dynamo.explain(model)(x[:, :1]).graph_break_count == 0
