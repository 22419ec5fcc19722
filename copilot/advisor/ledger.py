"""The ledger: `ledger.jsonl` in the run folder, every decided proposal and what it cost.

One JSON line per `LedgerEntry`, append-only. The advisor's workflow appends an entry
after the human's verdict (or after a finish report, which needs no verdict, so its
`verdict` is None); pending proposals are not here, they wait at the gate in the
SQLite checkpoint. The next assessment reads the ledger back (the rejection reasons
and the tokens spent go into the snapshot), and so does the report.

An entry is identified by (run id, round, time): `time` is fixed when the proposal is
made, before the gate, so a workflow step that re-runs after a crash appends nothing
new. A later line with the same identity supersedes an earlier one, which is how a
caller records the commit of an applied proposal without rewriting the file:
`append_entry(run, entry.model_copy(update={"commit": sha}))`. The same identity,
as `proposal_id`, is the round commit's `Copilot-Proposal` trailer, so an accepted
entry without a commit can be completed after a crash without committing it twice.

NaN and infinity are data here (an exploding loss as evidence), so lines are written
with Python's JSON constants and read back as floats.

The ledger is also the advisor's memory: `tried_changes` lists every change applied or
rejected in the run, and `same_code` / `same_hparams` say when a new proposal is one of
them (the same module apart from comments and formatting, or the same values within
`SAME_VALUE_TOLERANCE`), so it is never proposed again. A proposal copilot withdrew
(its model or state changed before the human decided) is not among them. This module does no advising.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import os
import threading
from collections.abc import Mapping, Sequence
from typing import BinaryIO

from pydantic import BaseModel, ConfigDict, ValidationError

from copilot.advisor.schemas import FinishProposal, HParamChange, HParamProposal, LedgerEntry
from copilot.errors import AdvisorError, first_line
from copilot.run_folder import RunFolder

EntryKey = tuple[str, int, float]

# The app's advisor worker and a resumed workflow may append from different threads.
_append_lock = threading.Lock()


def entry_key(entry: LedgerEntry) -> EntryKey:
    return (entry.run_id, entry.round, entry.time)


def proposal_id(entry: LedgerEntry) -> str:
    """The entry's identity as one token: the `Copilot-Proposal` trailer of the round that applies it."""
    return f"{entry.run_id}/r{entry.round}/{entry.time!r}"


def _line(entry: LedgerEntry) -> str:
    # model_dump keeps NaN as a float; pydantic's own JSON would write it as null.
    return json.dumps(entry.model_dump(), allow_nan=True, separators=(",", ":"))


def _read_lines(run: RunFolder) -> list[str]:
    if not run.ledger.exists():
        return []
    text = run.ledger.read_text(encoding="utf-8")
    lines = text.splitlines()
    if lines and not text.endswith("\n"):
        lines.pop()  # a line cut short by a crash mid-write: never a whole entry
    return [line for line in lines if line.strip()]


def read_ledger(run: RunFolder) -> list[LedgerEntry]:
    """Every entry in the order first written; a superseding line replaces its earlier version."""
    entries: dict[EntryKey, LedgerEntry] = {}
    for number, line in enumerate(_read_lines(run), start=1):
        try:
            entry = LedgerEntry.model_validate(json.loads(line))
        except (ValueError, ValidationError) as exc:
            raise AdvisorError(
                f"{run.ledger} line {number} is not a ledger entry: {first_line(exc)}",
                "fix or delete that line; the ledger is plain JSON lines",
            ) from None
        entries[entry_key(entry)] = entry
    return list(entries.values())


def entry_of_proposal(run: RunFolder, identity: str) -> LedgerEntry | None:
    """The entry whose `proposal_id` is `identity` (a round's `Copilot-Proposal` trailer), if on record."""
    return next((entry for entry in read_ledger(run) if proposal_id(entry) == identity), None)


def append_entry(run: RunFolder, entry: LedgerEntry) -> bool:
    """Append `entry` unless the ledger already holds exactly it; True when a line was written."""
    line = _line(entry)
    with _append_lock:
        current = {entry_key(existing): existing for existing in read_ledger(run)}
        if entry_key(entry) in current and _line(current[entry_key(entry)]) == line:
            return False  # compared as text: NaN evidence is equal to itself there
        run.path.mkdir(parents=True, exist_ok=True)
        with run.ledger.open("ab+") as ledger:
            _drop_cut_line(ledger)
            ledger.write((line + "\n").encode("utf-8"))
        return True


def _drop_cut_line(ledger: BinaryIO) -> None:
    """Remove a last line a crash cut short, so the next entry starts on a line of its own."""
    size = ledger.seek(0, os.SEEK_END)
    if size == 0:
        return
    ledger.seek(0)
    content = ledger.read()
    if content.endswith(b"\n"):
        return
    ledger.truncate(content.rfind(b"\n") + 1)
    ledger.seek(0, os.SEEK_END)


# --------------------------------------------------------------------------- memory

# Two hyperparameter values within 1% of each other are the same proposal: the rules round
# rates to 3 significant figures, so 0.00300 and 0.003 must match, while a real step (x0.5,
# x0.3) is far outside it. Our own threshold.
SAME_VALUE_TOLERANCE = 0.01

HParamValues = Mapping[str, float | int | str]


def code_fingerprint(code: str) -> str:
    """A digest of the module's syntax tree: comments, blank lines and formatting do not change it.

    Code that does not parse is compared as its stripped text.
    """
    try:
        normalised = ast.dump(ast.parse(code))
    except SyntaxError:
        normalised = code.strip()
    return hashlib.sha256(normalised.encode("utf-8")).hexdigest()


def same_code(a: str, b: str) -> bool:
    return code_fingerprint(a) == code_fingerprint(b)


def same_hparams(a: HParamValues, b: HParamValues) -> bool:
    """The same keys with the same values, numbers within SAME_VALUE_TOLERANCE of each other."""
    if a.keys() != b.keys():
        return False
    for key, left in a.items():
        right = b[key]
        if isinstance(left, (int, float)) and isinstance(right, (int, float)) and not isinstance(left, bool):
            if not math.isclose(left, right, rel_tol=SAME_VALUE_TOLERANCE):
                return False
        elif left != right:
            return False
    return True


class TriedChange(BaseModel):
    """A change applied or rejected in this run: its hyperparameter values or its module's fingerprint."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    round: int  # the round the proposal was made in
    decision: str  # "accept", "edit" or "reject"
    hparams: dict[str, float | int | str] | None = None
    code_fingerprint: str | None = None

    def describe(self) -> str:
        return f"rejected after round {self.round}" if self.decision == "reject" else f"applied as round {self.round + 1}"


def tried_changes(entries: Sequence[LedgerEntry]) -> list[TriedChange]:
    """Every change the human decided on: as proposed and, for an edit, as edited (not a withdrawn one)."""
    tried: list[TriedChange] = []
    for entry in entries:
        verdict, proposal = entry.verdict, entry.proposal
        if verdict is None or verdict.decision == "withdrawn" or isinstance(proposal, FinishProposal):
            continue  # a withdrawn change was never decided on: it may be proposed again
        if isinstance(proposal, HParamProposal):
            changes = [proposal.change] + ([verdict.edited_change] if verdict.edited_change else [])
            tried += [TriedChange(round=entry.round, decision=verdict.decision, hparams=change.changes()) for change in changes]
        else:
            codes = [proposal.code] + ([verdict.edited_code] if verdict.edited_code else [])
            tried += [TriedChange(round=entry.round, decision=verdict.decision, code_fingerprint=code_fingerprint(code)) for code in codes]
    return tried


def tried_before(tried: Sequence[TriedChange], *, hparams: HParamChange | None = None, code: str | None = None) -> TriedChange | None:
    """The earlier change this one repeats, or None."""
    fingerprint = code_fingerprint(code) if code is not None else None
    for change in tried:
        if hparams is not None and change.hparams is not None and same_hparams(change.hparams, hparams.changes()):
            return change
        if fingerprint is not None and change.code_fingerprint == fingerprint:
            return change
    return None
