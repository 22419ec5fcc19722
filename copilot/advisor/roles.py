"""The advisor's roles, as in the published study: assessor, coder, checker/fixer, reporter.

`AdvisorRoles` is what the LangGraph workflow calls. Two kinds implement it: the
offline rule engine (deterministic, no network) and the LLM roles that turn a
snapshot into prompts for an `LLMProvider`. Each role can come from a different
implementation (a strong model for code, a small fast one for checks and reports),
so the graph never asks which one it is talking to. Every reply carries the tokens
it cost (none for the rules), which the ledger and the report add up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from copilot.advisor.schemas import (
    ArchitectureAnswer,
    Diagnosis,
    HParamAnswer,
    SandboxReport,
    TokenUsage,
)

if TYPE_CHECKING:
    from copilot.advisor.snapshot import TrainingSnapshot

ValueT = TypeVar("ValueT")


@dataclass(frozen=True)
class RoleReply(Generic[ValueT]):
    value: ValueT
    usage: tuple[TokenUsage, ...] = ()
    # Shown to the human, never to an LLM: e.g. a provider was unavailable and the rules answered.
    notices: tuple[str, ...] = ()


class AdvisorRoles(Protocol):
    name: str  # "offline", "bedrock:<model id>", "openai:<model>"

    def assess(self, snapshot: TrainingSnapshot) -> RoleReply[Diagnosis]: ...

    def propose_hparams(
        self, snapshot: TrainingSnapshot, diagnosis: Diagnosis, feedback: str | None
    ) -> RoleReply[HParamAnswer]: ...

    def write_architecture(
        self, snapshot: TrainingSnapshot, diagnosis: Diagnosis, feedback: str | None
    ) -> RoleReply[ArchitectureAnswer]: ...

    def fix_architecture(
        self, snapshot: TrainingSnapshot, answer: ArchitectureAnswer, report: SandboxReport
    ) -> RoleReply[ArchitectureAnswer]: ...

    def write_report(self, snapshot: TrainingSnapshot, diagnosis: Diagnosis) -> RoleReply[str]: ...
