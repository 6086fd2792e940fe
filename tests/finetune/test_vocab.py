import pytest
import torch

from gptlab.train.checkpoint import load_checkpoint, save_checkpoint
from gptlab.model.config import GPTConfig
from gptlab.errors import ConfigError, TokenizerError
from gptlab.model.gpt import GPT
from gptlab.data.tokenizer import EOT, train_bpe_tokenizer, train_char_tokenizer
from gptlab.finetune.vocab import add_special_tokens, resize_token_embeddings

TEXT = "def add(a, b):\n    return a + b\n" * 20


def model_for(tokenizer, extra_rows: int = 0, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    config = GPTConfig(vocab_size=tokenizer.vocab_size + extra_rows, block_size=16, n_layer=1, n_head=2, n_embd=16)
    return GPT(config)


def test_new_tokens_get_the_mean_row_and_old_rows_are_unchanged():
    tokenizer = train_char_tokenizer(TEXT, special_tokens=(EOT,))
    model = model_for(tokenizer)
    old = model.transformer.wte.weight.detach().clone()
    V = old.shape[0]
    ids = add_special_tokens(model, tokenizer, ["<|sep|>", "<|im_start|>"])
    assert ids == [V, V + 1]
    assert tokenizer.vocab_size == V + 2 == model.config.vocab_size
    weight = model.transformer.wte.weight
    assert weight.shape == (V + 2, 16)
    assert torch.equal(weight[:V], old)
    torch.testing.assert_close(weight[V], old.mean(dim=0))
    torch.testing.assert_close(weight[V + 1], old.mean(dim=0))
    assert model.lm_head.weight is weight  # still tied
    assert weight.requires_grad
    assert tokenizer.encode("<|sep|>") == [V]


def test_old_logits_are_unchanged_and_a_new_tokens_logit_is_the_mean():
    tokenizer = train_char_tokenizer(TEXT, special_tokens=(EOT,))
    model = model_for(tokenizer).eval()
    x = torch.tensor([tokenizer.encode("def add(a")])
    before, _ = model(x)
    V = before.shape[-1]
    (new_id,) = add_special_tokens(model, tokenizer, ["<|sep|>"])
    after, _ = model(x)
    assert after.shape[-1] == V + 1
    assert torch.equal(after[..., :V], before)
    torch.testing.assert_close(after[..., new_id], before.mean(dim=-1))  # tied head: h·mean(rows) = mean(h·rows)
    logits, _ = model(torch.tensor([[new_id, 3, new_id]]))  # the new id is a valid input
    assert torch.isfinite(logits).all()


def test_new_rows_train():
    tokenizer = train_char_tokenizer(TEXT, special_tokens=(EOT,))
    model = model_for(tokenizer)
    (new_id,) = add_special_tokens(model, tokenizer, ["<|sep|>"])
    _, loss = model(torch.tensor([[new_id, 1, 2]]), torch.tensor([[1, 2, new_id]]))
    loss.backward()
    assert torch.count_nonzero(model.transformer.wte.weight.grad[new_id]) > 0


def test_adding_an_existing_special_token_changes_nothing():
    tokenizer = train_char_tokenizer(TEXT)  # has <|sep|> already
    model = model_for(tokenizer)
    weight = model.transformer.wte.weight
    (sep,) = add_special_tokens(model, tokenizer, ["<|sep|>"])
    assert sep == tokenizer.special_tokens["<|sep|>"]
    assert model.transformer.wte.weight is weight and model.config.vocab_size == tokenizer.vocab_size


def test_normal_init_has_the_gpt_scale():
    tokenizer = train_char_tokenizer(TEXT, special_tokens=(EOT,))
    model = model_for(tokenizer)
    V = model.config.vocab_size
    torch.manual_seed(0)
    add_special_tokens(model, tokenizer, [f"<|t{i}|>" for i in range(200)], init="normal")
    new = model.transformer.wte.weight[V:].detach()
    assert abs(float(new.std()) - 0.02) < 0.002 and abs(float(new.mean())) < 0.002


def test_a_padding_row_taken_by_a_new_token_is_initialised_and_the_size_is_kept():
    tokenizer = train_bpe_tokenizer(TEXT * 5, vocab_size=300, special_tokens=(EOT,))
    known = tokenizer.vocab_size
    model = model_for(tokenizer, extra_rows=8)  # rows known .. known+7 are padding, never a token
    old = model.transformer.wte.weight.detach().clone()
    (new_id,) = add_special_tokens(model, tokenizer, ["<|sep|>"])
    assert new_id == known and model.config.vocab_size == known + 8
    weight = model.transformer.wte.weight
    torch.testing.assert_close(weight[new_id], old[:known].mean(dim=0))  # mean of real tokens only
    assert torch.equal(weight[:known], old[:known]) and torch.equal(weight[known + 1 :], old[known + 1 :])


def test_resized_model_saves_and_loads(tmp_path):
    tokenizer = train_char_tokenizer(TEXT, special_tokens=(EOT,))
    model = model_for(tokenizer)
    add_special_tokens(model, tokenizer, ["<|im_start|>", "<|im_end|>"])
    save_checkpoint(tmp_path / "run", model, tokenizer, step=1)
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt.config.vocab_size == tokenizer.vocab_size
    assert ckpt.tokenizer.special_tokens == tokenizer.special_tokens
    assert torch.equal(ckpt.model.transformer.wte.weight, model.transformer.wte.weight)


def test_errors():
    tokenizer = train_char_tokenizer(TEXT, special_tokens=(EOT,))
    model = model_for(tokenizer)
    with pytest.raises(ConfigError, match="shrink"):
        resize_token_embeddings(model, model.config.vocab_size - 1)
    small = GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=1, n_embd=8))
    with pytest.raises(TokenizerError, match="only 10 rows"):
        add_special_tokens(small, tokenizer, ["<|sep|>"])
    with pytest.raises(ConfigError, match="init"):
        resize_token_embeddings(model, model.config.vocab_size + 1, init="zeros")  # type: ignore[arg-type]
