import json

import pytest
import torch

from gptlab.data.chat import IM_END, IM_START, render_chat
from gptlab.model.config import GPTConfig
from gptlab.errors import DataError
from gptlab.generate.fewshot import (
    SEP,
    FewShotExample,
    FewShotFormat,
    build_few_shot_prompt,
    few_shot_messages,
    few_shot_prompt_from_jsonl,
    load_few_shot_examples,
)
from gptlab.generate.sampler import SamplingParams, generate_text
from gptlab.model.gpt import GPT
from gptlab.data.tokenizer import EOT, train_char_tokenizer

EXAMPLES = [
    FewShotExample("sea otter", "loutre de mer"),
    FewShotExample("peppermint", "menthe poivrée"),
    FewShotExample("plush girafe", "girafe peluche"),
]
INSTRUCTION = "Translate English to French:"


@pytest.fixture(scope="module")
def tokenizer():
    return train_char_tokenizer("abcdefghijklmnopqrstuvwxyzéTE:=> \n")


def test_plain_format_is_the_gpt3_papers_layout():
    prompt = build_few_shot_prompt(EXAMPLES, "cheese", instruction=INSTRUCTION, fmt=FewShotFormat())
    assert prompt == (
        "Translate English to French:\n"
        "sea otter => loutre de mer\n"
        "peppermint => menthe poivrée\n"
        "plush girafe => girafe peluche\n"
        "cheese =>"
    )


def test_default_format_uses_the_tokenizers_special_tokens(tokenizer):
    prompt = build_few_shot_prompt(EXAMPLES, "cheese", instruction=INSTRUCTION, tokenizer=tokenizer)
    assert prompt == (
        f"{EOT}Translate English to French:{SEP}sea otter => loutre de mer{SEP}peppermint => menthe poivrée{SEP}"
        f"plush girafe => girafe peluche{SEP}cheese =>"
    )
    ids = tokenizer.encode(prompt)
    sep_id, eot_id = tokenizer.special_tokens[SEP], tokenizer.eot_id
    assert ids.count(sep_id) == len(EXAMPLES) + 1  # each separator is one token
    assert ids[0] == eot_id and ids.count(eot_id) == 1
    assert FewShotFormat.for_tokenizer(tokenizer).stop == [SEP]


def test_without_a_sep_token_the_default_falls_back_to_newlines():
    plain = train_char_tokenizer("abc", special_tokens=(EOT,))
    assert FewShotFormat.for_tokenizer(plain) == FewShotFormat()
    assert FewShotFormat.for_tokenizer(plain, arrow=" ->").arrow == " ->"


def test_without_a_query_the_prompt_ends_where_the_query_goes(tokenizer):
    fmt = FewShotFormat.for_tokenizer(tokenizer)
    head = build_few_shot_prompt(EXAMPLES, instruction=INSTRUCTION, tokenizer=tokenizer)
    assert head + fmt.query("cheese") == build_few_shot_prompt(EXAMPLES, "cheese", instruction=INSTRUCTION,
                                                               tokenizer=tokenizer)
    assert head.endswith(SEP)


def test_max_tokens_keeps_the_leading_examples_that_fit(tokenizer):
    full = build_few_shot_prompt(EXAMPLES, "cheese", instruction=INSTRUCTION, tokenizer=tokenizer)
    two = build_few_shot_prompt(EXAMPLES[:2], "cheese", instruction=INSTRUCTION, tokenizer=tokenizer)
    n_two = len(tokenizer.encode(two))
    assert build_few_shot_prompt(EXAMPLES, "cheese", instruction=INSTRUCTION, tokenizer=tokenizer,
                                 max_tokens=len(tokenizer.encode(full))) == full
    assert build_few_shot_prompt(EXAMPLES, "cheese", instruction=INSTRUCTION, tokenizer=tokenizer,
                                 max_tokens=n_two) == two
    assert build_few_shot_prompt(EXAMPLES, "cheese", instruction=INSTRUCTION, tokenizer=tokenizer,
                                 max_tokens=n_two + 5) == two
    with pytest.raises(DataError, match="alone"):
        build_few_shot_prompt(EXAMPLES, "cheese", instruction=INSTRUCTION, tokenizer=tokenizer, max_tokens=5)


def test_examples_as_chat_messages():
    messages = few_shot_messages(EXAMPLES[:2], "cheese", instruction=INSTRUCTION)
    assert [(m.role, m.content) for m in messages] == [
        ("system", INSTRUCTION), ("user", "sea otter"), ("assistant", "loutre de mer"),
        ("user", "peppermint"), ("assistant", "menthe poivrée"), ("user", "cheese"),
    ]
    text = render_chat(messages)
    assert text.endswith(f"{IM_START}user\ncheese{IM_END}\n{IM_START}assistant\n")
    assert text.count(f"{IM_START}assistant\n") == 3
    assert [m.role for m in few_shot_messages(EXAMPLES[:1])] == ["user", "assistant"]


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_prompt_from_jsonl_with_the_files_instruction_or_an_override(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "ex.jsonl", [
        {"instruction": INSTRUCTION}, *({"input": e.input, "output": e.output} for e in EXAMPLES), "",
    ])
    examples, instruction = load_few_shot_examples(path)
    assert examples == EXAMPLES and instruction == INSTRUCTION
    expected = build_few_shot_prompt(EXAMPLES, "cheese", instruction=INSTRUCTION, tokenizer=tokenizer)
    assert few_shot_prompt_from_jsonl(path, tokenizer, query="cheese") == expected
    other = few_shot_prompt_from_jsonl(path, tokenizer, "Translate:", query="cheese")
    assert other == expected.replace(INSTRUCTION, "Translate:")


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"input": "a", "output": "b"}, "{oops"], r"ex.jsonl:2: not valid JSON"),
        ([{"input": "a"}], r"ex.jsonl:1: expected string fields"),
        ([{"input": "a", "output": 3}], r"ex.jsonl:1: expected string fields"),
        ([["a", "b"]], r"ex.jsonl:1: expected a JSON object"),
        ([{"instruction": "x"}, {"instruction": "y"}, {"input": "a", "output": "b"}], r"ex.jsonl:2: a second"),
        ([{"instruction": "x"}], r"no examples"),
        ([], r"no examples"),
    ],
)
def test_bad_example_files_name_the_line(tmp_path, rows, message):
    path = write_jsonl(tmp_path / "ex.jsonl", rows)
    with pytest.raises(DataError, match=message):
        load_few_shot_examples(path)


def test_missing_file(tmp_path, tokenizer):
    with pytest.raises(DataError, match="no such file"):
        few_shot_prompt_from_jsonl(tmp_path / "nope.jsonl", tokenizer)


def fixed_logits_model(vocab_size: int, block_size: int, logits: dict[int, float]) -> GPT:
    """A GPT whose logits are ``logits`` (0 for the other ids) at every position, whatever the input.

    All weights are zero but ln_f's bias e_0, so every hidden state is e_0 and the logits are the
    tied embedding's column 0; ``set_logit`` changes one of them afterwards.
    """
    model = GPT(GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=1, n_head=1, n_embd=8))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.transformer.ln_f.bias[0] = 1.0
    for token, value in logits.items():
        set_logit(model, token, value)
    return model


def set_logit(model: GPT, token: int, value: float) -> None:
    with torch.no_grad():
        model.transformer.wte.weight[token, 0] = value


def test_generation_stops_at_the_separator(tokenizer):
    a, sep = tokenizer.encode("a")[0], tokenizer.special_tokens[SEP]
    model = fixed_logits_model(tokenizer.vocab_size, 128, {a: 3.0, sep: 2.0})
    fmt = FewShotFormat.for_tokenizer(tokenizer)
    prompt = build_few_shot_prompt(EXAMPLES[:1], "cheese", tokenizer=tokenizer)
    params = SamplingParams(max_new_tokens=10, temperature=0)
    answer = "".join(generate_text(model, tokenizer, prompt, params, stop=fmt.stop))
    assert answer == "a" * 10  # greedy picks "a" every time: never reaches the separator
    set_logit(model, sep, 4.0)
    assert "".join(generate_text(model, tokenizer, prompt, params, stop=fmt.stop)) == ""


def _sample_has_few_shot() -> bool:
    from gptlab.cli.main import build_parser

    parser = build_parser()
    sample = parser._subparsers._group_actions[0].choices["sample"]  # type: ignore[union-attr]
    return any("--few-shot" in action.option_strings for action in sample._actions)


@pytest.mark.skipif(not _sample_has_few_shot(), reason="`gptlab sample --few-shot` is not wired into cli_core yet")
def test_cli_sample_with_few_shot_examples(tmp_path, tokenizer, capsys):
    from gptlab.train.checkpoint import save_checkpoint
    from gptlab.cli.main import main

    a, sep = tokenizer.encode("a")[0], tokenizer.special_tokens[SEP]
    model = fixed_logits_model(tokenizer.vocab_size, 256, {a: 3.0, sep: 2.0})  # "a" wins, <|sep|> next best
    save_checkpoint(tmp_path / "run", model, tokenizer, step=0)
    path = write_jsonl(tmp_path / "ex.jsonl", [{"instruction": INSTRUCTION},
                                               *({"input": e.input, "output": e.output} for e in EXAMPLES)])
    args = ["sample", str(tmp_path / "run"), "--few-shot", str(path), "--prompt", "cheese", "--temperature", "0",
            "--max-new-tokens", "4"]
    assert main(args) == 0
    expected = build_few_shot_prompt(EXAMPLES, "cheese", instruction=INSTRUCTION, tokenizer=tokenizer)
    assert capsys.readouterr().out == expected + "aaaa\n"
    assert main([*args[:4], "--max-new-tokens", "4"]) == 1  # no --prompt: no query
    assert "--prompt" in capsys.readouterr().err
    # an answer longer than the context: the examples keep half of it, the window slides after
    assert main([*args[:-1], "300"]) == 0
    out = capsys.readouterr().out
    assert "cheese =>" in out and out.endswith("a" * 300 + "\n")


def test_generation_stops_at_the_end_of_a_chat_turn():
    """generate_text (so `gptlab sample`) ends at <|im_end|> as at <|endoftext|>, without a --stop."""
    tokenizer = train_char_tokenizer(["ab"])
    im_end = tokenizer.add_special_tokens([IM_END])[0]
    model = fixed_logits_model(tokenizer.vocab_size, 32, {tokenizer.encode("a")[0]: 3.0, im_end: 2.0})
    params = SamplingParams(max_new_tokens=5, temperature=0)
    assert "".join(generate_text(model, tokenizer, "b", params)) == "aaaaa"
    set_logit(model, im_end, 4.0)
    assert "".join(generate_text(model, tokenizer, "b", params)) == ""
    assert "".join(generate_text(model, tokenizer, "b", params, stop_at_eot=False)) == IM_END * 5
