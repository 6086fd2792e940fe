"""Decoding speed: gptlab's ``generate_tokens`` (KV cache) vs Hugging Face ``generate()``, batch 1, CPU.

Both sides hold the same weights (a seeded random GPT-2-shaped model, copied into
``transformers.GPT2LMHeadModel`` with SDPA attention), get the same prompt and produce the same
number of new tokens greedily (``temperature=0`` here, ``do_sample=False, use_cache=True`` there).
The script checks that the two token sequences are identical, then times both in interleaved
rounds; the time of a round covers the whole call (prefill of the prompt + every decode step),
and the headline is the median over rounds of (gptlab tokens/s) / (HF tokens/s).

A second gptlab side, ``compiled``, is the same call with ``compile=True``: the one-token steps run
through ``torch.compile`` (inductor with frozen weights and its own C++ GEMM kernels; see
``gptlab.generate.compiled``). Its compile time is printed and kept out of the rate, as the warm-up
is. Beside it runs ``hf compiled``: HF's own compiled generation (a static cache and
``torch.compile`` of the forward, the same inductor settings minus freezing, which fails inside HF's
static-cache indexing), so compiled can be set against compiled too. ``--no-compile`` leaves both
out (they need a C++ compiler).

A last side, ``matmuls``, runs only the model's weight products (every linear layer, lm_head
included, on one row, with the kernels eager decoding uses) as many times as a generation does.
HF's time ÷ this time is the most an eager decoder built on these kernels could gain over HF on
this machine: the script prints it as the eager ceiling. The compiled side is not bound by it:
inductor packs the weights and runs its own kernels.

    python bench/decode.py                        # 4 layers, width 256, prompt 32, 200 new tokens
    python bench/decode.py --new-tokens 400 --block-size 512
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

import torch
from torch import nn

from _common import SHAPES, bench_config, hf_twin, shape_line, interleaved_rounds, machine_line, median_ratio, print_table
from gptlab.generate.compiled import CPU_OPTIONS
from gptlab.generate.sampler import SamplingParams, generate_tokens
from gptlab.model.gpt import GPT

CHAR_VOCAB = 65 + 4 + 256  # tiny-shakespeare's characters + special tokens + byte fallback


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", choices=SHAPES, default="gpt2",
                   help="GPT-2's shape against GPT2LMHeadModel, or the Llama family's against LlamaForCausalLM")
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=256)
    p.add_argument("--block-size", type=int, default=256)
    p.add_argument("--vocab-size", type=int, default=CHAR_VOCAB)
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=200)
    p.add_argument("--warmup", type=int, default=1, help="untimed generations per side")
    p.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-compile", action="store_true", help="leave out both compiled sides (gptlab's and HF's)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.prompt_len + args.new_tokens > args.block_size:
        raise SystemExit("prompt-len + new-tokens must fit in block-size")
    torch.manual_seed(args.seed)
    config = bench_config(args.shape, vocab_size=args.vocab_size, block_size=args.block_size,
                          n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd)
    ours = GPT(config).eval()
    hf = hf_twin(ours).eval()
    prompt = torch.randint(0, config.vocab_size, (args.prompt_len,)).tolist()
    params = SamplingParams(max_new_tokens=args.new_tokens, temperature=0.0)
    prompt_ids = torch.tensor([prompt])

    def run_ours() -> list[int]:
        return list(generate_tokens(ours, prompt, params))

    def run_compiled() -> list[int]:
        return list(generate_tokens(ours, prompt, params, compile=True))

    def run_hf(**compiled: Any) -> list[int]:
        with torch.inference_mode():
            out = hf.generate(
                prompt_ids, attention_mask=torch.ones_like(prompt_ids), do_sample=False, use_cache=True,
                max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, pad_token_id=0, **compiled,
            )
        return out[0, args.prompt_len:].tolist()

    def run_hf_compiled() -> list[int]:
        from transformers import CompileConfig

        compile_config = CompileConfig(fullgraph=True, dynamic=False)
        compile_config._compile_all_devices = True  # HF compiles on CUDA-like devices only, unless told
        with torch._inductor.config.patch(dict(CPU_OPTIONS, freezing=False)):
            return run_hf(cache_implementation="static", compile_config=compile_config)

    linears = [m for m in ours.modules() if isinstance(m, nn.Linear)]  # the blocks' layers and lm_head
    rows = {m.in_features: torch.randn(1, 1, m.in_features) for m in linears}

    @torch.inference_mode()
    def run_matmuls() -> None:
        for _ in range(args.new_tokens):
            for m in linears:
                m(rows[m.in_features])

    tokens_ours, tokens_hf = run_ours(), run_hf()
    identical = tokens_ours == tokens_hf
    sides: dict[str, Any] = {"gptlab": run_ours, "hf": run_hf, "matmuls": run_matmuls}
    compiled_line = "left out (--no-compile)"
    if not args.no_compile:
        first_calls = []
        for name, run in (("compiled", run_compiled), ("hf compiled", run_hf_compiled)):
            start = time.perf_counter()
            same = run() == tokens_hf  # the first call compiles
            first_calls.append(f"{name} {time.perf_counter() - start:.1f} s, same tokens {same}")
            identical = identical and same
            sides[name] = run
        compiled_line = "first calls (compiling): " + "; ".join(first_calls)
    print_table("decode: greedy generation, batch 1, KV cache, fp32, CPU", {
        "model": f"{shape_line(config)}, {config.n_layer} layers, {config.n_head} heads, width {config.n_embd}, "
                 f"context {config.block_size}, vocab {config.vocab_size}, {ours.num_parameters():,} params "
                 f"(seeded random weights, copied to HF)",
        "work": f"prompt {args.prompt_len} tokens, {args.new_tokens} new tokens (time covers prefill + decode)",
        "gptlab": "gptlab.generate.sampler.generate_tokens(temperature=0)",
        "reference": f"transformers {type(hf).__name__}(sdpa).generate(do_sample=False, use_cache=True)",
        "compiled": f"generate_tokens(compile=True), and HF generate(cache_implementation='static') "
                    f"compiled; {compiled_line}",
        "matmuls": f"only the {len(linears)} weight products per token, one row each (eager decoding's floor)",
        "timing": f"{args.warmup} warm-up call per side, then {args.rounds} interleaved rounds, median",
        "machine": machine_line(),
        "same tokens": f"{identical} ({len(tokens_ours)} vs {len(tokens_hf)} tokens; every gptlab side vs hf)",
    })
    if not identical:
        first = next((i for i, (a, b) in enumerate(zip(tokens_ours, tokens_hf)) if a != b), None)
        print(f"  WARNING: greedy outputs differ (first difference at new token {first})")
    for _ in range(args.warmup):
        for run in sides.values():
            run()
    times = interleaved_rounds(sides, args.rounds)
    results: dict[str, Any] = {"config": vars(args), "identical": identical}
    print("results")
    for name, secs in times.items():
        tok_s = args.new_tokens / statistics.median(secs)
        ratio = median_ratio(times["hf"], secs)
        results[name] = {"tokens_per_s": tok_s, "ratio_vs_hf": ratio, "call_s": secs}
        print(f"  {name:<11} {tok_s:8,.0f} new tokens/s   {statistics.median(secs) * 1e3 / args.new_tokens:6.2f} ms/token"
              f"   ratio vs hf {ratio:5.2f}x")
    results["ratio"] = results["gptlab"]["ratio_vs_hf"]
    results["ceiling"] = results["matmuls"]["ratio_vs_hf"]
    print(f"eager ceiling here (hf time / matmuls-only time): {results['ceiling']:.2f}x")
    print(f"gptlab / hf decoding speed: {results['ratio']:.2f}x eager", end="")
    if "compiled" in results:
        results["ratio_compiled"] = results["compiled"]["ratio_vs_hf"]
        results["ratio_compiled_vs_hf_compiled"] = median_ratio(times["hf compiled"], times["compiled"])
        print(f", {results['ratio_compiled']:.2f}x compiled "
              f"({results['ratio_compiled_vs_hf_compiled']:.2f}x against HF compiled)", end="")
    print(" (target >= 3x)")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
