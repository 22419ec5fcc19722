"""LLMRoles: the advisor's roles (assessor, coder, checker/fixer, reporter) as prompts to an LLM.

Each role turns a `TrainingSnapshot` (rendered by `to_prompt()`) and what the workflow
knows so far into one request to an `LLMProvider`: a forced tool whose input schema is
the pydantic model we expect, or free text for the report. The model for each role
comes from `settings.role(...)` (a strong model for assessing and writing code, a small
fast one for fixing and reporting). The provider owns transport, retries and the one
schema correction; this module owns only what is asked, and it runs nothing the LLM
writes: the workflow sends code to the sandbox.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar, get_args

from pydantic import BaseModel, Field, field_validator

from copilot.advisor.claims import checked_diagnosis
from copilot.advisor.llm.providers.base import LLMProvider
from copilot.advisor.roles import RoleReply
from copilot.advisor.schemas import (
    ArchitectureAnswer,
    Diagnosis,
    Finding,
    Health,
    HParamAnswer,
    ROUTE_DESCRIPTION,
    Role,
    Route,
    SandboxReport,
    Schema,
    at_most,
    few,
)
from copilot.advisor.snapshot import TrainingSnapshot
from copilot.config import Settings
from copilot.events import HParams, hparam_bounds

AnswerT = TypeVar("AnswerT", bound=BaseModel)

ASSESSOR_SYSTEM = """You are the assessor of a neural-network training co-pilot. You read measurements \
of a training run and say what is wrong, citing the numbers. Every finding must list the \
evidence it rests on (metric, measured value, threshold crossed) taken from the snapshot; \
findings without evidence are discarded. Choose one route: "hyperparameters" when the \
optimizer settings are the problem, "architecture" when the model itself must change \
(vanishing or exploding gradients through depth, saturating activations, no normalisation, \
a shape error), "continue" when training is healthy or still improving (no change; training \
goes on), "finish" only when it has converged (the validation loss no longer improves by more \
than its epoch-to-epoch noise) or the target is met. Never finish a run that is still improving. Prefer the smallest change that fixes \
the problem. Do not repeat a proposal the human rejected; respect their reasons."""

HPARAMS_SYSTEM = """You choose hyperparameters for a neural-network training run. Propose one \
concrete change that addresses the diagnosis: only the values that change, within the \
allowed ranges, and a short rationale. Do not propose what the human already rejected."""

CODER_SYSTEM = """You write PyTorch model modules for a training co-pilot. You return one complete \
Python module that replaces the user's model file. It must keep: the class name, the \
constructor's signature (the same arguments with the same defaults), the forward input and \
output contract, and a `loss_function(self, outputs, targets)` method if the original has \
one. It may import only the allowed modules, must not read files, the environment or the \
network, and must stay within the parameter budget. Explain each change in one line."""

FIXER_SYSTEM = """You fix PyTorch model modules that failed an automatic check. You are given the \
module and the check's structured report (stage, message, line, traceback, shapes). Return \
the complete corrected module, keeping the class name, the constructor's signature, the \
input and output contract and any `loss_function`. Change only what the failure requires."""

REPORTER_SYSTEM = """You write the short final report of a neural-network training run in \
Markdown: how it went (first, best and last metrics), what changed along the way and why, \
and what to try next. Cite numbers from the snapshot; no speculation beyond them."""


class AssessorAnswer(Schema):
    """What the assessor's forced tool returns: a diagnosis without the fields only copilot sets."""

    health: Health
    findings: list[Finding] = Field(
        description="the most important problems, each with its evidence; findings without evidence are discarded",
        json_schema_extra=few(4),
    )
    route: Route = Field(description=ROUTE_DESCRIPTION)
    confidence: float = Field(ge=0.0, le=1.0, description="how sure you are of the route, 0 to 1")
    summary: str = Field(description="one or two sentences for the status line", json_schema_extra=at_most(240))

    @field_validator("confidence", mode="before")
    @classmethod
    def _clamp_confidence(cls, value: object) -> object:
        """A number past 0..1 is the model's own certainty misstated (grammars do not bound numbers):
        clamped, not worth a correction round. Its claims are checked against the measurements anyway."""
        return min(max(value, 0.0), 1.0) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


@dataclass(frozen=True)
class Tool(Generic[AnswerT]):
    """A forced tool: the schema the answer must fit, named and described for the model."""

    name: str
    description: str
    schema: type[AnswerT]


REPORT_DIAGNOSIS = Tool("report_diagnosis", "Report the diagnosis of the training run, with evidence for every finding.", AssessorAnswer)
PROPOSE_HPARAMS = Tool("propose_hyperparameters", "Propose one change to the run's hyperparameters.", HParamAnswer)
WRITE_MODULE = Tool("write_model_module", "Return the complete new model module and what changed.", ArchitectureAnswer)
FIX_MODULE = Tool("fix_model_module", "Return the complete corrected model module.", ArchitectureAnswer)


def _hparam_ranges() -> str:
    lines = []
    for name, field in HParams.model_fields.items():
        limits = hparam_bounds(name)
        bounds = [f"{word} {limits[kind]}" for kind, word in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")) if kind in limits]
        lines.append(f"- {name}: {_shown_type(field.annotation)}" + (f" ({', '.join(bounds)})" if bounds else ""))
    return "\n".join(lines)


def _shown_type(annotation: Any) -> str:
    """`float`, `Optional[float]`, `Literal['SGD', ...]`: a field's type as the prompt shows it, its bounds aside."""
    members = get_args(annotation)
    if type(None) in members:
        return f"Optional[{_shown_type(next(member for member in members if member is not type(None)))}]"
    if getattr(annotation, "__metadata__", None) is not None:  # Annotated[float, Field(...)]: the bounds are listed apart
        annotation = annotation.__origin__
    return annotation.__name__ if isinstance(annotation, type) else str(annotation).replace("typing.", "")


def _join(*parts: str) -> str:
    return "\n".join(part for part in parts if part)


def _section(title: str, body: str) -> str:
    return f"## {title}\n{body.strip()}\n"


def _code_section(title: str, code: str) -> str:
    return _section(title, f"```python\n{code.rstrip()}\n```")


def _diagnosis_section(diagnosis: Diagnosis) -> str:
    return _section("Diagnosis", diagnosis.model_dump_json(exclude={"notices"}, indent=1))


class LLMRoles:
    """`AdvisorRoles` on one `LLMProvider`; each role asks with its own model."""

    def __init__(self, provider: LLMProvider, settings: Settings) -> None:
        self.provider = provider
        self.settings = settings

    @property
    def name(self) -> str:
        """The provider's label, read anew: a negotiating server settles at its first call.
        The model differs by role: settings.role(...) names it."""
        return self.provider.label

    def _model(self, role: Role) -> str:
        model = self.settings.role(role).model
        assert model is not None  # Settings.role always fills the model in
        return model

    def _ask(self, role: Role, system: str, prompt: str, tool: Tool[AnswerT]) -> RoleReply[AnswerT]:
        reply = self.provider.structured(
            role=role,
            model=self._model(role),
            system=system,
            prompt=prompt,
            schema=tool.schema,
            tool_name=tool.name,
            tool_description=tool.description,
        )
        return RoleReply(reply.value, (reply.usage,), reply.notices)

    def _contract(self, snapshot: TrainingSnapshot) -> str:
        data = snapshot.data
        arguments = ", ".join(f"{name}={value!r}" for name, value in snapshot.model_args.items()) or "(defaults)"
        sandbox = self.settings.sandbox
        built_by = (
            f"`{snapshot.model_name}`"
            if snapshot.model_name
            else "the file's build_model() where it defines one, else its one top-level nn.Module class"
        )
        forward = snapshot.forward_contract
        calls = (
            f"\n- forward: {'forward(x, targets=None), returning its own loss' if forward.passes_targets else 'forward(x)'}; "
            f"returns {forward.form} (the user's own code unpacks it: keep both)"
            if forward is not None
            else ""
        )
        return _section(
            "Contract the module must keep",
            f"""
- file: {snapshot.model_file_name}; class: {snapshot.class_name}; constructed with: {arguments}
- the run builds {built_by}: keep it{calls}
- input: a {data.input_dtype} tensor of shape [batch, {", ".join(map(str, data.input_shape))}] ({data.task}, data set '{data.name}')
- output: shape {list(data.expected_output(8))} for a batch of 8
- allowed imports: {", ".join(sandbox.allowed_imports)}
- at most {sandbox.max_params:,} parameters
""",
        )

    def assess(self, snapshot: TrainingSnapshot) -> RoleReply[Diagnosis]:
        prompt = snapshot.to_prompt(include_source=False) + "\nDiagnose this run and choose the route."
        reply = self._ask("assessor", ASSESSOR_SYSTEM, prompt, REPORT_DIAGNOSIS)
        diagnosis = checked_diagnosis(Diagnosis.model_validate(reply.value.model_dump()), snapshot)
        dropped = len(reply.value.findings) - len(diagnosis.findings)
        notices = (f"{dropped} finding(s) without evidence were dropped",) if dropped else ()
        return RoleReply(diagnosis, reply.usage, (*reply.notices, *notices))

    def propose_hparams(
        self, snapshot: TrainingSnapshot, diagnosis: Diagnosis, feedback: str | None
    ) -> RoleReply[HParamAnswer]:
        prompt = _join(
            snapshot.to_prompt(include_source=False),
            _diagnosis_section(diagnosis),
            _section("Current hyperparameters", snapshot.hparams.model_dump_json()),
            _section("Allowed values (give only the keys that change)", _hparam_ranges()),
            _section("Your previous answer was sent back", feedback) if feedback else "",
            "Propose one hyperparameter change.",
        )
        return self._ask("assessor", HPARAMS_SYSTEM, prompt, PROPOSE_HPARAMS)

    def write_architecture(
        self, snapshot: TrainingSnapshot, diagnosis: Diagnosis, feedback: str | None
    ) -> RoleReply[ArchitectureAnswer]:
        prompt = _join(
            snapshot.to_prompt(),  # with the current module's source
            _diagnosis_section(diagnosis),
            self._contract(snapshot),
            _section("Your previous answer was sent back", feedback) if feedback else "",
            "Write the complete new module.",
        )
        return self._ask("coder", CODER_SYSTEM, prompt, WRITE_MODULE)

    def fix_architecture(
        self, snapshot: TrainingSnapshot, answer: ArchitectureAnswer, report: SandboxReport
    ) -> RoleReply[ArchitectureAnswer]:
        prompt = _join(
            _code_section("Module that failed the check", answer.code),
            _section("Check report", report.model_dump_json(indent=1)),
            self._contract(snapshot),
            _section("What the module was meant to change", "\n".join(f"- {line}" for line in answer.changes)),
            "Return the complete corrected module.",
        )
        return self._ask("checker", FIXER_SYSTEM, prompt, FIX_MODULE)

    def write_report(self, snapshot: TrainingSnapshot, diagnosis: Diagnosis) -> RoleReply[str]:
        reply = self.provider.text(
            role="reporter",
            model=self._model("reporter"),
            system=REPORTER_SYSTEM,
            prompt=_join(snapshot.to_prompt(include_source=False), _diagnosis_section(diagnosis), "Write the report."),
        )
        return RoleReply(reply.text, (reply.usage,))
