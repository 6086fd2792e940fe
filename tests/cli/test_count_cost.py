"""`gptlab count` and `gptlab cost`: where each figure comes from, said in words."""

import json

import pytest
import torch

from gptlab.cli.main import main
from gptlab.model.config import PRESET_NOTES, GPTConfig, preset
from gptlab.model.count import count_config
from gptlab.model.gpt import GPT


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_count_of_an_empty_name_says_so_instead_of_naming_the_current_folder(capsys):
    code, out, err = run(capsys, "count", "")
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "empty string" in err and "'.'" not in err and ".: " not in err


def test_count_prints_the_mlp_only_neurons_beside_the_seeds_definition(capsys):
    code, out, err = run(capsys, "count", "gpt2")
    assert code == 0, err
    assert "total: 12 × 6,912 = 82,944" in out
    assert "MLP hidden units only (the neurons interpretability papers count): 12 × 3,072 = 36,864" in out
    assert json.loads(run(capsys, "count", "gpt2", "--json")[1])["mlp_hidden_neurons"] == 36_864
    table = run(capsys, "count")[1]
    assert "MLP neurons" in table.splitlines()[0]


@pytest.mark.parametrize("name", ["gpt2", "llama-tiny"])
def test_mlp_hidden_neurons_are_the_activations_between_the_mlp_layers(name):
    cfg = preset(name).replace(vocab_size=64, block_size=16) if name == "gpt2" else preset(name)
    if name == "gpt2":
        cfg = cfg.replace(n_layer=2, n_embd=48, n_head=4)
    model = GPT(cfg)
    seen = []
    hooks = [block.mlp.c_proj.register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape[-1]))
             for block in model.transformer.h]
    with torch.no_grad():
        model(torch.zeros((1, 4), dtype=torch.long))
    for h in hooks:
        h.remove()
    assert sum(seen) == count_config(cfg).mlp_hidden_neurons  # c_proj's inputs: the hidden units


def test_gpt3_presets_say_where_they_depart_from_the_paper(capsys):
    out = run(capsys, "count", "gpt3-xl")[1]
    assert "24 heads of d_head 128" in out and "16 heads" in out
    assert "5140" in run(capsys, "count", "gpt3-13b")[1].replace(",", "")
    assert "note:" not in run(capsys, "count", "gpt3-175b")[1]
    table = run(capsys, "count")[1]
    assert "gpt3-xl*" in table and "gpt3-13b*" in table and "* gpt3-xl:" in table
    # the choices keep the paper's parameter counts (Table 2.1: 1.3B and 13B) and d_head 128
    for name, billions in (("gpt3-xl", 1.3), ("gpt3-13b", 13.0)):
        cfg = preset(name)
        assert cfg.head_dim == 128 and name in PRESET_NOTES
        assert count_config(cfg).parameters / 1e9 == pytest.approx(billions, rel=0.015)
    # the paper's XL as printed, 24 heads of 128, would have a 3,072-wide attention: about 1.5B
    xl = preset("gpt3-xl")
    extra = xl.n_layer * 4 * xl.n_embd * (24 * 128 - xl.n_embd)
    assert (count_config(xl).parameters + extra) / 1e9 == pytest.approx(1.52, abs=0.01)


def test_cost_labels_each_figure_with_where_it_came_from(capsys):
    example = run(capsys, "cost")[1]
    assert "(given)" not in example
    assert "parameters N      1.75e+11  (GPT-3's example)" in example
    assert "tokens D          3e+11  (GPT-3's example)" in example
    assert "28 TFLOPS per GPU (GPT-3's example)" in example and "per GPU-hour  (GPT-3's example)" in example
    own = run(capsys, "cost", "--params", "1e9", "--tokens", "2e10", "--price-per-hour", "2")[1]
    assert "1e+09  (given)" in own and "2e+10  (given)" in own and "$2.00 per GPU-hour  (given)" in own
    assert "default; --gpu to change" in own and "default for a GPU from the table" in own
    util = run(capsys, "cost", "--params", "1e9", "--tokens", "2e10", "--utilization", "0.5")[1]
    assert "50% of that" in util and "(given)" in util.split("utilization")[1].splitlines()[0]


def test_cost_params_accepts_a_run_folder_as_count_does(tmp_path, capsys, corpus_text):
    from gptlab.data.tokenizer import train_char_tokenizer
    from gptlab.train.checkpoint import save_checkpoint

    tokenizer = train_char_tokenizer([corpus_text])
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=16, n_layer=2, n_head=2, n_embd=16))
    save_checkpoint(tmp_path / "run", model, tokenizer, step=3)
    n = sum(p.numel() for p in model.parameters())
    code, out, err = run(capsys, "cost", "--params", str(tmp_path / "run"), "--tokens", "1e6")
    assert code == 0, err
    assert f"(checkpoint {tmp_path / 'run'}: {n:,} parameters)" in out
    assert f"6·N·D = {6 * n * 1e6:.3e} FLOPs" in out
    code, _, err = run(capsys, "cost", "--params", "", "--tokens", "1e6")
    assert code == 1 and "--params is not a number" in err


def test_count_of_a_run_with_a_bigram_table_shows_it_outside_n(tmp_path, capsys, corpus_text):
    from gptlab.data.tokenizer import train_char_tokenizer
    from gptlab.train.checkpoint import save_checkpoint

    tokenizer = train_char_tokenizer([corpus_text])
    config = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16,
                       bigram_buckets=100)
    model = GPT(config)
    save_checkpoint(tmp_path / "run", model, tokenizer, step=3)
    code, out, err = run(capsys, "count", str(tmp_path / "run"), "--json")
    assert code == 0, err
    counted = json.loads(out)
    assert counted["parameters"] == sum(p.numel() for p in model.parameters())
    assert counted["breakdown"]["bigram_embeddings"] == 100 * 16 == model.transformer.bigram.weight.numel()
    assert counted["non_embedding_parameters"] == count_config(config.replace(bigram_buckets=0)).non_embedding
    code, out, err = run(capsys, "count", str(tmp_path / "run"))
    assert code == 0, err
    assert "bigram table of 100" in out and "+ bigram embeddings 1,600 +" in out
