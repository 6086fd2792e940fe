"""Chat templates and generation settings in exported and imported Hugging Face directories.

Exported: ``tokenizer.apply_chat_template`` in transformers gives exactly gptlab's ChatML text and
ids, and ``generation_config.json`` stops at the end of a turn. Imported: a model's own template
(and the special tokens it names, and where its turns end) is kept, exported again, and used by
the server's chat formatting, with the text transformers renders.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gptlab.cli.main import main
from gptlab.data.chat import render_chat
from gptlab.data.tokenizer import EOT, train_bpe_tokenizer, train_char_tokenizer
from gptlab.errors import DataError
from gptlab.finetune.loader import ChatTemplate, load_run
from gptlab.interop.hf import export_hf
from gptlab.interop.hf_chat import CHATML_TEMPLATE, read_chat_settings, render_chat_template
from gptlab.model.config import GPTConfig
from gptlab.model.gpt import GPT

CONVERSATIONS = [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "system", "content": "You write Python."},
     {"role": "user", "content": "def add(a, b):\n  ..."},
     {"role": "assistant", "content": "return a + b"},
     {"role": "user", "content": " and  spaces, é, 日本 "}],
]
# a Llama 3 style template: bos_token by name, headers, content trimmed, <|eot_id|> ends each turn
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
LLAMA3_SPECIALS = (EOT, "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")


def tiny_model(vocab_size: int) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=16)).eval()


def ids_of(result) -> list[int]:
    """apply_chat_template's ids (transformers 5 returns a BatchEncoding, 4 a list)."""
    return list(result["input_ids"] if hasattr(result, "keys") else result)


# a content that starts with whitespace renders the same text, but gptlab encodes each content on
# its own (so "\n" and "    return" stay apart), where transformers encodes the whole string
INDENTED = [{"role": "user", "content": "add"}, {"role": "assistant", "content": "    return a + b\n"}]


@pytest.mark.parametrize("messages", [*CONVERSATIONS, INDENTED])
def test_the_exported_chatml_template_renders_as_gptlab(messages) -> None:
    for add in (True, False):
        assert render_chat_template(CHATML_TEMPLATE, messages, add_generation_prompt=add) == \
            render_chat(messages, add_generation_prompt=add)


def test_a_template_error_is_a_data_error() -> None:
    with pytest.raises(DataError, match="unknown chat role"):
        render_chat_template(CHATML_TEMPLATE, [{"role": "tool", "content": "x"}])
    with pytest.raises(DataError, match="chat template"):
        render_chat_template("{% for %}", [])


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["bpe", "char"])
def test_transformers_applies_the_exported_template_with_gptlab_ids(kind: str, corpus_text: str,
                                                                   tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    tokenizer = train_bpe_tokenizer([corpus_text], vocab_size=320) if kind == "bpe" else \
        train_char_tokenizer([corpus_text])
    out = export_hf(tiny_model(tokenizer.vocab_size), tokenizer, tmp_path / "hf")
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(str(out))
    from gptlab.server.prompts import chat_ids
    from gptlab.server.protocol import ChatMessageIn

    for messages in CONVERSATIONS:
        text = hf_tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        assert text == render_chat(messages)
        ids = ids_of(hf_tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True))
        assert ids == tokenizer.encode(render_chat(messages))
        assert ids == chat_ids([ChatMessageIn(**m) for m in messages], tokenizer)  # the server's
    generation = transformers.GenerationConfig.from_pretrained(str(out))
    special = tokenizer.special_tokens
    assert generation.eos_token_id == [tokenizer.eot_id, special["<|im_end|>"]]
    assert generation.pad_token_id == tokenizer.eot_id


def own_template_dir(tmp_path: Path, corpus_text: str) -> Path:
    """A Hugging Face directory of a model with its own (Llama 3 style) chat template, its
    bos_token and eos_token named in tokenizer_config.json and <|eot_id|> in generation_config."""
    tokenizer = train_char_tokenizer([corpus_text], special_tokens=LLAMA3_SPECIALS)
    out = export_hf(tiny_model(tokenizer.vocab_size), tokenizer, tmp_path / "own")
    config = json.loads((out / "tokenizer_config.json").read_text())
    config |= {"chat_template": LLAMA3_TEMPLATE, "bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}
    (out / "tokenizer_config.json").write_text(json.dumps(config))
    special = tokenizer.special_tokens
    generation = {"bos_token_id": special["<|begin_of_text|>"], "eos_token_id": [special[EOT], special["<|eot_id|>"]]}
    (out / "generation_config.json").write_text(json.dumps(generation))
    return out


@pytest.mark.slow
def test_a_models_own_template_is_kept_through_import_finetune_and_export(corpus_text: str, tmp_path: Path) -> None:
    source = own_template_dir(tmp_path, corpus_text)
    assert main(["import-hf", str(source), "--out", str(tmp_path / "run")]) == 0
    loaded = load_run(tmp_path / "run")
    assert loaded.chat_template == ChatTemplate(
        LLAMA3_TEMPLATE, {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "unk_token": EOT},
        (EOT, "<|eot_id|>"))
    assert main(["export-hf", str(tmp_path / "run"), str(tmp_path / "again")]) == 0
    config = json.loads((tmp_path / "again" / "tokenizer_config.json").read_text())
    assert config["chat_template"] == LLAMA3_TEMPLATE
    assert config["bos_token"] == "<|begin_of_text|>" and config["eos_token"] == "<|eot_id|>"
    assert read_chat_settings(tmp_path / "again", loaded.tokenizer) == loaded.chat_template
    generation = json.loads((tmp_path / "again" / "generation_config.json").read_text())
    special = loaded.tokenizer.special_tokens
    assert generation["eos_token_id"] == [special[EOT], special["<|eot_id|>"]]

    # a (LoRA) fine-tune on prompt/completion data keeps it; chat data, laid out in ChatML, does not
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"{i} + 1 =", "completion": f" {i + 1}"}) + "\n"
                            for i in range(20)))
    common = ["--data", str(data), "--max-steps", "1", "--batch-size", "4", "--no-progress"]
    assert main(["finetune", str(tmp_path / "run"), *common, "--lora", "--out", str(tmp_path / "lora")]) == 0
    assert load_run(tmp_path / "lora").chat_template == loaded.chat_template
    assert main(["lora", "merge", str(tmp_path / "lora"), "--out", str(tmp_path / "merged")]) == 0
    assert load_run(tmp_path / "merged").chat_template == loaded.chat_template
    chat = tmp_path / "chat.jsonl"
    chat.write_text("".join(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                                     {"role": "assistant", "content": "hello"}]}) + "\n"
                            for _ in range(10)))
    assert main(["finetune", str(tmp_path / "run"), "--data", str(chat), "--max-steps", "1", "--batch-size", "4",
                 "--no-progress", "--out", str(tmp_path / "chat-run")]) == 0
    assert load_run(tmp_path / "chat-run").chat_template is None


@pytest.mark.slow
def test_the_server_formats_chats_with_the_models_own_template(corpus_text: str, tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    from gptlab.server.prompts import chat_ids, chat_stop_token_ids
    from gptlab.server.protocol import ChatMessageIn

    source = own_template_dir(tmp_path, corpus_text)
    assert main(["import-hf", str(source), "--out", str(tmp_path / "run")]) == 0
    loaded = load_run(tmp_path / "run")
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(str(source))
    for messages in CONVERSATIONS:
        text = hf_tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        assert text.startswith("<|begin_of_text|><|start_header_id|>")
        assert render_chat_template(loaded.chat_template.template, messages,
                                    special_tokens=loaded.chat_template.special_tokens) == text
        ids = chat_ids([ChatMessageIn(**m) for m in messages], loaded.tokenizer, loaded.chat_template)
        assert ids == ids_of(hf_tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True))
    special = loaded.tokenizer.special_tokens
    assert chat_stop_token_ids(loaded.tokenizer, loaded.chat_template) == [special[EOT], special["<|eot_id|>"]]
