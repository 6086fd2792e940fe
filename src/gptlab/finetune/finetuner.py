"""Fine-tuning a trained GPT on JSONL examples: full, or LoRA adapters on a frozen base.

:func:`build_finetuner` loads the base (any run or checkpoint ``load_checkpoint`` accepts), reads
and checks all the data, and only then creates the run directory; :meth:`Finetuner.fit` trains.
The optimizer and schedule are pre-training's (``gptlab.train.trainer.make_optimizer``, ``lr_at``,
``resolve_device``), as are checkpoints (``gptlab.train.checkpoint.save_checkpoint`` and its atomic
``LATEST``), so a fine-tuning run resumes exactly: weights, optimizer, RNG, data position and
early-stopping counters all come back.

A LoRA run's checkpoint holds the *base* model (saved with the adapters lifted out, so it is an
ordinary, loadable GPT whose fingerprint is the base's) and names an adapter directory
``adapter-NNNNNN/`` beside it, written completely before the checkpoint that names it, and
removed only once no checkpoint names it. That directory is a standalone adapter:
``gptlab.finetune.lora.load_adapter`` reads it and ``gptlab lora merge`` folds it into its base.

With ``restore_best`` (the default) each new lowest val loss saves the trained weights to
``best.safetensors``, and a run that is over ends with them in its final checkpoint.

The loss of a step is the mean over its trained tokens (micro-batches weighted by their token
counts), so gradient accumulation matches one big batch.

Every record written to ``metrics.jsonl`` also goes to the ``log_to`` trackers (TensorBoard, CSV,
W&B: :mod:`gptlab.train.tracking`, as in pre-training).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from gptlab.train import determinism, precision
from gptlab.train.checkpoint import (
    LATEST,
    Checkpoint,
    has_checkpoint,
    load_checkpoint,
    save_checkpoint,
    save_failure,
)
from gptlab.train.lock import RunLock, lock_run
from gptlab.train.metrics_log import METRICS_FILE, MetricsLog
from gptlab.train.signals import StopOnSignal
from gptlab.train.tracking import Tracking
from gptlab.errors import CheckpointError, ConfigError, DataError, TokenizerError
from gptlab.fileio import atomic_write, atomic_write_text, remove_leftovers
from gptlab.finetune.config import FinetuneConfig
from gptlab.finetune.data import (
    Example,
    ExampleBatcher,
    FinetuneData,
    collate,
    load_records,
    missing_special_tokens,
)
from gptlab.finetune.loader import CHAT_TEMPLATE_KEY, ChatTemplate, find_adapter, load_run
from gptlab.finetune.lora import (
    Adapter,
    apply_adapter,
    inject_lora,
    is_adapter,
    load_adapter,
    lora_modules,
    model_fingerprint,
    plain_linears,
    save_adapter,
)
from gptlab.model.gpt import GPT, IGNORE_INDEX
from gptlab.data.tokenizer import Tokenizer
from gptlab.train.trainer import (
    _plot_if_possible,
    lr_at,
    make_optimizer,
    resolve_device,
)

log = logging.getLogger(__name__)

CONFIG_FILE = "finetune_config.json"
ADAPTER_PREFIX = "adapter-"
BEST_FILE = "best.safetensors"  # the trained weights at the lowest val loss so far (cfg.restore_best)


@dataclass
class FinetuneResult:
    run_dir: Path
    step: int
    train_loss: float | None
    val_loss: float | None
    base_val_loss: float | None  # the base model's val loss (step 0)
    best_val_loss: float | None
    best_step: int | None
    stopped_early: bool
    elapsed: float
    adapter: Path | None  # the latest adapter directory of a LoRA run
    weights_step: int | None = None  # the step whose weights the run ended with, when not its last (restore_best)
    stopped_by: int | None = None  # the signal that stopped the run early (a checkpoint was saved)


@torch.no_grad()
def evaluate_examples(
    model: GPT, examples: list[Example], *, batch_size: int = 8, pad_id: int = 0,
    autocast: Any = None,
) -> float:
    """Mean loss over every trained token of ``examples`` (token-weighted, eval mode).

    Examples are batched in order of length (less padding); the result does not depend on it
    beyond float rounding.
    """
    if not examples:
        raise DataError("no examples to evaluate")
    was_training = model.training
    model.eval()
    device = model.transformer.wte.weight.device
    ordered = sorted(examples, key=len)
    total, tokens = 0.0, 0
    try:
        for start in range(0, len(ordered), batch_size):
            x, y = collate(ordered[start : start + batch_size], pad_id)
            n = int((y != IGNORE_INDEX).sum())
            with autocast or contextlib.nullcontext():
                _, loss = model(x.to(device), y.to(device))
            total += float(loss) * n
            tokens += n
    finally:
        model.train(was_training)
    return total / tokens


class Finetuner:
    """Trains a (possibly LoRA-adapted) GPT on tokenised examples and writes a run directory."""

    def __init__(
        self,
        cfg: FinetuneConfig,
        model: GPT,
        tokenizer: Tokenizer,
        data: FinetuneData,
        run_dir: str | Path,
        *,
        base_fingerprint: str,
        base_path: str = "",
        added_tokens: list[str] | None = None,
        resume_from: Checkpoint | None = None,
        chat_template: ChatTemplate | None = None,
        lock: RunLock | None = None,
        tracking: Tracking | None = None,
    ) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        # --log-to trackers: every metrics.jsonl record goes to them too (checked before the run dir exists)
        self.tracking = tracking if tracking is not None else Tracking(cfg.log_to, self.run_dir, cfg.to_dict())
        self.lock = lock  # held for as long as this fine-tuner lives (released with it)
        self.metrics = MetricsLog(self.run_dir / METRICS_FILE)
        self.device = resolve_device(cfg.device)
        self.precision = precision.describe(cfg.dtype, self.device)  # "bf16 autocast" or "fp32"
        self.tokenizer = tokenizer
        self.data = data
        self.base_fingerprint = base_fingerprint
        self.base_path = base_path or cfg.base
        self.added_tokens = list(added_tokens or [])
        self.chat_template = chat_template  # the base's own, kept while the run is not taught ChatML
        self.is_lora = bool(lora_modules(model))
        self.batcher = ExampleBatcher(len(data.train), cfg.batch_size, cfg.seed)
        per_epoch = math.ceil(self.batcher.batches_per_epoch / cfg.grad_accum)
        self.max_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * per_epoch))
        self.schedule = cfg.schedule(self.max_steps)
        self.model = model.to(self.device)
        self.optimizer = make_optimizer(self.model, self.schedule, self.device)
        # the parameters this run trains (every weight, or a LoRA run's adapters), by name
        self.trained = {name: p for name, p in self.model.named_parameters() if p.requires_grad}
        self.step = 0
        self.saved_step: int | None = None
        self.last_val: float | None = None
        self.last_eval_step: int | None = None
        self.base_val: float | None = None
        self.best_val: float | None = None
        self.best_step: int | None = None
        self.bad_evals = 0
        self.stopped_early = False
        self.weights_step: int | None = None
        self.adapter_dir: Path | None = None
        if resume_from is None:
            self.metrics = MetricsLog.fresh(self.run_dir)
        else:
            self._restore(resume_from)
            if self.weights_step is not None and self.step < self.max_steps and not self.stopped_early:
                raise ConfigError(
                    f"{self.run_dir} ended at step {self.step} with the weights of step {self.weights_step} "
                    f"(its best validation loss), so it cannot go on to step {self.max_steps}: fine-tune it "
                    "as a new base instead"
                )
        self.autocast = precision.autocast_for(cfg.dtype, self.device)

    @property
    def pad_id(self) -> int:
        return self.tokenizer.eot_id

    def _restore(self, ckpt: Checkpoint) -> None:
        state = ckpt.state
        if ckpt.optimizer_state is not None:
            self.optimizer.load_state_dict(ckpt.optimizer_state)
        self.step = self.saved_step = int(state.get("step", 0))
        self.batcher.load_state_dict(state["batcher"])
        for key in ("last_val", "last_eval_step", "base_val", "best_val", "best_step", "weights_step"):
            setattr(self, key, state.get(key))
        self.bad_evals = int(state.get("bad_evals", 0))
        self.stopped_early = bool(state.get("stopped_early", False))
        if state.get("adapter"):
            self.adapter_dir = self.run_dir / state["adapter"]
        if "torch" in ckpt.rng_state:
            torch.set_rng_state(ckpt.rng_state["torch"])
        if "cuda" in ckpt.rng_state and self.device.type == "cuda":
            torch.cuda.set_rng_state(ckpt.rng_state["cuda"])
        self.metrics = MetricsLog.resumed(self.run_dir, self.step)
        determinism.warn_if_changed(state.get("determinism"), self.device, self.precision)

    def evaluate(self) -> float:
        """Loss of the current model on every validation example (token-weighted mean)."""
        return evaluate_examples(self.model, self.data.val, batch_size=self.cfg.batch_size, pad_id=self.pad_id,
                                 autocast=self.autocast)

    def _state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "max_steps": self.max_steps,
            "batcher": self.batcher.state_dict(),
            "last_val": self.last_val,
            "last_eval_step": self.last_eval_step,
            "base_val": self.base_val,
            "best_val": self.best_val,
            "best_step": self.best_step,
            "bad_evals": self.bad_evals,
            "stopped_early": self.stopped_early,
            "weights_step": self.weights_step,
            "finetune_config": self.cfg.to_dict(),
            "data": {"source": self.data.source, "sha256": self.data.sha256,
                     "train_examples": len(self.data.train), "val_examples": len(self.data.val)},
            "base": {"path": self.base_path, "fingerprint": self.base_fingerprint},
            "added_tokens": self.added_tokens,
            "adapter": self.adapter_dir.name if self.adapter_dir is not None else None,
            **({CHAT_TEMPLATE_KEY: self.chat_template.to_dict()} if self.chat_template is not None else {}),
            "determinism": determinism.conditions(self.device, self.precision),
        }

    def save(self) -> Path:
        """Checkpoint the current step (and, for LoRA, its adapter first). Once per step."""
        if self.saved_step == self.step:
            return self.run_dir / f"ckpt-{self.step:06d}"
        if self.is_lora:
            assert self.cfg.lora is not None
            name = f"{ADAPTER_PREFIX}{self.step:06d}"
            try:
                self.adapter_dir = save_adapter(
                    self.model, self.run_dir / name, self.cfg.lora, base_fingerprint=self.base_fingerprint,
                    extra={"base_path": self.base_path, "step": self.step, "val_loss": self.last_val},
                )
            except (OSError, SafetensorError) as exc:
                raise CheckpointError(save_failure(self.run_dir, name, exc)) from None
            with plain_linears(self.model):
                path = save_checkpoint(self.run_dir, self.model, self.tokenizer, step=self.step,
                                       state=self._state(), optimizer=self.optimizer,
                                       keep=self.cfg.keep_checkpoints)
            _prune_adapters(self.run_dir)
        else:
            path = save_checkpoint(self.run_dir, self.model, self.tokenizer, step=self.step,
                                   state=self._state(), optimizer=self.optimizer,
                                   keep=self.cfg.keep_checkpoints)
        self.saved_step = self.step
        return path

    def _log(self, record: dict[str, Any]) -> None:
        self.tracking.log(record)
        self.metrics.append(record)

    def _eval_and_log(self, start: float) -> None:
        self.last_val, self.last_eval_step = self.evaluate(), self.step
        self._log({"step": self.step, "val_loss": self.last_val, "elapsed": round(time.perf_counter() - start, 3)})
        if self.step == 0:
            self.base_val = self.last_val
        if self.best_val is None or self.last_val < self.best_val:
            self.best_val, self.best_step, self.bad_evals = self.last_val, self.step, 0
            if self.cfg.restore_best:
                self._save_best()
        else:
            self.bad_evals += 1
            patience = self.cfg.early_stopping
            if patience is not None and self.bad_evals >= patience:
                self.stopped_early = True
                log.info("early stopping at step %d: no val loss below %.4f (step %d) for %d evaluations",
                         self.step, self.best_val, self.best_step, self.bad_evals)
        log.info("step %d: val loss %.4f", self.step, self.last_val)

    def fit(self, steps: int | None = None) -> FinetuneResult:
        """Train until ``max_steps``, ``max_time`` or early stopping; save a final checkpoint.

        ``steps`` stops this call after that many more steps (the schedule still runs to
        ``max_steps``). The base model's val loss is measured before the first step.
        """
        from tqdm.auto import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        cfg = self.cfg
        stop_at = self.max_steps if steps is None else min(self.max_steps, self.step + steps)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        last_loss: float | None = None
        if self.step == 0 and self.data.val and self.base_val is None:
            self._eval_and_log(start)
        self.model.train()
        window_start, window_tokens = time.perf_counter(), 0
        with contextlib.ExitStack() as stack:
            stop = stack.enter_context(StopOnSignal())
            if cfg.progress:
                stack.enter_context(logging_redirect_tqdm())
            bar = stack.enter_context(tqdm(total=self.max_steps, initial=self.step, disable=not cfg.progress,
                                           unit="step", dynamic_ncols=True, desc="finetune"))
            while self.step < stop_at and not self.stopped_early:
                if stop.requested:
                    break
                if cfg.max_time is not None and time.perf_counter() - start >= cfg.max_time:
                    log.info("time budget of %.0fs reached at step %d", cfg.max_time, self.step)
                    break
                lr = lr_at(self.step, self.schedule)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                batches = [collate([self.data.train[i] for i in self.batcher.next_indices()], self.pad_id)
                           for _ in range(cfg.grad_accum)]
                counts = [int((y != IGNORE_INDEX).sum()) for _, y in batches]
                step_tokens = sum(counts)
                loss_sum = torch.zeros((), device=self.device)
                for (x, y), n in zip(batches, counts):
                    if n == 0:
                        continue
                    with self.autocast:
                        _, loss = self.model(x.to(self.device), y.to(self.device))
                    (loss * (n / step_tokens)).backward()
                    loss_sum += loss.detach() * (n / step_tokens)
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(list(self.trained.values()), cfg.grad_clip)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.step += 1
                window_tokens += step_tokens
                bar.update(1)
                if self.step % cfg.log_interval == 0 or self.step == self.max_steps:
                    last_loss = float(loss_sum)
                    now = time.perf_counter()
                    tokens_per_s = window_tokens / max(now - window_start, 1e-9)
                    window_start, window_tokens = now, 0
                    self._log({"step": self.step, "loss": last_loss, "lr": lr, "epoch": round(self.batcher.epochs_done, 4),
                               "trained_tokens_per_s": round(tokens_per_s, 1), "elapsed": round(now - start, 3)})
                    bar.set_postfix(loss=f"{last_loss:.4f}")
                if self.data.val and self.step % cfg.eval_interval == 0:
                    self._eval_and_log(start)
                if self.step % cfg.checkpoint_interval == 0:
                    self.save()
            # a slice, or a signal, ends without an evaluation: evaluations stay those of an unsliced run
            finished = self.step >= self.max_steps or self.stopped_early or self.step < stop_at
            if finished and not stop.requested and self.data.val and self.last_eval_step != self.step:
                self._eval_and_log(start)
            over = self.step >= self.max_steps or self.stopped_early  # (a time budget's stop can be resumed)
            if over:
                self._end_with_best()
            self.save()
        if over:  # only now: until the final checkpoint is written, a crash must find the best weights
            (self.run_dir / BEST_FILE).unlink(missing_ok=True)
        if not stop.requested:
            _plot_if_possible(self.run_dir)
        self.tracking.close()
        return FinetuneResult(
            self.run_dir, self.step, last_loss, self.last_val, self.base_val, self.best_val, self.best_step,
            self.stopped_early, time.perf_counter() - start, self.adapter_dir, self.weights_step, stop.signal,
        )

    def _save_best(self) -> None:
        """Write the trained weights to ``best.safetensors``, atomically."""
        tensors = {name: p.detach().cpu().contiguous() for name, p in self.trained.items()}
        metadata = {"step": str(self.step), "val_loss": repr(self.best_val)}
        try:
            atomic_write(self.run_dir / BEST_FILE, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
        except (OSError, SafetensorError) as exc:
            raise CheckpointError(save_failure(self.run_dir, BEST_FILE, exc)) from None

    def _end_with_best(self) -> None:
        """At the end of a run: load the best evaluation's weights if they are not the current ones.

        If ``best.safetensors`` cannot be read or holds another step (a resume on a GPU whose
        replay did not repeat a crashed run's evaluations exactly), the last weights stay, with a
        warning: the run's final checkpoint is never lost to it.
        """
        path = self.run_dir / BEST_FILE
        if self.cfg.restore_best and self.best_step is not None and self.best_step != self.step \
                and self.weights_step is None:
            try:
                with safe_open(str(path), framework="pt") as f:
                    step = (f.metadata() or {}).get("step")
                    tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (a safetensors handle, not a dict)
            except (OSError, SafetensorError) as e:
                step, tensors = None, {}
                log.warning("%s: cannot read the best weights (%s)", path, e)
            if step == str(self.best_step) and tensors.keys() == self.trained.keys():
                with torch.no_grad():
                    for name, param in self.trained.items():
                        param.copy_(tensors[name])
                log.info("kept the weights of step %d (val loss %.4f), the lowest; the last step's had %.4f",
                         self.best_step, self.best_val, self.last_val)
                self.weights_step, self.last_val, self.saved_step = self.best_step, self.best_val, None
            else:
                log.warning("%s does not hold the best step %d: the run ends with its last weights", path, self.best_step)


def _prune_adapters(run_dir: Path) -> None:
    """Remove adapter directories that no remaining checkpoint names (and leftovers of a crash)."""
    named = set()
    for folder in run_dir.glob("ckpt-*"):
        try:
            named.add(json.loads((folder / "state.json").read_text())["state"].get("adapter"))
        except (OSError, ValueError, KeyError):
            continue
    for path in run_dir.glob(f"{ADAPTER_PREFIX}*"):
        if path.is_dir() and path.name not in named:
            shutil.rmtree(path, ignore_errors=True)
    remove_leftovers(run_dir, f"{ADAPTER_PREFIX}*")


def default_run_dir(cfg: FinetuneConfig, resume: bool = False) -> Path:
    """``runs/<base name>-finetune`` (``-lora`` for LoRA), with ``-2``, ``-3``, ... for a new run
    when taken; ``resume`` takes the newest existing one."""
    base_name = Path(cfg.base.rstrip("/")).name or "model"
    if base_name.startswith("ckpt-"):
        base_name = Path(cfg.base.rstrip("/")).parent.name or base_name
    base = Path("runs") / f"{base_name}-{'lora' if cfg.lora is not None else 'finetune'}"
    candidates = [base, *(base.with_name(f"{base.name}-{n}") for n in range(2, 10_000))]
    taken = [p for p in candidates if has_checkpoint(p)]
    if resume:
        return taken[-1] if taken else base
    return next(p for p in candidates if not has_checkpoint(p))


def build_finetuner(cfg: FinetuneConfig, resume: bool = False) -> Finetuner:
    """Set up a fine-tuning run; everything is checked before the run directory is created.

    New run: loads the base, adds the chat markers to a full fine-tune's vocabulary when chat data
    needs them (``gptlab.finetune.vocab``; a LoRA run refuses, its embeddings being frozen), loads and
    tokenises the data, injects LoRA if configured. An existing run directory is an error (nothing
    is overwritten). With ``resume`` the run's latest checkpoint comes back, and the data file
    must be the one the run started with (same SHA-256).
    """
    if not cfg.base and not resume:
        raise CheckpointError("no base model: give the run or checkpoint to fine-tune")
    if not cfg.data:
        raise DataError("no data: give a .jsonl file of examples")
    run_dir = Path(cfg.out) if cfg.out else default_run_dir(cfg, resume)
    lock = lock_run(run_dir)  # one writer per run; held by the returned fine-tuner
    try:
        return _build_finetuner(cfg, resume, run_dir, lock)
    except BaseException:
        lock.release(remove_if_unused=True)  # bad input leaves no directory behind
        raise


def _build_finetuner(cfg: FinetuneConfig, resume: bool, run_dir: Path, lock: RunLock) -> Finetuner:
    exists = has_checkpoint(run_dir)
    if resume and not exists:
        raise CheckpointError(f"{run_dir}: nothing to resume (no checkpoint)")
    if not resume and exists:
        raise CheckpointError(f"{run_dir} already holds a run: pass --resume to continue it, or --out for a new one")
    tracking = Tracking(cfg.log_to, run_dir, cfg.to_dict())  # a missing package stops us here
    torch.manual_seed(cfg.seed)
    added: list[str] = []
    ckpt: Checkpoint | None = None
    if resume:
        ckpt = load_checkpoint(run_dir, with_optimizer=True)
        model, tokenizer, state = ckpt.model, ckpt.tokenizer, ckpt.state
        chat_template = ChatTemplate.from_state(state.get(CHAT_TEMPLATE_KEY))
        fingerprint = str(state.get("base", {}).get("fingerprint", ""))
        base_path = str(state.get("base", {}).get("path", cfg.base))
        added = list(state.get("added_tokens", []))
        data = FinetuneData.from_file(cfg.data, tokenizer, model.config.block_size, val_fraction=cfg.val_fraction,
                                      seed=cfg.seed, truncate=cfg.truncate)
        if data.sha256 != state.get("data", {}).get("sha256"):
            raise DataError(f"{cfg.data}: not the data this run started with (SHA-256 differs): cannot resume exactly")
        if bool(state.get("adapter")) != (cfg.lora is not None):
            raise ConfigError(f"{run_dir}: cannot switch between LoRA and full fine-tuning when resuming")
        if state.get("adapter"):
            adapter: Adapter = load_adapter(run_dir / state["adapter"])
            if adapter.config != cfg.lora:
                raise ConfigError(f"{run_dir}: LoRA settings differ from the run's ({adapter.config})")
            apply_adapter(model, adapter)
    else:
        # any run; a LoRA run (or an adapter directory) as the base: start from its merged model
        base = load_run(cfg.base, merge=True)
        model, tokenizer = base.model, base.tokenizer
        fingerprint = model_fingerprint(model)
        # the checkpoint folder itself (a run's LATEST moves on); load_run gives it back merged
        base_path = str(base.checkpoint.path.resolve()) if not is_adapter(cfg.base) else str(Path(cfg.base).resolve())
        records = load_records(cfg.data)
        chat_template = base.chat_template
        if chat_template is not None and any(r.kind == "chat" for r in records):
            log.info("chat examples are laid out in ChatML: the base's own chat template is not kept")
            chat_template = None
        missing = missing_special_tokens(records, tokenizer)
        if missing and cfg.lora is not None:
            raise TokenizerError(
                f"the base model's tokenizer lacks {', '.join(missing)}, which chat data needs; LoRA keeps the "
                "embeddings frozen, so add them with a full fine-tune (or gptlab.finetune.vocab.add_special_tokens) first"
            )
        if missing:
            from gptlab.finetune.vocab import add_special_tokens

            add_special_tokens(model, tokenizer, missing)
            added = missing
        data = FinetuneData.from_file(cfg.data, tokenizer, model.config.block_size, val_fraction=cfg.val_fraction,
                                      seed=cfg.seed, truncate=cfg.truncate, records=records)
        if cfg.lora is not None:
            inject_lora(model, cfg.lora)
        else:
            for param in model.parameters():
                param.requires_grad_(True)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / CONFIG_FILE, json.dumps(cfg.to_dict(), indent=2) + "\n")
    return Finetuner(cfg, model, tokenizer, data, run_dir, base_fingerprint=fingerprint, base_path=base_path,
                     added_tokens=added,
                     resume_from=ckpt, chat_template=chat_template, lock=lock, tracking=tracking)


def load_finetuned(path: str | Path, *, base: str | Path | None = None, device: str | torch.device = "cpu") -> GPT:
    """A model ready to use from a full fine-tune (run or checkpoint), a LoRA run, or an adapter
    directory (its base from ``base``, else the ``base_path`` recorded in the adapter). Adapters
    stay attached (unmerged); :func:`gptlab.finetune.lora.merge_lora` folds them in."""
    return load_finetuned_with_tokenizer(path, base=base, device=device)[0]


def load_finetuned_with_tokenizer(
    path: str | Path, *, base: str | Path | None = None, device: str | torch.device = "cpu"
) -> tuple[GPT, Tokenizer]:
    """As :func:`load_finetuned`, with the tokenizer that goes with the model (a shorthand for
    :func:`gptlab.finetune.loader.load_run`, which also says what was loaded)."""
    loaded = load_run(path, base=base, device=device)
    return loaded.model, loaded.tokenizer


def merge_adapter_into_run(path: str | Path, out: str | Path, *, base: str | Path | None = None) -> Path:
    """Fold a LoRA adapter into its base and save the result as an ordinary run in ``out``.

    ``path`` is a LoRA run or checkpoint (whose checkpoint holds the base) or an adapter directory
    (base from ``base``, else the adapter's recorded ``base_path``). The adapter must belong to
    that base (AdapterMismatchError). ``out`` must not hold a run already (CheckpointError), and is
    written only after every check passed. Returns the checkpoint folder in ``out``.
    """
    out = Path(out)
    if (out / LATEST).exists():
        raise CheckpointError(f"{out} already holds a run: choose another --out")
    adapter_dir = find_adapter(path)
    if base is None and not is_adapter(path):
        loaded = load_run(path, merge=True)  # a LoRA run's checkpoint is its base model
    else:
        loaded = load_run(adapter_dir, base=base, merge=True)
    adapter = loaded.adapter
    assert adapter is not None
    state = {"merged_adapter": str(adapter_dir), "lora": adapter.config.to_dict(),
             "base": {"path": str(base or loaded.checkpoint.path), "fingerprint": adapter.base_fingerprint}}
    if loaded.chat_template is not None:
        state[CHAT_TEMPLATE_KEY] = loaded.chat_template.to_dict()
    return save_checkpoint(out, loaded.model, loaded.tokenizer, step=int(adapter.meta.get("step", 0)), state=state)
