"""build_advisor: the `AdvisorRoles` the settings ask for, one implementation per role.

Each role (assessor, coder, checker/fixer, reporter) names its provider and model in
the settings (`settings.role(...)`): the offline rules, Bedrock or an OpenAI-compatible
server. Roles on the same provider share one `LLMRoles`. When a provider cannot be
reached after its own retries (`ProviderUnavailable`), or its model gives nothing
usable (`UnusableAnswer`: an answer that fails its schema twice, a conversation past
its context), that one call is answered by the offline rules instead and the reply
carries a notice the human sees; the next call tries the provider again. Errors the
user must fix (a refused key or model ID) are not hidden: they reach the caller.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, TypeVar

from copilot.advisor.llm.providers.base import LLMProvider, ProviderUnavailable, UnusableAnswer
from copilot.advisor.llm.providers.factory import make_provider
from copilot.advisor.llm.roles import LLMRoles
from copilot.advisor.offline.advisor import OfflineAdvisor
from copilot.advisor.roles import AdvisorRoles, RoleReply
from copilot.advisor.schemas import (
    ArchitectureAnswer,
    Diagnosis,
    HParamAnswer,
    Role,
    SandboxReport,
)
from copilot.config import Settings

if TYPE_CHECKING:
    from copilot.advisor.snapshot import TrainingSnapshot

ROLES: tuple[Role, ...] = ("assessor", "coder", "checker", "reporter")

ValueT = TypeVar("ValueT")


class PerRoleAdvisor:
    """`AdvisorRoles` whose every method goes to the implementation chosen for its role."""

    def __init__(self, by_role: Mapping[Role, AdvisorRoles], offline: AdvisorRoles) -> None:
        self.by_role = dict(by_role)
        self.offline = offline

    @property
    def name(self) -> str:
        """One name when every role asks the same advisor, else each role's; read anew, since
        a provider's label can change at its first call."""
        names = {roles.name for roles in self.by_role.values()}
        return names.pop() if len(names) == 1 else ", ".join(f"{role}={roles.name}" for role, roles in self.by_role.items())

    def _ask(self, role: Role, call: Callable[[AdvisorRoles], RoleReply[ValueT]]) -> RoleReply[ValueT]:
        chosen = self.by_role[role]
        try:
            return call(chosen)
        except (ProviderUnavailable, UnusableAnswer) as exc:
            reply = call(self.offline)
            what = "was unavailable for" if isinstance(exc, ProviderUnavailable) else "gave no usable answer as"
            notice = f"{chosen.name} {what} the {role} ({exc.message}); the offline rules answered instead"
            return RoleReply(reply.value, reply.usage, (*reply.notices, notice))

    def assess(self, snapshot: TrainingSnapshot) -> RoleReply[Diagnosis]:
        return self._ask("assessor", lambda roles: roles.assess(snapshot))

    def propose_hparams(
        self, snapshot: TrainingSnapshot, diagnosis: Diagnosis, feedback: str | None
    ) -> RoleReply[HParamAnswer]:
        return self._ask("assessor", lambda roles: roles.propose_hparams(snapshot, diagnosis, feedback))

    def write_architecture(
        self, snapshot: TrainingSnapshot, diagnosis: Diagnosis, feedback: str | None
    ) -> RoleReply[ArchitectureAnswer]:
        return self._ask("coder", lambda roles: roles.write_architecture(snapshot, diagnosis, feedback))

    def fix_architecture(
        self, snapshot: TrainingSnapshot, answer: ArchitectureAnswer, report: SandboxReport
    ) -> RoleReply[ArchitectureAnswer]:
        return self._ask("checker", lambda roles: roles.fix_architecture(snapshot, answer, report))

    def write_report(self, snapshot: TrainingSnapshot, diagnosis: Diagnosis) -> RoleReply[str]:
        return self._ask("reporter", lambda roles: roles.write_report(snapshot, diagnosis))


def build_advisor(settings: Settings, *, providers: Mapping[str, LLMProvider] | None = None) -> AdvisorRoles:
    """The roles the settings choose; `providers` replaces a named provider (a local server in tests)."""
    offline = OfflineAdvisor()
    llm_roles: dict[str, LLMRoles] = {}

    def roles_on(provider_name: str) -> AdvisorRoles:
        if provider_name == "offline":
            return offline
        if provider_name not in llm_roles:
            provider = (providers or {}).get(provider_name) or make_provider(provider_name, settings)
            llm_roles[provider_name] = LLMRoles(provider, settings)
        return llm_roles[provider_name]

    by_role = {role: roles_on(settings.role(role).provider or "offline") for role in ROLES}
    if all(roles is offline for roles in by_role.values()):
        return offline
    return PerRoleAdvisor(by_role, offline)
