"""Commit text and the hyperparameter file: what we write is what git and we read back."""

from __future__ import annotations

import math
import subprocess

import pytest

from copilot.errors import HistoryError
from copilot.history.hparams_file import hparams_path_for, hparams_to_toml, read_hparams
from copilot.history.messages import (
    SUBJECT_LIMIT,
    compose_message,
    format_metrics,
    parse_metrics,
    parse_round_label,
    parse_trailers,
    subject_line,
    summary_of,
)


def test_short_subject_is_kept_whole() -> None:
    assert subject_line("arch", 3, "add batch norm and residual blocks") == "arch(r3): add batch norm and residual blocks"


def test_long_subject_is_cut_at_a_word_within_72_characters() -> None:
    summary = "Adam at lr 1e-3 instead of SGD at 0.1 because the loss plateaued early and the gradients vanish"
    subject = subject_line("hparams", 12, summary)
    assert len(subject) <= SUBJECT_LIMIT
    assert subject.startswith("hparams(r12): Adam at lr 1e-3 instead of SGD")
    assert subject.endswith("…")
    cut_words = summary_of(subject).rstrip("…").split()
    assert cut_words == summary.split()[: len(cut_words)], "the cut falls between words"


def test_subject_is_one_line_even_from_a_multi_line_summary() -> None:
    assert subject_line("arch", 1, "first line\nsecond   line") == "arch(r1): first line second line"
    assert subject_line("arch", 1, "   ") == "arch(r1): (no summary)"


def test_metrics_round_trip_with_their_types() -> None:
    metrics = {"val_accuracy": 0.121, "val_loss": 2.3025851, "epoch": 4, "lr": 0.0, "grad": 1e-7}
    text = format_metrics(metrics)
    assert text.startswith("val_accuracy=0.121 val_loss=2.30259 epoch=4")
    parsed = parse_metrics(text)
    assert parsed["epoch"] == 4 and isinstance(parsed["epoch"], int)
    assert isinstance(parsed["lr"], float) and parsed["lr"] == 0.0
    assert parsed["grad"] == pytest.approx(1e-7)
    assert parsed["val_loss"] == pytest.approx(2.30259)


def test_nan_metric_survives_and_junk_is_skipped() -> None:
    assert math.isnan(parse_metrics(format_metrics({"val_loss": float("nan")}))["val_loss"])
    assert parse_metrics("val_accuracy=0.5 garbage epoch=x =3") == {"val_accuracy": 0.5}


@pytest.mark.parametrize("metrics", [{"bad name": 1.0}, {"val_accuracy": "high"}, {"val_accuracy": True}])
def test_bad_metrics_are_refused(metrics: dict) -> None:
    with pytest.raises(ValueError):
        format_metrics(metrics)


def test_git_interpret_trailers_reads_our_trailers() -> None:
    message = compose_message(
        "arch(r3): add batch norm",
        ["gradient norm of conv1 is tiny", "loss flat\nfor three epochs: no progress"],
        "Normalising activations keeps gradients in range.\n\nSecond paragraph: Key: looks like a trailer.",
        [
            ("Copilot-Run", "run-1"),
            ("Copilot-Round", "3"),
            ("Copilot-Before", "val_accuracy=0.121 val_loss=2.3 epoch=4"),
            ("Copilot-Verdict", "accepted"),
            ("Copilot-Empty", "  "),
        ],
    )
    parsed = subprocess.run(
        ["git", "interpret-trailers", "--parse"], input=message, capture_output=True, text=True, check=True
    ).stdout
    assert parse_trailers(parsed) == (
        ("Copilot-Run", "run-1"),
        ("Copilot-Round", "3"),
        ("Copilot-Before", "val_accuracy=0.121 val_loss=2.3 epoch=4"),
        ("Copilot-Verdict", "accepted"),
    )
    assert "- loss flat for three epochs: no progress" in message
    assert all(len(line) <= 72 for line in message.splitlines())


@pytest.mark.parametrize(("text", "number"), [("3", 3), ("r3", 3), ("R12", 12), (" r0 ", 0), ("x", None), ("r-1", None)])
def test_round_labels(text: str, number: int | None) -> None:
    assert parse_round_label(text) == number


def test_hparams_file_round_trips_every_kind_of_value() -> None:
    hparams = {"optimizer": 'Adam "fast"', "lr": 0.001, "epochs": 10, "grad_clip": None, "nesterov": True}
    text = hparams_to_toml(hparams)
    assert "lr = 0.001" in text and "# grad_clip = (not set)" in text
    assert read_hparams(text) == hparams
    assert text.index("epochs") < text.index("lr") < text.index("optimizer"), "sorted keys keep diffs line by line"


def test_hparams_file_refuses_nested_values_and_reports_bad_toml() -> None:
    with pytest.raises(ValueError, match="schedule"):
        hparams_to_toml({"schedule": {"kind": "step"}})  # type: ignore[dict-item]
    with pytest.raises(HistoryError, match="not valid TOML"):
        read_hparams("lr = = 1")


def test_hparams_file_sits_next_to_the_model() -> None:
    assert hparams_path_for("models/net.py") == "models/net.hparams.toml"
    assert hparams_path_for("net.py") == "net.hparams.toml"
