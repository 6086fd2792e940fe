"""Typed errors raised by the library. Only the CLI and the server turn them into exit codes or HTTP codes."""

from __future__ import annotations


class GptlabError(Exception):
    """Base class of every error gptlab raises on purpose."""


class ConfigError(GptlabError, ValueError):
    """An invalid model or training configuration, or an unknown preset."""


class DataError(GptlabError, ValueError):
    """A corpus or dataset that cannot be used: missing, empty, not UTF-8, too short, malformed."""


class TokenizerError(GptlabError, ValueError):
    """A tokenizer that cannot be built, loaded, or does not match the model."""


class CheckpointError(GptlabError):
    """A checkpoint or run directory that is missing, truncated, corrupted or inconsistent."""


class GenerationError(GptlabError, ValueError):
    """Invalid sampling parameters, or a prompt that does not fit the model's context."""
