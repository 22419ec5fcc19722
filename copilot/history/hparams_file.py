"""The run's hyperparameter file (`<model>.hparams.toml` next to the model in the worktree).

Hyperparameter rounds are commits of this file, so `git diff` shows `lr = 0.1` becoming
`lr = 0.001` like any code change. The values are flat: numbers, strings and booleans;
a `None` value (for example no gradient clipping) is written as a comment, since TOML
has no null. It writes TOML text and reads it back; it touches no git.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from collections.abc import Mapping
from pathlib import PurePosixPath

from copilot.errors import HistoryError

HParamValue = float | int | str | bool | None
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def hparams_path_for(model_relpath: str) -> str:
    """`models/cnn.py` -> `models/cnn.hparams.toml` (a path inside the repository)."""
    model = PurePosixPath(model_relpath)
    return str(model.with_name(f"{model.stem}.hparams.toml"))


def _toml_value(key: str, value: HParamValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    raise ValueError(f"hyperparameter {key!r} must be a number, string or boolean, not {type(value).__name__}")


def hparams_to_toml(hparams: Mapping[str, HParamValue]) -> str:
    """One `key = value` line per hyperparameter, sorted, so diffs stay line-by-line."""
    lines = ["# Hyperparameters of this round, written by copilot."]
    for key in sorted(hparams):
        name = key if _BARE_KEY.match(key) else json.dumps(key)
        value = hparams[key]
        lines.append(f"# {name} = (not set)" if value is None else f"{name} = {_toml_value(key, value)}")
    return "\n".join(lines) + "\n"


def read_hparams(text: str, where: str = "hyperparameter file") -> dict[str, HParamValue]:
    """Parse the file back; keys written as `(not set)` come back as None."""
    try:
        values: dict[str, HParamValue] = dict(tomllib.loads(text))
    except tomllib.TOMLDecodeError as exc:
        raise HistoryError(f"{where} is not valid TOML: {exc}", "restore it with `copilot rollback R`") from None
    for match in re.finditer(r"^# (\S+) = \(not set\)$", text, flags=re.MULTILINE):
        values.setdefault(match.group(1).strip('"'), None)
    return values
