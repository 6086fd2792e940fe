"""Training: next-token prediction on random sliding windows of a prepared corpus.

``TrainConfig`` holds every training knob (each one is also a CLI flag and a config-file key).
``Trainer`` owns the loop: AdamW with decay/no-decay groups, linear warmup then cosine decay,
gradient accumulation and clipping, periodic validation, metrics to JSONL, checkpoints, and
exact resumption (weights, optimizer, RNG and data position all come back).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gptlab.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from gptlab.fileio import atomic_write_text
from gptlab.data import PreparedData, WindowSampler, is_prepared, prepare
from gptlab.errors import ConfigError
from gptlab.model import GPT
from gptlab.tokenizer import Tokenizer
from gptlab.train_config import TrainConfig

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "train_config.json"


def resolve_device(name: str) -> torch.device:
    """'auto' picks cuda, then mps, then cpu; anything else is passed to torch.device."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {name!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda requested but CUDA is not available")
    return device


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warmup, then cosine to ``min_lr``."""
    if step < cfg.warmup_steps:
        return cfg.learning_rate * (step + 1) / cfg.warmup_steps
    decay_steps = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / decay_steps)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.learning_rate - cfg.min_lr)


def make_optimizer(model: GPT, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW where matrices (Linear and embedding weights) decay and biases / LayerNorms do not."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    fused = device.type == "cuda"
    return torch.optim.AdamW(
        groups, lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2), fused=fused or None,
        foreach=None if fused else True,
    )


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    train_loss: float | None
    val_loss: float | None
    sample: str | None
    elapsed: float


class Trainer:
    """Trains a GPT on prepared data and writes a run directory (checkpoints, metrics, plot)."""

    def __init__(
        self,
        cfg: TrainConfig,
        model: GPT,
        tokenizer: Tokenizer,
        data: PreparedData,
        run_dir: str | Path,
        resume_from: Checkpoint | None = None,
    ) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.device = resolve_device(cfg.device)
        self.tokenizer = tokenizer
        self.data = data
        block = model.config.block_size
        self.sampler = WindowSampler(data.train, block, cfg.batch_size, seed=cfg.seed)
        WindowSampler(data.val, block, cfg.batch_size, seed=cfg.seed)  # validate: val holds a window
        self.model = model.to(self.device)
        self.optimizer = make_optimizer(self.model, cfg, self.device)
        self.step = 0
        self.saved_step: int | None = None
        self.last_val: float | None = None
        if resume_from is not None:
            self._restore(resume_from)
        self.forward_model = self.model
        if cfg.compile:
            self.forward_model = torch.compile(self.model)  # type: ignore[assignment]
        use_bf16 = cfg.dtype == "bfloat16" or (cfg.dtype == "auto" and self.device.type == "cuda")
        self.autocast = (
            torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
            if use_bf16
            else contextlib.nullcontext()
        )

    def _restore(self, ckpt: Checkpoint) -> None:
        if ckpt.optimizer_state is not None:
            self.optimizer.load_state_dict(ckpt.optimizer_state)
        self.step = self.saved_step = int(ckpt.state.get("step", 0))
        self.sampler.load_state_dict(ckpt.state["sampler"])
        self.last_val = ckpt.state.get("val_loss")
        if "torch" in ckpt.rng_state:
            torch.set_rng_state(ckpt.rng_state["torch"])
        if "cuda" in ckpt.rng_state and self.device.type == "cuda":
            torch.cuda.set_rng_state(ckpt.rng_state["cuda"])
        _truncate_metrics(self.run_dir / METRICS_FILE, self.step)

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean validation loss over ``eval_iters`` fixed batches (the same windows every time)."""
        self.model.eval()
        sampler = WindowSampler(
            self.data.val, self.model.config.block_size, self.cfg.batch_size, seed=self.cfg.seed + 1
        )
        total = 0.0
        for _ in range(self.cfg.eval_iters):
            x, y = sampler.next_batch()
            with self.autocast:
                _, loss = self.forward_model(x.to(self.device), y.to(self.device))
            total += float(loss)
        self.model.train()
        return total / self.cfg.eval_iters

    def save(self) -> Path:
        """Checkpoint the current step (once per step: a second call is a no-op)."""
        if self.saved_step == self.step:
            return self.run_dir / f"ckpt-{self.step:06d}"
        state = {
            "step": self.step,
            "sampler": self.sampler.state_dict(),
            "val_loss": self.last_val,
            "train_config": self.cfg.to_dict(),
        }
        path = save_checkpoint(
            self.run_dir, self.model, self.tokenizer, step=self.step, state=state, optimizer=self.optimizer
        )
        self.saved_step = self.step
        return path

    def _log(self, record: dict[str, Any]) -> None:
        with open(self.run_dir / METRICS_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def fit(self, steps: int | None = None) -> TrainResult:
        """Train until ``max_steps`` or ``max_time``; save a final checkpoint and return a summary.

        ``steps`` stops this call after that many more steps (the schedule still runs to
        ``max_steps``), so a run can be trained in slices; the final sample is only drawn when
        training is complete.
        """
        from tqdm.auto import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        cfg = self.cfg
        stop_at = cfg.max_steps if steps is None else min(cfg.max_steps, self.step + steps)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tokens_per_step = cfg.batch_size * cfg.grad_accum * self.model.config.block_size
        start = time.perf_counter()
        last_loss: float | None = None
        self.model.train()
        window_start, window_steps = time.perf_counter(), 0
        with contextlib.ExitStack() as stack:
            if cfg.progress:  # log lines (val loss) print above the bar instead of through it
                stack.enter_context(logging_redirect_tqdm())
            bar = stack.enter_context(tqdm(
                total=cfg.max_steps, initial=self.step, disable=not cfg.progress, unit="step",
                dynamic_ncols=True, desc="train",
            ))
            while self.step < stop_at:
                if cfg.max_time is not None and time.perf_counter() - start >= cfg.max_time:
                    log.info("time budget of %.0fs reached at step %d", cfg.max_time, self.step)
                    break
                lr = lr_at(self.step, cfg)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                loss_sum = torch.zeros((), device=self.device)
                for _ in range(cfg.grad_accum):
                    x, y = self.sampler.next_batch()
                    x = x.to(self.device, non_blocking=True)
                    y = y.to(self.device, non_blocking=True)
                    with self.autocast:
                        _, loss = self.forward_model(x, y)
                    (loss / cfg.grad_accum).backward()
                    loss_sum += loss.detach()
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.step += 1
                window_steps += 1
                bar.update(1)
                if self.step % cfg.log_interval == 0 or self.step == cfg.max_steps:
                    last_loss = float(loss_sum) / cfg.grad_accum
                    now = time.perf_counter()
                    tokens_per_s = window_steps * tokens_per_step / max(now - window_start, 1e-9)
                    window_start, window_steps = now, 0
                    self._log({"step": self.step, "loss": last_loss, "lr": lr,
                               "tokens_per_s": round(tokens_per_s, 1),
                               "elapsed": round(now - start, 3)})
                    bar.set_postfix(loss=f"{last_loss:.4f}", tok_s=f"{tokens_per_s:,.0f}")
                if self.step % cfg.eval_interval == 0:
                    self._eval_and_log(start)
                if self.step % cfg.checkpoint_interval == 0:
                    self.save()
        if self.last_val is None or self.step % cfg.eval_interval != 0:
            self._eval_and_log(start)
        self.save()
        _plot_if_possible(self.run_dir)
        done = self.step >= cfg.max_steps
        sample = self.sample() if cfg.sample_tokens > 0 and done else None
        return TrainResult(self.run_dir, self.step, last_loss, self.last_val, sample,
                           time.perf_counter() - start)

    def _eval_and_log(self, start: float) -> None:
        self.last_val = self.evaluate()
        self._log({"step": self.step, "val_loss": self.last_val,
                   "elapsed": round(time.perf_counter() - start, 3)})
        log.info("step %d: val loss %.4f", self.step, self.last_val)

    def sample(self) -> str:
        """A sample from the trained model, seeded, starting at ``sample_prompt``."""
        from gptlab.generate import SamplingParams, generate_text

        # the default corpus is Python: show it writing a function
        prompt = self.cfg.sample_prompt or ("def " if self.cfg.data is None else "\n")
        budget = self.model.config.block_size - len(self.tokenizer.encode(prompt))
        params = SamplingParams(
            max_new_tokens=max(0, min(self.cfg.sample_tokens, budget)),
            temperature=0.8, top_k=50, seed=self.cfg.seed,
        )
        return prompt + "".join(generate_text(self.model, self.tokenizer, prompt, params, stop_at_eot=False))


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metrics logged after ``step`` (by a run that died after its last checkpoint)."""
    if not path.exists():
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= step]
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def _plot_if_possible(run_dir: Path) -> None:
    try:
        from gptlab.curves import plot_loss_curve
        plot_loss_curve(run_dir / METRICS_FILE, run_dir / "loss.png")
    except ImportError:
        log.warning("matplotlib is not installed: no loss plot (pip install 'gptlab[plot]')")


def default_run_dir(cfg: TrainConfig, resume: bool = False) -> Path:
    """``runs/<corpus name>`` when ``--out`` is not given. A new run never reuses a directory
    that holds one: it takes the next free ``-2``, ``-3``, ... suffix; ``resume`` takes the
    newest existing one."""
    base = Path("runs") / ((Path(cfg.data.rstrip("/")).stem if cfg.data else "python-stdlib") or "run")
    candidates = [base, *(base.with_name(f"{base.name}-{n}") for n in range(2, 10_000))]
    taken = [path for path in candidates if (path / "LATEST").exists()]
    if resume:
        return taken[-1] if taken else base
    return next(path for path in candidates if not (path / "LATEST").exists())


def build_trainer(cfg: TrainConfig, resume: bool = False) -> Trainer:
    """Set up a run: prepare data (or reuse the run's), build or restore the model, save the config.

    With ``resume`` the run directory's latest checkpoint is restored and training continues
    exactly where it stopped; without it, an existing run directory with checkpoints is an error
    (nothing is overwritten).
    """
    from gptlab.errors import CheckpointError

    run_dir = Path(cfg.out) if cfg.out else default_run_dir(cfg, resume)
    has_checkpoint = (run_dir / "LATEST").exists()
    if resume and not has_checkpoint:
        raise CheckpointError(f"{run_dir}: nothing to resume (no checkpoint)")
    if not resume and has_checkpoint:
        raise CheckpointError(
            f"{run_dir} already holds a run: pass --resume to continue it, or --out for a new one"
        )
    torch.manual_seed(cfg.seed)
    data_dir = run_dir / "data"
    if cfg.data is not None and is_prepared(cfg.data):
        data_dir = Path(cfg.data)
    elif not is_prepared(data_dir):
        tokenizer = None
        if cfg.tokenizer not in ("char", "bpe"):
            tokenizer = Tokenizer.load(cfg.tokenizer)
        prepare(
            cfg.data, data_dir, tokenizer=tokenizer, tokenizer_kind=cfg.tokenizer if tokenizer is None else "char",
            vocab_size=cfg.vocab_size, val_fraction=cfg.val_fraction, max_bytes=cfg.max_bytes,
            progress=cfg.progress,
        )
    data = PreparedData.open(data_dir)
    ckpt = None
    if resume:
        ckpt = load_checkpoint(run_dir, with_optimizer=True)
        model, tokenizer = ckpt.model, ckpt.tokenizer
    else:
        model_config = cfg.model_config(vocab_size=data.tokenizer.vocab_size)
        model, tokenizer = GPT(model_config), data.tokenizer
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / CONFIG_FILE, json.dumps(cfg.to_dict(), indent=2) + "\n")
    return Trainer(cfg, model, tokenizer, data, run_dir, resume_from=ckpt)
