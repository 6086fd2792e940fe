"""Reading training settings from a TOML or YAML file: a flat table whose keys are TrainConfig fields."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from gptlab.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Parse a ``.toml``, ``.yaml``/``.yml`` or ``.json`` file into a dict of settings.

    Keys may be written with dashes or underscores (``max-steps`` = ``max_steps``). Raises
    ConfigError for a missing file, a syntax error, or a file that is not a flat table.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc})") from None
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        elif suffix == ".json":
            import json

            data = json.loads(text)
        else:
            raise ConfigError(f"{path}: config files must be .toml, .yaml, .yml or .json")
    except ConfigError:
        raise
    except Exception as exc:  # each parser has its own error type; all mean "bad syntax"
        raise ConfigError(f"{path}: invalid {suffix[1:].upper()} ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a table of settings at the top level")
    for key, value in data.items():
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{path}: setting {key!r} must be a single value, not a table or list")
    return {str(k).replace("-", "_"): v for k, v in data.items()}
