"""The ledger: append-only JSON lines, idempotent appends, superseding lines, crash-cut lines."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from copilot.advisor.ledger import (
    SAME_VALUE_TOLERANCE,
    append_entry,
    code_fingerprint,
    read_ledger,
    same_code,
    same_hparams,
    tried_before,
    tried_changes,
)
from copilot.advisor.schemas import (
    ArchitectureProposal,
    Diagnosis,
    Evidence,
    Finding,
    FinishProposal,
    HParamChange,
    HParamProposal,
    LedgerEntry,
    SandboxReport,
    Verdict,
)
from copilot.events import HParams
from copilot.errors import AdvisorError
from copilot.run_folder import RunFolder
from tests.advisor.scripted import usage


def entry(time: float, *, decision: str = "reject", loss: float = 2.3) -> LedgerEntry:
    return LedgerEntry(
        time=time,
        run_id="run-1",
        round=0,
        epoch=2,
        trigger="nonfinite",
        diagnosis=Diagnosis(
            health="critical",
            route="finish",
            findings=[Finding(what="exploding loss", evidence=[Evidence(metric="loss", value=loss)], why="training diverged")],
        ),
        proposal=FinishProposal(summary="stop", report="# Report"),
        verdict=Verdict(decision=decision, reason="not yet"),
        tokens=[usage("assessor")],
    )


@pytest.fixture
def run(tmp_path: Path) -> RunFolder:
    return RunFolder(tmp_path / "run-1")


def test_entries_round_trip_in_order_with_non_finite_evidence(run):
    first, second = entry(1.5, loss=math.nan), entry(2.5, loss=math.inf)
    assert append_entry(run, first) and append_entry(run, second)
    read = read_ledger(run)
    assert [e.time for e in read] == [1.5, 2.5]
    assert math.isnan(read[0].diagnosis.findings[0].evidence[0].value)
    assert read[1].diagnosis.findings[0].evidence[0].value == math.inf
    assert read[1] == second


def test_appending_the_same_entry_again_writes_nothing(run):
    nan_entry = entry(1.5, loss=math.nan)  # NaN != NaN must not defeat the check
    assert append_entry(run, nan_entry)
    assert not append_entry(run, nan_entry)
    assert not append_entry(run, entry(1.5, loss=math.nan))
    assert len(run.ledger.read_text().splitlines()) == 1


def test_a_later_line_with_the_same_identity_supersedes_the_earlier(run):
    first, second = entry(1.5), entry(2.5)
    append_entry(run, first)
    append_entry(run, second)
    append_entry(run, first.model_copy(update={"commit": "abc123"}))
    read = read_ledger(run)
    assert [(e.time, e.commit) for e in read] == [(1.5, "abc123"), (2.5, None)]
    assert len(run.ledger.read_text().splitlines()) == 3


def test_a_line_cut_by_a_crash_is_ignored_then_replaced(run):
    append_entry(run, entry(1.5))
    with run.ledger.open("a", encoding="utf-8") as ledger:
        ledger.write('{"time": 2.5, "run_id": "ru')
    assert [e.time for e in read_ledger(run)] == [1.5]

    append_entry(run, entry(3.5))
    assert [e.time for e in read_ledger(run)] == [1.5, 3.5]
    assert len(run.ledger.read_text().splitlines()) == 2


def test_a_damaged_line_in_the_middle_is_an_error_naming_it(run):
    append_entry(run, entry(1.5))
    with run.ledger.open("a", encoding="utf-8") as ledger:
        ledger.write("not json\n")
    with pytest.raises(AdvisorError, match="line 2 is not a ledger entry") as raised:
        read_ledger(run)
    assert "delete that line" in raised.value.hint


def test_no_ledger_reads_as_empty(run):
    assert read_ledger(run) == []


def test_the_same_module_apart_from_comments_and_formatting_is_the_same_code():
    code = "import torch\n\n\nclass Net(torch.nn.Module):\n    def forward(self, x):\n        return x * 2\n"
    restyled = "# my net\nimport torch\nclass Net(torch.nn.Module):\n    def forward(self, x):  # doubles\n        return (x * 2)\n"
    assert same_code(code, restyled)
    assert not same_code(code, code.replace("x * 2", "x * 3"))
    assert code_fingerprint("def broken(:\n") == code_fingerprint("  def broken(:")  # unparsable: stripped text


def test_the_same_hyperparameters_within_the_tolerance_are_the_same_change():
    assert same_hparams({"optimizer": "Adam", "lr": 1e-3}, {"lr": 1.004e-3, "optimizer": "Adam"})
    assert not same_hparams({"lr": 1e-3}, {"lr": 1.1e-3})  # 10% apart: a real step
    assert not same_hparams({"lr": 1e-3}, {"lr": 1e-3, "grad_clip": 1.0})
    assert not same_hparams({"optimizer": "Adam"}, {"optimizer": "AdamW"})
    assert SAME_VALUE_TOLERANCE < 0.1


def test_tried_changes_are_every_decided_change_as_proposed_and_as_edited():
    report = SandboxReport(ok=True, stage="passed", message="passed")
    code = ArchitectureProposal(summary="s", rationale="r", changes=["c"], class_name="Net", file_name="net.py", old_code="", code="x = 1\n", sandbox=report)
    hparams = HParamProposal(summary="s", rationale="r", change=HParamChange(lr=0.01), before=HParams(), after=HParams(lr=0.01))
    diagnosis = Diagnosis(health="critical", route="hyperparameters")
    entries = [
        LedgerEntry(time=1.0, run_id="r", round=0, epoch=2, trigger="schedule", diagnosis=diagnosis, proposal=code, verdict=Verdict(decision="accept")),
        LedgerEntry(time=2.0, run_id="r", round=1, epoch=4, trigger="schedule", diagnosis=diagnosis, proposal=hparams,
                    verdict=Verdict(decision="edit", edited_change=HParamChange(lr=0.02))),
        LedgerEntry(time=3.0, run_id="r", round=2, epoch=6, trigger="schedule", diagnosis=diagnosis, proposal=hparams),  # undecided
    ]
    tried = tried_changes(entries)

    assert [change.describe() for change in tried] == ["applied as round 1", "applied as round 2", "applied as round 2"]
    assert tried_before(tried, code="x = 1  # same\n") == tried[0]
    assert tried_before(tried, hparams=HParamChange(lr=0.02)) == tried[2]
    assert tried_before(tried, hparams=HParamChange(lr=0.03)) is None
