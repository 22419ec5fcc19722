"""Scripted stand-ins for the advisor's tests: roles and an LLM provider that answer from a
script and count every call, plus a small but realistic run folder to build snapshots from.

The scripts are what an LLM could answer; everything around them (graph, gate, sandbox,
ledger, snapshot) is the real code.
"""

from __future__ import annotations

import json
import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from copilot.advisor.llm.providers.base import StructuredReply, TextReply
from copilot.advisor.roles import RoleReply
from copilot.advisor.schemas import (
    ArchitectureAnswer,
    Diagnosis,
    Evidence,
    Finding,
    HParamAnswer,
    HParamChange,
    Role,
    SandboxReport,
    TokenUsage,
)
from copilot.advisor.snapshot import TrainingSnapshot
from copilot.events import (
    DataSpec,
    EpochSummary,
    HParams,
    ModelSummary,
    ModuleInfo,
    RunStarted,
    StepBatch,
    StepRecord,
    TrainerError,
    event_to_json,
)
from copilot.run_folder import RunFolder

TINY_DATA = DataSpec(
    name="shapes", task="classification", input_shape=(3, 8, 8), num_classes=4, train_size=64, val_size=32
)

TINY_SOURCE = '''"""A deliberately weak classifier: one sigmoid hidden layer."""

import torch
from torch import nn

HPARAMS = {"optimizer": "SGD", "lr": 0.1, "batch_size": 16, "epochs": 4}


class TinyNet(nn.Module):
    def __init__(self, num_classes: int = 4, hidden: int = 16):
        super().__init__()
        self.fc1 = nn.Linear(3 * 8 * 8, hidden)
        self.act = nn.Sigmoid()
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(torch.flatten(x, 1))))
'''

# The same model with ReLU and normalisation: passes every sandbox check.
GOOD_CODE = TINY_SOURCE.replace("self.act = nn.Sigmoid()", "self.act = nn.Sequential(nn.LayerNorm(hidden), nn.ReLU())")

# Output of the wrong width: fails the sandbox's shape check.
WRONG_SHAPE_CODE = GOOD_CODE.replace("nn.Linear(hidden, num_classes)", "nn.Linear(hidden, num_classes + 1)")

# The first linear layer expects the wrong number of inputs: fails at forward.
WRONG_INPUT_CODE = GOOD_CODE.replace("nn.Linear(3 * 8 * 8, hidden)", "nn.Linear(3 * 8 * 7, hidden)")

TINY_HPARAMS = HParams(optimizer="SGD", lr=0.1, batch_size=16, epochs=4)

TINY_SUMMARY = ModelSummary(
    class_name="TinyNet",
    source_path="tiny_net.py",
    total_params=3*8*8*16 + 16 + 16*4 + 4,
    trainable_params=3*8*8*16 + 16 + 16*4 + 4,
    modules=(
        ModuleInfo(name="", type="TinyNet", params=0, is_leaf=False),
        ModuleInfo(name="fc1", type="Linear", params=3 * 8 * 8 * 16 + 16, detail="192->16"),
        ModuleInfo(name="act", type="Sigmoid", params=0),
        ModuleInfo(name="fc2", type="Linear", params=16 * 4 + 4, detail="16->4"),
    ),
    activations=("Sigmoid",),
)


def write_run(root: Path, *, run_id: str = "20261120-120000-tiny-net-0001", epochs: int = 3, crash: bool = False) -> RunFolder:
    """A run folder as the trainer leaves it: metrics.jsonl, the model copy, session.json.

    The model learns nothing (loss stuck at ln 4, accuracy at chance, tiny first-layer
    gradients); with `crash` the last epoch ends in a shape error instead.
    """
    run = RunFolder(root / ".copilot" / "runs" / run_id).create()
    (run.models / "r0_tiny_net.py").write_text(TINY_SOURCE, encoding="utf-8")
    run.session.write_text(json.dumps({"model_path": "tiny_net.py", "data": TINY_DATA.model_dump(mode="json")}), encoding="utf-8")
    events: list[BaseModel] = [
        RunStarted(run_id=run_id, device="cpu", data=TINY_DATA, model=TINY_SUMMARY, hparams=TINY_HPARAMS, time=time.time())
    ]
    step = 0
    for epoch in range(1, epochs + 1):
        records = []
        for _ in range(4):
            step += 1
            records.append(
                StepRecord(
                    epoch=epoch,
                    step=step,
                    loss=1.386 - 0.0001 * step,
                    accuracy=0.25,
                    lr=0.1,
                    samples_per_sec=900.0,
                    total_grad_norm=0.02,
                    per_module_grad_norm={"fc1": 3e-8, "fc2": 0.02},
                    per_module_update_ratio={"fc1": 1e-7, "fc2": 2e-2},
                )
            )
        events.append(StepBatch(records=tuple(records)))
        if crash and epoch == epochs:
            events.append(
                TrainerError(
                    kind="shape",
                    message="mat1 and mat2 shapes cannot be multiplied (16x192 and 168x16)",
                    traceback='File "tiny_net.py", line 17, in forward\nRuntimeError: mat1 and mat2 shapes cannot be multiplied',
                    epoch=epoch,
                    step=step,
                )
            )
            break
        events.append(
            EpochSummary(
                epoch=epoch,
                step=step,
                train_loss=1.386 - 0.001 * epoch,
                train_accuracy=0.25,
                val_loss=1.387,
                val_accuracy=0.25,
                initial_loss=1.3863,
                expected_initial_loss=1.3863,
                lr=0.1,
                samples_per_sec=900.0,
                duration_s=0.1,
            )
        )
    run.metrics.write_text("".join(event_to_json(event) + "\n" for event in events), encoding="utf-8")
    return run


def usage(role: Role, input_tokens: int = 100, output_tokens: int = 20) -> TokenUsage:
    return TokenUsage(provider="scripted", model="script-1", role=role, input_tokens=input_tokens, output_tokens=output_tokens)


def diagnosis(route: str, *, health: str = "critical", summary: str = "the model learns nothing") -> Diagnosis:
    return Diagnosis(
        health=health,
        route=route,
        confidence=0.8,
        summary=summary,
        findings=[
            Finding(
                what="vanishing gradients",
                where="fc1",
                evidence=[Evidence(metric="grad_norm", value=3e-8, threshold=1e-7)],
                why="the first layer does not learn",
                severity="critical",
            )
        ],
    )


def hparam_answer(summary: str = "Adam at lr 1e-3", **change: object) -> HParamAnswer:
    return HParamAnswer(summary=summary, rationale="plain SGD at 0.1 is unstable here", change=HParamChange(**(change or {"optimizer": "Adam", "lr": 1e-3})))


def code_answer(code: str = GOOD_CODE, summary: str = "ReLU and layer norm instead of sigmoid") -> ArchitectureAnswer:
    return ArchitectureAnswer(summary=summary, rationale="sigmoid saturates", changes=["sigmoid -> LayerNorm + ReLU"], code=code)


class ScriptedRoles:
    """`AdvisorRoles` answering from lists, one item per call; `calls` counts every method."""

    name = "scripted"

    def __init__(
        self,
        route: str = "hyperparameters",
        *,
        hparams: Iterable[HParamAnswer] = (),
        code: Iterable[ArchitectureAnswer] = (),
        fixes: Iterable[ArchitectureAnswer] = (),
        report: str = "# Report\nTraining is healthy.",
    ) -> None:
        self.diagnosis = diagnosis(route, health="healthy" if route == "finish" else "critical")
        self.hparams = deque(hparams)
        self.code = deque(code)
        self.fixes = deque(fixes)
        self.report = report
        self.calls: Counter[str] = Counter()
        self.feedback: list[str | None] = []
        self.reports_seen: list[SandboxReport] = []

    def assess(self, snapshot: TrainingSnapshot) -> RoleReply[Diagnosis]:
        self.calls["assess"] += 1
        return RoleReply(self.diagnosis, (usage("assessor"),))

    def propose_hparams(self, snapshot: TrainingSnapshot, diagnosis: Diagnosis, feedback: str | None) -> RoleReply[HParamAnswer]:
        self.calls["propose_hparams"] += 1
        self.feedback.append(feedback)
        return RoleReply(self.hparams.popleft(), (usage("assessor"),))

    def write_architecture(self, snapshot: TrainingSnapshot, diagnosis: Diagnosis, feedback: str | None) -> RoleReply[ArchitectureAnswer]:
        self.calls["write_architecture"] += 1
        return RoleReply(self.code.popleft(), (usage("coder", 1000, 800),))

    def fix_architecture(self, snapshot: TrainingSnapshot, answer: ArchitectureAnswer, report: SandboxReport) -> RoleReply[ArchitectureAnswer]:
        self.calls["fix_architecture"] += 1
        self.reports_seen.append(report)
        return RoleReply(self.fixes.popleft(), (usage("checker", 900, 700),))

    def write_report(self, snapshot: TrainingSnapshot, diagnosis: Diagnosis) -> RoleReply[str]:
        self.calls["write_report"] += 1
        return RoleReply(self.report, (usage("reporter"),))


@dataclass(frozen=True)
class ProviderRequest:
    role: Role
    model: str
    system: str
    prompt: str
    tool_name: str | None


class ScriptedProvider:
    """`LLMProvider` replying from a list: a schema instance, a dict (validated like a tool's
    JSON input), a string (for `text`) or an exception to raise. `requests` records each call."""

    name = "scripted"
    label = "scripted"

    def __init__(self, replies: Iterable[object]) -> None:
        self.replies = deque(replies)
        self.requests: list[ProviderRequest] = []

    def _next(self, request: ProviderRequest) -> object:
        self.requests.append(request)
        reply = self.replies.popleft()
        if isinstance(reply, Exception):
            raise reply
        return reply

    def structured(self, *, role, model, system, prompt, schema, tool_name, tool_description) -> StructuredReply:
        reply = self._next(ProviderRequest(role, model, system, prompt, tool_name))
        value = reply if isinstance(reply, schema) else schema.model_validate(reply)
        return StructuredReply(value, usage(role, len(prompt) // 4, 50))

    def text(self, *, role, model, system, prompt) -> TextReply:
        reply = self._next(ProviderRequest(role, model, system, prompt, None))
        return TextReply(str(reply), usage(role, len(prompt) // 4, 50))


PASSED = SandboxReport(ok=True, stage="passed", message="passed", output_shape=(2, 4), expected_shape=(2, 4), param_count=3_172)
SHAPE_FAILURE = SandboxReport(
    ok=False, stage="shape", message="output shape (2, 5) != expected (2, 4)", output_shape=(2, 5), expected_shape=(2, 4)
)
FORWARD_FAILURE = SandboxReport(
    ok=False, stage="forward", message="RuntimeError: mat1 and mat2 shapes cannot be multiplied (2x192 and 168x16)", line=17
)


class ScriptedChecker:
    """A code checker with the sandbox's verdicts on the scripted modules, counting checks.

    `more` adds verdicts for other code; `otherwise` answers any code not listed
    (without it, unlisted code is a test error)."""

    def __init__(self, more: Mapping[str, SandboxReport] | None = None, otherwise: SandboxReport | None = None) -> None:
        self.reports = {GOOD_CODE: PASSED, WRONG_SHAPE_CODE: SHAPE_FAILURE, WRONG_INPUT_CODE: FORWARD_FAILURE, **(more or {})}
        self.otherwise = otherwise
        self.checked: list[str] = []

    def __call__(self, code: str, snapshot: TrainingSnapshot) -> SandboxReport:
        self.checked.append(code)
        return self.reports[code] if self.otherwise is None else self.reports.get(code, self.otherwise)
