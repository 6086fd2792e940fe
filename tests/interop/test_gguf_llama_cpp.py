"""GGUF files that gptlab writes, run by llama.cpp itself (through ``llama-cpp-python``; skipped
where it is not installed — ``pip install 'gptlab[llamacpp]'`` builds it from source).

For each architecture a tiny model is trained briefly on a small corpus (so that its greedy path
has clear winners, not the near-ties of a random model), exported as f32, and run by llama.cpp
with an f32 KV cache: its token ids for the same text, its logits over a prompt, and its greedy
continuation must equal gptlab's. The tolerances:

- f32 weights, activations and cache on both sides: the logits differ by summation order only,
  a few float32 ulps per operation (≈1e-6 relative) through two layers, on logits up to ≈6; 1e-4
  leaves fifty times the ≈2e-6 measured;
- llama.cpp's ``gpt2`` graph computes GELU through ggml's f16 table (``GGML_GELU_FP16``): its input
  and output are rounded to f16, a relative error of up to 2**-11 each on the MLP's activations,
  which reaches the logits scaled by the MLP's output weights (1e-4 to 3.4e-4 measured): 3e-3.

Greedy tokens must be equal as long as gptlab's top-2 margin exceeds twice the measured logit
difference (past a near-tie either choice is right); the trained models' paths have no such
step in practice, and at least half of the continuation must be compared.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gptlab.data.tokenizer import Tokenizer, train_bpe_tokenizer, train_char_tokenizer
from gptlab.generate.sampler import SamplingParams, generate_tokens
from gptlab.interop.gguf import export_gguf
from gptlab.model.config import preset
from gptlab.model.gpt import GPT

from .conftest import TEXTS
from .test_gguf import SHAPES

llama_cpp = pytest.importorskip("llama_cpp")
pytestmark = pytest.mark.slow

GGML_TYPE_F32 = 0
TOLERANCE = {"gpt2": 3e-3, "llama": 1e-4, "qwen2": 1e-4, "qwen3": 1e-4}
PROMPT_TOKENS, NEW_TOKENS = 16, 40  # within the 64-token context: no window sliding on either side


@pytest.fixture(scope="module")
def bpe(corpus_text: str) -> Tokenizer:
    return train_bpe_tokenizer([corpus_text], 512)


def trained(shape: str, tokenizer: Tokenizer, text: str, steps: int = 40) -> GPT:
    """A tiny model of ``shape`` after ``steps`` of AdamW on windows of ``text``."""
    name, overrides, _ = SHAPES[shape]
    torch.manual_seed(0)
    model = GPT(preset(name, vocab_size=tokenizer.vocab_size, **overrides))
    ids = torch.tensor(tokenizer.encode(text, allow_special=False))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    T = model.config.block_size
    for _ in range(steps):
        starts = torch.randint(0, len(ids) - T - 1, (8,))
        x = torch.stack([ids[s : s + T] for s in starts])
        y = torch.stack([ids[s + 1 : s + T + 1] for s in starts])
        _, loss = model(x, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def llama(path: Path, n_ctx: int):
    return llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, n_threads=1,
                           logits_all=True, type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32, flash_attn=False,
                           verbose=False)


def record(what: str, value: object) -> None:
    print(f"llama.cpp parity {what}: {value}")  # for the record, with -s


def check_parity(shape: str, model: GPT, tokenizer: Tokenizer, text: str, path: Path, label: str = "") -> None:
    arch = SHAPES[shape][2]
    export_gguf(model, tokenizer, path, outtype="f32")
    llm = llama(path, model.config.block_size)

    for sample in (*TEXTS, text[:500]):
        assert llm.tokenize(sample.encode(), add_bos=False, special=True) == tokenizer.encode(sample), sample

    prompt = tokenizer.encode(text, allow_special=False)[:PROMPT_TOKENS]
    ours = list(generate_tokens(model, prompt, SamplingParams(max_new_tokens=NEW_TOKENS, temperature=0)))
    theirs = []
    for token in llm.generate(prompt, temp=0.0, top_k=1, reset=True):
        theirs.append(int(token))
        if len(theirs) == NEW_TOKENS:
            break

    sequence = prompt + ours  # all logits along gptlab's path, in one pass on each side
    with torch.no_grad():
        expected = model(torch.tensor([sequence[:-1]]))[0][0]
    llm.reset()
    llm.eval(sequence[:-1])
    actual = torch.from_numpy(llm.scores[: len(sequence) - 1].copy())
    diff = float((actual - expected).abs().max())
    top2 = expected[len(prompt) - 1 :].topk(2, dim=-1).values
    margins = top2[:, 0] - top2[:, 1]  # (NEW_TOKENS,) gptlab's lead of its choice at each step
    ties = (margins <= 2 * diff).nonzero()
    decided = int(ties[0]) if len(ties) else NEW_TOKENS  # steps before the first near-tie, if any
    record(f"{shape}{label} ({arch})", f"greedy tokens equal: {ours == theirs} ({NEW_TOKENS} tokens), max |logit diff| "
           f"{diff:.2e}, smallest top-2 margin {float(margins.min()):.2e}, logits up to {float(expected.abs().max()):.1f}")
    assert diff <= TOLERANCE[arch]
    assert decided >= NEW_TOKENS // 2
    assert theirs[:decided] == ours[:decided]


@pytest.mark.parametrize("shape", ["gpt2", "gpt2-no-bias-gqa-untied", "llama", "llama-biases-tied", "llama3-rope",
                                   "qwen2", "qwen3"])
def test_llama_cpp_runs_the_export_as_gptlab_does(shape: str, bpe: Tokenizer, corpus_text: str,
                                                  tmp_path: Path) -> None:
    check_parity(shape, trained(shape, bpe, corpus_text), bpe, corpus_text, tmp_path / "m.gguf")


def test_llama_cpp_runs_a_char_tokenizer_model(corpus_text: str, tmp_path: Path) -> None:
    tokenizer = train_char_tokenizer([corpus_text])
    check_parity("llama", trained("llama", tokenizer, corpus_text), tokenizer, corpus_text, tmp_path / "m.gguf",
                 label=", char tokenizer")


@pytest.mark.parametrize("outtype", ["f16", "bf16", "q8_0"])
def test_llama_cpp_runs_smaller_types_close_to_f32(outtype: str, bpe: Tokenizer, corpus_text: str,
                                                   tmp_path: Path) -> None:
    """Stored weights rounded (f16: 2**-11, bf16: 2**-8, q8_0: half a step of 1/127 of each block's
    largest value, and llama.cpp rounds the activations to q8_0 too before a q8_0 matmul) move the
    logits by about that fraction of their size per matmul: within 5 % of the largest logit."""
    model = trained("llama", bpe, corpus_text)
    path = export_gguf(model, bpe, tmp_path / "m.gguf", outtype=outtype)
    llm = llama(path, model.config.block_size)
    prompt = bpe.encode(corpus_text, allow_special=False)[:PROMPT_TOKENS]
    ours = list(generate_tokens(model, prompt, SamplingParams(max_new_tokens=NEW_TOKENS, temperature=0)))
    theirs = [int(t) for t, _ in zip(llm.generate(prompt, temp=0.0, top_k=1, reset=True), range(NEW_TOKENS))]
    sequence = prompt + ours
    with torch.no_grad():
        expected = model(torch.tensor([sequence[:-1]]))[0][0]
    llm.reset()
    llm.eval(sequence[:-1])
    diff = float((torch.from_numpy(llm.scores[: len(sequence) - 1].copy()) - expected).abs().max())
    same = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), NEW_TOKENS)
    record(f"llama {outtype}", f"first {same} of {NEW_TOKENS} greedy tokens equal to gptlab's (f32), "
           f"max |logit diff| {diff:.2e}, logits up to {float(expected.abs().max()):.1f}")
    assert diff <= 0.05 * float(expected.abs().max())
