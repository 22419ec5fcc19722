"""What the advisor says: diagnoses, proposals, verdicts, token usage, sandbox reports.

These are the advisor's contract with the rest of copilot (the app shows them, the
history layer commits them, the ledger stores them) and with LLMs (their JSON schemas
are the forced tools' input schemas). Validation ranges live here, so a proposal that
parses is a proposal the trainer can apply. No torch, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from copilot.events import BatchSize, Epochs, GradClip, HParams, LearningRate, Momentum, OptimizerName, ScheduleName, WeightDecay
from copilot.numbers import significant

Health = Literal["healthy", "warning", "critical"]
Route = Literal["hyperparameters", "architecture", "continue", "finish"]
Role = Literal["assessor", "coder", "checker", "reporter"]
ROUTE_DESCRIPTION = (
    "what to do next: change hyperparameters, change the architecture, continue training unchanged "
    "(healthy or still improving), or finish (converged, target met or budget spent; this stops training)"
)


class Schema(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def at_most(length: int) -> Callable[[dict[str, Any]], None]:
    """A field's JSON schema asks for strings of at most `length` characters (its string branch,
    when it is a union); validation does not enforce it. Servers that decode by the schema
    (llama.cpp's grammar, vLLM's guided decoding) stop a small model there, which would
    otherwise repeat itself to its token cap and end in broken JSON; others read it as a request."""

    def bound(schema: dict[str, Any]) -> None:
        for branch in schema.get("anyOf", [schema]):
            if branch.get("type") == "string":
                branch["maxLength"] = length

    return bound


def few(count: int) -> dict[str, int]:
    """A list field's JSON schema asks for at most `count` items (as `at_most` asks of strings)."""
    return {"maxItems": count}


class Evidence(Schema):
    """A measured value and the threshold it crossed: what a finding rests on."""

    metric: str = Field(description="metric name, e.g. grad_norm, update_ratio, val_accuracy", json_schema_extra=at_most(40))
    value: float | str = Field(description="the measured value", json_schema_extra=at_most(40))
    threshold: float | str | None = Field(None, description="the threshold it crossed, if any", json_schema_extra=at_most(40))

    def one_line(self) -> str:
        """`grad_norm = 1.2e-08 (threshold 1e-07)`: how the terminal, the report and git show it."""
        threshold = f" (threshold {significant(self.threshold)})" if self.threshold is not None else ""
        return f"{self.metric} = {significant(self.value)}{threshold}"


class Finding(Schema):
    what: str = Field(description="the problem in a few words, e.g. 'vanishing gradients'", json_schema_extra=at_most(80))
    where: str | None = Field(
        None, description="module path such as 'block1.conv', or null for the whole model", json_schema_extra=at_most(120)
    )
    evidence: list[Evidence] = Field(description="the measurements this finding rests on; at least one", json_schema_extra=few(3))
    why: str = Field(description="why it matters, in one plain sentence", json_schema_extra=at_most(200))
    severity: Literal["info", "warning", "critical"] = "warning"

    def one_line(self) -> str:
        """`vanishing gradients in conv: grad_norm = 1.2e-08 (threshold 1e-07)`: a finding in one line."""
        where = f" in {self.where}" if self.where else ""
        evidence = "; ".join(item.one_line() for item in self.evidence)
        return f"{self.what}{where}: {evidence}" if evidence else f"{self.what}{where}"


class Diagnosis(Schema):
    health: Health
    findings: list[Finding] = Field(default_factory=list)
    route: Route = Field(description=ROUTE_DESCRIPTION)
    confidence: float = Field(0.5, ge=0.0, le=1.0)
    summary: str = Field("", description="one or two sentences for the status line")
    notices: list[str] = Field(default_factory=list, description="not for the LLM: e.g. 'Bedrock throttled; used offline rules'")
    # Set by copilot for an LLM's diagnosis (`copilot.advisor.claims`), never by the LLM:
    contradictions: list[str] = Field(default_factory=list, description="not for the LLM: claims the measurements contradict")
    measured_findings: list[Finding] = Field(default_factory=list, description="not for the LLM: the offline rules' findings")

    @field_validator("findings")
    @classmethod
    def _drop_findings_without_evidence(cls, findings: list[Finding]) -> list[Finding]:
        # An LLM must cite what it measured; a claim without evidence is not shown.
        return [finding for finding in findings if finding.evidence]


class HParamChange(Schema):
    """A change to some hyperparameters; fields left out stay as they are."""

    optimizer: OptimizerName | None = None
    lr: LearningRate | None = None
    momentum: Momentum | None = None
    weight_decay: WeightDecay | None = None
    batch_size: BatchSize | None = None
    epochs: Epochs | None = None
    grad_clip: GradClip | None = None
    schedule: ScheduleName | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> "HParamChange":
        if not self.changes():
            raise ValueError("a hyperparameter change must change at least one value")
        return self

    def changes(self) -> dict[str, float | int | str]:
        return self.model_dump(exclude_none=True)

    def apply_to(self, hparams: HParams) -> HParams:
        return hparams.model_copy(update=self.changes())


class HParamAnswer(Schema):
    """What an LLM returns for the hyperparameter route (the forced tool's input)."""

    summary: str = Field(
        description="imperative summary, at most 60 characters, e.g. 'Adam at lr 1e-3 instead of SGD at 0.1'", json_schema_extra=at_most(80)
    )
    rationale: str = Field(description="why this change addresses the findings, 1-3 sentences", json_schema_extra=at_most(400))
    change: HParamChange


class ArchitectureAnswer(Schema):
    """What an LLM returns for the architecture route (the forced tool's input)."""

    summary: str = Field(
        description="imperative summary, at most 60 characters, e.g. 'add batch norm and residual blocks'", json_schema_extra=at_most(80)
    )
    rationale: str = Field(description="why this architecture addresses the findings", json_schema_extra=at_most(400))
    changes: list[Annotated[str, Field(json_schema_extra=at_most(160))]] = Field(
        description="each change in one human-readable line", json_schema_extra=few(12)
    )
    code: str = Field(description="the complete new model module: same class name, constructor signature, input and output contract")


# Shown with every sandbox verdict: what the checked code reports about itself can be forged.
SANDBOX_ADVISORY = (
    "advisory: the sandbox catches honest mistakes; its verdict comes from the checked code's own process "
    "(a claim), and accepted code runs behind the walls either way"
)


class SandboxReport(Schema):
    """The structured outcome of checking generated model code in a child process.

    Everything but the `observed_*` fields comes from the child, where the checked code
    ran: a claim, advisory. `observed_*` the parent measured itself (wait4 of the child).
    """

    ok: bool
    stage: Literal[
        "passed", "static", "import", "instantiate", "forward", "shape", "backward", "params", "timeout", "memory", "crashed"
    ]
    message: str  # one line: what failed and where, or "passed"
    line: int | None = None  # source line of a static refusal or of the failing frame
    output_shape: tuple[int, ...] | None = None
    expected_shape: tuple[int, ...] | None = None
    param_count: int | None = None
    forward_backward_ms: float | None = None
    traceback: str = ""  # trimmed to the frames inside the generated module
    observed_cpu_s: float | None = None  # the child's user + system CPU time, measured by the parent
    observed_peak_mb: float | None = None  # the child's peak resident memory, measured by the parent
    # For the human, once: why this check could not use the template process (and ran slower).
    notice: str = ""


class TrialPoint(Schema):
    """One arm's validation figures at one point of its trial, as the parent scored them."""

    trial_step: int
    val_loss: float
    val_accuracy: float | None = None


class ArmResult(Schema):
    """One arm of a trial: the unchanged run or a candidate change, and what was measured."""

    arm: str  # "incumbent", "incumbent-seed2", "c1", ...
    summary: str  # the change in a few words ("unchanged" for the incumbent)
    status: Literal["measured", "failed", "diverged", "cancelled", "pruned"]  # pruned: stopped early by a tune's pruner
    outcome: Literal["incumbent", "winner", "no gain", "failed"] = "no gain"
    points: list[TrialPoint] = Field(default_factory=list)
    steps: int = 0  # trial steps trained, an extension included
    wall_time_s: float = 0.0
    message: str = ""  # why it failed, in one line
    checkpoint: str | None = None  # its end state; kept only for the winner, which the run continues from
    folders: list[str] = Field(default_factory=list)  # its trial folders in order (a second one when extended)

    @property
    def final(self) -> TrialPoint | None:
        return self.points[-1] if self.points else None


WonBy = Literal["lower loss", "steadier"]  # how a trial's winner beat the unchanged run


class TrialReport(Schema):
    """Measured evidence for a proposal: every arm's trial and how they ranked."""

    status: Literal["trialled", "not_trialled"]
    reason: str = ""  # why not trialled, or what decided the ranking, in one line
    budget_steps: int = 0  # each arm's planned trial length
    expected_s: float | None = None  # the wall time estimated before the trials started
    noise: float | None = None  # the spread of the unchanged run's own validation loss
    noise_method: str = ""  # "trend residuals over N evaluations" or "two seeds"
    min_gain: float = 0.0  # the least relative gain a winner must also show
    extended: bool = False  # the undecided arms ran a second budget
    arms: list[ArmResult] = Field(default_factory=list)
    winner: str | None = None  # the arm the proposal is, when it beat the unchanged run
    won_by: WonBy = "lower loss"  # "steadier": the unchanged run's validation swings, the winner's does not
    wall_time_s: float = 0.0
    trial_steps: int = 0  # every arm's steps together: counted apart from the run's epochs

    @property
    def beat_incumbent(self) -> bool:
        return self.status == "trialled" and self.winner is not None

    def arm(self, name: str) -> ArmResult | None:
        return next((arm for arm in self.arms if arm.arm == name), None)


class StartPoint(Schema):
    """Where a change is applied from when the weights it would start from are no use: an earlier point.

    After a blow-up, the last checkpoint before it; for a model re-initialised from scratch,
    the run's start. Its trial forks there (every arm, so the comparison stays paired).
    Set by copilot from the measurements (`copilot.advisor.offline.rules.start_point`), never by an LLM.
    """

    checkpoint: str | None  # the run's checkpoint to continue from; None: the run's start, the model file's fresh weights
    step: int  # the step that checkpoint holds (0 for the start)
    epoch: int
    exploded_at: int | None = None  # the first step whose update may have blown the loss up
    evidence: str = ""  # why not from where the run stands, in a few words


class HParamProposal(Schema):
    kind: Literal["hyperparameters"] = "hyperparameters"
    summary: str
    rationale: str
    change: HParamChange
    before: HParams
    after: HParams
    trials: TrialReport | None = None  # None: made before trials existed, or not yet trialled
    # Set: the weights now are ruined, so the change applies from this earlier point (its trial forks there too).
    start_from: StartPoint | None = None


class ArchitectureProposal(Schema):
    kind: Literal["architecture"] = "architecture"
    summary: str
    rationale: str
    changes: list[str]
    class_name: str
    file_name: str  # the model file's name, e.g. "bad_cnn.py"
    old_code: str
    code: str
    sandbox: SandboxReport
    fix_rounds: int = 0
    trials: TrialReport | None = None
    # False: the edit changes only how the weights are initialised, so the new model starts from
    # its own __init__'s weights instead of carrying the trained ones over (which would undo it).
    carry_weights: bool = True
    start_from: StartPoint | None = None  # set: a fresh model in the run's first round starts the run over

    def unified_diff(self) -> str:
        import difflib

        return "".join(
            difflib.unified_diff(
                self.old_code.splitlines(keepends=True),
                self.code.splitlines(keepends=True),
                fromfile=f"a/{self.file_name}",
                tofile=f"b/{self.file_name}",
            )
        )


class FinishProposal(Schema):
    kind: Literal["finish"] = "finish"
    summary: str
    report: str  # markdown


Proposal = Annotated[Union[HParamProposal, ArchitectureProposal, FinishProposal], Field(discriminator="kind")]


class Verdict(Schema):
    """The human's answer at the gate (the resume value of the interrupt).

    "withdrawn" is copilot's, never the human's: the model or state the proposal was made
    for changed (a rollback, an undo or redo, training gone on past its evidence), so it
    no longer applies. Nothing applies it, and it is no rejection: the change may come again.
    """

    decision: Literal["accept", "reject", "edit", "withdrawn"]
    reason: str | None = None  # why a proposal was rejected (goes back to the advisor) or withdrawn
    edited_code: str | None = None  # decision "edit" for an architecture proposal
    edited_change: HParamChange | None = None  # decision "edit" for a hyperparameter proposal

    @property
    def applied(self) -> bool:
        """Accepted or edited: the change became a round (a rejection or a withdrawal did not)."""
        return self.decision in ("accept", "edit")


class TokenUsage(Schema):
    provider: str  # "offline", "bedrock", "openai"
    model: str
    role: Role
    input_tokens: int = 0
    output_tokens: int = 0
    latency_s: float = 0.0  # wall time of the call's requests, corrections included
    # The server sent no `usage`: copilot counted the tokens itself, at about four characters each.
    estimated: bool = False


class LedgerEntry(Schema):
    """One line of `ledger.jsonl`: every proposal and what the human did with it."""

    time: float
    run_id: str
    round: int
    epoch: int
    trigger: str  # "schedule", "error", "nonfinite", "plateau", "demand"
    diagnosis: Diagnosis
    proposal: Proposal
    verdict: Verdict | None = None  # None while pending
    tokens: list[TokenUsage] = Field(default_factory=list)
    commit: str | None = None  # the round's commit, once accepted and committed
