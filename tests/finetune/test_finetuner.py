import csv
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gptlab.data.chat import IM_END, IM_START
from gptlab.train.checkpoint import load_checkpoint, save_checkpoint
from gptlab.cli.main import main
from gptlab.model.config import GPTConfig
from gptlab.train.curves import read_metrics
from gptlab.errors import CheckpointError, ConfigError, DataError, TokenizerError
from gptlab.finetune.finetuner import (
    Finetuner,
    build_finetuner,
    evaluate_examples,
    find_adapter,
    load_finetuned,
    merge_adapter_into_run,
)
from gptlab.finetune.config import FinetuneConfig, LoRAConfig
from gptlab.finetune.data import (
    ExampleBatcher,
    collate,
    load_records,
    split_indices,
    tokenize_record,
    tokenize_records,
)
from gptlab.finetune.lora import AdapterMismatchError, lora_modules, model_fingerprint
from gptlab.model.gpt import GPT, IGNORE_INDEX
from gptlab.data.tokenizer import EOT, train_char_tokenizer

ALPHABET = "abcdefgh=\n" + "".join(chr(c) for c in range(32, 127))


def make_base(path: Path, *, dropout: float = 0.1, special_tokens=None, seed: int = 0, embed_std: float = 0.5) -> Path:
    """A random GPT as a stand-in for a pre-trained one. Its token embeddings get the scale of
    trained ones (GPT-2's rows have norms of 3-4; a fresh GPT's 0.02 std gives ~0.1): LoRA keeps
    the tied embeddings frozen, and rows that small cap every logit near zero, so no adapter
    could make any prediction confident."""
    kwargs = {} if special_tokens is None else {"special_tokens": special_tokens}
    tokenizer = train_char_tokenizer(ALPHABET, **kwargs)
    torch.manual_seed(seed)
    config = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=32, dropout=dropout)
    model = GPT(config)
    with torch.no_grad():
        model.transformer.wte.weight.normal_(0.0, embed_std)
    save_checkpoint(path, model, tokenizer, step=0)
    return path


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run as fast on one thread, and a shared machine's other jobs do not make
    OpenMP threads wait for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return make_base(tmp_path_factory.mktemp("base") / "run")


def reverse_task(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    words = ["".join(rng.choice("abcdefgh") for _ in range(rng.randint(3, 7))) for _ in range(n)]
    return [{"prompt": w + "=", "completion": w[::-1]} for w in words]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def data(tmp_path) -> Path:
    return write_jsonl(tmp_path / "reverse.jsonl", reverse_task(60))


def ft_config(base: Path, data: Path, out: Path, **overrides) -> FinetuneConfig:
    settings = {
        "base": str(base), "data": str(data), "out": str(out), "batch_size": 4, "max_steps": 12, "warmup_steps": 2,
        "eval_interval": 4, "log_interval": 1, "checkpoint_interval": 4, "progress": False, "learning_rate": 3e-3,
        "val_fraction": 0.2,
    }
    settings.update(overrides)
    return FinetuneConfig(**settings)


def losses(run: Path) -> list[float]:
    return [m["loss"] for m in read_metrics(run / "metrics.jsonl") if "loss" in m]


# ---------------------------------------------------------------------------------------------
# data


def trained_text(example, tokenizer) -> str:
    return tokenizer.decode(example.targets[example.targets != IGNORE_INDEX].tolist())


def test_loss_masks_of_the_three_record_shapes(tmp_path):
    tokenizer = train_char_tokenizer(ALPHABET)
    path = write_jsonl(tmp_path / "d.jsonl", [
        {"text": "abc"},
        {"prompt": "ab=", "completion": "ba", "id": 7},  # other keys are ignored
        {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                      {"role": "assistant", "content": "ho"}, {"role": "user", "content": "x"},
                      {"role": "assistant", "content": "y"}]},
    ])
    text, completion, chat = (tokenize_record(r, tokenizer, 128) for r in load_records(path))
    assert trained_text(text, tokenizer) == "bc" + EOT  # every token but the first, which nothing predicts
    assert tokenizer.decode(text.inputs.tolist()) == "abc"
    assert trained_text(completion, tokenizer) == "ba" + EOT
    assert tokenizer.decode(completion.inputs.tolist()) == "ab=ba"
    assert trained_text(chat, tokenizer) == f"ho{IM_END}y{IM_END}"
    # targets are the inputs shifted by one wherever they count
    for example in (text, completion, chat):
        full = example.inputs.tolist()[1:]
        mask = example.targets[:-1] != IGNORE_INDEX
        assert (example.targets[:-1][mask] == torch.tensor(full).numpy()[mask]).all()


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"text": "ab"}', '{"text": "ab"'], r"d.jsonl:2: not valid JSON"),
        (['{"prompt": "a"}'], r"d.jsonl:1: .*'completion' too"),
        (['{"completion": "a"}'], r"d.jsonl:1: .*'completion' too"),
        (['{"prompt": "a", "completion": 3}'], r"d.jsonl:1: 'completion' must be a string"),
        (['{"text": ""}'], r"d.jsonl:1: empty 'text'"),
        (['{"input": "a"}'], r"d.jsonl:1: expected 'text', 'prompt' \+ 'completion', 'messages'"),
        (['[1, 2]'], r"d.jsonl:1: expected a JSON object"),
        (['{"messages": [{"role": "user", "content": "hi"}]}'], r"d.jsonl:1: no assistant message"),
        (['{"messages": [{"role": "robot", "content": "hi"}]}'], r"d.jsonl:1: unknown chat role"),
        (['{"messages": [{"content": "hi"}]}'], r"d.jsonl:1: message 0 needs"),
        (['{"messages": []}'], r"d.jsonl:1: 'messages' must be a non-empty list"),
        (["", "  "], r"d.jsonl: no examples"),
    ],
)
def test_bad_records_are_typed_errors_naming_the_line(tmp_path, lines, message):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=message):
        load_records(path)


def test_missing_and_binary_files(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_records(tmp_path / "nope.jsonl")
    (tmp_path / "bin.jsonl").write_bytes(b'{"text": "\xff\xfe"}\n')
    with pytest.raises(DataError, match="not UTF-8"):
        load_records(tmp_path / "bin.jsonl")


def test_examples_longer_than_the_context_error_or_truncate(tmp_path):
    tokenizer = train_char_tokenizer(ALPHABET)
    path = write_jsonl(tmp_path / "d.jsonl", [
        {"prompt": "ab=", "completion": "a" * 20},  # 3 + 20 + EOT = 24 ids: 23 positions
        {"prompt": "b" * 30, "completion": "c"},  # the prompt alone fills the context
    ])
    long, prompt_only = load_records(path)
    assert len(tokenize_record(long, tokenizer, 23)) == 23
    with pytest.raises(DataError, match=r"d.jsonl:1: example is 23 tokens, longer than the model's context of 16.*--truncate"):
        tokenize_record(long, tokenizer, 16)
    cut = tokenize_record(long, tokenizer, 16, truncate=True)
    assert len(cut) == 16 and trained_text(cut, tokenizer) == "a" * 14  # the end (and its EOT) is cut off
    assert tokenize_record(prompt_only, tokenizer, 16, truncate=True) is None
    assert len(tokenize_records([long, prompt_only], tokenizer, 16, truncate=True)) == 1


def test_split_is_deterministic_disjoint_and_complete():
    train, val = split_indices(100, 0.1, seed=3)
    assert (train, val) == split_indices(100, 0.1, seed=3)
    assert len(val) == 10 and sorted(train + val) == list(range(100))
    assert split_indices(100, 0.1, seed=4)[1] != val
    assert split_indices(5, 0.01, seed=0)[1] != []  # at least one held out
    assert split_indices(5, 0.0, seed=0) == ([0, 1, 2, 3, 4], [])
    with pytest.raises(DataError, match="cannot be split"):
        split_indices(1, 0.5, seed=0)


def test_batcher_covers_each_epoch_once_and_resumes_exactly():
    batcher = ExampleBatcher(10, 4, seed=1)
    epoch = [batcher.next_indices() for _ in range(3)]
    assert [len(b) for b in epoch] == [4, 4, 2] and sorted(i for b in epoch for i in b) == list(range(10))
    second_epoch_first = batcher.next_indices()
    assert batcher.epoch == 1 and second_epoch_first != epoch[0]
    state = batcher.state_dict()
    expected = [batcher.next_indices() for _ in range(5)]
    restored = ExampleBatcher(10, 4, seed=1)
    restored.load_state_dict(state)
    assert [restored.next_indices() for _ in range(5)] == expected
    with pytest.raises(DataError, match="other data"):
        ExampleBatcher(11, 4, seed=1).load_state_dict(state)


def test_padding_leaves_each_examples_loss_unchanged(tmp_path):
    tokenizer = train_char_tokenizer(ALPHABET)
    path = write_jsonl(tmp_path / "d.jsonl", reverse_task(6))
    examples = tokenize_records(load_records(path), tokenizer, 32)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=16)).eval()
    x, y = collate(examples, pad_id=tokenizer.eot_id)
    for row, example in enumerate(examples):
        assert (y[row, len(example):] == IGNORE_INDEX).all()
        alone, _ = model(torch.from_numpy(example.inputs)[None])
        padded, _ = model(x[row : row + 1])
        torch.testing.assert_close(padded[0, : len(example)], alone[0], rtol=1e-5, atol=1e-5)
    per_example = [(evaluate_examples(model, [e]), e.n_trained) for e in examples]
    weighted = sum(loss * n for loss, n in per_example) / sum(n for _, n in per_example)
    assert evaluate_examples(model, examples, batch_size=4) == pytest.approx(weighted, rel=1e-5)


# ---------------------------------------------------------------------------------------------
# training


def test_full_finetuning_lowers_the_held_out_loss(base, data, tmp_path):
    tuner = build_finetuner(ft_config(base, data, tmp_path / "run", max_steps=40, eval_interval=20))
    result = tuner.fit()
    assert result.step == 40 and not result.stopped_early
    assert result.val_loss < result.base_val_loss - 2.0
    vals = [m for m in read_metrics(tmp_path / "run" / "metrics.jsonl") if "val_loss" in m]
    assert [m["step"] for m in vals] == [0, 20, 40] and vals[0]["val_loss"] == result.base_val_loss
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt.state["step"] == 40 and ckpt.state["base"]["fingerprint"] == model_fingerprint(load_checkpoint(base).model)
    assert (tmp_path / "run" / "finetune_config.json").exists()


def test_lora_trains_only_the_adapters_and_saves_them_apart(base, data, tmp_path):
    base_model = load_checkpoint(base).model
    fingerprint = model_fingerprint(base_model)
    cfg = ft_config(base, data, tmp_path / "run", max_steps=40, eval_interval=20, learning_rate=1e-2,
                    lora=LoRAConfig(rank=4, alpha=8.0, dropout=0.0))
    tuner = build_finetuner(cfg)
    result = tuner.fit()
    assert result.val_loss < result.base_val_loss - 2.0
    assert model_fingerprint(tuner.model) == fingerprint  # base weights untouched by training
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(("adapter-", "ckpt-"))) == \
        ["adapter-000032", "adapter-000036", "adapter-000040", "ckpt-000032", "ckpt-000036", "ckpt-000040"]
    # the newest three checkpoints stay, each with its adapter; older adapters go with their checkpoints
    assert result.adapter == run / "adapter-000040" == find_adapter(run)
    assert model_fingerprint(load_checkpoint(run).model) == fingerprint  # the checkpoint holds the plain base
    x = torch.from_numpy(tuner.data.val[0].inputs)[None]
    tuner.model.eval()
    expected, _ = tuner.model(x)
    loaded = load_finetuned(run).eval()
    assert lora_modules(loaded)
    torch.testing.assert_close(loaded(x)[0], expected, rtol=0, atol=0)
    standalone = load_finetuned(result.adapter).eval()  # base found through the recorded path
    torch.testing.assert_close(standalone(x)[0], expected, rtol=0, atol=0)
    merged = load_checkpoint(merge_adapter_into_run(run, tmp_path / "merged")).model.eval()
    assert not lora_modules(merged)
    torch.testing.assert_close(merged(x)[0], expected, rtol=1e-5, atol=1e-5)


def test_gradient_accumulation_matches_one_big_batch(data, tmp_path):
    base = make_base(tmp_path / "base", dropout=0.0)
    big = build_finetuner(ft_config(base, data, tmp_path / "a", batch_size=4))
    small = build_finetuner(ft_config(base, data, tmp_path / "b", batch_size=2, grad_accum=2))
    for tuner in (big, small):
        # SGD, whose update is linear in the gradient: AdamW's 1/sqrt(v) would turn rounding
        # differences in tiny gradients into lr-sized weight differences that depend on the CPU
        tuner.optimizer = torch.optim.SGD(list(tuner.trained.values()), lr=tuner.cfg.lr)
        tuner.fit(steps=1)  # both see epoch 0's first four examples: the permutation depends on the seed only
    for (name, a), b in zip(big.model.named_parameters(), small.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("lora", [None, LoRAConfig(rank=2, dropout=0.2)], ids=["full", "lora"])
def test_resume_continues_exactly(base, data, tmp_path, lora):
    full = build_finetuner(ft_config(base, data, tmp_path / "full", lora=lora))
    full.fit()
    part = build_finetuner(ft_config(base, data, tmp_path / "part", lora=lora))
    part.fit(steps=5)  # a slice ends with a checkpoint (step 5, between the every-4 ones)
    del part
    resumed = build_finetuner(ft_config(base, data, tmp_path / "part", lora=lora), resume=True)
    assert resumed.step == 5
    resumed.fit()
    assert losses(tmp_path / "part") == losses(tmp_path / "full")
    val = lambda run: [(m["step"], m["val_loss"]) for m in read_metrics(run / "metrics.jsonl") if "val_loss" in m]
    assert val(tmp_path / "part") == val(tmp_path / "full")
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)


def test_early_stopping_on_validation_loss(base, data, tmp_path, monkeypatch):
    scripted = iter([3.0, 2.0, 2.5, 2.6, 1.0, 1.0])  # steps 0, 2, 4, 6, ...: no new best after step 2
    monkeypatch.setattr(Finetuner, "evaluate", lambda self: next(scripted))
    tuner = build_finetuner(ft_config(base, data, tmp_path / "run", eval_interval=2, early_stopping=2, max_steps=20))
    result = tuner.fit()
    assert result.stopped_early and result.step == 6
    assert (result.best_val_loss, result.best_step, result.base_val_loss) == (2.0, 2, 3.0)
    again = build_finetuner(ft_config(base, data, tmp_path / "run", eval_interval=2, early_stopping=2, max_steps=20),
                            resume=True)
    assert again.fit().step == 6  # a stopped run stays stopped


def trained_weights(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("lora", [None, LoRAConfig(rank=2, alpha=4.0, dropout=0.0)], ids=["full", "lora"])
def test_a_finished_run_ends_with_the_weights_of_its_best_evaluation(base, data, tmp_path, monkeypatch, lora):
    settings = {"eval_interval": 2, "early_stopping": 2, "max_steps": 20, "lora": lora}
    scripted = iter([3.0, 2.0, 2.5, 2.6])  # steps 0, 2, 4, 6: the best is step 2, then two worse ones
    monkeypatch.setattr(Finetuner, "evaluate", lambda self: next(scripted))
    result = build_finetuner(ft_config(base, data, tmp_path / "run", **settings)).fit()
    assert (result.step, result.best_step, result.weights_step, result.val_loss) == (6, 2, 2, 2.0)
    assert not (tmp_path / "run" / "best.safetensors").exists()  # the final checkpoint holds them now

    monkeypatch.setattr(Finetuner, "evaluate", lambda self: 1.0)
    reference = {**settings, "early_stopping": None, "restore_best": False}  # the same steps, never stopped
    at_step_2 = build_finetuner(ft_config(base, data, tmp_path / "two", **reference))
    at_step_2.fit(steps=2)  # a slice of the same run: the weights it had at step 2
    expected = trained_weights(at_step_2.model)
    at_step_2.fit(steps=4)
    last = trained_weights(at_step_2.model)  # step 6, the run's last weights

    saved = load_finetuned(tmp_path / "run")
    for name, value in expected.items():
        assert torch.equal(saved.get_parameter(name), value), name
    assert any(not torch.equal(expected[n], last[n]) for n in expected)

    scripted = iter([3.0, 2.0, 2.5, 2.6])
    monkeypatch.setattr(Finetuner, "evaluate", lambda self: next(scripted))
    kept_last = build_finetuner(ft_config(base, data, tmp_path / "last", restore_best=False, **settings)).fit()
    assert kept_last.weights_step is None and kept_last.val_loss == 2.6
    for name, value in last.items():
        assert torch.equal(load_finetuned(tmp_path / "last").get_parameter(name), value), name


def test_a_time_budget_stop_keeps_the_last_weights(base, data, tmp_path, monkeypatch):
    scripted = iter([3.0, 2.0, 2.5])
    monkeypatch.setattr(Finetuner, "evaluate", lambda self: next(scripted))
    tuner = build_finetuner(ft_config(base, data, tmp_path / "run", eval_interval=2, max_steps=20))
    monkeypatch.setattr(FinetuneConfig, "max_time", property(lambda self: 0.0 if tuner.step >= 4 else None),
                        raising=False)
    result = tuner.fit()
    assert result.step == 4 and result.weights_step is None
    assert (tmp_path / "run" / "best.safetensors").exists()  # still needed by the rest of the run


def test_the_last_step_is_evaluated_even_when_a_checkpoint_landed_on_it(base, data, tmp_path, monkeypatch):
    scripted = iter([3.0, 2.0, 2.5, 1.0])
    monkeypatch.setattr(Finetuner, "evaluate", lambda self: next(scripted))
    result = build_finetuner(ft_config(base, data, tmp_path / "run", eval_interval=5, max_steps=12,
                                       checkpoint_interval=4)).fit()
    evaluated = [m["step"] for m in read_metrics(tmp_path / "run" / "metrics.jsonl") if "val_loss" in m]
    assert evaluated == [0, 5, 10, 12]
    assert (result.best_step, result.weights_step) == (12, None)  # the last step was the best


def test_a_crash_in_the_final_save_keeps_the_best_weights_for_the_resume(base, data, tmp_path, monkeypatch):
    settings = {"eval_interval": 2, "early_stopping": 2, "max_steps": 20, "checkpoint_interval": 4}
    monkeypatch.setattr(Finetuner, "evaluate", lambda self: {0: 3.0, 2: 2.0, 4: 2.5, 6: 2.6}[self.step])
    real_save = Finetuner.save

    def crash_on_the_final_save(self):
        if self.weights_step is not None:
            raise KeyboardInterrupt("killed while writing the final checkpoint")
        return real_save(self)

    monkeypatch.setattr(Finetuner, "save", crash_on_the_final_save)
    with pytest.raises(KeyboardInterrupt):
        build_finetuner(ft_config(base, data, tmp_path / "run", **settings)).fit()
    assert (tmp_path / "run" / "best.safetensors").exists()
    monkeypatch.setattr(Finetuner, "save", real_save)
    result = build_finetuner(ft_config(base, data, tmp_path / "run", **settings), resume=True).fit()
    assert (result.step, result.weights_step) == (6, 2)
    reference = build_finetuner(ft_config(base, data, tmp_path / "ref", **{**settings, "early_stopping": None}))
    reference.fit(steps=2)
    saved = load_finetuned(tmp_path / "run")
    for name, value in trained_weights(reference.model).items():
        assert torch.equal(saved.get_parameter(name), value), name


def test_a_run_that_ended_on_earlier_weights_cannot_be_extended(base, data, tmp_path, monkeypatch):
    monkeypatch.setattr(Finetuner, "evaluate", lambda self: {0: 3.0, 2: 2.0}.get(self.step, 2.5))
    settings = {"eval_interval": 2, "max_steps": 6}
    assert build_finetuner(ft_config(base, data, tmp_path / "run", **settings)).fit().weights_step == 2
    assert build_finetuner(ft_config(base, data, tmp_path / "run", **settings), resume=True).fit().step == 6
    with pytest.raises(ConfigError, match="weights of step 2"):
        build_finetuner(ft_config(base, data, tmp_path / "run", **{**settings, "max_steps": 10}), resume=True)


def test_early_stopping_needs_validation():
    with pytest.raises(ConfigError, match="val_fraction"):
        FinetuneConfig(early_stopping=3, val_fraction=0.0)


def test_nothing_is_overwritten_or_created_on_bad_input(base, data, tmp_path):
    build_finetuner(ft_config(base, data, tmp_path / "run", max_steps=2)).fit()
    with pytest.raises(CheckpointError, match="--resume"):
        build_finetuner(ft_config(base, data, tmp_path / "run"))
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"text": "ab"}, "{"])
    with pytest.raises(DataError, match="bad.jsonl:2"):
        build_finetuner(ft_config(base, bad, tmp_path / "new"))
    long = write_jsonl(tmp_path / "long.jsonl", [{"text": "a" * 40}] * 5)
    with pytest.raises(DataError, match="--truncate"):
        build_finetuner(ft_config(base, long, tmp_path / "new"))
    with pytest.raises(DataError, match="no such file"):
        build_finetuner(ft_config(base, tmp_path / "missing.jsonl", tmp_path / "new"))
    with pytest.raises(CheckpointError):
        build_finetuner(ft_config(tmp_path / "no-base", data, tmp_path / "new"))
    assert not (tmp_path / "new").exists()


def test_resume_refuses_other_data_or_another_mode(base, data, tmp_path):
    build_finetuner(ft_config(base, data, tmp_path / "run", max_steps=4)).fit(steps=4)
    other = write_jsonl(tmp_path / "other.jsonl", reverse_task(60, seed=1))
    with pytest.raises(DataError, match="SHA-256"):
        build_finetuner(ft_config(base, other, tmp_path / "run", max_steps=4), resume=True)
    with pytest.raises(ConfigError, match="LoRA"):
        build_finetuner(ft_config(base, data, tmp_path / "run", max_steps=4, lora=LoRAConfig()), resume=True)


def test_chat_data_adds_missing_markers_for_full_finetuning_and_lora_refuses(tmp_path):
    base = make_base(tmp_path / "plain", special_tokens=(EOT,))  # a tokenizer without chat markers
    rows = [{"messages": [{"role": "user", "content": w["prompt"][:3]}, {"role": "assistant", "content": w["prompt"][2::-1]}]}
            for w in reverse_task(20)]
    data = write_jsonl(tmp_path / "chat.jsonl", rows)
    with pytest.raises(TokenizerError, match="LoRA"):
        build_finetuner(ft_config(base, data, tmp_path / "lora", lora=LoRAConfig()))
    assert not (tmp_path / "lora").exists()
    tuner = build_finetuner(ft_config(base, data, tmp_path / "full", max_steps=2))
    tuner.fit()
    ckpt = load_checkpoint(tmp_path / "full")
    old_vocab = load_checkpoint(base).config.vocab_size
    assert {IM_START, IM_END} <= set(ckpt.tokenizer.special_tokens)
    assert ckpt.config.vocab_size == old_vocab + 2 == ckpt.tokenizer.vocab_size
    assert ckpt.state["added_tokens"] == [IM_START, IM_END]


def test_cli_finetune_lora_and_merge(base, data, tmp_path, capsys):
    run, merged = tmp_path / "run", tmp_path / "merged"
    args = ["finetune", str(base), "--data", str(data), "--out", str(run), "--max-steps", "6", "--eval-interval", "3",
            "--batch-size", "4", "--no-progress", "--lora", "--lora-rank", "2", "--lora-targets", "attn.c_attn,mlp.c_fc"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "LoRA r=2" in err and "parameters trained" in err and "adapter:" in err
    adapter = json.loads((find_adapter(run) / "adapter.json").read_text())
    assert adapter["lora"]["targets"] == ["attn.c_attn", "mlp.c_fc"] and adapter["lora"]["rank"] == 2
    assert main(["lora", "merge", str(run), "--out", str(merged)]) == 0
    assert main(["lora", "merge", str(run), "--out", str(merged)]) == 1
    assert "already holds a run" in capsys.readouterr().err
    other = make_base(tmp_path / "other", seed=1)
    assert main(["lora", "merge", str(find_adapter(run)), "--base", str(other), "--out", str(tmp_path / "m2")]) == 1
    assert "another base model" in capsys.readouterr().err and not (tmp_path / "m2").exists()
    x = torch.tensor([[3, 4, 5, 6]])
    torch.testing.assert_close(load_checkpoint(merged).model.eval()(x)[0], load_finetuned(run).eval()(x)[0],
                               rtol=1e-5, atol=1e-5)
    assert main(["finetune", "--out", str(run), "--resume", "--max-steps", "8", "--no-progress"]) == 0
    assert load_checkpoint(run).state["step"] == 8  # saved settings (base, data, LoRA) come back
    assert main(["finetune", str(base), "--data", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "x")]) == 1
    assert "no such file" in capsys.readouterr().err


def test_cli_finetune_logs_to_tensorboard_and_csv_as_to_metrics_jsonl(base, data, tmp_path):
    """--log-to on gptlab finetune: the same records as metrics.jsonl, read back with TensorBoard's
    own reader and csv (as the training test does)."""
    pytest.importorskip("tensorboard")
    from tests.train.test_tracking import event_scalars

    run = tmp_path / "run"
    assert main(["finetune", str(base), "--data", str(data), "--out", str(run), "--max-steps", "4",
                 "--eval-interval", "2", "--log-interval", "2", "--batch-size", "4", "--no-progress", "--lora",
                 "--lora-rank", "2", "--log-to", "tensorboard,csv"]) == 0
    metrics = read_metrics(run / "metrics.jsonl")
    train = [m for m in metrics if "loss" in m]
    val = [m for m in metrics if "val_loss" in m]
    assert [m["step"] for m in train] == [2, 4] and [m["step"] for m in val] == [0, 2, 4]  # step 0: the base
    scalars = event_scalars(run / "tensorboard")
    assert {"train/loss", "train/lr", "train/epoch", "train/trained_tokens_per_s", "val/loss",
            "time/elapsed_s"} <= set(scalars)
    assert [(s, pytest.approx(v, rel=1e-6)) for s, v in scalars["train/loss"]] == [(m["step"], m["loss"]) for m in train]
    assert [(s, pytest.approx(v, rel=1e-6)) for s, v in scalars["val/loss"]] == [(m["step"], m["val_loss"]) for m in val]
    with open(run / "metrics.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [m["step"] for m in metrics]
    assert [float(r["train/lr"]) for r in rows if r["train/lr"]] == [m["lr"] for m in train]
    assert [float(r["val/loss"]) for r in rows if r["val/loss"]] == [m["val_loss"] for m in val]
    assert json.loads((run / "finetune_config.json").read_text())["log_to"] == ["tensorboard", "csv"]
    with pytest.raises(ConfigError, match="unknown tracker 'mlflow'"):
        FinetuneConfig(base=str(base), data=str(data), log_to="csv,mlflow")


def test_adapter_on_the_wrong_base_is_refused(base, data, tmp_path):
    tuner = build_finetuner(ft_config(base, data, tmp_path / "run", max_steps=2, lora=LoRAConfig(rank=2)))
    result = tuner.fit()
    other = make_base(tmp_path / "other", seed=1)
    with pytest.raises(AdapterMismatchError):
        load_finetuned(result.adapter, base=other)
    with pytest.raises(AdapterMismatchError):
        merge_adapter_into_run(result.adapter, tmp_path / "merged", base=other)
    assert not (tmp_path / "merged").exists()


@pytest.mark.slow
def test_kill_9_then_resume_gives_identical_losses(base, data, tmp_path, kill_at_first_checkpoint):
    def command(out: Path, *extra: str) -> list[str]:
        return [sys.executable, "-m", "gptlab", "finetune", str(base), "--data", str(data), "--out", str(out),
                "--lora", "--lora-rank", "2", "--batch-size", "4", "--max-steps", "50", "--eval-interval", "20",
                "--log-interval", "1", "--checkpoint-interval", "3", "--learning-rate", "3e-3", "--no-progress",
                *extra]

    # the uninterrupted run goes on beside the killed one and its resumption (their own processes:
    # the same losses however they share the machine)
    log = tmp_path / "full.log"
    with open(log, "w") as out, subprocess.Popen(command(tmp_path / "full"), stdout=out, stderr=out) as full:
        killed_at = kill_at_first_checkpoint(command(tmp_path / "killed"), tmp_path / "killed", "fine-tuning")
        assert 0 < killed_at < 50
        subprocess.run([sys.executable, "-m", "gptlab", "finetune", "--out", str(tmp_path / "killed"), "--resume",
                        "--no-progress"], check=True, capture_output=True)
        assert full.wait(timeout=120) == 0, log.read_text()[-3000:]
    assert len(losses(tmp_path / "full")) == 50
    assert losses(tmp_path / "killed") == losses(tmp_path / "full")


def test_a_lora_run_as_base_starts_from_its_merged_model(base, data, tmp_path):
    # fp32 (auto is bf16 on CPUs with bf16 units): W + BA merged, and x·Wᵀ + x·Aᵀ·Bᵀ, round differently in bf16
    lora = build_finetuner(ft_config(base, data, tmp_path / "lora", max_steps=8, lora=LoRAConfig(rank=2),
                                     dtype="float32")).fit()
    tuner = build_finetuner(ft_config(tmp_path / "lora", data, tmp_path / "full", max_steps=1, dtype="float32"))
    assert not lora_modules(tuner.model)
    assert tuner.fit().base_val_loss == pytest.approx(lora.val_loss, abs=1e-4)


def test_default_run_dir_never_reuses_a_run(tmp_path, monkeypatch):
    from gptlab.finetune.finetuner import default_run_dir

    monkeypatch.chdir(tmp_path)
    cfg = FinetuneConfig(base="runs/python-stdlib/ckpt-000600", data="d.jsonl")
    assert default_run_dir(cfg) == Path("runs/python-stdlib-finetune")
    assert default_run_dir(FinetuneConfig(base="runs/base/", lora=LoRAConfig())) == Path("runs/base-lora")
    (tmp_path / "runs" / "python-stdlib-finetune").mkdir(parents=True)
    (tmp_path / "runs" / "python-stdlib-finetune" / "LATEST").write_text("ckpt-000001\n")
    assert default_run_dir(cfg) == Path("runs/python-stdlib-finetune-2")
    assert default_run_dir(cfg, resume=True) == Path("runs/python-stdlib-finetune")
