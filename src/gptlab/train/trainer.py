"""Training: next-token prediction on sliding windows of a prepared corpus.

``TrainConfig`` holds every training knob (each one is also a CLI flag and a config-file key).
``Trainer`` owns the loop: AdamW with decay/no-decay groups (or Muon for the block matrices),
linear warmup then cosine decay, gradient accumulation and clipping, periodic validation, metrics
to JSONL, checkpoints, and exact resumption (weights, optimizer, RNG and data position all come
back).

A run directory has one writer at a time (``gptlab.train.lock``); SIGTERM, SIGINT and SIGUSR1
end the current step, save and stop (``gptlab.train.signals``); the conditions bit-exact
resumption depends on are recorded with each checkpoint (``gptlab.train.determinism``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gptlab.train import determinism, distributed, precision
from gptlab.train.checkpoint import Checkpoint, has_checkpoint, load_checkpoint, save_checkpoint
from gptlab.train.lock import RunLock, lock_run
from gptlab.train.metrics_log import METRICS_FILE, MetricsLog
from gptlab.train.signals import StopOnSignal
from gptlab.model.count import count_config
from gptlab.data.shards import PreparedData, WindowSampler, is_prepared, prepare
from gptlab.errors import ConfigError
from gptlab.fileio import atomic_write_text
from gptlab.train.gpus import peak_flops_of
from gptlab.model.gpt import GPT
from gptlab.train.muon import MuonAdamW
from gptlab.data.tokenizer import Tokenizer
from gptlab.train.config import TrainConfig
from gptlab.train.tracking import Tracking

log = logging.getLogger(__name__)

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
    """Learning rate for optimizer step ``step`` (0-based): linear warmup; the peak held until the
    last ``cooldown_fraction`` of the remaining steps; then a cosine or linear decay to ``min_lr``."""
    if step < cfg.warmup_steps:
        return cfg.learning_rate * (step + 1) / cfg.warmup_steps
    cooldown = cfg.cooldown_fraction
    decay_steps = max(1.0, cooldown * (cfg.max_steps - cfg.warmup_steps))
    progress = min(1.0, max(0.0, step - (cfg.max_steps - decay_steps)) / decay_steps)
    if cfg.decay == "linear":
        scale = 1.0 - progress
    else:
        scale = 0.5 * (1.0 + math.cos(math.pi * progress))
    return cfg.min_lr + scale * (cfg.learning_rate - cfg.min_lr)


def make_optimizer(model: GPT, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW where matrices (Linear and embedding weights) decay and biases / LayerNorms do not.

    With ``cfg.optimizer == "muon"`` the weight matrices inside the blocks use Muon instead (see
    ``gptlab.train.muon``); embeddings (tied to the LM head), biases and LayerNorms stay on AdamW.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    hidden: list[torch.nn.Parameter] = []
    if cfg.optimizer == "muon":
        hidden = [p for p in model.transformer.h.parameters() if p.requires_grad and p.dim() == 2]
    in_muon = {id(p) for p in hidden}
    decay = [p for p in params if p.dim() >= 2 and id(p) not in in_muon]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    fused = device.type in ("cuda", "cpu")  # one kernel per tensor: on CPU ~6x faster than foreach
    adamw: dict[str, Any] = {
        "lr": cfg.learning_rate, "betas": (cfg.beta1, cfg.beta2),
        "fused": fused or None, "foreach": None if fused else True,
    }
    if hidden:
        return MuonAdamW([{"params": hidden, "weight_decay": cfg.weight_decay, "muon": True}, *groups], **adamw)
    return torch.optim.AdamW(groups, **adamw)


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    train_loss: float | None
    val_loss: float | None
    sample: str | None
    elapsed: float
    stopped_by: int | None = None  # the signal that stopped the run early (a checkpoint was saved)


class Trainer:
    """Trains a GPT on prepared data and writes a run directory (checkpoints, metrics, plot).

    Under ``torchrun`` every process builds the same Trainer; the model is wrapped with DDP (or
    FSDP2 with ``fsdp``), each rank trains on its share of every global batch, and rank 0 alone
    logs, shows progress and writes files (checkpoints are gathered from every rank first).
    """

    def __init__(
        self,
        cfg: TrainConfig,
        model: GPT,
        tokenizer: Tokenizer,
        data: PreparedData,
        run_dir: str | Path,
        resume_from: Checkpoint | None = None,
        lock: RunLock | None = None,
    ) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.lock = lock  # held for as long as this trainer lives (released with it)
        device = resolve_device(cfg.device)
        self.dist = distributed.init_distributed(device)
        self.device = distributed.local_device(device, self.dist)
        distributed.check_batch(cfg.batch_size, self.dist)
        if self.device.type == "cuda":  # TF32 for any fp32 matmul left outside autocast
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.precision = precision.describe(cfg.dtype, self.device)  # "bf16 autocast" or "fp32"
        self.tokenizer = tokenizer
        self.data = data
        block = model.config.block_size
        # global batches
        self.sampler = WindowSampler(data.train, block, cfg.batch_size, seed=cfg.seed, order=cfg.windows)
        WindowSampler(data.val, block, cfg.batch_size, seed=cfg.seed)  # validate: val holds a window
        self.model = model.to(self.device)
        self.step = 0
        self.saved_step: int | None = None
        self.last_val: float | None = None
        # FSDP2 shards the parameters in place, so its optimizer is built after wrapping
        if cfg.fsdp:
            self.wrapped = distributed.wrap(self.model, self.dist, fsdp=True)
        self.optimizer = make_optimizer(self.model, cfg, self.device)
        self.metrics = MetricsLog(self.run_dir / METRICS_FILE)
        if resume_from is not None:
            self._restore(resume_from)
        elif self.dist.is_main:
            self.metrics = MetricsLog.fresh(self.run_dir)
        if not cfg.fsdp:
            self.wrapped = distributed.wrap(self.model, self.dist, fsdp=False)
        compile_model = cfg.compile if cfg.compile is not None else self.device.type == "cuda"
        self.forward_model = torch.compile(self.wrapped) if compile_model else self.wrapped
        self.bf16 = precision.uses_bf16(cfg.dtype, self.device)
        self.autocast = precision.autocast_for(cfg.dtype, self.device)
        peak = peak_flops_of(self.device) if self.bf16 else None
        self.peak_flops = None if peak is None else peak * self.dist.world_size
        self.flops_per_token = count_config(self.model.config).training_flops_per_token
        self.tracking = Tracking(cfg.log_to, self.run_dir, cfg.to_dict(), enabled=self.dist.is_main)

    def _restore(self, ckpt: Checkpoint) -> None:
        if ckpt.optimizer_state is not None:
            if self.cfg.fsdp:
                distributed.load_optimizer_state(self.model, self.optimizer, ckpt.optimizer_state)
            else:
                self.optimizer.load_state_dict(ckpt.optimizer_state)
        self.step = self.saved_step = int(ckpt.state.get("step", 0))
        self.sampler.load_state_dict(ckpt.state["sampler"])
        self.last_val = ckpt.state.get("val_loss")
        if "torch" in ckpt.rng_state:
            torch.set_rng_state(ckpt.rng_state["torch"])
        if "cuda" in ckpt.rng_state and self.device.type == "cuda":
            torch.cuda.set_rng_state(ckpt.rng_state["cuda"])
        if self.dist.is_main:
            self.metrics = MetricsLog.resumed(self.run_dir, self.step)
            determinism.warn_if_changed(ckpt.state.get("determinism"), self.device, self.precision,
                                        self.dist.world_size)

    def _batch(self, sampler: WindowSampler) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's share of the sampler's next global batch, on the device."""
        x, y = (self.dist.shard(t) for t in sampler.next_batch())
        if self.device.type == "cuda":  # pinned pages let the copy overlap the GPU's work
            x, y = x.pin_memory(), y.pin_memory()
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean validation loss over ``eval_iters`` fixed batches (the same windows every time)."""
        self.model.eval()
        sampler = WindowSampler(
            self.data.val, self.model.config.block_size, self.cfg.batch_size, seed=self.cfg.seed + 1
        )
        total = torch.zeros((), device=self.device)
        for _ in range(self.cfg.eval_iters):
            x, y = self._batch(sampler)
            with self.autocast:
                _, loss = self.forward_model(x, y)
            total += loss.float()
        self.model.train()
        return float(distributed.mean_across_ranks(total, self.dist)) / self.cfg.eval_iters

    def save(self) -> Path:
        """Checkpoint the current step (once per step: a second call is a no-op)."""
        path = self.run_dir / f"ckpt-{self.step:06d}"
        if self.saved_step == self.step:
            return path
        state = {
            "step": self.step,
            "sampler": self.sampler.state_dict(),
            "val_loss": self.last_val,
            "train_config": self.cfg.to_dict(),
            "world_size": self.dist.world_size,
            "determinism": determinism.conditions(self.device, self.precision, self.dist.world_size),
        }
        model_state = optimizer_state = None
        if self.cfg.fsdp:  # every rank takes part in gathering the shards
            model_state, optimizer_state = distributed.full_state(self.model, self.optimizer)
        if self.dist.is_main:
            path = save_checkpoint(
                self.run_dir, self.model, self.tokenizer, step=self.step, state=state,
                optimizer=self.optimizer, model_state=model_state, optimizer_state=optimizer_state,
                keep=self.cfg.keep_checkpoints,
            )
        distributed.barrier(self.dist)  # nobody runs ahead of a checkpoint that is being written
        self.saved_step = self.step
        return path

    def _log(self, record: dict[str, Any]) -> None:
        self.tracking.log(record)  # --log-to trackers (rank 0 only)
        if self.dist.is_main:
            self.metrics.append(record)

    def _stop_reason(self, start: float, stop: StopOnSignal) -> str | None:
        """"signal" or "time" when the loop must stop before the next step, agreed by every rank."""
        spent = self.cfg.max_time is not None and time.perf_counter() - start >= self.cfg.max_time
        signalled = stop.requested
        if self.dist.enabled:  # every rank stops at the same step, or the collectives would hang
            import torch.distributed as dist

            flags = torch.tensor([float(spent), float(signalled)], device=self.device)
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
            spent, signalled = bool(flags[0]), bool(flags[1])
            if signalled and stop.signal is None:
                stop.signal = signal.SIGTERM
        return "signal" if signalled else "time" if spent else None

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
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        tokens_per_step = cfg.batch_size * cfg.grad_accum * self.model.config.block_size
        start = time.perf_counter()
        last_loss: float | None = None
        self.model.train()
        window_start, window_steps = time.perf_counter(), 0
        with contextlib.ExitStack() as stack:
            stop = stack.enter_context(StopOnSignal())
            show = cfg.progress and self.dist.is_main
            if show:  # log lines (val loss) print above the bar instead of through it
                stack.enter_context(logging_redirect_tqdm())
            bar = stack.enter_context(tqdm(
                total=cfg.max_steps, initial=self.step, disable=not show, unit="step",
                dynamic_ncols=True, desc="train",
            ))
            while self.step < stop_at:
                reason = self._stop_reason(start, stop)
                if reason == "time":
                    log.info("time budget of %.0fs reached at step %d", cfg.max_time, self.step)
                if reason is not None:
                    break
                lr = lr_at(self.step, cfg)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                loss_sum = torch.zeros((), device=self.device)
                for micro in range(cfg.grad_accum):
                    x, y = self._batch(self.sampler)
                    # gradients are all-reduced once, on the last micro-step
                    with distributed.gradient_sync(self.wrapped, sync=micro == cfg.grad_accum - 1):
                        with self.autocast:
                            _, loss = self.forward_model(x, y)
                        (loss / cfg.grad_accum).backward()
                    loss_sum += loss.detach().float()
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.step += 1
                window_steps += 1
                bar.update(1)
                if self.step % cfg.log_interval == 0 or self.step == cfg.max_steps:
                    last_loss = float(distributed.mean_across_ranks(loss_sum, self.dist)) / cfg.grad_accum
                    now = time.perf_counter()
                    tokens_per_s = window_steps * tokens_per_step / max(now - window_start, 1e-9)
                    window_start, window_steps = now, 0
                    record = {"step": self.step, "loss": last_loss, "lr": lr,
                              "tokens_per_s": round(tokens_per_s, 1), "elapsed": round(now - start, 3)}
                    postfix = {"loss": f"{last_loss:.4f}", "tok_s": f"{tokens_per_s:,.0f}"}
                    if self.peak_flops is not None:  # model FLOPs utilisation of the actual GPU(s)
                        record["mfu"] = round(tokens_per_s * self.flops_per_token / self.peak_flops, 4)
                        postfix["mfu"] = f"{record['mfu']:.1%}"
                    self._log(record)
                    bar.set_postfix(postfix)
                if self.step % cfg.eval_interval == 0:
                    self._eval_and_log(start)
                if self.step % cfg.checkpoint_interval == 0:
                    self.save()
            # a signal stop saves at once (no evaluation: the resumed run must repeat an uninterrupted one)
            if not stop.requested and (self.last_val is None or self.step % cfg.eval_interval != 0):
                self._eval_and_log(start)
            self.save()
        done = self.step >= cfg.max_steps
        sample = None
        if self.dist.is_main and not stop.requested:
            _plot_if_possible(self.run_dir)
            if cfg.sample_tokens > 0 and done:
                sample = self.sample()
        distributed.barrier(self.dist)
        self.tracking.close()
        return TrainResult(self.run_dir, self.step, last_loss, self.last_val, sample,
                           time.perf_counter() - start, stop.signal)

    def _eval_and_log(self, start: float) -> None:
        self.last_val = self.evaluate()
        self._log({"step": self.step, "val_loss": self.last_val,
                   "elapsed": round(time.perf_counter() - start, 3)})
        if self.dist.is_main:
            log.info("step %d: val loss %.4f", self.step, self.last_val)

    def sample(self) -> str:
        """A sample from the trained model, seeded, starting at ``sample_prompt``."""
        from gptlab.generate.sampler import SamplingParams, generate_text

        # the default corpus is Python: show it writing a function
        prompt = self.cfg.sample_prompt or ("def " if self.cfg.data is None else "\n")
        # past the context the sampler slides its window, so the sample may be longer than it
        params = SamplingParams(max_new_tokens=self.cfg.sample_tokens, temperature=0.8, top_k=50, seed=self.cfg.seed)
        model = self.model
        if self.cfg.fsdp:  # a sharded model cannot run on one rank: sample from the last checkpoint
            model = load_checkpoint(self.run_dir, device=self.device).model
        return prompt + "".join(generate_text(model, self.tokenizer, prompt, params, stop_at_eot=False))


def _plot_if_possible(run_dir: Path) -> None:
    try:
        from gptlab.train.curves import plot_loss_curve
        plot_loss_curve(run_dir / METRICS_FILE, run_dir / "loss.png")
    except ImportError:
        log.warning("matplotlib is not installed: no loss plot (pip install 'gptlab[plot]')")


def default_run_dir(cfg: TrainConfig, resume: bool = False) -> Path:
    """``runs/<corpus name>`` when ``--out`` is not given. A new run never reuses a directory
    that holds one: it takes the next free ``-2``, ``-3``, ... suffix; ``resume`` takes the
    newest existing one."""
    base = Path("runs") / ((Path(cfg.data.rstrip("/")).stem if cfg.data else "python-stdlib") or "run")
    candidates = [base, *(base.with_name(f"{base.name}-{n}") for n in range(2, 10_000))]
    taken = [path for path in candidates if has_checkpoint(path)]
    if resume:
        return taken[-1] if taken else base
    return next(path for path in candidates if not has_checkpoint(path))


def build_trainer(cfg: TrainConfig, resume: bool = False) -> Trainer:
    """Set up a run: prepare data (or reuse the run's), build or restore the model, save the config.

    With ``resume`` the run directory's latest intact checkpoint is restored and training
    continues exactly where it stopped; without it, an existing run directory with checkpoints is
    an error (nothing is overwritten). The run directory's lock is taken first and held by the
    returned trainer: a second writer gets a CheckpointError naming this process.
    """
    device = resolve_device(cfg.device)
    ctx = distributed.init_distributed(device)  # under torchrun: rank 0 prepares, the others wait
    run_dir = Path(cfg.out) if cfg.out else default_run_dir(cfg, resume)
    lock = lock_run(run_dir) if ctx.is_main else None
    try:
        return _build_trainer(cfg, resume, device, ctx, run_dir, lock)
    except BaseException:
        if lock is not None:
            lock.release(remove_if_unused=True)
        raise


def _build_trainer(
    cfg: TrainConfig, resume: bool, device: torch.device, ctx: distributed.DistContext, run_dir: Path,
    lock: RunLock | None,
) -> Trainer:
    from gptlab.data.corpus import source_bytes
    from gptlab.errors import CheckpointError
    from gptlab.train.memory import check_fits

    exists = has_checkpoint(run_dir)
    if resume and not exists:
        raise CheckpointError(f"{run_dir}: nothing to resume (no checkpoint)")
    if not resume and exists:
        raise CheckpointError(
            f"{run_dir} already holds a run: pass --resume to continue it, or --out for a new one"
        )
    if not resume:  # an impossible shape fails now, not after preparing the data
        vocab = cfg.vocab_size if cfg.tokenizer == "bpe" else 256
        check_fits(cfg.model_config(vocab, device.type), max(1, cfg.batch_size // ctx.world_size), device)
    torch.manual_seed(cfg.seed)
    data_dir = run_dir / "data"
    if cfg.data is not None and is_prepared(cfg.data):
        data_dir = Path(cfg.data)
    elif ctx.is_main and not is_prepared(data_dir):
        if cfg.max_bytes is not None:
            total = source_bytes(cfg.data)
            if total > cfg.max_bytes:
                log.info("the corpus holds %s bytes: --max-bytes %s reads the first %.0f%% of it "
                         "(pass a larger --max-bytes to use more)", f"{total:,}", cfg.max_bytes,
                         100 * cfg.max_bytes / total)
        tokenizer = None
        if cfg.tokenizer not in ("char", "bpe"):
            tokenizer = Tokenizer.load(cfg.tokenizer)
        prepare(
            cfg.data, data_dir, tokenizer=tokenizer, tokenizer_kind=cfg.tokenizer if tokenizer is None else "char",
            vocab_size=cfg.vocab_size, val_fraction=cfg.val_fraction, max_bytes=cfg.max_bytes,
            progress=cfg.progress,
        )
    distributed.barrier(ctx)
    data = PreparedData.open(data_dir)
    ckpt = None
    if resume:
        ckpt = load_checkpoint(run_dir, with_optimizer=True)
        model, tokenizer = ckpt.model, ckpt.tokenizer
    else:
        model_config = cfg.model_config(data.tokenizer.vocab_size, device.type)
        model, tokenizer = GPT(model_config), data.tokenizer
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / CONFIG_FILE, json.dumps(cfg.to_dict(), indent=2) + "\n")
    return Trainer(cfg, model, tokenizer, data, run_dir, resume_from=ckpt, lock=lock)
