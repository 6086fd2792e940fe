"""Tokenizers: lossless round trips, special tokens, save/load, GPT-2 files, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gptlab.errors import TokenizerError
from gptlab.data.tokenizer import (
    DEFAULT_SPECIAL_TOKENS,
    EOT,
    N_BYTES,
    Tokenizer,
    load_gpt2_vocab,
    tokenizer_from_dict,
    train_bpe_tokenizer,
    train_char_tokenizer,
)

CORPUS = [
    "def add(a, b):\n    return a + b\n",
    "The quick brown fox jumps over the lazy dog. " * 3,
    "naïve café — 東京 😀\tdone\r\n",
]
MIXED = "Hello, wörld! 東京タワー 😀👍🏽 def f(x):\n\treturn x  # ok\r\n\x00\x07 <|endoftext|>tail"
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# text() draws arbitrary Unicode but no lone surrogates (which are not valid Unicode text)
ANY_TEXT = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=60)


@pytest.fixture(scope="module")
def char_tok() -> Tokenizer:
    return train_char_tokenizer(CORPUS)


@pytest.fixture(scope="module")
def bpe_tok() -> Tokenizer:
    return train_bpe_tokenizer(CORPUS, vocab_size=N_BYTES + len(DEFAULT_SPECIAL_TOKENS) + 40)


@pytest.fixture(params=["char", "bpe"])
def tok(request: pytest.FixtureRequest) -> Tokenizer:
    """A fresh tokenizer of each kind (fresh: some tests add special tokens)."""
    if request.param == "char":
        return train_char_tokenizer(CORPUS)
    return train_bpe_tokenizer(CORPUS, vocab_size=300)


# -- round trips ---------------------------------------------------------------------------


@PROPERTY
@given(text=ANY_TEXT)
@example(text=MIXED)
@example(text="\U0001f600\u6771\u4eac\x00\x1b[0m\u200d\ufeff")
def test_char_round_trip_any_text(char_tok: Tokenizer, text: str) -> None:
    assert char_tok.decode(char_tok.encode(text, allow_special=False)) == text
    if not any(s in text for s in char_tok.special_tokens):
        assert char_tok.decode(char_tok.encode(text)) == text


@PROPERTY
@given(text=ANY_TEXT)
@example(text=MIXED)
@example(text=" \u0120\u010a Ġ ĊĠĠ")  # characters that byte-level BPE uses to spell bytes
def test_bpe_round_trip_any_text(bpe_tok: Tokenizer, text: str) -> None:
    assert bpe_tok.decode(bpe_tok.encode(text, allow_special=False)) == text
    if not any(s in text for s in bpe_tok.special_tokens):
        assert bpe_tok.decode(bpe_tok.encode(text)) == text


def test_encode_batch_equals_encode(tok: Tokenizer) -> None:
    texts = [MIXED, "", "abc", CORPUS[0]]
    for allow in (True, False):
        assert tok.encode_batch(texts, allow_special=allow) == [
            tok.encode(t, allow_special=allow) for t in texts
        ]


# -- layout and special tokens ------------------------------------------------------------


def test_char_layout_chars_then_specials_then_bytes(char_tok: Tokenizer) -> None:
    chars = sorted(set("".join(CORPUS)))
    assert char_tok.kind == "char"
    assert char_tok.vocab_size == len(chars) + len(DEFAULT_SPECIAL_TOKENS) + N_BYTES
    assert char_tok.encode("".join(chars)) == list(range(len(chars)))
    assert char_tok.special_tokens == {s: len(chars) + i for i, s in enumerate(DEFAULT_SPECIAL_TOKENS)}
    assert char_tok.eot_id == len(chars)
    unseen = "Ω"  # two UTF-8 bytes, not in the corpus
    byte_offset = len(chars) + len(DEFAULT_SPECIAL_TOKENS)
    assert char_tok.encode(unseen) == [byte_offset + b for b in unseen.encode("utf-8")]


def test_bpe_special_tokens_come_first(bpe_tok: Tokenizer) -> None:
    assert bpe_tok.kind == "bpe"
    assert bpe_tok.special_tokens == {s: i for i, s in enumerate(DEFAULT_SPECIAL_TOKENS)}
    assert bpe_tok.eot_id == 0


def test_every_id_decodes_and_out_of_range_raises(tok: Tokenizer) -> None:
    for i in range(tok.vocab_size):
        assert isinstance(tok.decode([i]), str)
    with pytest.raises(TokenizerError, match="outside the vocabulary"):
        tok.decode([tok.vocab_size])
    with pytest.raises(TokenizerError):
        tok.decode([-1])


def test_incomplete_utf8_decodes_to_replacement_char(tok: Tokenizer) -> None:
    ids = tok.encode("🦀", allow_special=False)  # unseen in training: four byte ids
    assert len(ids) == 4
    assert tok.decode(ids[:2]) == "\ufffd"
    assert tok.decode(ids[:2] + tok.encode("a")) == "\ufffda"


def test_allow_special_true_vs_false(tok: Tokenizer) -> None:
    text = f"a{EOT}b<|im_start|>"
    with_special = tok.encode(text)
    assert with_special.count(tok.eot_id) == 1
    assert tok.special_tokens["<|im_start|>"] in with_special
    plain = tok.encode(text, allow_special=False)
    assert not set(plain) & set(tok.special_tokens.values())
    assert tok.decode(with_special) == tok.decode(plain) == text


def test_add_special_tokens_keeps_old_ids(tok: Tokenizer) -> None:
    before_size, before_special = tok.vocab_size, tok.special_tokens
    before_ids = tok.encode(MIXED)
    new_ids = tok.add_special_tokens(["<|tool|>", EOT, "<|é ü|>"])
    assert new_ids == [before_size, tok.eot_id, before_size + 1]
    assert tok.vocab_size == before_size + 2
    assert tok.encode(MIXED) == before_ids
    assert tok.special_tokens == {**before_special, "<|tool|>": before_size, "<|é ü|>": before_size + 1}
    assert tok.add_special_tokens(["<|tool|>"]) == [before_size]  # idempotent
    text = "x<|é ü|>y<|tool|>"
    ids = tok.encode(text)
    assert before_size in ids and before_size + 1 in ids
    assert tok.decode(ids) == text  # non-ASCII specials decode verbatim


def test_eot_is_always_a_special_token() -> None:
    tok = train_char_tokenizer(["abc"], special_tokens=["<|sep|>"])
    assert set(tok.special_tokens) == {EOT, "<|sep|>"}
    bpe = train_bpe_tokenizer(["abc"], vocab_size=300, special_tokens=[])
    assert bpe.special_tokens == {EOT: 0}


# -- save / load ---------------------------------------------------------------------------


def test_save_load_round_trip(tok: Tokenizer, tmp_path: Path) -> None:
    tok.add_special_tokens(["<|extra|>"])
    tok.save(tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["tokenizer.json"]  # no temp files left
    for path in (tmp_path / "out", tmp_path / "out" / "tokenizer.json"):
        loaded = Tokenizer.load(path)
        assert type(loaded) is type(tok)
        assert loaded.kind == tok.kind and loaded.vocab_size == tok.vocab_size
        assert loaded.special_tokens == tok.special_tokens
        for allow in (True, False):
            assert loaded.encode(MIXED + "<|extra|>", allow_special=allow) == tok.encode(
                MIXED + "<|extra|>", allow_special=allow
            )
    assert tokenizer_from_dict(tok.to_dict()).to_dict() == tok.to_dict()
    char_json = json.loads((tmp_path / "out" / "tokenizer.json").read_text(encoding="utf-8"))
    assert (char_json.get("type") == "char") == (tok.kind == "char")


# -- GPT-2 vocab.json + merges.txt --------------------------------------------------------


@pytest.fixture(scope="module")
def gpt2_style_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """GPT-2 style files from a tiny BPE: byte alphabet + merges, then <|endoftext|> as the last id."""
    tiny = train_bpe_tokenizer(CORPUS * 5, vocab_size=400, special_tokens=[])
    vocab = {token: i - 1 for token, i in tiny.backend.get_vocab().items() if token != EOT}  # drop id 0
    merges = tiny.to_dict()["model"]["merges"]
    vocab[EOT] = len(vocab)
    directory = tmp_path_factory.mktemp("gpt2")
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = [" ".join(m) if isinstance(m, list) else m for m in merges]
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return directory


def test_gpt2_files_match_transformers(gpt2_style_dir: Path) -> None:
    transformers = pytest.importorskip("transformers")
    reference = transformers.GPT2TokenizerFast.from_pretrained(str(gpt2_style_dir))
    ours = load_gpt2_vocab(gpt2_style_dir / "vocab.json", gpt2_style_dir / "merges.txt")
    n_vocab = len(json.loads((gpt2_style_dir / "vocab.json").read_text(encoding="utf-8")))
    assert ours.vocab_size == n_vocab and ours.eot_id == n_vocab - 1
    assert ours.special_tokens == {EOT: n_vocab - 1}
    for text in [MIXED, *CORPUS, "  leading spaces\n\n\n  and   gaps ", "x" * 300]:
        assert ours.encode(text) == reference.encode(text), text
        assert ours.decode(ours.encode(text, allow_special=False)) == text
    loaded = Tokenizer.load(gpt2_style_dir)
    assert loaded.encode(MIXED) == ours.encode(MIXED)


# -- errors --------------------------------------------------------------------------------


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="no such"):
        Tokenizer.load(tmp_path / "missing")
    with pytest.raises(TokenizerError, match="vocab.json"):
        Tokenizer.load(tmp_path)  # an empty directory
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(TokenizerError, match="cannot read"):
        Tokenizer.load(tmp_path)
    bad.write_text('{"hello": 1}', encoding="utf-8")
    with pytest.raises(TokenizerError, match="unrecognised"):
        Tokenizer.load(bad)
    bad.write_text('{"type": "char", "version": 1, "chars": "ab", "special_tokens": {}, "byte_offset": 2}')
    with pytest.raises(TokenizerError, match="endoftext"):
        Tokenizer.load(bad)
    bad.write_text(
        '{"type": "char", "version": 1, "chars": "ab", "special_tokens": {"<|endoftext|>": 7}, "byte_offset": 2}'
    )
    with pytest.raises(TokenizerError, match="overlap or leave gaps"):
        Tokenizer.load(bad)
    bad.write_text('{"model": {"type": "BPE", "vocab": "nonsense"}}')
    with pytest.raises(TokenizerError):
        Tokenizer.load(bad)
    (tmp_path / "vocab.json").write_text("[]")
    (tmp_path / "merges.txt").write_text("")
    with pytest.raises(TokenizerError):
        load_gpt2_vocab(tmp_path / "vocab.json", tmp_path / "merges.txt")
    with pytest.raises(TokenizerError, match="no such file"):
        load_gpt2_vocab(tmp_path / "nope.json", tmp_path / "merges.txt")


def test_training_errors() -> None:
    with pytest.raises(TokenizerError, match="empty"):
        train_char_tokenizer(["", ""])
    with pytest.raises(TokenizerError, match="empty"):
        train_bpe_tokenizer(iter([""]), vocab_size=300)
    with pytest.raises(TokenizerError, match="at least 260"):
        train_bpe_tokenizer(CORPUS, vocab_size=259)
    with pytest.raises(TokenizerError, match="non-empty"):
        train_char_tokenizer(CORPUS, special_tokens=["", EOT])


def test_lone_surrogate_is_an_error(tok: Tokenizer) -> None:
    with pytest.raises(TokenizerError):
        tok.encode("a\ud800b")
