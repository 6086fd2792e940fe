"""Code quality: how well a trained run writes Python, in figures that compare across tokenizers.

Given a run directory written by ``gptlab train``, the script prints:

1. **Held-out bits per byte.** The run's validation documents (its own ``val.bin``, decoded back to
   text: the train/val split is decided on whole documents before any tokenizer exists, so every
   recipe trained on the same corpus with the same ``max_bytes`` and ``val_fraction`` holds out the
   same text), cut to ``--max-eval-bytes`` bytes at a line break, tokenized with the run's own
   tokenizer and scored with the model: the total next-token loss in bits divided by the UTF-8
   bytes of the text. Each document is preceded by ``<|endoftext|>``, as in training, and only the
   text's own tokens are scored (not the ``<|endoftext|>`` separators). Windows of the model's full
   context slide by half of it, and each window scores only the tokens no earlier window scored, so
   every token is scored once with between half a context and a full context of text before it.
   The SHA-256 of the scored text is reported: equal hashes mean comparable figures.
2. **Share of sampled functions that parse.** ``--samples`` samples from ``--prompt`` (default
   ``def``, no trailing space: a byte-level BPE learns ``def`` + `` name``, so a prompt ending in a
   space starts from a split it rarely saw), sample i with seed ``--seed`` + i at ``--temperature``
   (no top-k/top-p), plus one greedy sample, through ``gptlab.generate.generate_tokens`` (the
   library's one sampler), without token healing unless ``--token-healing`` is given (then the
   prompt's tail is backed up as ``gptlab sample`` does by default, see
   ``gptlab.generate.healing``, and the function is the same text: prompt plus what follows it).
   The function starts at the beginning of the prompt's last line and ends where Python's
   tokenizer sees the next statement begin to the left of the function's body: at the ``def``
   line's indentation or less, or, once the body's first statement has set its indentation,
   anywhere left of that (a sample starts without context, so its ``def`` may be a method whose
   class it never saw: its body at 8 spaces, then ``    def`` for the next method). A closing
   bracket, a string or a comment does not end it. It also ends at ``<|endoftext|>``, or
   not at all: a sample that runs out of new tokens before its function ends counts as not parsing
   (``truncated``). It parses when ``ast.parse`` accepts the cut text and its first statement is a
   ``def`` / ``async def``. Of those, the ones Python's compiler also accepts are counted too: the
   parser lets through a few errors that ``compile()`` catches (a duplicate argument name,
   ``nonlocal`` with nothing to bind, ``await`` outside ``async def``).
3. **What the run cost**: its training wall time (the ``elapsed`` field of ``metrics.jsonl``, summed
   over resumed segments) with the device and precision it trained in (from the checkpoint), steps,
   parameters and tokenizer vocabulary.

    python bench/code_quality.py runs/python-stdlib
    python bench/code_quality.py RUN --prompt 'def ' --samples 20 --json cq.json
    python bench/code_quality.py RUN --prompt 'def ' --samples 50 --token-healing
"""

from __future__ import annotations

import argparse
import ast
import collections
import hashlib
import io
import json
import re
import sys
import time
import tokenize
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _common import machine_line
from gptlab.data.shards import MANIFEST_FILE, PreparedData, is_prepared, split_documents
from gptlab.data.tokenizer import Tokenizer
from gptlab.errors import GptlabError
from gptlab.generate import SamplingParams, generate_tokens
from gptlab.generate.healing import HealedPrompt, heal_prompt
from gptlab.model.gpt import IGNORE_INDEX, GPT
from gptlab.train import Checkpoint, load_checkpoint, resolve_device
from gptlab.train.curves import read_metrics
from gptlab.train.trainer import METRICS_FILE

LOGITS_BUDGET = 1 << 25  # floats of logits per forward pass when scoring (128 MB in fp32)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="run directory written by `gptlab train` (or one of its ckpt-* folders)")
    p.add_argument("--max-eval-bytes", type=int, default=800_000,
                   help="held-out bytes to score (the default covers the default corpus's whole val split)")
    p.add_argument("--held-out", default=None, metavar="DATA_DIR",
                   help="score the val split of this prepared data directory instead of the run's own "
                        "(to compare runs trained on different corpora on the same text)")
    p.add_argument("--samples", type=int, default=100, help="sampled functions at --temperature")
    p.add_argument("--max-new-tokens", type=int, default=256,
                   help="new tokens per sample (past the context the sampler slides its window)")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--prompt", default="def", help="the text every sample continues")
    p.add_argument("--token-healing", action=argparse.BooleanOptionalAction, default=False,
                   help="heal the prompt's last token(s) as `gptlab sample` does (default: off, the "
                   "protocol above)")
    p.add_argument("--seed", type=int, default=0, help="sample i uses seed SEED + i")
    p.add_argument("--show", type=int, default=3, help="sampled functions to print")
    p.add_argument("--device", default="auto", help="cpu, cuda, mps or auto")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--json", default=None, help="also write every figure to this file")
    args = p.parse_args(argv)
    for name in ("max_eval_bytes", "max_new_tokens"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.samples < 0 or args.temperature <= 0 or not args.prompt:
        p.error("need --samples >= 0, --temperature > 0 and a non-empty --prompt")
    return args


# ---------------------------------------------------------------------------------------------
# the run


def load_run(path: str, device: torch.device) -> Checkpoint:
    """The run's latest checkpoint, refusing what is not a pre-training run of ``gptlab train``."""
    ckpt = load_checkpoint(path, device=device)
    if "finetune_config" in ckpt.state:
        raise GptlabError(f"{ckpt.path}: a fine-tuning run (its checkpoint holds the base weights and any "
                          "LoRA adapter apart, and its held-out data is not a corpus): out of scope here")
    if "train_config" not in ckpt.state:
        raise GptlabError(f"{ckpt.path}: no training config in its checkpoint, so no held-out split to score")
    ckpt.model.eval()
    return ckpt


def training_seconds(run_dir: Path, step: int) -> float | None:
    """Training wall time from ``metrics.jsonl``: the largest ``elapsed`` up to ``step``, summed
    over segments (``fit()`` restarts its clock when a run resumes). None without metrics."""
    path = run_dir / METRICS_FILE
    if not path.exists():
        return None
    total = segment = previous = 0.0
    for record in read_metrics(path):
        if "elapsed" not in record or record.get("step", 0) > step:
            continue
        if record["elapsed"] < previous:  # a resumed segment: its clock started again
            total, segment = total + segment, 0.0
        segment = max(segment, record["elapsed"])
        previous = record["elapsed"]
    return total + segment


# ---------------------------------------------------------------------------------------------
# 1. held-out bits per byte


def heldout_documents(run_dir: Path, train_config: dict[str, Any]) -> tuple[Iterator[str], str]:
    """The run's validation documents as text, and where they come from.

    From the run's prepared ``val.bin`` (decoded: gptlab's tokenizers are lossless) when it is
    there; otherwise re-split from the corpus with the run's ``data``, ``max_bytes`` and
    ``val_fraction`` (the same documents if the corpus, e.g. this Python's stdlib, is unchanged).
    """
    data = train_config.get("data")
    data_dir = Path(data) if data is not None and is_prepared(data) else run_dir / "data"
    if is_prepared(data_dir):
        return _shard_documents(PreparedData.open(data_dir)), f"{data_dir}/val.bin"
    if data is not None and (Path(data) / MANIFEST_FILE).exists():
        raise GptlabError(f"{data}: the run's prepared data is incomplete, so its val split is unknown")
    split = split_documents(data, train_config["val_fraction"], max_bytes=train_config["max_bytes"])
    where = "the Python stdlib" if data is None else data
    return (doc.text for doc in split.val()), f"{where}, re-split (the run's data dir is gone)"


def _shard_documents(data: PreparedData, chunk: int = 1 << 20) -> Iterator[str]:
    """The documents of ``val.bin``, each ended by ``<|endoftext|>``, read a chunk at a time."""
    eot, tokens = data.tokenizer.eot_id, data.val
    start = 0
    for offset in range(0, len(tokens), chunk):
        for end in (np.flatnonzero(tokens[offset : offset + chunk] == eot) + offset).tolist():
            yield data.tokenizer.decode(tokens[start:end].tolist())
            start = end + 1


def take_bytes(documents: Iterable[str], max_bytes: int) -> list[str]:
    """Documents in order until ``max_bytes`` UTF-8 bytes; the last one cut after its last line
    break that fits (or at a character boundary, if none does)."""
    texts: list[str] = []
    left = max_bytes
    for text in documents:
        data = text.encode("utf-8")
        if len(data) > left:
            data = data[:left]
            newline = data.rfind(b"\n")
            data = data[: newline + 1] if newline >= 0 else data
            text = data.decode("utf-8", errors="ignore")  # drops only a cut trailing character
            left = 0
        else:
            left -= len(data)
        if text:
            texts.append(text)
        if left == 0:
            break
    return texts


def window_starts(n_tokens: int, block_size: int, stride: int) -> list[int]:
    """Starts of the windows (of min(block_size, n_tokens - 1) inputs) that cover every target."""
    last = max(0, n_tokens - 1 - block_size)
    starts = list(range(0, last + 1, stride))
    if starts[-1] != last:
        starts.append(last)
    return starts


@torch.inference_mode()
def bits_per_byte(model: GPT, tokenizer: Tokenizer, texts: list[str]) -> dict[str, Any]:
    """Total next-token loss of ``texts`` in bits ÷ their UTF-8 bytes (see the module docstring).

    The stream is ``<|endoftext|>`` + text, for each text; the separators are context, never targets.
    """
    ids = [[tokenizer.eot_id] + t for t in tokenizer.encode_batch(texts, allow_special=False)]
    tokens = torch.tensor([i for doc in ids for i in doc], dtype=torch.long)  # (N,)
    scored = torch.ones(len(tokens), dtype=torch.bool)
    scored[np.cumsum([0] + [len(doc) for doc in ids[:-1]]).tolist()] = False  # the separators
    block = model.config.block_size
    stride = max(1, block // 2)
    length = min(block, len(tokens) - 1)
    starts = window_starts(len(tokens), block, stride)
    targets = torch.full((len(starts), length), IGNORE_INDEX, dtype=torch.long)
    done = 0  # targets at positions <= done are scored already (position 0 is never a target)
    for w, start in enumerate(starts):
        positions = torch.arange(start + 1, start + length + 1)
        keep = (positions > done) & scored[positions]
        targets[w, keep] = tokens[positions[keep]]
        done = start + length
    device = model.transformer.wte.weight.device
    rows = max(1, LOGITS_BUDGET // (length * model.config.vocab_size))
    nats, n_scored = 0.0, 0
    for first in range(0, len(starts), rows):
        x = torch.stack([tokens[s : s + length] for s in starts[first : first + rows]]).to(device)
        y = targets[first : first + rows].to(device)
        n = int((y != IGNORE_INDEX).sum())
        if n:
            _, loss = model(x, y)  # mean over the scored targets
            nats += float(loss) * n
            n_scored += n
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    return {
        "bits_per_byte": nats / np.log(2) / n_bytes,
        "bytes": n_bytes,
        "documents": len(texts),
        "tokens": n_scored,
        "nats_per_token": nats / n_scored,
        "bytes_per_token": n_bytes / n_scored,
        "windows": len(starts),
        "window": length,
        "stride": stride,
        "sha256": hashlib.sha256("\x00".join(texts).encode("utf-8")).hexdigest(),
    }


# ---------------------------------------------------------------------------------------------
# 2. sampled functions


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def function_end(text: str) -> int | None:
    """Where the function whose ``def`` line is ``text``'s first line ends: the offset of the first
    line after it on which a statement begins at the ``def`` line's indentation or less, or left of
    the body's first statement (Python's tokenizer decides, so bracketed and string lines never end
    it), or None if there is none yet."""
    lines = text.splitlines(keepends=True)
    if not lines:
        return None
    offsets = np.cumsum([0] + [len(line) for line in lines]).tolist()
    limit = _indent(lines[0])  # a statement at this column or less ends the function
    in_body = False
    at_statement = True
    skip = (tokenize.NL, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT)
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type == tokenize.ENDMARKER:
                return None
            if token.type == tokenize.NEWLINE:
                at_statement = True
            elif token.type not in skip and at_statement:
                row, col = token.start
                if row > 1 and col <= limit:
                    return offsets[row - 1]
                if row > 1 and not in_body:  # the body's first statement sets its indentation
                    limit, in_body = col - 1, True
                at_statement = False
    except tokenize.TokenError as e:  # a string or bracket still open at the end of the text
        row = e.args[1][0]  # where the string starts: it ends the function if it is a statement there
        if 1 < row <= len(lines) and _starts_statement(lines[row - 1], limit):
            return offsets[row - 1]
    except SyntaxError as e:  # a dedent to no enclosing level: the tokenizer stops there, so the
        # rest is read line by line (the function does not parse either way)
        for row in range(max(2, e.lineno or 0), len(lines) + 1):
            if _starts_statement(lines[row - 1], limit):
                return offsets[row - 1]
    return None


def _starts_statement(line: str, limit: int) -> bool:
    return bool(line.strip()) and not line.lstrip().startswith("#") and _indent(line) <= limit


def parse_error(source: str) -> str | None:
    """None if ``source`` parses and its first statement is a ``def``; else what went wrong."""
    indented = _indent(source) > 0
    try:
        with warnings.catch_warnings():  # e.g. SyntaxWarning: invalid escape sequence
            warnings.simplefilter("ignore")
            tree = ast.parse(_as_module(source))
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:  # NUL bytes, absurd nesting
        return _error_message(e)
    body = tree.body[0].body if indented else tree.body
    if not body or not isinstance(body[0], (ast.FunctionDef, ast.AsyncFunctionDef)):
        return "not a def: " + (type(body[0]).__name__ if body else "empty")
    return None


def compile_error(source: str) -> str | None:
    """For a function that parses: None if Python's compiler also accepts it, else why not. The
    compiler checks what the parser leaves alone (a duplicate argument, ``nonlocal`` with nothing
    to refer to, ``await`` outside ``async def``)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compile(_as_module(source), "<sample>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        return _error_message(e, names=False)  # names stripped, so that errors of a kind add up
    return None


def _as_module(source: str) -> str:
    """``source`` as a module: an indented function (a method sampled without its class) goes
    under ``if 1:``."""
    return "if 1:\n" + source if _indent(source) > 0 else source


def _error_message(error: Exception, names: bool = True) -> str:
    """The error as ``Kind: message``, line numbers (and, with ``names=False``, quoted names)
    replaced, so that errors of one kind count together."""
    if not isinstance(error, SyntaxError):
        return f"{type(error).__name__}: {error}"
    message = re.sub(r"\s*\(detected at line \d+\)", "", error.msg or "")
    message = re.sub(r"line \d+", "line N", message)
    if not names:
        message = re.sub(r"'[^']*'", "NAME", message)
    return f"{type(error).__name__}: {message}"


TRUNCATED = "truncated: out of new tokens before the function ended"


@dataclass
class FunctionSample:
    seed: int | None  # None: greedy
    text: str  # the function as cut (or all that was generated, when it did not end)
    stop: str  # "end" (the function ended), "eot" (<|endoftext|>), "length" (out of new tokens)
    new_tokens: int
    error: str | None  # None: it parses
    compile_error: str | None = None  # for one that parses: None when it also compiles

    @property
    def parses(self) -> bool:
        return self.error is None

    @property
    def compiles(self) -> bool:
        return self.error is None and self.compile_error is None


def sample_function(
    model: GPT, tokenizer: Tokenizer, prompt: str, params: SamplingParams, healing: bool = False
) -> FunctionSample:
    """One sample from ``prompt``, stopped as soon as its function ends, cut and parsed."""
    head = prompt[prompt.rfind("\n") + 1 :]  # the def line's start: the function's first characters
    for special in tokenizer.special_tokens:  # e.g. a prompt "<|endoftext|>def" (a document's start)
        head = head.rpartition(special)[2]
    ids = tokenizer.encode(prompt)
    healed = heal_prompt(tokenizer, ids) if healing else HealedPrompt(ids)
    head = head[: max(0, len(head) - healed.backed_up)]  # the new tokens spell the backed-up text again
    tokens: list[int] = []
    stop, checked_lines = "length", 1
    for token in generate_tokens(model, healed.prompt_ids, params, constraint=healed.constraint()):
        if token == tokenizer.eot_id:
            stop = "eot"
            break
        tokens.append(token)
        text = head + tokenizer.decode(tokens)
        line = text[text.rfind("\n") + 1 :]
        n_lines = text.count("\n") + 1
        # a line's first non-blank character settles whether it ends the function
        if n_lines > checked_lines and line.strip():
            checked_lines = n_lines
            if function_end(text) is not None:
                stop = "end"
                break
    text = head + tokenizer.decode(tokens)
    end = function_end(text)
    if end is not None:
        text, stop = text[:end], "end"
    error = TRUNCATED if stop == "length" else parse_error(text)
    seed = None if params.temperature == 0 else params.seed
    return FunctionSample(seed, text, stop, len(tokens), error, compile_error(text) if error is None else None)


def _error_kind(error: str) -> str:
    return error.split(": ", 1)[0] if error.startswith("not a def") else error


# ---------------------------------------------------------------------------------------------


def _show(sample: FunctionSample, max_lines: int = 20) -> str:
    who = "greedy" if sample.seed is None else f"seed {sample.seed}"
    verdict = "parses" if sample.parses else sample.error
    lines = sample.text.rstrip("\n").split("\n")
    if len(lines) > max_lines:
        lines = lines[:max_lines] + [f"... ({len(lines) - max_lines} more lines)"]
    body = "\n".join("    | " + line for line in lines)
    return f"  --- {who}, {sample.new_tokens} new tokens, stop {sample.stop}: {verdict}\n{body}"


def _percent(k: int, n: int) -> str:
    return f"{k}/{n} = {100 * k / n:.0f}%" if n else "0/0"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        return _run(args)
    except (GptlabError, OSError) as e:
        raise SystemExit(f"code_quality: error: {e}") from None


def _run(args: argparse.Namespace) -> dict[str, Any]:
    clock = time.perf_counter()
    device = resolve_device(args.device)
    ckpt = load_run(args.run, device)
    model, tokenizer, cfg = ckpt.model, ckpt.tokenizer, ckpt.config
    run_dir = ckpt.path.parent
    train_config = ckpt.state["train_config"]
    step = int(ckpt.state.get("step", 0))
    trained_s = training_seconds(run_dir, step)
    run = {
        "run": str(run_dir), "checkpoint": ckpt.path.name, "steps": step, "training_s": trained_s,
        "training_tokens": step * train_config["batch_size"] * train_config.get("grad_accum", 1) * cfg.block_size,
        "parameters": model.num_parameters(), "tokenizer": tokenizer.kind, "vocab_size": tokenizer.vocab_size,
        "n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_embd": cfg.n_embd, "block_size": cfg.block_size,
        "val_loss": ckpt.state.get("val_loss"), "data": train_config.get("data"),
        "max_bytes": train_config.get("max_bytes"), "val_fraction": train_config.get("val_fraction"),
        "trained_on": ckpt.state.get("determinism", {}),  # device, precision, threads (older runs: no precision)
    }
    trained = f"{trained_s:.1f} s" if trained_s is not None else "unknown (no metrics.jsonl)"
    where = ", ".join(str(run["trained_on"][key]) for key in ("device", "precision") if key in run["trained_on"])
    print(f"code_quality: {run_dir} ({ckpt.path.name}) on {device}; {machine_line()}")
    print(f"  trained      {trained} of training wall time{f' ({where})' if where else ''}, {step:,} steps, "
          f"{run['training_tokens']:,} tokens")
    print(f"  model        {run['parameters']:,} parameters ({cfg.n_layer} layers, {cfg.n_head} heads, "
          f"width {cfg.n_embd}, context {cfg.block_size}); {tokenizer.kind} tokenizer, "
          f"vocab {tokenizer.vocab_size:,}")
    load_s = time.perf_counter() - clock

    clock = time.perf_counter()
    if args.held_out is not None:
        if not is_prepared(args.held_out):
            raise GptlabError(f"{args.held_out}: not a prepared data directory (no complete manifest)")
        documents, where = _shard_documents(PreparedData.open(args.held_out)), f"{args.held_out}/val.bin"
    else:
        documents, where = heldout_documents(run_dir, train_config)
    texts = take_bytes(documents, args.max_eval_bytes)
    if not texts:
        raise GptlabError(f"{where}: no held-out text")
    heldout = bits_per_byte(model, tokenizer, texts) | {"source": where}
    heldout["seconds"] = time.perf_counter() - clock
    print(f"held-out bits per byte: {heldout['bits_per_byte']:.4f}  ({heldout['bytes']:,} bytes of "
          f"{heldout['documents']} val documents from {where}; {heldout['tokens']:,} tokens, "
          f"{heldout['bytes_per_token']:.2f} bytes/token, {heldout['nats_per_token']:.4f} nats/token; "
          f"{heldout['windows']} windows of {heldout['window']}, stride {heldout['stride']}; "
          f"text sha256 {heldout['sha256'][:12]}) in {heldout['seconds']:.1f} s")

    clock = time.perf_counter()
    new_tokens = args.max_new_tokens  # the sampler slides its window past the context
    samples = [
        sample_function(model, tokenizer, args.prompt, SamplingParams(
            max_new_tokens=new_tokens, temperature=args.temperature, seed=args.seed + i), args.token_healing)
        for i in range(args.samples)
    ]
    sampled_s = time.perf_counter() - clock
    clock = time.perf_counter()
    greedy = sample_function(model, tokenizer, args.prompt, SamplingParams(max_new_tokens=new_tokens, temperature=0),
                             args.token_healing)
    greedy_s = time.perf_counter() - clock
    n_parse = sum(s.parses for s in samples)
    stops = collections.Counter(s.stop for s in samples)
    errors = collections.Counter(_error_kind(s.error) for s in samples if s.error is not None)
    print(f"parse rate (T={args.temperature:g}): {_percent(n_parse, len(samples))}  (prompt {args.prompt!r}, "
          f"token healing {'on' if args.token_healing else 'off'}, "
          f"seeds {args.seed}..{args.seed + args.samples - 1}, up to {new_tokens} new tokens; the function "
          f"ended {stops['end']}, <|endoftext|> {stops['eot']}, out of tokens {stops['length']}) "
          f"in {sampled_s:.1f} s")
    n_compile = sum(s.compiles for s in samples)
    compile_errors = collections.Counter(s.compile_error for s in samples if s.compile_error is not None)
    print(f"  of which compile: {n_compile}/{len(samples)}"
          + (f" (the compiler refused {', '.join(f'{n} × {e}' for e, n in compile_errors.most_common(3))})"
             if compile_errors else ""))
    print(f"parse rate (greedy): {_percent(int(greedy.parses), 1)}  "
          f"({'parses' if greedy.parses else greedy.error}; stop {greedy.stop})")
    if errors:
        print("most common reasons for not parsing:")
        for kind, count in errors.most_common(5):
            print(f"  {count:4d}  {kind}")
    shown = ([s for s in samples if s.parses][:1] + [s for s in samples if not s.parses])[: args.show]
    if shown:
        print("sample functions:")
        for sample in shown:
            print(_show(sample))
    seconds = {"load": load_s, "bits_per_byte": heldout["seconds"], "samples": sampled_s, "greedy": greedy_s}
    print(f"benchmark took {sum(seconds.values()):.1f} s ("
          + ", ".join(f"{name} {s:.1f}" for name, s in seconds.items()) + ")")

    results = {
        "config": vars(args), "run": run, "heldout": heldout,
        "parse": {
            "prompt": args.prompt, "token_healing": args.token_healing, "temperature": args.temperature,
            "samples": len(samples),
            "parsed": n_parse, "rate": n_parse / len(samples) if samples else None, "compiled": n_compile,
            "max_new_tokens": new_tokens, "stops": dict(stops), "errors": dict(errors.most_common()),
            "seconds": sampled_s, "greedy": asdict(greedy) | {"parses": greedy.parses, "compiles": greedy.compiles},
            "functions": [asdict(s) | {"parses": s.parses, "compiles": s.compiles} for s in samples],
        },
        "seconds": seconds,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
