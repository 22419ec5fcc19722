"""Choosing and writing an architecture proposal from a snapshot and a diagnosis.

The choice: a targeted edit of the user's own source where one is enough (return the
logits where forward returns softmax into cross-entropy; sigmoid/tanh -> ReLU when the
only architectural problem is saturation in a shallow network that otherwise learns);
otherwise a regenerated module of the same family as the original (image CNN, MLP or
transformer), sized from the data and the constructor's arguments. After a sandbox
failure the next attempt is one size more conservative (standard -> compact ->
minimal); when there is nothing smaller, the answer says so instead of pretending.
It writes text; it never runs it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from copilot.advisor.offline.codegen.edits import (
    SourceEdit,
    remove_softmax_before_loss,
    resize_head,
    swap_saturating_activations,
    use_glorot_init,
)
from copilot.advisor.offline.codegen.image import image_classifier
from copilot.advisor.offline.codegen.mlp import mlp_classifier
from copilot.advisor.offline.codegen.module_file import PACKED_RESULTS, PROFILES, Bindings, Profile, assemble
from copilot.advisor.offline.codegen.source import ModelSource, parse_model_source
from copilot.advisor.offline.codegen.transformer import transformer
from copilot.advisor.schemas import ArchitectureAnswer, Diagnosis, SandboxReport
from copilot.errors import AdvisorError
from copilot.events import SATURATING_ACTIVATIONS, DataSpec, ForwardContract, ModelSummary

Family = Literal["image", "mlp", "transformer"]
GENERATORS = {"image": image_classifier, "mlp": mlp_classifier, "transformer": transformer}

CONVOLUTIONS = {"Conv1d", "Conv2d", "Conv3d"}
# A network with at most this many weight layers is shallow enough that swapping its
# activation is enough; deeper plain stacks need normalisation and skips too.
SHALLOW_WEIGHT_LAYERS = 3
WEIGHT_LAYERS = CONVOLUTIONS | {"Linear"}

# What a human's rejection reason can ask for, by keywords (lower case).
SMALLER_WORDS = ("smaller", "minimal", "simpler", "too big", "too large", "fewer parameters", "lighter")
EDIT_WORDS = ("keep my", "keep the original", "only swap", "just swap", "targeted", "minimal change", "small change")
REWRITE_WORDS = ("rewrite", "redesign", "regenerate", "full", "not enough", "more than")


@dataclass(frozen=True)
class ModelFacts:
    """What the architect needs from a snapshot (so it does not depend on the snapshot module)."""

    class_name: str
    file_name: str
    source_code: str
    data: DataSpec
    model: ModelSummary | None
    model_args: Mapping[str, object]
    forward_contract: ForwardContract | None = None  # the run's: how forward is called and what it returns


def _called_names(source: str) -> set[str]:
    """Names of everything called in the source (`nn.Conv2d(...)` -> "Conv2d"), for a model that never loaded."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            names.add(func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", ""))
    return names


def layer_types(facts: ModelFacts) -> set[str]:
    if facts.model is not None:
        return {info.type for info in facts.model.modules} | set(facts.model.activations)
    return _called_names(facts.source_code)


def choose_family(facts: ModelFacts) -> Family:
    """The original's family where the data allows it: CNN for images, MLP for flat inputs, transformer for tokens."""
    if facts.data.input_dtype == "int64":
        return "transformer"
    if len(facts.data.input_shape) == 3:
        types = layer_types(facts)
        if "Linear" in types and not types & CONVOLUTIONS:
            return "mlp"
        return "image"
    return "mlp"


def _contract(facts: ModelFacts) -> tuple[ModelSource, list[str]]:
    try:
        return parse_model_source(facts.source_code, facts.class_name), []
    except AdvisorError as error:
        # Nothing to keep but the class name: accept whatever arguments the user passes.
        fallback = ModelSource(
            class_name=facts.class_name,
            constructor_signature="self, *args, **kwargs",
            parameters=(),
            loss_function=None,
            hparams_assignment=None,
            carried_imports=(),
        )
        return fallback, [f"the original could not be read ({error.message}); the constructor accepts any arguments"]


def generate(facts: ModelFacts, profile: Profile) -> tuple[str, tuple[str, ...], str]:
    """(code, changes, description) of a regenerated module at `profile` size."""
    original, notes = _contract(facts)
    family = choose_family(facts)
    generated = GENERATORS[family](
        class_name=facts.class_name,
        data=facts.data,
        bindings=Bindings.of(original, facts.model_args),
        profile=profile,
    )
    code = assemble(
        original=original,
        original_source=facts.source_code if not notes else "",
        generated=generated,
        title=f"{facts.class_name}: {family} architecture proposed by copilot ({profile} size).",
        keep_imports=profile != "minimal",
        forward_contract=facts.forward_contract,
    )
    kept = [f"kept: class {facts.class_name}, constructor ({original.constructor_signature.removeprefix('self').lstrip(', ')})"]
    if original.loss_function:
        kept.append("kept: loss_function")
    if original.hparams_assignment:
        kept.append("kept: HPARAMS")
    if facts.forward_contract is not None and facts.forward_contract.form in PACKED_RESULTS:
        takes = "forward(x, targets) and its own loss, " if facts.forward_contract.passes_targets else ""
        kept.append(f"kept: {takes}the output as {facts.forward_contract.form}")
    return code, (*generated.changes, *kept, *notes), generated.description


def _saturating_only(facts: ModelFacts, tags: set[str]) -> bool:
    """True when swapping the activation is enough: saturation is the problem and the network is shallow."""
    if "crash" in tags or "chance" in tags or not tags & {"saturated", "vanishing"}:
        return False
    if facts.model is None:
        return False
    weight_layers = sum(1 for info in facts.model.modules if info.type in WEIGHT_LAYERS)
    return bool(SATURATING_ACTIVATIONS & set(facts.model.activations)) and weight_layers <= SHALLOW_WEIGHT_LAYERS


def _mentions(feedback: str | None, words: Iterable[str]) -> bool:
    return bool(feedback) and any(word in feedback.lower() for word in words)


def _cited(diagnosis: Diagnosis) -> str:
    cited = [finding.what + (f" in {finding.where}" if finding.where else "") for finding in diagnosis.findings[:3]]
    return "; ".join(cited) if cited else diagnosis.summary


def write_architecture(facts: ModelFacts, diagnosis: Diagnosis, tags: set[str], feedback: str | None) -> ArchitectureAnswer:
    """The first architecture answer for a diagnosis, honouring a human's rejection reason."""
    wants_edit = _mentions(feedback, EDIT_WORDS)
    wants_rewrite = _mentions(feedback, REWRITE_WORDS)
    if "softmax_before_loss" in tags and not wants_rewrite:
        logits = remove_softmax_before_loss(facts.source_code, {facts.class_name})
        if logits is not None:
            return _edit_answer(
                "return logits, not softmax, to cross-entropy",
                "Cross-entropy applies its own log-softmax; probabilities fed to it are squashed twice. "
                "Returning the logits is the whole fix; the rest of your file is kept.",
                diagnosis,
                logits,
            )
    head = next((f for f in diagnosis.findings if f.what == "head output size does not match the classes"), None)
    if head is not None and not wants_rewrite:
        resized = resize_head(facts.source_code, facts.class_name, int(head.evidence[0].value), facts.data.num_classes)
        if resized is not None:
            return _edit_answer(
                f"head with {facts.data.num_classes} outputs",
                f"The data set has {facts.data.num_classes} classes; only the head's output size changes.",
                diagnosis,
                resized,
            )
    if "tiny_init" in tags and not wants_rewrite:
        activations = set(facts.model.activations) if facts.model else set()
        rescaled = use_glorot_init(facts.source_code, "tanh" if activations & {"Tanh", "tanh"} else "sigmoid")
        if rescaled is not None:
            return _edit_answer(
                "Glorot initial scale instead of a tiny constant",
                "Weights drawn that small shrink the signal at every layer until nothing reaches the first ones; "
                "Glorot's scale, with the activation's gain, keeps it steady. Only the init lines change.",
                diagnosis,
                rescaled,
            )
    if (_saturating_only(facts, tags) or wants_edit) and not wants_rewrite:
        edit = swap_saturating_activations(facts.source_code, {facts.class_name} | _helper_classes(facts.source_code))
        if edit is not None:
            return _edit_answer(
                "swap sigmoid/tanh for ReLU",
                "The saturating activations pass almost no gradient in their flat tails; ReLU passes it unchanged "
                "for positive inputs, and the rest of the model is kept as it is.",
                diagnosis,
                edit,
            )
    profile: Profile = "compact" if _mentions(feedback, SMALLER_WORDS) else "standard"
    code, changes, description = generate(facts, profile)
    return ArchitectureAnswer(
        summary=_summary(choose_family(facts)),
        rationale=(
            f"Findings: {_cited(diagnosis)}. No targeted edit of your file fixes this, so this is a whole new module "
            f"(class name and constructor kept). {description} {_why(choose_family(facts))}"
        ),
        changes=list(changes),
        code=code,
    )


def _edit_answer(summary: str, why: str, diagnosis: Diagnosis, edit: SourceEdit) -> ArchitectureAnswer:
    """An answer that edits the user's own source: only the listed spans change."""
    return ArchitectureAnswer(
        summary=summary, rationale=f"Findings: {_cited(diagnosis)}. {why}", changes=list(edit.changes), code=edit.code
    )


def _helper_classes(source: str) -> set[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    return {node.name for node in tree.body if isinstance(node, ast.ClassDef)}


def _summary(family: Family) -> str:
    return {
        "image": "conv-BN-ReLU residual CNN with global pooling",
        "mlp": "residual MLP with layer norm and GELU",
        "transformer": "pre-layer-norm transformer blocks",
    }[family]


def _why(family: Family) -> str:
    return {
        "image": (
            "Batch norm keeps every layer's input at unit scale and the skip connections carry gradient to the first "
            "layers, so it trains with the current optimiser settings; pooling replaces the flatten into a huge linear layer."
        ),
        "mlp": "Layer norm and skip connections give every layer a gradient path, and GELU does not saturate.",
        "transformer": (
            "Layer norm before attention and the MLP (pre-LN) keeps the residual stream's scale, and with it the "
            "gradient norms, bounded."
        ),
    }[family]


def fix_architecture(facts: ModelFacts, answer: ArchitectureAnswer, report: SandboxReport) -> ArchitectureAnswer:
    """The next, more conservative answer after a sandbox failure, or the same code with the failure stated."""
    failure = f"the sandbox stopped the previous code at the {report.stage} stage: {report.message}"
    generated = {profile: generate(facts, profile) for profile in PROFILES}
    matching = [profile for profile, (code, _, _) in generated.items() if code == answer.code]
    if not matching:
        # An edit of the user's source, or code written elsewhere: start over from a regenerated module.
        following: Profile | None = "standard"
    else:
        position = PROFILES.index(matching[-1])
        following = PROFILES[position + 1] if position + 1 < len(PROFILES) else None
    if following is None:
        return answer.model_copy(
            update={
                "rationale": f"{answer.rationale} Not fixed: {failure}; the offline advisor has no smaller variant to offer.",
            }
        )
    code, changes, description = generated[following]
    return ArchitectureAnswer(
        summary=_summary(choose_family(facts)) + ("" if following == "standard" else f" ({following})"),
        rationale=f"Regenerated at {following} size because {failure}. {description}",
        changes=list(changes),
        code=code,
    )
