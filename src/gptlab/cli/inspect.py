"""CLI for looking inside a trained GPT: ``gptlab inspect attention | next | lens | embeddings``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from gptlab.errors import GenerationError
from gptlab.fileio import make_output_folder

DEFAULT_OUT = "runs/inspect"


def _load(args: argparse.Namespace) -> Any:
    from gptlab.finetune.loader import load_run
    from gptlab.train.trainer import resolve_device

    # any run, LoRA run (its adapter folded into the base) or adapter directory, as sample loads it
    return load_run(args.run, device=resolve_device(args.device), merge=True)


def _check_index(flag: str, value: int | None, count: int, where: str, negative_ok: bool = False) -> int | None:
    """``value`` checked against ``count`` items numbered from 0 (-1 the last, if ``negative_ok``);
    returned as a non-negative index. ``where`` names the items, e.g. "the model has 2 layers"."""
    if value is None:
        return None
    low = -count if negative_ok else 0
    if not low <= value < count:
        raise GenerationError(f"{flag} {value} is out of range: {where} ({low}..{count - 1})")
    return value % count


def _save_picture(kind: str, draw: Any, *args: Any, **kwargs: Any) -> Path | None:
    """Draw a PNG, or say on stderr that matplotlib (the ``plot`` extra) is missing."""
    try:
        return draw(*args, **kwargs)
    except ImportError:
        print(f"({kind} not drawn: install the plot extra, pip install 'gptlab[plot]')", file=sys.stderr)
        return None


def _wrote(paths: list[Path | None]) -> None:
    written = [str(p) for p in paths if p is not None]
    if written:
        print("wrote " + ", ".join(written), file=sys.stderr)


def cmd_attention(args: argparse.Namespace) -> int:
    from gptlab.inspect import views as inspect
    from gptlab.inspect import html as inspect_html
    from gptlab.inspect import plots as inspect_plots
    from gptlab.inspect import text as inspect_text

    ckpt = _load(args)
    cfg = ckpt.config
    layer = _check_index("--layer", args.layer, cfg.n_layer, f"the model has {cfg.n_layer} layers")
    head = _check_index("--head", args.head, cfg.n_head, f"the model has {cfg.n_head} heads per layer")
    maps = inspect.attention(ckpt.model, ckpt.tokenizer, args.text)
    T = len(maps.tokens)
    token = _check_index("--token", args.token, T, f"the text is {T} tokens", negative_ok=True)
    layers = list(range(cfg.n_layer)) if layer is None else [layer]
    heads = list(range(cfg.n_head)) if head is None else [head]
    print(f"{len(maps.tokens)} tokens: {inspect_text.format_tokens(maps.tokens)}")
    print()
    if token is not None:
        print(f"token {token} ({inspect_text.printable(maps.tokens[token])}) attends most to:")
        print(inspect_text.format_attended(maps, token, layers, heads))
    else:
        print("how each head attends, averaged over the tokens (weight on the token itself, the previous "
              "token, the first token):")
        print(inspect_text.format_head_summary(maps, layers, heads))
    out = make_output_folder(args.out)
    png = _save_picture("attention.png", inspect_plots.plot_attention, maps, out / "attention.png",
                        layers=layers, heads=heads)
    page = inspect_html.write_attention_html(maps, out / "attention.html", title=f"Attention: {args.run}")
    _wrote([png, page])
    return 0


def cmd_next(args: argparse.Namespace) -> int:
    from gptlab.inspect import views as inspect
    from gptlab.inspect import plots as inspect_plots
    from gptlab.inspect import text as inspect_text

    if args.top_k < 1:
        raise GenerationError(f"--top-k must be >= 1, got {args.top_k}")
    ckpt = _load(args)
    pred = inspect.next_token(ckpt.model, ckpt.tokenizer, args.text, k=args.top_k)
    n = len(pred.tokens)
    print(f"next token after {n} token{'s' * (n != 1)} (the last one: {inspect_text.printable(pred.tokens[-1])}):")
    print(inspect_text.format_next_token(pred))
    print()
    if len(pred.token_ids) >= 2:
        print("surprisal of each token given the ones before it:")
        print(inspect_text.format_surprisal(inspect.surprisal(ckpt.model, ckpt.tokenizer, args.text)))
    else:
        print("(one token only: no surprisal, the first token has no context)")
    out = make_output_folder(args.out)
    _wrote([_save_picture("next_token.png", inspect_plots.plot_next_token, pred, out / "next_token.png")])
    return 0


def cmd_lens(args: argparse.Namespace) -> int:
    from gptlab.inspect import views as inspect
    from gptlab.inspect import plots as inspect_plots
    from gptlab.inspect import text as inspect_text

    ckpt = _load(args)
    lens = inspect.logit_lens(ckpt.model, ckpt.tokenizer, args.text, k=1)
    print("logit lens: the top next-token prediction (and its probability) if the model stopped after "
          "each layer; columns are positions (pos:token→)")
    print(inspect_text.format_lens(lens, markdown=args.markdown))
    if args.out is not None:
        out = make_output_folder(args.out)
        (out / "lens.md").write_text(inspect_text.format_lens(lens, markdown=True) + "\n", encoding="utf-8")
        png = _save_picture("lens.png", inspect_plots.plot_lens, lens, out / "lens.png")
        _wrote([out / "lens.md", png])
    return 0


def cmd_embeddings(args: argparse.Namespace) -> int:
    from gptlab.inspect import views as inspect
    from gptlab.inspect import plots as inspect_plots
    from gptlab.inspect import text as inspect_text

    if args.k < 1:
        raise GenerationError(f"--k must be >= 1, got {args.k}")
    if args.n < 2:
        raise GenerationError(f"--n must be >= 2, got {args.n}")
    ckpt = _load(args)
    if args.token is not None:
        neighbours = inspect.nearest_tokens(ckpt.model, ckpt.tokenizer, args.token, args.k, exclude_self=True)
        print(inspect_text.format_neighbours(args.token, neighbours))
        print()
    pca = inspect.embedding_pca(ckpt.model, ckpt.tokenizer, n=args.n)
    print(inspect_text.format_pca(pca))
    out = make_output_folder(args.out)
    _wrote([_save_picture("embeddings_pca.png", inspect_plots.plot_embedding_pca, pca,
                          out / "embeddings_pca.png", special_ids=ckpt.tokenizer.special_tokens.values())])
    return 0


def _add_common(p: argparse.ArgumentParser, text: bool = True) -> None:
    p.add_argument("run", metavar="RUN", help="run directory (its latest checkpoint), checkpoint folder, "
                   "LoRA run (base + adapter) or adapter directory")
    if text:
        p.add_argument("text", metavar="TEXT", help="the text to look at (at most the model's context in tokens)")
    p.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, mps (default: auto)")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``inspect`` and its four views to the ``gptlab`` parser."""
    p = subparsers.add_parser(
        "inspect", help="look inside a trained GPT: attention, next-token probabilities, logit lens, embeddings",
        description="Look inside a trained GPT. Layers, heads and token positions are numbered from 0. "
        "Needs the plot extra (matplotlib) for the PNG pictures; everything else is printed.",
    )
    views = p.add_subparsers(dest="view", metavar="VIEW", required=True)

    v = views.add_parser(
        "attention", help="who attends to whom: heat maps and an interactive page",
        description="Attention probabilities of every layer and head for TEXT. Writes attention.png (heat "
        "maps: rows = query tokens, columns = the keys they attend to) and attention.html (a standalone "
        "page: hover over a token to see what it attends to) into --out, and prints a summary: per head, "
        "how much each token attends to itself, the previous token and the first token; or, with "
        "--token, the tokens that token attends to most.",
    )
    _add_common(v)
    v.add_argument("--layer", type=int, help="only this layer in the picture and summary (from 0)")
    v.add_argument("--head", type=int, help="only this head (from 0)")
    v.add_argument("--token", type=int, help="show what the token at this position attends to (from 0; -1 = last)")
    v.add_argument("--out", default=DEFAULT_OUT, help=f"folder for the PNG and HTML (default: {DEFAULT_OUT})")
    v.set_defaults(func=cmd_attention)

    v = views.add_parser(
        "next", help="the most probable next tokens, and how surprising each token was",
        description="The model's top-k next tokens after TEXT with their probabilities (a table, and a "
        "bar chart next_token.png in --out), then the surprisal of every token of TEXT given the ones "
        "before it, in bits and nats, and the perplexity (exp of the mean nats: the model's loss on TEXT).",
    )
    _add_common(v)
    v.add_argument("--top-k", type=int, default=10, help="how many next tokens to list (default: 10)")
    v.add_argument("--out", default=DEFAULT_OUT, help=f"folder for the bar chart (default: {DEFAULT_OUT})")
    v.set_defaults(func=cmd_next)

    v = views.add_parser(
        "lens", help="the logit lens: the prediction after each layer",
        description="The logit lens: the residual stream after the embeddings and after each layer, read "
        "through the final LayerNorm and the LM head as if the model stopped there. A table with one row "
        "per layer and one column per position; each cell is the top next-token prediction and its "
        "probability. The last row is the model's real output.",
    )
    _add_common(v)
    v.add_argument("--markdown", action="store_true", help="print a markdown table")
    v.add_argument("--out", help="also write lens.md and a heat map lens.png into this folder")
    v.set_defaults(func=cmd_lens)

    v = views.add_parser(
        "embeddings", help="token embeddings: nearest tokens and a PCA map",
        description="The token embedding matrix (transformer.wte). With --token, the K tokens whose "
        "embeddings are closest by cosine similarity. Always: the first N tokens of the vocabulary "
        "projected on their first two principal components (embeddings_pca.png in --out; scikit-learn's "
        "PCA when installed, else an SVD in torch).",
    )
    _add_common(v, text=False)
    v.add_argument("--token", help="a string that is exactly one token, e.g. 'e' or ' the'")
    v.add_argument("--k", type=int, default=10, help="neighbours to list (default: 10)")
    v.add_argument("--n", type=int, default=100, help="tokens in the PCA picture: ids 0..N-1 (default: 100)")
    v.add_argument("--out", default=DEFAULT_OUT, help=f"folder for the picture (default: {DEFAULT_OUT})")
    v.set_defaults(func=cmd_embeddings)
