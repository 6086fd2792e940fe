"""Corpus reading, train/val split, token shards and sliding windows."""

from __future__ import annotations

import ast

import json
import logging
import sys
import sysconfig
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from gptlab.data import corpus
from gptlab.data import shards
from gptlab.data.shards import (
    Document,
    PreparedData,
    WindowSampler,
    default_corpus_files,
    is_prepared,
    iter_documents,
    load_manifest,
    prepare,
    split_documents,
    token_dtype,
)
from gptlab.errors import ConfigError, DataError
from gptlab.data.tokenizer import EOT, Tokenizer, train_char_tokenizer


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))
    return path


@pytest.fixture
def corpus_dir(tmp_path: Path) -> Path:
    """Ten small text files in nested directories, plus things that must be skipped."""
    root = tmp_path / "corpus"
    for i in range(10):
        write(root / f"part{i % 2}" / f"doc{i}.txt", f"document {i}: héllo wörld\n" * (i + 1))
    write(root / ".hidden" / "secret.txt", "not me")
    (root / "blob.bin").write_bytes(bytes(range(256)))
    return root


# -- default corpus ------------------------------------------------------------------------


def test_default_corpus_files() -> None:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = default_corpus_files()
    relative = [f.relative_to(stdlib).as_posix() for f in files]
    assert len(files) > 100
    assert relative == sorted(relative)
    assert all(f.suffix == ".py" for f in files)
    assert "os.py" in relative and "json/decoder.py" in relative
    excluded = {"site-packages", "dist-packages", "test", "tests", "idle_test"}
    assert not any(excluded & set(Path(r).parts) for r in relative)

    capped = default_corpus_files(max_bytes=200_000)
    sizes = [f.stat().st_size for f in capped]
    assert capped == files[: len(capped)]
    assert sum(sizes) >= 200_000 > sum(sizes[:-1])


def test_default_corpus_documents_are_the_stdlibs_functions_each_parsing_alone() -> None:
    docs = list(iter_documents(None, max_bytes=100_000))
    assert len(docs) > 50 and all(isinstance(d, Document) and d.text.endswith("\n") for d in docs)
    keys = [(name.rsplit(":", 1)[0], int(name.rsplit(":", 1)[1])) for name in (d.name for d in docs)]
    assert keys == sorted(keys)  # files in order, functions in source order
    for doc in docs:
        tree = ast.parse(doc.text)  # dedented: a method parses as a module-level function
        assert len(tree.body) == 1 and isinstance(tree.body[0], (ast.FunctionDef, ast.AsyncFunctionDef))
    assert sum(len(d.text.encode()) for d in docs[:-1]) < 100_000  # max_bytes counts functions
    assert any(d.text.startswith("def __init__(self") for d in docs)  # methods are in


def test_default_corpus_splits_by_file() -> None:
    split = split_documents(None, 0.2, max_bytes=300_000)
    files = {side: {d.name.rsplit(":", 1)[0] for d in getattr(split, side)()} for side in ("train", "val")}
    assert files["train"] and files["val"] and not files["train"] & files["val"]
    n_val = sum(1 for _ in split.val())
    assert split.documents == {"train": sum(1 for _ in split.train()), "val": n_val}


# -- documents -----------------------------------------------------------------------------


def test_iter_documents_file_dir_jsonl(
    tmp_path: Path, corpus_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    text = "line one\r\nline two\n"
    assert list(iter_documents(write(tmp_path / "notes.md", text))) == [Document("notes.md", text)]

    with caplog.at_level(logging.WARNING, logger="gptlab.data.shards"):
        docs = list(iter_documents(corpus_dir))
    assert [d.name for d in docs] == sorted(f"part{i % 2}/doc{i}.txt" for i in range(10))
    assert "blob.bin" in caplog.text  # the binary file is skipped with a warning
    assert [d.name for d in iter_documents(corpus_dir, pattern="part1/*.txt")] == [
        f"part1/doc{i}.txt" for i in (1, 3, 5, 7, 9)
    ]

    records = [{"text": "first"}, {"text": ""}, {"text": "third", "id": 3}]
    lines = "\n".join(json.dumps(r) for r in records[:2]) + "\n\n" + json.dumps(records[2]) + "\n"
    jsonl = write(tmp_path / "data.jsonl", lines)
    assert list(iter_documents(jsonl)) == [
        Document("data.jsonl:1", "first"),
        Document("data.jsonl:4", "third"),
    ]


def test_iter_documents_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        list(iter_documents(tmp_path / "missing.txt"))
    with pytest.raises(DataError, match="empty"):
        list(iter_documents(write(tmp_path / "empty.txt", "")))
    (tmp_path / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with pytest.raises(DataError, match="image.png.*binary"):
        list(iter_documents(tmp_path / "image.png"))
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    with pytest.raises(DataError, match="latin1.txt: not UTF-8"):
        list(iter_documents(tmp_path / "latin1.txt"))
    bad = write(tmp_path / "bad.jsonl", '{"text": "ok"}\n{"text": oops}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2"):
        list(iter_documents(bad))
    bad = write(tmp_path / "bad2.jsonl", '{"text": "ok"}\n{"body": "no text"}\n')
    with pytest.raises(DataError, match=r"bad2\.jsonl:2.*text"):
        list(iter_documents(bad))
    only_binary = tmp_path / "bins"
    only_binary.mkdir()
    (only_binary / "a.bin").write_bytes(b"\x00\x01")
    with pytest.raises(DataError, match="empty"):
        list(iter_documents(only_binary))


def test_max_bytes_cuts_a_single_file_at_a_character_boundary(tmp_path: Path) -> None:
    path = write(tmp_path / "t.txt", "aé" * 10)  # 3 bytes per pair
    [doc] = iter_documents(path, max_bytes=5)
    assert doc.text == "aéa"  # 4 bytes: the next "é" would straddle the limit
    assert [d.name for d in iter_documents(path.parent, max_bytes=1)] == ["t.txt"]  # whole documents


# -- split ---------------------------------------------------------------------------------


def test_split_by_document(corpus_dir: Path) -> None:
    split = split_documents(corpus_dir, val_fraction=0.2)
    names = [d.name for d in iter_documents(corpus_dir)]
    train, val = [d.name for d in split.train()], [d.name for d in split.val()]
    assert split.documents == {"train": 8, "val": 2} and not split.by_characters
    assert sorted(train + val) == sorted(names) and not set(train) & set(val)
    assert val[-1] == names[-1]  # evenly spaced, always the last
    assert [d.name for d in split.val()] == val  # deterministic, re-iterable
    two = split_documents(corpus_dir, val_fraction=0.01, pattern="part0/doc[02].txt")
    assert two.documents == {"train": 1, "val": 1}  # at least one on each side


def test_split_single_document_by_characters(tmp_path: Path) -> None:
    text = "".join(f"line {i}\n" for i in range(100))
    split = split_documents(write(tmp_path / "one.txt", text), val_fraction=0.1)
    cut = int(len(text) * 0.9)
    assert split.by_characters and split.documents == {"train": 1, "val": 1}
    assert [d.text for d in split.train()] == [text[:cut]]
    assert [d.text for d in split.val()] == [text[cut:]]
    with pytest.raises(DataError, match="too short"):
        split_documents(write(tmp_path / "tiny.txt", "a"), val_fraction=0.1)
    with pytest.raises(ConfigError):
        split_documents(tmp_path / "one.txt", val_fraction=1.0)


# -- prepare -------------------------------------------------------------------------------


def test_prepare_round_trip_char(corpus_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    manifest = prepare(corpus_dir, out, val_fraction=0.2, progress=False)
    assert is_prepared(out) and load_manifest(out) == manifest
    assert sorted(p.name for p in out.iterdir()) == [
        "manifest.json",
        "tokenizer.json",
        "train.bin",
        "val.bin",
    ]
    prepared = PreparedData.open(out)
    split = split_documents(corpus_dir, val_fraction=0.2)
    for side, shard in (("train", prepared.train), ("val", prepared.val)):
        expected = "".join(d.text + EOT for d in getattr(split, side)())
        assert prepared.tokenizer.decode(shard) == expected
        assert int(np.sum(shard == prepared.tokenizer.eot_id)) == manifest["documents"][side]
    assert manifest["dtype"] == "uint16" and prepared.train.dtype == np.uint16
    assert manifest["tokenizer_kind"] == "char" and manifest["split"] == "documents"
    assert (manifest["train_tokens"], manifest["val_tokens"]) == (len(prepared.train), len(prepared.val))
    assert prepared.tokenizer.vocab_size == manifest["vocab_size"]
    again = prepare(corpus_dir, tmp_path / "again", val_fraction=0.2, progress=False)
    assert again["source_sha256"] == manifest["source_sha256"]


def test_prepare_trains_tokenizer_on_train_split_only(tmp_path: Path) -> None:
    source = write(tmp_path / "one.txt", "a" * 90 + "z" * 10)
    prepare(source, tmp_path / "out", progress=False)
    prepared = PreparedData.open(tmp_path / "out")
    assert prepared.tokenizer.chars == ["a"]  # "z" is only in val: spelled through byte fallback
    assert prepared.tokenizer.decode(prepared.train) == "a" * 90 + EOT
    assert prepared.tokenizer.decode(prepared.val) == "z" * 10 + EOT


def test_prepare_bpe(corpus_dir: Path, tmp_path: Path) -> None:
    manifest = prepare(corpus_dir, tmp_path / "bpe", tokenizer_kind="bpe", vocab_size=300, progress=False)
    prepared = PreparedData.open(tmp_path / "bpe")
    assert manifest["tokenizer_kind"] == "bpe" == prepared.tokenizer.kind
    expected = "".join(d.text + EOT for d in split_documents(corpus_dir).train())
    assert prepared.tokenizer.decode(prepared.train) == expected


def test_prepare_with_given_tokenizer_and_uint32(tmp_path: Path) -> None:
    assert token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32
    wide = "".join(chr(c) for c in range(0x100, 0x100 + 70_000) if not 0xD800 <= c <= 0xDFFF)
    tokenizer = train_char_tokenizer([wide])
    text = wide[-50:] + "\n" + wide[:50]
    manifest = prepare(write(tmp_path / "w.txt", text), tmp_path / "out", tokenizer=tokenizer, progress=False)
    prepared = PreparedData.open(tmp_path / "out")
    assert manifest["dtype"] == "uint32" and prepared.train.dtype == np.uint32
    assert int(prepared.train.max()) > 65535
    assert prepared.tokenizer.decode(np.concatenate([prepared.train, prepared.val])) == (
        text[: int(len(text) * 0.9)] + EOT + text[int(len(text) * 0.9) :] + EOT
    )


def test_prepared_dir_validation(corpus_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "p"
    prepare(corpus_dir, out, progress=False)
    with open(out / "train.bin", "ab") as f:
        f.write(b"\x00\x00")
    assert not is_prepared(out)
    with pytest.raises(DataError, match="train.bin"):
        PreparedData.open(out)
    (out / "manifest.json").write_text("{}")
    with pytest.raises(DataError, match="manifest"):
        PreparedData.open(out)
    (out / "manifest.json").unlink()
    with pytest.raises(DataError, match="manifest"):
        PreparedData.open(out)
    assert not is_prepared(out) and not is_prepared(tmp_path / "nothing") and not is_prepared(corpus_dir)


def test_crashed_prepare_leaves_no_valid_dir(
    corpus_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "p"
    prepare(corpus_dir, out, progress=False)
    assert is_prepared(out)

    def boom(self: Tokenizer, texts: list[str], allow_special: bool = True) -> list[list[int]]:
        raise RuntimeError("disk full")

    monkeypatch.setattr(type(PreparedData.open(out).tokenizer), "encode_batch", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        prepare(corpus_dir, out, progress=False)
    assert not is_prepared(out)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # temp files removed


def test_big_single_document_is_streamed_in_pieces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(corpus, "PIECE_CHARS", 20_000)
    monkeypatch.setattr(shards, "BATCH_CHARS", 50_000)
    rng = np.random.default_rng(0)
    alphabet = list("abcdefghij klmnö東😀\n")
    weights = np.array([1.0] * (len(alphabet) - 1) + [0.2]) / (len(alphabet) - 0.8)  # lines of ~100 chars
    text = "".join(rng.choice(alphabet, size=3_000_000, p=weights))
    text = text[:1000] + "x" * 120_000 + text[1000:]  # a line longer than two pieces
    path = write(tmp_path / "big.txt", text)
    assert len(text) > 3_000_000

    pieces = list(corpus._file_pieces(path, corpus._ByteBudget(None)))
    assert "".join(pieces) == text and pieces == list(corpus._split_text(text))
    assert len(pieces) > 100 and max(map(len, pieces)) <= 40_000

    tokenizer = train_char_tokenizer([text])
    tokenizer.encode(text[:10])  # builds the tokenizer's lookup table before we measure
    tracemalloc.start()
    prepare(path, tmp_path / "out", tokenizer=tokenizer, progress=False)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < sys.getsizeof(text) // 4  # never the whole text (nor its tokens) at once
    prepared = PreparedData.open(tmp_path / "out")
    cut = int(len(text) * 0.9)
    assert np.array_equal(prepared.train, tokenizer.encode(text[:cut]) + [tokenizer.eot_id])
    assert np.array_equal(prepared.val, tokenizer.encode(text[cut:]) + [tokenizer.eot_id])


# -- windows -------------------------------------------------------------------------------


def test_window_sampler_shapes_and_shift() -> None:
    tokens = np.arange(1000, dtype=np.uint16)
    sampler = WindowSampler(tokens, block_size=16, batch_size=8, seed=3)
    x, y = sampler.next_batch()
    assert x.shape == y.shape == (8, 16) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert torch.equal(y - x, torch.ones_like(x))  # each row is a contiguous slice of tokens
    assert x.is_contiguous() and y.is_contiguous()


@pytest.mark.parametrize("order", ["epochs", "random"])
def test_window_sampler_determinism_and_resume(order: str) -> None:
    tokens = np.random.default_rng(0).integers(0, 500, 5000).astype(np.uint16)
    first, second = WindowSampler(tokens, 32, 4, 7, order), WindowSampler(tokens, 32, 4, 7, order)
    run = [first.next_batch() for _ in range(60)]  # epochs: 155 windows an epoch, so 60 batches cross one
    assert all(torch.equal(a[0], b[0]) for a, b in zip(run, (second.next_batch() for _ in range(60))))

    interrupted = WindowSampler(tokens, 32, 4, 7, order)
    for _ in range(37):  # stops inside the first epoch
        interrupted.next_batch()
    state = json.loads(json.dumps(interrupted.state_dict()))
    resumed = WindowSampler(tokens, 32, 4, seed=0, order=order)
    resumed.load_state_dict(state)
    for expected in run[37:]:
        x, y = resumed.next_batch()
        assert torch.equal(x, expected[0]) and torch.equal(y, expected[1])

    other = WindowSampler(tokens, 32, 4, seed=8, order=order)
    assert not torch.equal(other.next_batch()[0], run[0][0])
    with pytest.raises(DataError):
        resumed.load_state_dict({"seed": -1})


def test_epoch_windows_tile_the_corpus_once_per_epoch() -> None:
    """Every epoch trains on back-to-back windows that cover all but the slack at the two ends
    (< 2 windows), each once, in its own order and from its own phase; a batch may straddle two."""
    T, n = 16, 1000
    sampler = WindowSampler(np.arange(n), block_size=T, batch_size=7, seed=3, order="epochs")
    per_epoch = sampler.per_epoch
    assert per_epoch == (n - T) // T == 61
    starts = np.concatenate([sampler.offsets(i) for i in range(3 * per_epoch // 7 + 1)])
    epochs = [starts[e * per_epoch:(e + 1) * per_epoch] for e in range(3)]
    for offsets in epochs:
        tiled = np.sort(offsets)
        assert np.array_equal(tiled, tiled[0] + T * np.arange(per_epoch))  # disjoint, back to back
        assert tiled[-1] + T + 1 <= n  # the last window's target is inside the corpus
        assert n - per_epoch * T < 2 * T  # what an epoch leaves out
    assert not np.array_equal(epochs[0], epochs[1])  # a new order each epoch
    assert len({int(np.min(e)) for e in epochs}) > 1  # and a new phase
    # the batch that crosses from epoch 0 to 1 (61 = 8 * 7 + 5) takes 5 windows of one, 2 of the next
    straddling = sampler.offsets(8)
    assert np.array_equal(straddling[:5], epochs[0][56:]) and np.array_equal(straddling[5:], epochs[1][:2])


def test_random_windows_keep_their_stream() -> None:
    """The default order, random, draws exactly what every run before orders did (so those runs
    resume the same)."""
    sampler = WindowSampler(np.arange(5000), block_size=32, batch_size=4, seed=7)
    for i in range(3):
        expected = np.random.default_rng([7, i]).integers(0, 5000 - 32, size=4)
        assert np.array_equal(sampler.offsets(i), expected)


def test_window_order_is_checked_and_a_changed_order_warns(caplog: pytest.LogCaptureFixture) -> None:
    from gptlab.train.config import WINDOW_ORDERS  # the training config's copy, kept free of numpy and torch

    assert WINDOW_ORDERS == shards.WINDOW_ORDERS
    with pytest.raises(ConfigError, match="window order must be one of epochs, random"):
        WindowSampler(np.arange(100), block_size=8, batch_size=1, order="sequential")
    sampler = WindowSampler(np.arange(100), block_size=8, batch_size=1, order="epochs")
    old_state = {"seed": 1, "batches_drawn": 3, "block_size": 8, "batch_size": 1, "n_tokens": 100}  # no order: random
    with caplog.at_level("WARNING", logger="gptlab.data.shards"):
        sampler.load_state_dict(old_state)
    assert "order epochs (was random)" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="gptlab.data.shards"):
        sampler.load_state_dict({**old_state, "order": "epochs"})
    assert caplog.text == "" and sampler.batches_drawn == 3


def test_window_sampler_covers_the_edges_and_rejects_short_corpora() -> None:
    exact = WindowSampler(np.arange(9), block_size=8, batch_size=2)
    x, y = exact.next_batch()
    assert x.tolist() == [list(range(8))] * 2 and y.tolist() == [list(range(1, 9))] * 2
    small = WindowSampler(np.arange(12), block_size=8, batch_size=64)
    starts = {int(v) for _ in range(4) for v in small.next_batch()[0][:, 0]}
    assert starts == {0, 1, 2, 3}  # every valid offset, the last included
    with pytest.raises(DataError, match="corpus shorter than one window: 8 tokens, need 9"):
        WindowSampler(np.arange(8), block_size=8, batch_size=1)
    with pytest.raises(ConfigError):
        WindowSampler(np.arange(100), block_size=0, batch_size=1)
