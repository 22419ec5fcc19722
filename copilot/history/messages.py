"""The text of a round commit: subject, body and `Copilot-*` trailers, written and read back.

A round commit reads like a lab-notebook entry in `git log`:

    arch(r3): add batch norm and residual blocks

    Findings:
    - gradient norm of conv1 is 1e-6 of the head's: vanishing gradients

    Rationale:
    Normalising activations keeps every layer's gradients in range.

    Copilot-Run: 20261120-234500-bad-cnn-3f2a
    Copilot-Round: 3
    Copilot-Kind: arch
    Copilot-Advisor: offline
    Copilot-Before: val_accuracy=0.121 val_loss=2.3 epoch=4
    Copilot-Verdict: accepted
    Copilot-Proposal: 20261120-234500-bad-cnn-3f2a/r2/1763682300.25

The trailers are the machine-readable part; git's own trailer parser
(`%(trailers)` in `git log`, `git interpret-trailers --parse`) reads them back.
This module only turns values into text and text into values; it runs no git.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterable, Mapping

SUBJECT_LIMIT = 72
BODY_WIDTH = 72
TRAILER_PREFIX = "Copilot-"
_METRIC_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_INTEGER = re.compile(r"^[+-]?\d+$")
_SUBJECT_PREFIX = re.compile(r"^[a-z]+\(r\d+\): ")


def one_line(text: str) -> str:
    """Collapse every run of whitespace, newlines included, into one space."""
    return " ".join(text.split())


def subject_line(kind: str, round_number: int, summary: str) -> str:
    """`kind(rN): summary`, cut at a word boundary so the whole line fits in 72 characters."""
    prefix = f"{kind}(r{round_number}): "
    summary = one_line(summary) or "(no summary)"
    room = SUBJECT_LIMIT - len(prefix)
    if len(summary) > room:
        cut = summary[: room - 1]
        if " " in cut[room // 2 :]:
            cut = cut[: cut.rindex(" ")]
        summary = cut.rstrip(" ,;:.-") + "…"
    return prefix + summary


def summary_of(subject: str) -> str:
    """The subject without its `kind(rN): ` prefix."""
    return _SUBJECT_PREFIX.sub("", subject, count=1)


def format_metrics(metrics: Mapping[str, float | int]) -> str:
    """`val_accuracy=0.121 val_loss=2.3 epoch=4`: the known metrics first, then the rest by name."""
    known = ("val_accuracy", "val_loss", "epoch")
    ordered = [name for name in known if name in metrics]
    ordered += sorted(name for name in metrics if name not in known)
    parts = []
    for name in ordered:
        if not _METRIC_NAME.match(name):
            raise ValueError(f"metric name {name!r} must be letters, digits and underscores")
        value = metrics[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"metric {name!r} must be a number, not {value!r}")
        parts.append(f"{name}={value}" if isinstance(value, int) else f"{name}={_float_text(value)}")
    return " ".join(parts)


def _float_text(value: float) -> str:
    """Six significant digits, and always recognisably a float (`0.0`, not `0`), so types round-trip."""
    text = f"{value:.6g}"
    return text if any(mark in text for mark in ".eninf") else f"{text}.0"


# Metric names older rounds were committed with, read as today's (events' names).
RENAMED_METRICS = {"val_acc": "val_accuracy", "unchanged_val_acc": "unchanged_val_accuracy"}


def parse_metrics(text: str) -> dict[str, float | int]:
    """Read `format_metrics` back; a piece that is not `name=number` is skipped, not fatal."""
    metrics: dict[str, float | int] = {}
    for piece in text.split():
        name, sep, value = piece.partition("=")
        if not sep or not _METRIC_NAME.match(name):
            continue
        name = RENAMED_METRICS.get(name, name)
        try:
            metrics[name] = int(value) if _INTEGER.match(value) else float(value)
        except ValueError:
            continue
    return metrics


def _wrapped_paragraphs(text: str) -> list[str]:
    paragraphs = [one_line(chunk) for chunk in re.split(r"\n\s*\n", text.strip())]
    return [textwrap.fill(chunk, BODY_WIDTH) for chunk in paragraphs if chunk]


def compose_message(
    subject: str, findings: Iterable[str], rationale: str, trailers: Iterable[tuple[str, str]]
) -> str:
    """Subject, blank line, findings and rationale wrapped at 72 columns, then the trailers."""
    sections = []
    bullets = [
        textwrap.fill(one_line(finding), BODY_WIDTH, initial_indent="- ", subsequent_indent="  ")
        for finding in findings
        if one_line(finding)
    ]
    if bullets:
        sections.append("Findings:\n" + "\n".join(bullets))
    rationale_paragraphs = _wrapped_paragraphs(rationale)
    if rationale_paragraphs:
        sections.append("Rationale:\n" + "\n\n".join(rationale_paragraphs))
    trailer_lines = [f"{key}: {one_line(value)}" for key, value in trailers if one_line(value)]
    sections.append("\n".join(trailer_lines))
    return "\n\n".join([one_line(subject), *sections]) + "\n"


def parse_trailers(block: str) -> tuple[tuple[str, str], ...]:
    """`Key: value` lines as printed by git's `%(trailers:only,unfold)`, in order."""
    pairs = []
    for line in block.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() and " " not in key.strip():
            pairs.append((key.strip(), value.strip()))
    return tuple(pairs)


def copilot_trailers(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The `Copilot-*` trailers by their short name (`Run`, `Round`, ...); the last one wins."""
    return {key[len(TRAILER_PREFIX) :]: value for key, value in pairs if key.startswith(TRAILER_PREFIX)}


def parse_round_label(text: str) -> int | None:
    """`3`, `r3` or `R3` -> 3; anything else -> None."""
    match = re.fullmatch(r"[rR]?(\d+)", text.strip())
    return int(match.group(1)) if match else None

