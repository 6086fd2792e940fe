"""CLI: ``gptlab serve RUN`` — an OpenAI-compatible API and a web playground for a checkpoint.

FastAPI and uvicorn (the ``server`` extra) are imported only when the command runs, so ``gptlab``
works without them.

Threads: PyTorch's CPU kernels run on an OpenMP thread pool, and GNU OpenMP (libgomp, in PyTorch's
Linux wheels) by default lets idle pool threads spin for a while before they sleep. That costs
nothing on an idle machine, but when other processes share the cores each decode step waits for
spinning threads that the kernel has descheduled: a served request was measured ~70× slower. So
``serve`` sets ``OMP_WAIT_POLICY=PASSIVE`` (idle threads sleep at once) unless the environment
already sets it; libgomp reads it once, when PyTorch loads it, so :func:`prepare_process` runs
before anything imports torch. ``--threads`` sets the pool's size.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from gptlab.cli.args import int_at_least
from gptlab.errors import CheckpointError, ConfigError

logger = logging.getLogger(__name__)

API_KEY_ENV = "GPTLAB_API_KEY"
WAIT_POLICY_ENV = "OMP_WAIT_POLICY"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def prepare_process() -> None:
    """Choose OpenMP's wait policy for serving (passive, unless ``$OMP_WAIT_POLICY`` says otherwise).

    Call before PyTorch is imported: libgomp reads the variable once, when it is loaded.
    """
    os.environ.setdefault(WAIT_POLICY_ENV, "PASSIVE")


def configure_threads(threads: int | None) -> str:
    """Set PyTorch's CPU threads (``None``: its default, one per physical core); a line saying
    what the server runs with, including the OpenMP wait policy in force."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    policy = os.environ.get(WAIT_POLICY_ENV, "ACTIVE (libgomp's default)")
    return f"{torch.get_num_threads()} CPU thread(s), OpenMP wait policy {policy}"


def default_model_name(run: str | Path) -> str:
    """The model id the API reports: the run directory's name (or ``run/ckpt-N`` for a checkpoint)."""
    path = Path(run).resolve()
    if path.name.startswith("ckpt-"):
        return f"{path.parent.name}/{path.name}"
    return path.name


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``serve`` to the ``gptlab`` parser."""
    p = subparsers.add_parser(
        "serve", help="serve a model over an OpenAI-compatible HTTP API, with a web playground",
        description="Serve a run or checkpoint over HTTP: /v1/completions, /v1/chat/completions, "
        "/v1/models (OpenAI's API, streaming included), /tokenize, /detokenize, /health, /metrics, "
        "and a playground page at /. Binds to 127.0.0.1 unless --host says otherwise; "
        f"--api-key (or ${API_KEY_ENV}) makes every API route require 'Authorization: Bearer KEY'.",
    )
    p.add_argument("run", help="run directory or checkpoint folder")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument("--api-key", default=None,
                   help=f"require this Bearer token on the API routes (default: ${API_KEY_ENV}, else none)")
    p.add_argument("--model-name", default=None, help="model id in the API (default: the run directory's name)")
    p.add_argument("--max-batch-size", type=int_at_least(1), default=16, help="sequences decoded together (default: 16)")
    p.add_argument("--max-queue", type=int_at_least(1), default=64,
                   help="requests that may wait for a slot; beyond it the API answers 429 (default: 64)")
    p.add_argument("--max-body-bytes", type=int_at_least(1), default=1 << 20,
                   help="largest request body; larger is a 413 (default: 1 MiB)")
    p.add_argument("--max-prompt-chars", type=int_at_least(1), default=100_000,
                   help="longest prompt or conversation in characters (default: 100000)")
    p.add_argument("--max-choices", type=int_at_least(1), default=16,
                   help="most completions one request may ask for, prompts × n (default: 16)")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="allow browser calls from this origin (repeatable; CORS is off by default)")
    p.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, mps")
    p.add_argument("--threads", type=int_at_least(1), default=None,
                   help="PyTorch CPU threads (default: one per physical core); fewer caps the server's "
                   f"share of a shared machine. Idle threads sleep at once (${WAIT_POLICY_ENV}=PASSIVE, "
                   "unless set), so other busy processes do not stall the server")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ImportError:
        raise ConfigError("gptlab serve needs the server extra: pip install 'gptlab[server]'") from None
    from gptlab.train.checkpoint import find_checkpoint
    from gptlab.finetune.lora import is_adapter
    from gptlab.server.app import create_app
    from gptlab.server.state import ServerSettings
    from gptlab.train.trainer import resolve_device

    if not is_adapter(args.run):  # a LoRA adapter folder names its base; anything else is a checkpoint
        find_checkpoint(args.run)  # a wrong path fails now, not after the server started
    device = resolve_device(args.device)
    threads_line = configure_threads(args.threads)
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    settings = ServerSettings(
        model_name=args.model_name or default_model_name(args.run), api_key=api_key,
        max_batch_size=args.max_batch_size, max_queue=args.max_queue, max_body_bytes=args.max_body_bytes,
        max_prompt_chars=args.max_prompt_chars, max_choices=args.max_choices,
        cors_origins=tuple(args.cors_origin),
    )
    if args.host not in LOOPBACK and api_key is None:
        logger.warning("serving on %s without an API key: anyone who can reach it can use it "
                       "(set --api-key or $%s)", args.host, API_KEY_ENV)

    def load():
        from gptlab.finetune.loader import load_run

        # a run, checkpoint, LoRA run or adapter directory; adapters are merged (no extra matmuls);
        # a model imported with a chat template of its own formats chats with it
        loaded = load_run(args.run, device=device, merge=True)
        return loaded.model, loaded.tokenizer, loaded.chat_template

    server: uvicorn.Server | None = None

    def stop_server(exc: BaseException) -> None:
        if server is not None:
            server.should_exit = True

    app = create_app(settings, load, on_load_failure=stop_server)
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level,
                                           timeout_graceful_shutdown=5))
    url_host = f"[{args.host}]" if ":" in args.host else args.host
    logger.info("serving %s on http://%s:%d  (playground: /, API: /v1, key: %s; %s)", settings.model_name,
                url_host, args.port, "required" if api_key else "none", threads_line)
    server.run()
    state = app.state.gptlab
    if state.status == "failed":
        raise CheckpointError(f"could not load {args.run}: {state.error}")
    return 0
