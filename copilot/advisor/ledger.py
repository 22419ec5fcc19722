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
with Python's JSON constants and read back as floats. This module does no advising.
"""

from __future__ import annotations

import json
import os
import threading
from typing import BinaryIO

from pydantic import ValidationError

from copilot.advisor.schemas import LedgerEntry
from copilot.errors import AdvisorError
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
                f"{run.ledger} line {number} is not a ledger entry: {str(exc).splitlines()[0]}",
                "fix or delete that line; the ledger is plain JSON lines",
            ) from None
        entries[entry_key(entry)] = entry
    return list(entries.values())


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
