"""The ledger: append-only JSON lines, idempotent appends, superseding lines, crash-cut lines."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from copilot.advisor.ledger import append_entry, read_ledger
from copilot.advisor.schemas import Diagnosis, Evidence, Finding, FinishProposal, LedgerEntry, Verdict
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
