"""The advisor's workflow as a LangGraph graph, assembled in one function (`build_graph`).

    assess ─► route ─┬─ continue:        END (nothing to change, nothing to decide: training goes on)
                     ├─ hyperparameters: propose_hparams ─► check_hparams ─► (asked again once) ─┐
                     ├─ architecture:    write_code ─► check_code ◄─► fix_code (≤ max_fix_rounds) ─┤
                     │                                                                           ▼
                     │    rules_beside (only where an LLM advises): the rules' own proposal joins ─┤
                     │                 it, or stands in where the LLM's path made none           ▼
                     │              trial: the proposal and the rules' next candidates, measured ─┤
                     │                     (none beat the unchanged run: rejected, "tried, no gain") ─► record
                     │                                                                           ▼
                     │                    human_gate: interrupt() ─► accept / reject / withdrawn ─► record ─► END
                     │                        ▲   └─ edit ─► check_edit ─┘ (passes)
                     │                        └──────────────┘ (fails: asked again with the report)
                     └─ finish:          write_report ─► record ─► END
    A check that still fails after its retries ends the run with `failure` set and no proposal,
    and so does a change already applied or rejected in this run (the ledger's memory);
    where an LLM advises, the rules' own proposal is tried first.

The trial node hands the candidates to the caller's `TrialRunnerFn` (the session forks
the run, holds its trainer and runs the trials); the measured winner becomes the
proposal, with its `TrialReport`. Without a runner (a dry diagnosis) or with trials off,
the proposal goes to the gate marked "not trialled".

Each node is a plain function of the state that returns the keys it changes. The rules
LangGraph imposes (see DESIGN.md): resuming after `interrupt()` re-runs the gate's node
from its first line, so the gate only builds what it shows and waits; every LLM call and
every sandbox run sits in another node; the only side effect, the ledger line, is in
`record`, after the verdict, and is idempotent because a re-run writes the same entry.
Applying an accepted change (git, trainer commands) is the caller's job, not the graph's.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal, TypedDict

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import interrupt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from copilot.advisor.factory import PerRoleAdvisor
from copilot.advisor.ledger import append_entry, same_code, tried_before
from copilot.advisor.llm.providers.base import describe_validation_error
from copilot.advisor.offline.codegen.edits import changes_only_initialisation
from copilot.advisor.offline.rules import candidate_changes, fresh_start, start_point
from copilot.advisor.roles import AdvisorRoles, RoleReply
from copilot.advisor.schemas import (
    ArchitectureAnswer,
    ArchitectureProposal,
    Diagnosis,
    FinishProposal,
    HParamAnswer,
    HParamProposal,
    LedgerEntry,
    Proposal,
    SandboxReport,
    StartPoint,
    TokenUsage,
    TrialReport,
    Verdict,
)
from copilot.advisor.snapshot import TrainingSnapshot
from copilot.config import Settings
from copilot.events import HParams, hparam_differences
from copilot.run_folder import RunFolder

# A proposal that fails its check is sent back this many times more (hyperparameters).
HPARAM_RETRIES = 1

CodeChecker = Callable[[str, TrainingSnapshot], SandboxReport]
# Measure candidates (the advisor's proposal first) against the unchanged run; the winner is named "c<k>".
TrialRunnerFn = Callable[[list[Proposal], TrainingSnapshot], TrialReport]


def candidate_arm(index: int) -> str:
    """The arm name of the candidate at `index` (0: the advisor's own proposal)."""
    return f"c{index + 1}"


class PendingProposal(BaseModel):
    """What the human gate shows while it waits: the interrupt's value."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["pending"] = "pending"
    diagnosis: Diagnosis
    proposal: Proposal
    edit_problem: str | None = None  # why the last edit was not taken, one line
    edit_report: SandboxReport | None = None  # the sandbox's report on edited code that failed
    tokens: list[TokenUsage] = Field(default_factory=list)
    epoch: int | None = None  # the epochs its evidence covers (None: shown before this was recorded)


class AdvisorState(TypedDict, total=False):
    snapshot: TrainingSnapshot
    diagnosis: Diagnosis
    hparam_answer: HParamAnswer
    hparam_asks: int
    feedback: str | None  # why the last hyperparameter answer was sent back
    code_answer: ArchitectureAnswer
    code_report: SandboxReport
    fix_rounds: int
    proposal: Proposal  # what the advisor proposes; the ledger keeps it as proposed
    rules_proposal: Proposal | None  # the offline rules' own, trialled beside an LLM's
    proposed_at: float  # fixed before the gate: the ledger entry's identity
    failure: str | None  # no proposal could be made: why, in one line
    verdict: Verdict
    edited_proposal: Proposal | None  # the human's edit, once it passed its check
    edit_problem: str | None
    edit_report: SandboxReport | None
    entry: LedgerEntry
    tokens: Annotated[list[TokenUsage], operator.add]
    notices: Annotated[list[str], operator.add]


# Everything the checkpoint stores at the top level of a channel, a write or an interrupt.
# Naming them lets the serializer rebuild exactly these classes and nothing else.
CHECKPOINTED_TYPES: tuple[type[BaseModel], ...] = (
    TrainingSnapshot,
    Diagnosis,
    HParamAnswer,
    ArchitectureAnswer,
    SandboxReport,
    HParamProposal,
    ArchitectureProposal,
    FinishProposal,
    Verdict,
    TokenUsage,
    LedgerEntry,
    PendingProposal,
)


def checkpoint_serializer() -> JsonPlusSerializer:
    """LangGraph's serializer, allowed to rebuild the advisor's own models from a checkpoint."""
    return JsonPlusSerializer(allowed_msgpack_modules=[(cls.__module__, cls.__name__) for cls in CHECKPOINTED_TYPES])


def sandbox_checker(settings: Settings) -> CodeChecker:
    """Check model code in the sandbox's child process, against the snapshot's model and data.

    The sandbox's template process starts now, so it has imported torch by the first check.
    """
    from copilot.advisor.sandbox.parent import check_model_code
    from copilot.advisor.sandbox.template import shared_template

    shared_template().start()

    def check(code: str, snapshot: TrainingSnapshot) -> SandboxReport:
        return check_model_code(
            code,
            model_name=snapshot.model_name,
            model_args=snapshot.model_args,
            data=snapshot.data,
            forward_contract=snapshot.forward_contract,
            settings=settings.sandbox,
        )

    return check


def diagnosis_with_notices(state: AdvisorState) -> Diagnosis:
    """The diagnosis with every notice the roles gave on the way (fallbacks), for the human, each once.

    Two calls of one role that both fall back give the same notice; the human needs it once.
    """
    diagnosis = state["diagnosis"]
    extra = [notice for notice in dict.fromkeys(state.get("notices", [])) if notice not in diagnosis.notices]
    return diagnosis.model_copy(update={"notices": [*diagnosis.notices, *extra]}) if extra else diagnosis


def _spent(reply: RoleReply) -> dict:
    return {"tokens": list(reply.usage), "notices": list(reply.notices)}


def hparam_proposal(answer: HParamAnswer, before: HParams, start_from: StartPoint | None = None) -> HParamProposal | str:
    """The proposal, or why the answer cannot be one; the answer is validated again, never trusted.

    `start_from`: where the change applies from when the weights it would start from are ruined.
    """
    try:
        checked = HParamAnswer.model_validate(answer.model_dump())
        after = HParams.model_validate(checked.change.apply_to(before).model_dump())
    except ValidationError as exc:
        return f"the change is not valid: {describe_validation_error(exc)}"
    if after == before:
        current = ", ".join(f"{key}={value}" for key, value in checked.change.changes().items())
        return f"the change sets {current}, which the run already uses; propose a change that changes something"
    return HParamProposal(
        summary=checked.summary,
        rationale=checked.rationale,
        change=checked.change,
        before=before,
        after=after,
        start_from=start_from,
    )


def architecture_proposal(answer: ArchitectureAnswer, report: SandboxReport, state: AdvisorState) -> ArchitectureProposal:
    snapshot = state["snapshot"]
    carry = not changes_only_initialisation(snapshot.source_code, answer.code)
    return ArchitectureProposal(
        summary=answer.summary,
        rationale=answer.rationale,
        changes=answer.changes,
        class_name=snapshot.class_name,
        file_name=snapshot.model_file_name,
        old_code=snapshot.source_code,
        code=answer.code,
        sandbox=report,
        fix_rounds=state.get("fix_rounds", 0),
        carry_weights=carry,
        start_from=None if carry else fresh_start(snapshot),
    )


@dataclass(frozen=True)
class AdvisorNodes:
    """The graph's nodes: what each step does with the state, given the roles and the settings."""

    roles: AdvisorRoles
    settings: Settings
    check_code_with: CodeChecker
    run: RunFolder | None  # where the ledger goes; None writes nothing (a dry diagnosis)
    trial_with: TrialRunnerFn | None = None  # None: proposals reach the gate not trialled
    # The offline rules, where an LLM advises: their own proposal is trialled beside the LLM's,
    # and stands in for it when the LLM's path made none. None: the rules are the advisor.
    rules: AdvisorRoles | None = None

    def assess(self, state: AdvisorState) -> dict:
        reply = self.roles.assess(state["snapshot"])
        return {"diagnosis": reply.value, **_spent(reply)}

    def propose_hparams(self, state: AdvisorState) -> dict:
        reply = self.roles.propose_hparams(state["snapshot"], state["diagnosis"], state.get("feedback"))
        return {"hparam_answer": reply.value, "hparam_asks": state.get("hparam_asks", 0) + 1, **_spent(reply)}

    def check_hparams(self, state: AdvisorState) -> dict:
        snapshot = state["snapshot"]
        checked = hparam_proposal(state["hparam_answer"], snapshot.hparams, start_point(snapshot))
        repeated = tried_before(snapshot.tried, hparams=checked.change) if isinstance(checked, HParamProposal) else None
        if repeated is not None:
            checked = f"the same change was {repeated.describe()} in this run; propose a different one"
        if isinstance(checked, HParamProposal):
            return {"proposal": checked, "proposed_at": time.time(), "feedback": None}
        if state["hparam_asks"] > HPARAM_RETRIES:
            return {"failure": f"no valid hyperparameter change after {state['hparam_asks']} answers: {checked}"}
        return {"feedback": checked}

    def write_code(self, state: AdvisorState) -> dict:
        reply = self.roles.write_architecture(state["snapshot"], state["diagnosis"], None)
        return {"code_answer": reply.value, "fix_rounds": 0, **_spent(reply)}

    def check_code(self, state: AdvisorState) -> dict:
        answer, snapshot = state["code_answer"], state["snapshot"]
        # Memory before the sandbox: a module already applied, rejected or trained now is no proposal.
        repeat = _repeat_of(snapshot, answer.code)
        if repeat is not None:
            return {"failure": f"the new model {repeat} (comments and formatting aside); nothing new to propose"}
        report = self.check_code_with(answer.code, snapshot)
        checked = {"code_report": report, "notices": [report.notice] if report.notice else []}
        if report.ok:
            proposal = architecture_proposal(answer, report, state)
            return {**checked, "proposal": proposal, "proposed_at": time.time()}
        if state["fix_rounds"] >= self.settings.advisor.max_fix_rounds:
            failure = (
                f"the new model still fails the sandbox after {state['fix_rounds']} fix rounds "
                f"({report.stage}: {report.message})"
            )
            return {**checked, "failure": failure}
        return checked

    def fix_code(self, state: AdvisorState) -> dict:
        reply = self.roles.fix_architecture(state["snapshot"], state["code_answer"], state["code_report"])
        return {"code_answer": reply.value, "fix_rounds": state["fix_rounds"] + 1, **_spent(reply)}

    def rules_beside(self, state: AdvisorState) -> dict:
        """The offline rules' own proposal for this snapshot, beside the LLM's.

        A weak LLM then costs a trial arm, never the run: its proposal is measured against the
        rules', and where its path made none (code that failed the sandbox after every fix
        round, a change invalid twice) the rules' proposal goes on in its place, saying so.
        """
        assert self.rules is not None  # the graph routes here only where an LLM advises
        theirs = state.get("proposal")
        if theirs is not None and (self.trial_with is None or not self.settings.trials.enabled):
            return {"rules_proposal": None}  # nothing would measure the two against each other
        snapshot = state["snapshot"]
        ours = self._rules_proposal(snapshot, self.rules.assess(snapshot).value)
        if theirs is None:
            if ours is None:
                return {"rules_proposal": None}
            notice = f"the LLM made no proposal ({state.get('failure')}); the offline rules' proposal stands in its place"
            return {"proposal": ours, "proposed_at": time.time(), "failure": None, "rules_proposal": None, "notices": [notice]}
        if ours is None or _same_change(ours, theirs):
            return {"rules_proposal": None}
        # One fork for every arm keeps the trial paired: the rules' change starts where the LLM's does.
        start_from = getattr(theirs, "start_from", None)
        return {"rules_proposal": ours.model_copy(update={"start_from": start_from})}

    def _rules_proposal(self, snapshot: TrainingSnapshot, diagnosis: Diagnosis) -> Proposal | None:
        """What the rules would propose on their own route, checked as an LLM's answer is; None
        where they would change nothing, or only repeat what this run already tried."""
        assert self.rules is not None
        if diagnosis.route == "hyperparameters":
            answer = self.rules.propose_hparams(snapshot, diagnosis, None).value
            checked = hparam_proposal(answer, snapshot.hparams, start_point(snapshot))
            if not isinstance(checked, HParamProposal) or tried_before(snapshot.tried, hparams=checked.change) is not None:
                return None
            return checked
        if diagnosis.route == "architecture":
            code = self.rules.write_architecture(snapshot, diagnosis, None).value
            if _repeat_of(snapshot, code.code) is not None:
                return None
            report = self.check_code_with(code.code, snapshot)
            return architecture_proposal(code, report, {"snapshot": snapshot}) if report.ok else None
        return None

    def trial(self, state: AdvisorState) -> dict:
        proposal = state["proposal"]
        if self.trial_with is None or not self.settings.trials.enabled:
            reason = "trials are off (--no-trials)" if not self.settings.trials.enabled else "a dry diagnosis runs no trials"
            return {"proposal": proposal.model_copy(update={"trials": TrialReport(status="not_trialled", reason=reason)})}
        beside = [rules] if (rules := state.get("rules_proposal")) is not None else []
        candidates = [proposal, *beside, *self._rule_candidates(state, proposal, beside)]
        report = self.trial_with(candidates, state["snapshot"])
        if report.status != "trialled":
            return {"proposal": proposal.model_copy(update={"trials": report})}
        if report.winner is not None:
            index = [candidate_arm(i) for i in range(len(candidates))].index(report.winner)
            return {"proposal": candidates[index].model_copy(update={"trials": report})}
        # Measured and beaten (or tied) by the unchanged run: not for the human, but remembered.
        verdict = Verdict(decision="reject", reason=f"tried, no gain: {report.reason}")
        return {"proposal": proposal.model_copy(update={"trials": report}), "verdict": verdict}

    def _rule_candidates(self, state: AdvisorState, proposal: Proposal, beside: list[Proposal]) -> list[HParamProposal]:
        """The rules' next hyperparameter changes for this diagnosis, valid and unlike the
        proposal and what already stands `beside` it, to fill the trial's candidates.

        They start where the proposal starts (one fork for every arm keeps the trial paired):
        beside a new model, from where the run stands.
        """
        snapshot = state["snapshot"]
        start_from = getattr(proposal, "start_from", None)
        wanted = self.settings.trials.max_candidates - 1 - len(beside)
        found: list[HParamProposal] = []
        for answer in candidate_changes(snapshot, state["diagnosis"], state.get("feedback")):
            if len(found) >= wanted:
                break
            checked = hparam_proposal(answer, snapshot.hparams, start_from)
            if isinstance(checked, HParamProposal) and not any(_same_change(checked, other) for other in [proposal, *beside, *found]):
                found.append(checked)
        return found

    def write_report(self, state: AdvisorState) -> dict:
        reply = self.roles.write_report(state["snapshot"], state["diagnosis"])
        summary = state["diagnosis"].summary or "training looks healthy; no change proposed"
        proposal = FinishProposal(summary=summary, report=reply.value)
        return {"proposal": proposal, "proposed_at": time.time(), **_spent(reply)}

    def human_gate(self, state: AdvisorState) -> dict:
        # Re-run from this line on every resume: build what the human sees, wait, nothing else.
        shown = PendingProposal(
            diagnosis=diagnosis_with_notices(state),
            proposal=state["proposal"],
            edit_problem=state.get("edit_problem"),
            edit_report=state.get("edit_report"),
            tokens=state.get("tokens", []),
            epoch=state["snapshot"].epoch,
        )
        verdict = interrupt(shown, response_schema=Verdict)
        return {"verdict": verdict}

    def check_edit(self, state: AdvisorState) -> dict:
        proposal, verdict = state["proposal"], state["verdict"]
        if isinstance(proposal, ArchitectureProposal) and verdict.edited_code is not None:
            report = self.check_code_with(verdict.edited_code, state["snapshot"])
            if not report.ok:
                return {"edit_problem": f"the edited code fails the sandbox ({report.stage}: {report.message})", "edit_report": report}
            # The human's code was not trialled: the measured figures belonged to the advisor's.
            carry = not changes_only_initialisation(proposal.old_code, verdict.edited_code)
            start = None if carry else fresh_start(state["snapshot"])
            update = {"code": verdict.edited_code, "sandbox": report, "trials": None, "carry_weights": carry, "start_from": start}
            edited = proposal.model_copy(update=update)
            return {"edited_proposal": edited, "edit_problem": None, "edit_report": None}
        if isinstance(proposal, HParamProposal) and verdict.edited_change is not None:
            edited_answer = HParamAnswer(summary=proposal.summary, rationale=proposal.rationale, change=verdict.edited_change)
            checked = hparam_proposal(edited_answer, proposal.before, proposal.start_from)
            if isinstance(checked, str):
                return {"edit_problem": f"the edited change is not taken: {checked}", "edit_report": None}
            # The subject, log line and history tell what is applied, not the advisor's summary of its own values.
            edited = checked.model_copy(update={"summary": hparam_differences(proposal.before, checked.after)})
            return {"edited_proposal": edited, "edit_problem": None, "edit_report": None}
        needed = {"architecture": "edited_code", "hyperparameters": "edited_change"}.get(proposal.kind)
        problem = f"an edit of this proposal needs {needed}" if needed else f"a {proposal.kind} proposal cannot be edited"
        return {"edit_problem": problem, "edit_report": None}

    def record(self, state: AdvisorState) -> dict:
        snapshot = state["snapshot"]
        entry = LedgerEntry(
            time=state["proposed_at"],
            run_id=snapshot.run_id,
            round=snapshot.round,
            epoch=snapshot.epoch,
            trigger=snapshot.trigger,
            diagnosis=diagnosis_with_notices(state),
            proposal=state["proposal"],
            verdict=state.get("verdict"),
            tokens=state.get("tokens", []),
        )
        if self.run is not None:
            append_entry(self.run, entry)
        return {"entry": entry}


def _repeat_of(snapshot: TrainingSnapshot, code: str) -> str | None:
    """Why `code` is no new proposal (a module this run applied, rejected or trains now), or None."""
    repeated = tried_before(snapshot.tried, code=code)
    if repeated is not None:
        return f"repeats a module {repeated.describe()}"
    return "is the model training now" if same_code(code, snapshot.source_code) else None


def _same_change(one: Proposal, other: Proposal) -> bool:
    """Whether two proposals would train the same thing: the same hyperparameters after, or the same module."""
    if isinstance(one, HParamProposal) and isinstance(other, HParamProposal):
        return one.after == other.after
    if isinstance(one, ArchitectureProposal) and isinstance(other, ArchitectureProposal):
        return same_code(one.code, other.code)
    return False


def _by_route(state: AdvisorState) -> str:
    return state["diagnosis"].route


def _after_check(state: AdvisorState) -> Literal["proposed", "failed", "retry"]:
    if state.get("proposal") is not None:
        return "proposed"
    return "failed" if state.get("failure") else "retry"


def _after_rules(state: AdvisorState) -> Literal["proposed", "failed"]:
    return "proposed" if state.get("proposal") is not None else "failed"


def _after_trial(state: AdvisorState) -> Literal["gate", "no_gain"]:
    return "no_gain" if state.get("verdict") is not None else "gate"


def _by_verdict(state: AdvisorState) -> Literal["edit", "decided"]:
    return "edit" if state["verdict"].decision == "edit" else "decided"


def _after_edit(state: AdvisorState) -> Literal["ask_again", "decided"]:
    return "ask_again" if state.get("edit_problem") else "decided"


def build_graph(
    roles: AdvisorRoles,
    settings: Settings,
    checkpointer: BaseCheckpointSaver,
    *,
    run: RunFolder | None = None,
    check_code: CodeChecker | None = None,
    trial_with: TrialRunnerFn | None = None,
) -> CompiledStateGraph:
    """The workflow, compiled with `checkpointer` (needed by the gate's interrupt).

    Where an LLM advises any role, the rules' own proposal joins every proposal on its way
    to the trial (`rules_beside`), and a path that made none ends there, not at END."""
    rules = roles.offline if isinstance(roles, PerRoleAdvisor) else None
    nodes = AdvisorNodes(roles, settings, check_code or sandbox_checker(settings), run, trial_with, rules)
    graph = StateGraph(AdvisorState)
    for name in (
        "assess", "propose_hparams", "check_hparams", "write_code", "check_code", "fix_code", "rules_beside",
        "trial", "write_report", "human_gate", "check_edit", "record",
    ):  # fmt: skip
        graph.add_node(name, getattr(nodes, name))
    checked = "rules_beside" if rules is not None else "trial"
    unchecked = "rules_beside" if rules is not None else END

    graph.add_edge(START, "assess")
    graph.add_conditional_edges(
        "assess",
        _by_route,
        {"hyperparameters": "propose_hparams", "architecture": "write_code", "finish": "write_report", "continue": END},
    )
    graph.add_edge("propose_hparams", "check_hparams")
    graph.add_conditional_edges(
        "check_hparams", _after_check, {"proposed": checked, "retry": "propose_hparams", "failed": unchecked}
    )
    graph.add_edge("write_code", "check_code")
    graph.add_conditional_edges("check_code", _after_check, {"proposed": checked, "retry": "fix_code", "failed": unchecked})
    graph.add_conditional_edges("rules_beside", _after_rules, {"proposed": "trial", "failed": END})
    graph.add_conditional_edges("trial", _after_trial, {"gate": "human_gate", "no_gain": "record"})
    graph.add_edge("fix_code", "check_code")
    graph.add_edge("write_report", "record")
    graph.add_conditional_edges("human_gate", _by_verdict, {"edit": "check_edit", "decided": "record"})
    graph.add_conditional_edges("check_edit", _after_edit, {"ask_again": "human_gate", "decided": "record"})
    graph.add_edge("record", END)
    return graph.compile(checkpointer=checkpointer)
