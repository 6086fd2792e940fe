import math

import pytest
import torch

from gptlab.model.config import GPTConfig, preset
from gptlab.errors import ConfigError, GenerationError
from gptlab.model.gpt import GPT

CFG = GPTConfig(vocab_size=97, block_size=32, n_layer=2, n_head=4, n_embd=32)


def make_model(cfg: GPTConfig = CFG, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(cfg).eval()


def test_config_validation():
    with pytest.raises(ConfigError, match="divisible"):
        GPTConfig(n_embd=30, n_head=4)
    with pytest.raises(ConfigError, match="n_layer"):
        GPTConfig(n_layer=0)
    with pytest.raises(ConfigError, match="dropout"):
        GPTConfig(dropout=1.5)
    with pytest.raises(ConfigError, match="unknown preset"):
        preset("gpt5")
    with pytest.raises(ConfigError, match="unknown model config keys"):
        GPTConfig.from_dict({"n_layers": 3})
    assert GPTConfig.from_dict(CFG.to_dict()) == CFG


def test_presets_are_constructible_without_instantiating():
    big = preset("gpt3-175b")
    assert (big.n_layer, big.n_embd, big.block_size) == (96, 12288, 2048)
    assert preset("gpt2").vocab_size == 50257


def test_gpt2_parameter_count_matches_published():
    with torch.device("meta"):
        model = GPT(preset("gpt2"))
    assert model.num_parameters() == 124_439_808


def test_weights_are_tied():
    model = make_model()
    assert model.lm_head.weight is model.transformer.wte.weight


def test_initial_loss_is_close_to_uniform():
    model = make_model()
    x = torch.randint(0, CFG.vocab_size, (4, CFG.block_size))
    y = torch.randint(0, CFG.vocab_size, (4, CFG.block_size))
    _, loss = model(x, y)
    assert abs(loss.item() - math.log(CFG.vocab_size)) < 0.1


def test_causality_future_tokens_do_not_change_past_logits():
    model = make_model()
    x = torch.randint(0, CFG.vocab_size, (2, 20))
    logits, _ = model(x)
    changed = x.clone()
    changed[:, 12:] = (changed[:, 12:] + 1) % CFG.vocab_size
    logits2, _ = model(changed)
    torch.testing.assert_close(logits[:, :12], logits2[:, :12], rtol=0, atol=1e-6)
    assert not torch.allclose(logits[:, 12:], logits2[:, 12:])


@pytest.mark.parametrize("chunks", [[20], [1] * 20, [7, 1, 1, 5, 6], [12, 8]])
def test_cached_decoding_matches_full_forward(chunks):
    model = make_model()
    x = torch.randint(0, CFG.vocab_size, (3, sum(chunks)))
    full, _ = model(x)
    cache = model.new_cache(batch_size=3)
    pieces, start = [], 0
    for n in chunks:
        logits, _ = model(x[:, start : start + n], cache=cache)
        pieces.append(logits)
        start += n
    assert cache.length == sum(chunks)
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-5, atol=1e-5)


def test_last_only_returns_the_last_position():
    model = make_model()
    x = torch.randint(0, CFG.vocab_size, (2, 9))
    full, _ = model(x)
    last, _ = model(x, last_only=True)
    torch.testing.assert_close(last, full[:, -1:])


def test_context_overflow_is_a_typed_error():
    model = make_model()
    with pytest.raises(GenerationError, match="context length"):
        model(torch.zeros(1, CFG.block_size + 1, dtype=torch.long))
    cache = model.new_cache(max_len=8)
    model(torch.zeros(1, 8, dtype=torch.long), cache=cache)
    with pytest.raises(GenerationError):
        model(torch.zeros(1, 1, dtype=torch.long), cache=cache)


def test_ignore_index_targets_are_left_out_of_the_loss():
    model = make_model()
    x = torch.randint(0, CFG.vocab_size, (2, 10))
    y = torch.randint(0, CFG.vocab_size, (2, 10))
    masked = y.clone()
    masked[:, :5] = -100
    logits, loss = model(x, masked)
    expected = torch.nn.functional.cross_entropy(logits[:, 5:].reshape(-1, CFG.vocab_size), y[:, 5:].reshape(-1))
    torch.testing.assert_close(loss, expected)


def test_logits_match_huggingface_gpt2():
    transformers = pytest.importorskip("transformers")
    model = make_model()
    hf_config = transformers.GPT2Config(
        vocab_size=CFG.vocab_size, n_positions=CFG.block_size, n_embd=CFG.n_embd,
        n_layer=CFG.n_layer, n_head=CFG.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )
    hf = transformers.GPT2LMHeadModel(hf_config).eval()
    ours = model.state_dict()
    transposed = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
    with torch.no_grad():
        for name, param in hf.state_dict().items():
            if name not in ours:
                continue
            value = ours[name].t() if name.endswith(transposed) else ours[name]
            param.copy_(value)
    x = torch.randint(0, CFG.vocab_size, (2, 16))
    with torch.no_grad():
        expected = hf(x).logits
    actual, _ = model(x)
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("step", ["forward", "decode_step"])
def test_batched_decoding_of_rows_with_different_lengths_matches_each_row_alone(step):
    """The server's case: rows hold different numbers of tokens, one new token per row. decode_step
    (fixed shapes: masked attention over the whole cache buffer) must give forward's logits."""
    model = make_model()
    lengths = [5, 9, 1]
    seqs = [torch.randint(0, CFG.vocab_size, (n + 3,)) for n in lengths]
    cache = model.new_cache(batch_size=3)
    for row, (seq, n) in enumerate(zip(seqs, lengths)):
        model(seq[:n].view(1, -1), cache=cache.rows(row, row + 1))  # prefill one row of the batch
    assert cache.lengths.tolist() == lengths
    steps = []
    for t in range(3):
        idx = torch.stack([seq[n + t] for seq, n in zip(seqs, lengths)]).view(3, 1)
        if step == "forward":
            steps.append(model(idx, cache=cache)[0][:, 0])  # (3, V)
        else:
            steps.append(model.decode_step(idx, cache.lengths.clone(), cache))  # (3, V)
            cache.lengths += 1
    for row, (seq, n) in enumerate(zip(seqs, lengths)):
        alone, _ = model(seq.view(1, -1))  # (1, n + 3, V)
        got = torch.stack([s[row] for s in steps])
        torch.testing.assert_close(got, alone[0, n:], rtol=1e-5, atol=1e-5)


def test_cache_rows_can_be_moved_and_reset():
    model = make_model()
    x = torch.randint(0, CFG.vocab_size, (1, 6))
    cache = model.new_cache(batch_size=2)
    model(x[:, :5], cache=cache.rows(1, 2))
    cache.copy_row(1, 0)
    cache.reset(1)
    assert cache.lengths.tolist() == [5, 0]
    logits, _ = model(x[:, 5:], cache=cache.rows(0, 1))
    full, _ = model(x)
    torch.testing.assert_close(logits[:, -1], full[:, -1], rtol=1e-5, atol=1e-5)
    with pytest.raises(GenerationError, match="different lengths"):
        model(torch.zeros(2, 2, dtype=torch.long), cache=cache)


def test_vocabulary_padding_changes_shapes_not_results():
    cfg = CFG.replace(vocab_pad_multiple=64)
    assert cfg.padded_vocab_size % 64 == 0 and cfg.padded_vocab_size >= CFG.vocab_size
    torch.manual_seed(0)
    padded = GPT(cfg)
    plain = GPT(CFG)
    with torch.no_grad():
        for name, p in plain.named_parameters():
            q = padded.get_parameter(name)
            q[: p.size(0)].copy_(p) if name == "transformer.wte.weight" else q.copy_(p)
    x = torch.randint(0, CFG.vocab_size, (2, 10))
    logits, loss = padded(x, x)
    ref_logits, ref_loss = plain(x, x)
    assert logits.shape == ref_logits.shape
    torch.testing.assert_close(logits, ref_logits)
    torch.testing.assert_close(loss, ref_loss)
    assert padded.num_parameters() == plain.num_parameters()
