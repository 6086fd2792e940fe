import json

import pytest
import torch

from gptlab.train.checkpoint import find_checkpoint, load_checkpoint, load_config, save_checkpoint, state_checksum
from gptlab.model.config import GPTConfig
from gptlab.errors import CheckpointError
from gptlab.model.gpt import GPT
from gptlab.data.tokenizer import train_char_tokenizer


@pytest.fixture
def saved(tmp_path, corpus_text):
    tokenizer = train_char_tokenizer([corpus_text])
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=16, n_layer=2, n_head=2, n_embd=16))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, tokenizer.vocab_size, (2, 16))
    model(x, x)[1].backward()
    optimizer.step()
    run = tmp_path / "run"
    save_checkpoint(run, model, tokenizer, step=7, state={"hello": "world"}, optimizer=optimizer)
    return run, model, tokenizer, optimizer


def test_round_trip_is_exact(saved):
    run, model, tokenizer, optimizer = saved
    ckpt = load_checkpoint(run, with_optimizer=True)
    assert ckpt.path == run / "ckpt-000007"
    assert ckpt.config == model.config
    assert ckpt.state == {"hello": "world"}
    assert ckpt.model.lm_head.weight is ckpt.model.transformer.wte.weight
    for (name, a), b in zip(model.state_dict().items(), ckpt.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert ckpt.tokenizer.encode("def f(x):\n    return x") == tokenizer.encode("def f(x):\n    return x")
    reloaded = torch.optim.AdamW(ckpt.model.parameters(), lr=1e-3)
    reloaded.load_state_dict(ckpt.optimizer_state)
    before, after = optimizer.state_dict()["state"], reloaded.state_dict()["state"]
    assert before.keys() == after.keys()
    for index, slots in before.items():
        for key, value in slots.items():
            assert torch.equal(value, after[index][key]), (index, key)
    assert load_config(run) == model.config


def test_weights_are_safetensors_not_pickle(saved):
    folder = find_checkpoint(saved[0])
    names = sorted(p.name for p in folder.iterdir())
    assert not [n for n in names if n.endswith((".pt", ".pth", ".bin", ".pkl"))]
    assert "model.safetensors" in names and "optimizer.safetensors" in names


def test_keep_only_the_newest(saved):
    run, model, tokenizer, _ = saved
    save_checkpoint(run, model, tokenizer, step=8, keep=1)
    assert sorted(p.name for p in run.glob("ckpt-*")) == ["ckpt-000008"]
    assert (run / "LATEST").read_text().strip() == "ckpt-000008"


def test_the_newest_three_are_kept_by_default(saved):
    run, model, tokenizer, _ = saved
    for step in (8, 9, 10):
        save_checkpoint(run, model, tokenizer, step=step)
    assert sorted(p.name for p in run.glob("ckpt-*")) == ["ckpt-000008", "ckpt-000009", "ckpt-000010"]
    assert (run / "LATEST").read_text().strip() == "ckpt-000010"


def test_truncated_weights_are_detected(saved):
    path = find_checkpoint(saved[0]) / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(saved[0])


def test_flipped_bit_is_detected(saved):
    path = find_checkpoint(saved[0]) / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(saved[0])


def test_missing_and_garbage_paths(tmp_path, saved):
    with pytest.raises(CheckpointError, match="no such"):
        load_checkpoint(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="not a gptlab run"):
        load_checkpoint(tmp_path)
    folder = find_checkpoint(saved[0])
    (folder / "state.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupted JSON"):
        load_checkpoint(saved[0])


def test_tokenizer_checkpoint_mismatch(saved):
    run, model, tokenizer, _ = saved
    folder = find_checkpoint(run)
    config = json.loads((folder / "config.json").read_text())
    config["vocab_size"] = tokenizer.vocab_size - 1
    (folder / "config.json").write_text(json.dumps(config))
    state = json.loads((folder / "state.json").read_text())
    del state["sha256"]["config.json"]  # pretend the edit was legitimate: the mismatch must still be caught
    state["checksum"] = state_checksum(state)
    (folder / "state.json").write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match="tokenizer has"):
        load_checkpoint(run)


def test_weights_that_do_not_match_the_config(saved):
    run, model, tokenizer, _ = saved
    folder = find_checkpoint(run)
    config = json.loads((folder / "config.json").read_text())
    config["n_layer"] = 3
    (folder / "config.json").write_text(json.dumps(config))
    state = json.loads((folder / "state.json").read_text())
    del state["sha256"]["config.json"]
    state["checksum"] = state_checksum(state)
    (folder / "state.json").write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match="do not match"):
        load_checkpoint(run)


def test_interrupted_save_leaves_the_last_good_checkpoint(saved, monkeypatch):
    run, model, tokenizer, _ = saved
    import gptlab.train.checkpoint as checkpoint

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "sha256_file", explode)
    with pytest.raises(CheckpointError, match="disk full.*ckpt-000007, is kept"):
        save_checkpoint(run, model, tokenizer, step=9)
    monkeypatch.undo()
    assert load_checkpoint(run).path.name == "ckpt-000007"
    assert not list(run.glob(".ckpt-*"))
