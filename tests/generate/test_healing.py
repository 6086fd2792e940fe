"""Token healing: the prompt's tail is backed up and spelled again, exactly, and nothing changes
when it is off."""

import random

import pytest
import torch

from gptlab.data.tokenizer import train_bpe_tokenizer
from gptlab.generate.healing import HealedPrompt, PrefixConstraint, heal_prompt, token_bytes
from gptlab.generate.sampler import (
    SamplingParams,
    SequenceSampler,
    TextStream,
    generate_text,
    generate_tokens,
    sample_rows,
)
from gptlab.model.config import GPTConfig
from gptlab.model.gpt import GPT


@pytest.fixture(scope="module")
def bpe():
    """A byte-level BPE that learns ``def`` + `` name`` (and ``://``), as real code tokenizers do."""
    rng = random.Random(0)
    names = ["name", "value", "parse", "build", "read", "write", "count", "join"]
    text = "".join(
        f"def {rng.choice(names)}{rng.choice(['', '_x', '_all', '2'])}(x):\n    return x\n\n"
        f"url = 'https://example.org/{rng.choice(names)}'\n"
        for _ in range(300)
    )
    return train_bpe_tokenizer([text], vocab_size=400)


@pytest.fixture(scope="module")
def bpe_model(bpe):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=bpe.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=32)).eval()


def pieces(tokenizer, ids):
    return [tokenizer.decode([i]) for i in ids]


def test_def_space_backs_up_the_space(bpe):
    ids = bpe.encode("def ")
    assert pieces(bpe, ids) == ["def", " "]  # the split a model never sees in training
    healed = heal_prompt(bpe, ids)
    assert healed.prompt_ids == ids[:1] and healed.removed == b" " and healed.text == " "
    vocab = token_bytes(bpe)
    assert " name" in pieces(bpe, vocab.fitting(b" "))


def test_several_tokens_are_backed_up_while_a_longer_token_could_start_there(bpe):
    ids = bpe.encode("def na")
    assert pieces(bpe, ids)[1:] == [" ", "n", "a"]
    healed = heal_prompt(bpe, ids)
    assert pieces(bpe, healed.prompt_ids) == ["def"] and healed.text == " na"
    assert set(pieces(bpe, token_bytes(bpe).fitting(b" na"))) == {" name", " "}
    https = heal_prompt(bpe, bpe.encode("url = 'https:/"))
    assert https.text == ":/" and "://" in pieces(bpe, token_bytes(bpe).fitting(b":/"))


def test_nothing_to_heal_and_a_whole_prompt_backed_up(bpe, tokenizer):
    ids = bpe.encode("def name(x):\n    return x")  # no longer token starts with "x"
    assert heal_prompt(bpe, ids) == HealedPrompt(ids)
    lone = heal_prompt(bpe, bpe.encode(" "))
    assert lone.prompt_ids == [bpe.eot_id] and lone.text == " "  # generate from a document's start
    special = bpe.encode("<|im_start|>")
    assert heal_prompt(bpe, special) == HealedPrompt(special)  # special tokens are never backed up
    # a char tokenizer has no token that extends another: healing never changes anything
    char_ids = tokenizer.encode("def ")
    assert heal_prompt(tokenizer, char_ids) == HealedPrompt(char_ids)


def test_the_constraint_is_exact(bpe):
    """Masked tokens get probability exactly zero, even when the model prefers them by far; the
    allowed set is the definition: the token's bytes start with the rest, or are a start of it."""
    vocab = token_bytes(bpe)
    rest = b" na"
    expected = {i for i, p in enumerate(vocab.pieces) if p and (p.startswith(rest) or rest.startswith(p))}
    width = bpe.vocab_size + 8  # a padded embedding: the extra ids are never allowed
    constraint = PrefixConstraint(vocab, rest)
    allowed = constraint.allowed(width)
    assert set(torch.nonzero(allowed).flatten().tolist()) == expected
    logits = torch.randn(1, width, generator=torch.Generator().manual_seed(0))
    logits[0, ~allowed] += 50.0  # the model all but certain of a token that does not fit
    sampler = SequenceSampler(SamplingParams(temperature=1.5, seed=0), width, constraint=constraint)
    probs = sampler.adjust(logits[0]).softmax(-1)
    assert probs[~allowed].eq(0).all() and probs[allowed].sum().item() == pytest.approx(1.0)
    draws = {int(sample_rows(logits, [sampler])) for _ in range(200)}
    assert draws <= expected
    greedy = SequenceSampler(SamplingParams(temperature=0), width, constraint=PrefixConstraint(vocab, rest))
    assert int(sample_rows(logits, [greedy])) in expected


def test_the_constraint_follows_the_generated_tokens(bpe):
    vocab = token_bytes(bpe)
    space, n = bpe.encode(" ")[0], bpe.encode("n")[0]
    constraint = PrefixConstraint(vocab, b" na")
    constraint.observe(space)
    assert constraint.rest == b"na" and not constraint.done
    constraint.observe(n)
    assert constraint.rest == b"a"
    constraint.observe(bpe.encode("a")[0])
    assert constraint.done


def test_healed_samples_never_start_with_a_split_the_tokenizer_does_not_make(bpe, bpe_model):
    """From "def ", an (untrained) model without healing often writes a token after the lone
    space that the tokenizer would have merged with it; with healing, the first new token always
    spells the space itself, and prompt + first token is the tokenizer's own split."""
    prompt_ids = bpe.encode("def ")
    healed = heal_prompt(bpe, prompt_ids)
    impossible_without = 0
    for seed in range(30):
        params = SamplingParams(max_new_tokens=6, temperature=1.0, seed=seed)
        tokens = list(generate_tokens(bpe_model, healed.prompt_ids, params, constraint=healed.constraint()))
        first = tokens[0]
        assert bpe.decode([first]).startswith(" ")
        assert bpe.encode(bpe.decode([*healed.prompt_ids, first])) == [*healed.prompt_ids, first]
        assert bpe.decode([*healed.prompt_ids, *tokens]).startswith("def ")
        plain = list(generate_tokens(bpe_model, prompt_ids, params))
        impossible_without += bpe.encode(bpe.decode([*prompt_ids, plain[0]])) != [*prompt_ids, plain[0]]
    assert impossible_without > 0  # the problem healing solves, seen on the same model


@pytest.mark.parametrize("prompt", ["def ", "def na", "url = 'https:/", " ", "x = 1\n"])
def test_generate_text_continues_the_prompt_and_hides_the_healed_text(bpe, bpe_model, prompt):
    for seed in range(5):
        params = SamplingParams(max_new_tokens=12, temperature=1.0, seed=seed)
        text = "".join(generate_text(bpe_model, bpe, prompt, params, stop_at_eot=False))
        healed = heal_prompt(bpe, bpe.encode(prompt))
        tokens = list(generate_tokens(bpe_model, healed.prompt_ids, params, constraint=healed.constraint()))
        spelled = bpe.decode(tokens)
        assert spelled.startswith(healed.text)  # the output text always starts with the prompt's
        assert prompt + text == prompt[: len(prompt) - healed.backed_up] + spelled


def test_healing_off_gives_todays_tokens(bpe, bpe_model):
    """With token_healing=False, generate_text is exactly the unhealed sampler (bitwise the same
    tokens for a seed); and a prompt with nothing to heal gives the same tokens either way."""
    for seed in range(3):
        off = SamplingParams(max_new_tokens=20, temperature=0.9, top_k=50, seed=seed, token_healing=False)
        plain = list(generate_tokens(bpe_model, bpe.encode("def "), off))
        stream = TextStream(bpe)
        expected = "".join(stream.push(t) for t in plain) + stream.flush()
        assert "".join(generate_text(bpe_model, bpe, "def ", off, stop_at_eot=False)) == expected
        on = SamplingParams(max_new_tokens=20, temperature=0.9, top_k=50, seed=seed)
        assert on.token_healing  # the Python API's default
        nothing = "def name(x):\n    return x"
        assert "".join(generate_text(bpe_model, bpe, nothing, on, stop_at_eot=False)) == "".join(
            generate_text(bpe_model, bpe, nothing, off, stop_at_eot=False))


def test_stop_sequences_are_looked_for_after_the_healed_text(bpe, bpe_model):
    stream = TextStream(bpe, stop=[" "], skip=1)
    shown = "".join(stream.push(t) for t in bpe.encode(" name x")) + stream.flush()
    assert shown == "name" and stream.stopped


@pytest.mark.slow  # the CLI's loader imports take seconds
def test_gptlab_sample_heals_by_default_and_not_with_the_flag(bpe, bpe_model, tmp_path, capsys):
    from gptlab.cli.main import main
    from gptlab.train.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "run", bpe_model, bpe, step=0)
    flags = ["sample", str(tmp_path / "run"), "--prompt", "def ", "--max-new-tokens", "6", "--seed", "3",
             "--temperature", "1", "--device", "cpu"]
    outputs = []
    for extra, healing in (([], True), (["--no-token-healing"], False)):
        assert main(flags + extra) == 0
        params = SamplingParams(max_new_tokens=6, temperature=1.0, seed=3, token_healing=healing)
        expected = "def " + "".join(generate_text(bpe_model, bpe, "def ", params)) + "\n"
        outputs.append(capsys.readouterr().out)
        assert outputs[-1] == expected
    assert outputs[0] != outputs[1]  # the flag makes a difference here
