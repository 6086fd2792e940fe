"""Counting a GPT from its config alone: parameters, "neurons", FLOPs per token, memory, training cost.

Nothing is instantiated, so GPT-3 175B is counted as fast as the tiny preset. The counts follow
``gptlab.model.gpt.GPT`` exactly (tests compare them with the instantiated model and with Hugging
Face's ``GPT2LMHeadModel``):

- token embeddings ``V·C``, position embeddings ``T·C`` (learned positions only; rotary ones have
  no parameters), and an LM head that adds nothing when tied to the token embeddings, ``V·C`` when not;
- per block, for GPT-2's shape: ``c_attn`` C→3C, attention ``c_proj`` C→C, ``c_fc`` C→4C, MLP
  ``c_proj`` 4C→C — ``12·C²`` weights — plus ``9·C`` Linear biases and two LayerNorms (``2·C``
  each with bias, ``C`` without). In general q has H heads and k, v have K heads of D each
  (``c_attn`` C→(H+2K)·D), the MLP's inner width is F (SwiGLU: gate and up, C→2F), RMSNorm has
  ``C`` weights, and QK-norm adds ``2·D``;
- a final norm.

"Neurons" are counted as in the Welch Labs note: every output unit of every Linear layer inside
the blocks — ``4·C`` in attention (3C for q, k, v, C for the output projection) and ``5·C`` in
the MLP (4C hidden, C output) — so GPT-2 124M has 12 × 9 × 768 = 82,944 and GPT-3 175B has
96 × 9 × 12,288 = 10,616,832. With GQA the attention has (H+2K)·D + C; SwiGLU's MLP 2F + C.
Interpretability papers (Anthropic's "Toy Models of Superposition" and "Towards Monosemanticity",
OpenAI's "Language models can explain neurons in language models") count only the MLP's hidden
units, the F activations between ``c_fc`` and ``c_proj`` (SwiGLU: F gated units, not 2F):
``mlp_hidden_neurons`` = n_layer × F, 36,864 for GPT-2 124M.

FLOPs follow Kaplan et al. 2020 ("Scaling Laws for Neural Language Models", Table 1): a forward
pass costs ``2·N + 2·n_layer·n_ctx·n_embd`` per token, with N the non-embedding parameters and
the second term the attention scores over a full context (H·D = C query dimensions, whatever the
number of key/value heads); training (forward + backward) costs three times that, ``≈ 6·N`` per
token — hence the ``6·N·D`` rule for D training tokens. N leaves out the embeddings and an untied
LM head, as Kaplan's does.

The KV cache holds ``2·n_layer·K·D`` values per token: grouped-query attention shrinks it H/K times.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gptlab.model.config import GPTConfig
from gptlab.errors import ConfigError

BYTES_PER_VALUE = {"fp32": 4, "bf16": 2}
ADAM_MOMENTS = 2  # AdamW keeps a first and a second moment per parameter
MUON_MOMENTS = 1  # Muon keeps one (Nesterov) momentum per matrix; the rest of the model stays on AdamW
SECONDS_PER_YEAR = 365 * 24 * 3600


@dataclass(frozen=True)
class ModelCount:
    """Everything :func:`count_config` computes for one config (counts are exact integers)."""

    config: GPTConfig
    token_embeddings: int
    position_embeddings: int
    lm_head: int  # 0 when tied to the token embeddings
    per_block: int
    blocks: int  # n_layer * per_block
    block_matrices: int  # the Linear weights inside the blocks: what Muon trains (biases and norms excluded)
    final_norm: int
    parameters: int  # total, a tied LM head counted once
    trainable: int  # every parameter of the model is trained (no frozen or buffer weights)
    attention_neurons_per_block: int
    mlp_neurons_per_block: int
    neurons: int
    forward_flops_per_token: int
    training_flops_per_token: int
    bigram_embeddings: int = 0  # the hashed bigram table (``bigram_buckets`` rows), if any

    @property
    def without_position_embeddings(self) -> int:
        """Parameters less the position embeddings (nanoGPT's and GPT-2's usual "124M")."""
        return self.parameters - self.position_embeddings

    @property
    def non_embedding(self) -> int:
        """Parameters less the embeddings and an untied LM head: Kaplan's N, the one that enters
        the FLOP counts."""
        return (self.parameters - self.position_embeddings - self.token_embeddings - self.bigram_embeddings
                - self.lm_head)

    @property
    def neurons_per_block(self) -> int:
        return self.attention_neurons_per_block + self.mlp_neurons_per_block

    @property
    def mlp_hidden_neurons_per_block(self) -> int:
        """The MLP's hidden units (its inner width F): the neurons interpretability work studies."""
        return self.config.hidden

    @property
    def mlp_hidden_neurons(self) -> int:
        """n_layer × F: every MLP hidden unit of the model."""
        return self.config.n_layer * self.config.hidden

    def memory_bytes(self, dtype: str) -> dict[str, int]:
        """Bytes of weights, gradients and optimizer state, and their totals, at ``dtype`` ("fp32"
        or "bf16"), for AdamW (two moments per parameter) and for gptlab's default Muon (one
        momentum per block matrix, AdamW's two for embeddings, head, biases and norms).
        Activations, which depend on the batch, are not included."""
        if dtype not in BYTES_PER_VALUE:
            raise ConfigError(f"unknown dtype {dtype!r}; choose one of: {', '.join(BYTES_PER_VALUE)}")
        value = BYTES_PER_VALUE[dtype]
        size = self.parameters * value
        muon = (MUON_MOMENTS * self.block_matrices + ADAM_MOMENTS * (self.parameters - self.block_matrices)) * value
        return {
            "weights": size,
            "gradients": size,
            "adamw_state": ADAM_MOMENTS * size,
            "training_total": (2 + ADAM_MOMENTS) * size,
            "muon_state": muon,
            "training_total_muon": 2 * size + muon,
        }

    def kv_cache_bytes_per_token(self, dtype: str) -> int:
        """Bytes the KV cache holds per token of context, keys and values of every layer, at ``dtype``."""
        if dtype not in BYTES_PER_VALUE:
            raise ConfigError(f"unknown dtype {dtype!r}; choose one of: {', '.join(BYTES_PER_VALUE)}")
        cfg = self.config
        return 2 * cfg.n_layer * cfg.kv_heads * cfg.head_dim * BYTES_PER_VALUE[dtype]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (the config as a dict, derived counts included)."""
        return {
            "config": self.config.to_dict(),
            "parameters": self.parameters,
            "parameters_without_position_embeddings": self.without_position_embeddings,
            "non_embedding_parameters": self.non_embedding,
            "trainable_parameters": self.trainable,
            "breakdown": {
                "token_embeddings": self.token_embeddings,
                "position_embeddings": self.position_embeddings,
                "bigram_embeddings": self.bigram_embeddings,
                "lm_head": self.lm_head,
                "per_block": self.per_block,
                "blocks": self.blocks,
                "block_matrices": self.block_matrices,
                "final_norm": self.final_norm,
            },
            "neurons": self.neurons,
            "neurons_per_block": {
                "attention": self.attention_neurons_per_block,
                "mlp": self.mlp_neurons_per_block,
            },
            "mlp_hidden_neurons": self.mlp_hidden_neurons,
            "forward_flops_per_token": self.forward_flops_per_token,
            "training_flops_per_token": self.training_flops_per_token,
            "memory_bytes": {dtype: self.memory_bytes(dtype) for dtype in BYTES_PER_VALUE},
            "kv_cache_bytes_per_token": {dtype: self.kv_cache_bytes_per_token(dtype) for dtype in BYTES_PER_VALUE},
        }


def count_config(cfg: GPTConfig) -> ModelCount:
    """Exact parameter, neuron and FLOP counts of ``gptlab.model.gpt.GPT(cfg)``, without building it."""
    C, D, F, bias = cfg.n_embd, cfg.head_dim, cfg.hidden, int(cfg.bias)
    qkv = (cfg.n_head + 2 * cfg.kv_heads) * D  # c_attn's outputs
    fc = 2 * F if cfg.mlp == "swiglu" else F  # c_fc's outputs
    norm = C if cfg.norm == "rmsnorm" else C + bias * C
    linear_weights = C * qkv + C * C + C * fc + F * C  # c_attn, attn c_proj, c_fc, mlp c_proj
    linear_biases = int(cfg.has_qkv_bias) * qkv + bias * (C + fc + C)
    per_block = linear_weights + linear_biases + 2 * norm + (2 * D if cfg.qk_norm else 0)
    token_embeddings = cfg.vocab_size * C
    position_embeddings = cfg.block_size * C if cfg.positions == "learned" else 0
    bigram_embeddings = cfg.bigram_buckets * C
    lm_head = 0 if cfg.tie_embeddings else cfg.vocab_size * C
    blocks = cfg.n_layer * per_block
    parameters = token_embeddings + position_embeddings + bigram_embeddings + lm_head + blocks + norm
    non_embedding = blocks + norm
    attention_neurons, mlp_neurons = qkv + C, fc + C
    forward = 2 * non_embedding + 2 * cfg.n_layer * cfg.block_size * C
    return ModelCount(
        config=cfg,
        token_embeddings=token_embeddings,
        position_embeddings=position_embeddings,
        lm_head=lm_head,
        per_block=per_block,
        blocks=blocks,
        block_matrices=cfg.n_layer * linear_weights,
        final_norm=norm,
        parameters=parameters,
        trainable=parameters,
        attention_neurons_per_block=attention_neurons,
        mlp_neurons_per_block=mlp_neurons,
        neurons=cfg.n_layer * (attention_neurons + mlp_neurons),
        forward_flops_per_token=forward,
        training_flops_per_token=3 * forward,
        bigram_embeddings=bigram_embeddings,
    )


@dataclass(frozen=True)
class TrainingCost:
    """A training-compute estimate by the ``6·N·D`` rule and what it costs on one kind of GPU."""

    params: float
    tokens: float
    peak_flops_per_second: float  # per GPU
    utilization: float  # fraction of the peak actually sustained
    price_per_hour: float | None  # dollars per GPU-hour; None: no dollar figure

    def __post_init__(self) -> None:
        for name in ("params", "tokens", "peak_flops_per_second"):
            _check_positive(name, getattr(self, name))
        if not 0 < self.utilization <= 1:
            raise ConfigError(f"utilization must be in (0, 1], got {self.utilization!r}")
        if self.price_per_hour is not None:
            _check_positive("price_per_hour", self.price_per_hour)

    @property
    def flops(self) -> float:
        """Training FLOPs: 6 per parameter per token (2 forward, 4 backward)."""
        return 6.0 * self.params * self.tokens

    @property
    def sustained_flops_per_second(self) -> float:
        return self.peak_flops_per_second * self.utilization

    @property
    def gpu_seconds(self) -> float:
        return self.flops / self.sustained_flops_per_second

    @property
    def gpu_hours(self) -> float:
        return self.gpu_seconds / 3600.0

    @property
    def gpu_years(self) -> float:
        """GPU time in 365-day years."""
        return self.gpu_seconds / SECONDS_PER_YEAR

    @property
    def dollars(self) -> float | None:
        return None if self.price_per_hour is None else self.gpu_hours * self.price_per_hour


def _check_positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise ConfigError(f"{name} must be a positive number, got {value!r}")


_SUFFIXES = {"k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}


def parse_quantity(text: str, name: str = "value") -> float:
    """A positive number written plainly (``175000000000``, ``175e9``, ``1_000``) or with a
    suffix K, M, B (or G) or T (``175B``, ``1.5T``). Anything else raises ConfigError, naming
    the figure as ``name``."""
    cleaned = text.strip().replace(",", "").replace("_", "")
    scale = 1.0
    if cleaned and cleaned[-1].lower() in _SUFFIXES:
        scale, cleaned = _SUFFIXES[cleaned[-1].lower()], cleaned[:-1]
    try:
        value = float(cleaned) * scale
    except ValueError:
        raise ConfigError(f"{name} is not a number: {text!r} (write e.g. 175e9 or 175B)") from None
    _check_positive(name, value)
    return value
