"""AdvisorSession: what the app and the CLI use to run the advisor's workflow.

One session holds the compiled graph and its checkpointer. `open(run, ...)` keeps the
checkpoint in the run folder (`advisor.sqlite`), so a proposal waiting at the human
gate survives a restart: `pending()` finds it again without calling any provider, and
`decide(verdict)` resumes the graph. Each assessment is its own LangGraph thread; only
the newest thread can be waiting, because `assess` refuses to start another while a
proposal waits; `withdraw(reason)` closes a waiting gate whose proposal no longer fits the
run (its verdict is "withdrawn", recorded in the ledger, applied by nobody). An assessment ends in one of: a proposal waiting at the gate, a finish
report (`FinishReported`), nothing to change (`Continued`: training goes on, nothing is asked,
nothing is written) or no proposal (`Failed`).

`in_memory(...)` is for `copilot diagnose`: the same workflow with a checkpointer that
lives only as long as the session, so a dry diagnosis leaves no pending gate in the
run folder for the app to find, and writes no ledger line.

The session returns outcomes; it applies nothing. Committing an accepted model file,
sending `SetHParams`/`SwapModel` to the trainer, and recording the commit in the
ledger are the caller's.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command
from pydantic import BaseModel, ConfigDict, Field

from copilot.advisor.graph import (
    CodeChecker,
    PendingProposal,
    TrialRunnerFn,
    build_graph,
    checkpoint_serializer,
    diagnosis_with_notices,
)
from copilot.advisor.roles import AdvisorRoles
from copilot.advisor.schemas import (
    Diagnosis,
    FinishProposal,
    LedgerEntry,
    Proposal,
    SandboxReport,
    TokenUsage,
    Verdict,
)
from copilot.advisor.snapshot import TrainingSnapshot
from copilot.config import Settings
from copilot.errors import AdvisorError
from copilot.run_folder import RunFolder


class Outcome(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FinishReported(Outcome):
    """Training looks healthy: a report, nothing to decide."""

    kind: Literal["finished"] = "finished"
    diagnosis: Diagnosis
    proposal: FinishProposal
    entry: LedgerEntry

    @property
    def tokens(self) -> list[TokenUsage]:
        return self.entry.tokens


class Continued(Outcome):
    """Training is healthy or still improving: no proposal, nothing to decide, no ledger line."""

    kind: Literal["continued"] = "continued"
    diagnosis: Diagnosis
    tokens: list[TokenUsage] = Field(default_factory=list)


class Failed(Outcome):
    """No proposal could be made (its check kept failing); nothing to decide."""

    kind: Literal["failed"] = "failed"
    diagnosis: Diagnosis
    message: str
    report: SandboxReport | None = None  # the last sandbox report, for an architecture route
    tokens: list[TokenUsage] = Field(default_factory=list)


class Decided(Outcome):
    """The human's verdict on a proposal, as recorded in the ledger."""

    proposal: Proposal
    verdict: Verdict
    entry: LedgerEntry


class Accepted(Decided):
    """Apply `proposal`: the one the human accepted, or their edit of it (already checked)."""

    kind: Literal["accepted"] = "accepted"


class Rejected(Decided):
    kind: Literal["rejected"] = "rejected"


class Withdrawn(Decided):
    """Copilot closed the gate: what the proposal was made for changed before the human decided."""

    kind: Literal["withdrawn"] = "withdrawn"


Assessment = PendingProposal | FinishReported | Continued | Failed
Decision = Accepted | Rejected | PendingProposal  # pending again: an edit did not pass its check


def _outcome_of(values: dict[str, Any]) -> FinishReported | Continued | Failed | Accepted | Rejected | Withdrawn:
    """What a finished thread ended with, read from its final state."""
    if values["diagnosis"].route == "continue" and values.get("proposal") is None:
        return Continued(diagnosis=diagnosis_with_notices(values), tokens=values.get("tokens", []))
    if values.get("failure"):
        return Failed(
            diagnosis=diagnosis_with_notices(values),
            message=values["failure"],
            report=values.get("code_report"),
            tokens=values.get("tokens", []),
        )
    entry: LedgerEntry = values["entry"]
    verdict: Verdict | None = values.get("verdict")
    if verdict is None:
        return FinishReported(diagnosis=entry.diagnosis, proposal=values["proposal"], entry=entry)
    if verdict.decision == "reject":
        return Rejected(proposal=values["proposal"], verdict=verdict, entry=entry)
    if verdict.decision == "withdrawn":
        return Withdrawn(proposal=values["proposal"], verdict=verdict, entry=entry)
    return Accepted(proposal=values.get("edited_proposal") or values["proposal"], verdict=verdict, entry=entry)


class _ClosingSqliteSaver(SqliteSaver):
    """SqliteSaver whose cursor is closed even when its commit fails (a full disk).

    SqliteSaver closes the cursor after the commit, so a failed commit leaves it open, held
    by the failure's traceback in LangGraph's futures; while a cursor holds its statement,
    sqlite3 defers closing the connection, and `advisor.sqlite` (with its -wal and -shm)
    stays open after `AdvisorSession.close` until a garbage collection happens to free it.
    """

    @contextmanager
    def cursor(self, transaction: bool = True) -> Iterator[sqlite3.Cursor]:
        with self.lock:
            self.setup()
            cursor = self.conn.cursor()
            try:
                yield cursor
            finally:
                try:
                    if transaction:
                        self.conn.commit()
                finally:
                    cursor.close()


class AdvisorSession:
    """The advisor's workflow for one run: assess, show what waits at the gate, take the verdict."""

    def __init__(self, graph: CompiledStateGraph, checkpointer: BaseCheckpointSaver, connection: sqlite3.Connection | None) -> None:
        self._graph = graph
        self._connection = connection
        # Checkpoint ids are time-ordered across threads: the newest belongs to the latest assessment.
        newest = next(iter(checkpointer.list(None, limit=1)), None)
        self._thread_id: str | None = newest.config["configurable"]["thread_id"] if newest else None

    @classmethod
    def open(
        cls,
        run: RunFolder,
        roles: AdvisorRoles,
        settings: Settings,
        *,
        check_code: CodeChecker | None = None,
        trial_with: TrialRunnerFn | None = None,
    ) -> AdvisorSession:
        """A session whose checkpoint (and pending proposal) lives in the run folder; `trial_with` measures proposals."""
        run.path.mkdir(parents=True, exist_ok=True)
        # One connection shared by the app's threads: SqliteSaver serialises access with its own lock.
        connection = sqlite3.connect(run.advisor_db, check_same_thread=False)
        checkpointer = _ClosingSqliteSaver(connection, serde=checkpoint_serializer())
        graph = build_graph(roles, settings, checkpointer, run=run, check_code=check_code, trial_with=trial_with)
        return cls(graph, checkpointer, connection)

    @classmethod
    def in_memory(cls, roles: AdvisorRoles, settings: Settings, *, check_code: CodeChecker | None = None) -> AdvisorSession:
        """A session that writes nothing anywhere: for a dry diagnosis."""
        checkpointer = InMemorySaver(serde=checkpoint_serializer())
        return cls(build_graph(roles, settings, checkpointer, check_code=check_code), checkpointer, None)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def __enter__(self) -> AdvisorSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def assess(self, snapshot: TrainingSnapshot) -> Assessment:
        """Diagnose and propose: runs until the human gate waits, or to the end (finish, failure)."""
        if self.pending() is not None:
            raise AdvisorError(
                "a proposal is still waiting for your decision",
                "accept, reject or edit it before asking the advisor again",
            )
        self._thread_id = f"{snapshot.run_id}/r{snapshot.round}/e{snapshot.epoch}/{uuid.uuid4().hex[:8]}"
        return self._run({"snapshot": snapshot, "tokens": [], "notices": []})

    def pending(self) -> PendingProposal | None:
        """The proposal waiting at the gate, read from the checkpoint; calls no provider."""
        if self._thread_id is None:
            return None
        interrupts = self._graph.get_state(self._config()).interrupts
        return interrupts[0].value if interrupts else None

    def decide(self, verdict: Verdict) -> Decision:
        """Resume the gate with the human's verdict; an edit that fails its check comes back pending."""
        if verdict.decision == "withdrawn":
            raise AdvisorError("a withdrawal is copilot's, not a verdict", "accept, reject or edit the proposal")
        if self.pending() is None:
            raise AdvisorError("no proposal is waiting for a decision", "ask the advisor for an assessment first")
        return self._run(Command(resume=verdict))

    def withdraw(self, reason: str) -> Withdrawn:
        """Close the waiting gate: what the proposal was made for changed (`reason` says how).

        The ledger records it with a "withdrawn" verdict, which nothing applies and the
        advisor's memory does not count as a rejection; `assess` may run again at once.
        """
        if self.pending() is None:
            raise AdvisorError("no proposal is waiting to be withdrawn", "ask the advisor for an assessment first")
        outcome = self._run(Command(resume=Verdict(decision="withdrawn", reason=reason)))
        assert isinstance(outcome, Withdrawn), f"a withdrawal ended as {type(outcome).__name__}"
        return outcome

    def recover(self) -> Decision | Withdrawn | None:
        """Finish a decision a crash interrupted after the gate (the ledger write is idempotent).

        Returns the outcome the caller never received, or None when nothing was cut short.
        Work before the gate is not resumed: it would call the providers again; a new
        assessment starts afresh instead.
        """
        if self._thread_id is None:
            return None
        state = self._graph.get_state(self._config())
        if not state.next or state.interrupts or state.values.get("verdict") is None:
            return None
        return self._run(None)

    def last_decision(self) -> Accepted | Rejected | None:
        """The verdict the newest assessment ended with, read from its checkpoint (None when it
        did not end with one): what a caller that died before applying it must still apply."""
        if self._thread_id is None:
            return None
        state = self._graph.get_state(self._config())
        if state.next or state.interrupts or state.values.get("verdict") is None or "entry" not in state.values:
            return None
        outcome = _outcome_of(state.values)
        return outcome if isinstance(outcome, (Accepted, Rejected)) else None

    def _run(self, graph_input: Any) -> Any:
        config = self._config()
        # "sync": each step is on disk before the next starts, so a crash loses at most one step.
        self._graph.invoke(graph_input, config, durability="sync")
        state = self._graph.get_state(config)
        if state.interrupts:
            return state.interrupts[0].value
        return _outcome_of(state.values)

    def _config(self) -> dict[str, Any]:
        return {"configurable": {"thread_id": self._thread_id}}
