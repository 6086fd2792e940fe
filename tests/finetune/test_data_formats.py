"""The instruction data people have: Alpaca, ShareGPT, JSON arrays, a byte-order mark, and
errors that name their line."""

import codecs
import json

import pytest

from gptlab.data.chat import IM_END, IM_START
from gptlab.data.tokenizer import train_char_tokenizer
from gptlab.errors import DataError
from gptlab.finetune.data import load_records, read_records, record_segments, tokenize_record
from gptlab.model.gpt import IGNORE_INDEX

ALPHABET = "".join(chr(c) for c in range(32, 127)) + "\n"


def chat(*turns):
    return record_segments({"messages": [{"role": r, "content": c} for r, c in turns]}, "x")


def test_alpaca_is_a_user_turn_and_an_assistant_turn():
    with_input = {"instruction": "Add.", "input": "2 + 3", "output": "5"}
    assert record_segments(with_input, "x") == chat(("user", "Add.\n\n2 + 3"), ("assistant", "5"))
    for no_input in ({"instruction": "Hi.", "input": "", "output": "Hello"}, {"instruction": "Hi.", "output": "Hello"}):
        assert record_segments(no_input, "x") == chat(("user", "Hi."), ("assistant", "Hello"))


def test_alpaca_trains_on_the_output_only():
    tokenizer = train_char_tokenizer(ALPHABET, special_tokens=["<|endoftext|>", IM_START, IM_END])
    kind, segments = record_segments({"instruction": "Add.", "input": "2 + 3", "output": "5"}, "x")
    assert kind == "chat"
    from gptlab.finetune.data import Record

    example = tokenize_record(Record(kind, segments, "x"), tokenizer, 64)
    trained = [t for t in example.targets.tolist() if t != IGNORE_INDEX]
    assert tokenizer.decode(trained) == f"5{IM_END}"


def test_sharegpt_roles_map_to_chat_roles():
    record = {"conversations": [
        {"from": "system", "value": "Be brief."},
        {"from": "human", "value": "Hi"},
        {"from": "gpt", "value": "Hello"},
        {"from": "human", "value": "Bye"},
        {"from": "gpt", "value": "Bye!"},
    ]}
    assert record_segments(record, "x") == chat(
        ("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello"), ("user", "Bye"), ("assistant", "Bye!"))


def test_json_array_files_with_a_bom_name_the_line_of_each_element(tmp_path):
    records = [{"instruction": "a", "output": "b"}, {"text": "c"}, {"prompt": "d", "completion": "e"}]
    path = tmp_path / "alpaca.json"
    path.write_bytes(codecs.BOM_UTF8 + json.dumps(records, indent=2).encode("utf-8"))
    loaded = load_records(path)
    assert [r.kind for r in loaded] == ["chat", "text", "completion"]
    lines = path.read_text(encoding="utf-8-sig").split("\n")
    for record in loaded:  # each names the line where its object opens
        line = int(record.where.rsplit(":", 1)[1])
        assert lines[line - 1].strip() == "{"
    assert loaded[1].where == f"{path}:6"
    compact = tmp_path / "one_line.json"
    compact.write_text(json.dumps(records), encoding="utf-8")
    assert [r.where for r in load_records(compact)] == [f"{compact}:1"] * 3
    empty = tmp_path / "empty.json"
    empty.write_text(" [ ]\n", encoding="utf-8")
    with pytest.raises(DataError, match="no examples"):
        load_records(empty)


def test_jsonl_with_a_bom_and_crlf_lines(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(codecs.BOM_UTF8 + b'{"text": "a"}\r\n\r\n{"text": "b"}\r\n')
    assert [(n, obj["text"]) for n, obj in read_records(path)] == [(1, "a"), (3, "b")]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"text": "a", "prompt": "b", "completion": "c"}',
         r"d.jsonl:1: the record has both 'text' and 'prompt'/'completion'"),
        ('{"text": "a", "completion": "c"}', r"d.jsonl:1: the record has both 'text' and 'prompt'/'completion'"),
        ('{"messages": [], "conversations": []}', r"d.jsonl:1: .*both 'messages' and ShareGPT"),
        ('{"instruction": "a", "input": "b", "output": "c", "text": "abc"}', r"d.jsonl:1: .*both 'text' and Alpaca"),
        ('{"instruction": "a", "input": "b"}', r"d.jsonl:1: an Alpaca record needs 'instruction' and 'output'"),
        ('{"instruction": "a", "output": 5}', r"d.jsonl:1: 'output' must be a string"),
        ('{"instruction": " ", "output": "b"}', r"d.jsonl:1: empty 'instruction'"),
        ('{"conversations": [{"from": "bot", "value": "hi"}]}', r"d.jsonl:1: conversation turn 0 is from 'bot'"),
        ('{"conversations": [{"from": "human"}]}', r"d.jsonl:1: conversation turn 0 needs a 'from' and a string"),
        ('{"conversations": [{"from": "human", "value": "hi"}]}', r"d.jsonl:1: no assistant message"),
        ('{"conversations": {}}', r"d.jsonl:1: 'conversations' must be a non-empty list"),
        ('[{"text": "a"},\n{"text": "b"}\n{"text": "c"}]', r"d.jsonl:3: not valid JSON \(expected ',' or ']'"),
        ('[{"text": "a"},\n{"text": }]', r"d.jsonl:2: not valid JSON"),
        ('[{"text": "a"}]\n{"text": "b"}', r"d.jsonl:2: not valid JSON \(extra data"),
        ('[{"text": "a"},\n"b"]', r"d.jsonl:2: expected a JSON object"),
    ],
)
def test_bad_records_name_their_line(tmp_path, content, message):
    path = tmp_path / "d.jsonl"
    path.write_text(content + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=message):
        load_records(path)


@pytest.mark.parametrize("name", ["d.jsonl", "d.json"])
def test_a_non_utf8_byte_names_its_line(tmp_path, name):
    path = tmp_path / name
    body = b'{"text": "a"}\n{"text": "b"}\n{"text": "caf\xe9"}\n'  # Latin-1, not UTF-8
    path.write_bytes(body if name.endswith("l") else b"[" + body.replace(b"}\n{", b"},\n{") + b"]")
    with pytest.raises(DataError, match=rf"{name}:3: not UTF-8 text \(byte 0xe9\)"):
        load_records(path)
