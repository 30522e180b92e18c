"""Configuration: plain defaults, then a YAML file, then ``--key value`` overrides.

Every stage declares its defaults as a nested dict. A config file and command-line overrides may only set keys
that exist in the defaults (an unknown key is an error that lists the valid ones) and must keep their type (an int
where a float is expected is fine; ``None`` in the defaults accepts anything). Nested keys are written with dots on
the command line: ``--optim.lr 3e-4``.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Mapping

import yaml


def load_config(defaults: Mapping[str, Any], path: str | Path | None = None,
                overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Resolve a config: ``defaults`` <- YAML file at ``path`` <- ``overrides`` (dotted keys allowed)."""
    config = copy.deepcopy(dict(defaults))
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"{path}: config file not found")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: not valid YAML ({err})") from err
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a mapping of settings, found {type(loaded).__name__}")
        _merge(config, loaded, source=str(path))
    for dotted, value in (overrides or {}).items():
        _merge(config, _undot(dotted.replace("-", "_"), value), source="command line")
    return config


def setting_source(key: str, overrides: Mapping[str, Any] | None, otherwise: str) -> str:
    """Where the setting ``key`` (dotted: ``train.epochs``) got its value, for a message blaming it: ``command line
    (--train.epochs 0)`` when ``overrides`` (as given to :func:`load_config`) set it, else ``otherwise`` (the config
    file, or whatever else the caller names), so a bad override is never blamed on the file."""
    given = dict(_flatten(overrides or {}))  # the last one given wins, as in load_config
    if key not in given:
        return otherwise
    value = given[key]
    return f"command line (--{key} {value if isinstance(value, str) else json.dumps(value, default=str)})"


def _flatten(overrides: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Overrides as (dotted key, value) pairs, dashes read as underscores as load_config reads them."""
    pairs = []
    for dotted, value in overrides.items():
        name = prefix + str(dotted).replace("-", "_")
        pairs.extend(_flatten(value, f"{name}.") if isinstance(value, Mapping) else [(name, value)])
    return pairs


def _undot(dotted: str, value: Any) -> dict[str, Any]:
    keys = dotted.split(".")
    nested: dict[str, Any] = {keys[-1]: value}
    for key in reversed(keys[:-1]):
        nested = {key: nested}
    return nested


def _merge(config: dict[str, Any], update: Mapping[str, Any], source: str, prefix: str = "") -> None:
    for key, value in update.items():
        name = f"{prefix}{key}"
        if key not in config:
            valid = ", ".join(sorted(f"{prefix}{k}" for k in config))
            raise KeyError(f"{source}: unknown setting '{name}' (valid: {valid})")
        current = config[key]
        if isinstance(current, dict):
            if not isinstance(value, Mapping):
                raise ValueError(f"{source}: '{name}' must be a mapping, found {value!r}")
            _merge(current, value, source, prefix=f"{name}.")
        else:
            config[key] = _check_type(name, current, value, source)


def _check_type(name: str, current: Any, value: Any, source: str) -> Any:
    if current is None or value is None:
        return value
    if isinstance(current, bool) or isinstance(value, bool):
        if isinstance(current, bool) and isinstance(value, bool):
            return value
    elif isinstance(current, float) and isinstance(value, int):
        return float(value)
    elif isinstance(current, (list, tuple)) and isinstance(value, (list, tuple)):
        return list(value)
    elif isinstance(current, str) and isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return ",".join(value)  # the command line reads "a,b" as a list; comma-separated settings want it back
    elif isinstance(value, type(current)):
        return value
    raise ValueError(f"{source}: '{name}' expects {type(current).__name__} (default {current!r}), "
                     f"found {type(value).__name__} {value!r}")


def dump_config(config: Mapping[str, Any]) -> str:
    """The config as YAML text, keys in their declared order."""
    return yaml.safe_dump(dict(config), sort_keys=False, allow_unicode=True)
