"""Generated architectures: they keep the contract, pass the sandbox, learn, and get smaller on failure."""

from __future__ import annotations

import importlib.util
import math
import types

import pytest
import torch
import torch.nn.functional as F

from copilot.advisor.offline.advisor import OfflineAdvisor
from copilot.advisor.offline.codegen.architect import ModelFacts, fix_architecture, generate, write_architecture
from copilot.advisor.offline.codegen.edits import changes_only_initialisation, swap_saturating_activations, use_glorot_init
from copilot.advisor.offline.codegen.source import parse_model_source
from copilot.advisor.sandbox.parent import check_model_code
from copilot.advisor.schemas import ArchitectureAnswer, Diagnosis, SandboxReport
from copilot.advisor.snapshot import build_snapshot
from copilot.config import DataSettings, SandboxSettings
from copilot.events import DataSpec, ForwardContract, ModelSummary, ModuleInfo
from copilot.training.data import iterate_batches, load_data
from tests.advisor.conftest import SAMPLE_MODELS, SHAPES

TEXT = DataSpec(name="text", task="sequence", input_shape=(64,), input_dtype="int64", num_classes=30, train_size=64, val_size=16)
SAMPLES = {
    "bad_cnn": "BadCNN",
    "broken_cnn": "BrokenCNN",
    "deep_sigmoid_mlp": "DeepSigmoidMLP",
    "resnet_small": "ResNetSmall",
    "tiny_transformer": "TinyTransformer",
}
CRITICAL = Diagnosis(health="critical", route="architecture", summary="test")


def _facts(name: str, *, data: DataSpec | None = None, model_args: dict | None = None, source: str | None = None) -> ModelFacts:
    data = data or (TEXT if name == "tiny_transformer" else SHAPES)
    code = source if source is not None else (SAMPLE_MODELS / f"{name}.py").read_text()
    return ModelFacts(SAMPLES.get(name, name), f"{name}.py", code, data, None, model_args or {})


def _load(code: str, class_name: str) -> type[torch.nn.Module]:
    """Our own generated code, imported in this process (the sandbox is for untrusted code)."""
    module = types.ModuleType("generated")
    exec(compile(code, "generated.py", "exec"), module.__dict__)
    return getattr(module, class_name)


def _sandbox(code: str, facts: ModelFacts) -> SandboxReport:
    return check_model_code(
        code, model_name=facts.class_name, model_args=facts.model_args, data=facts.data,
        forward_contract=facts.forward_contract, settings=SandboxSettings(),
    )  # fmt: skip


@pytest.mark.parametrize("name", list(SAMPLES))
def test_every_sample_model_gets_an_architecture_that_keeps_its_contract_and_passes_the_sandbox(name: str) -> None:
    facts = _facts(name)
    answer = write_architecture(facts, CRITICAL, {"crash"}, None)

    report = _sandbox(answer.code, facts)
    assert report.ok, report.message
    assert report.output_shape == facts.data.expected_output(4)
    original = parse_model_source(facts.source_code, facts.class_name)
    generated = parse_model_source(answer.code, facts.class_name)
    assert generated.constructor_signature == original.constructor_signature
    assert generated.hparams_assignment == original.hparams_assignment
    assert answer.changes and answer.rationale


@pytest.mark.parametrize("name", ["bad_cnn", "broken_cnn", "deep_sigmoid_mlp"])
def test_the_offline_advisor_fixes_each_broken_sample_run(name: str, sample_runs) -> None:
    snapshot = build_snapshot(sample_runs(name))
    advisor = OfflineAdvisor()
    diagnosis = advisor.assess(snapshot).value
    answer = advisor.write_architecture(snapshot, diagnosis, None).value

    assert diagnosis.route == "architecture"
    report = check_model_code(answer.code, model_name=snapshot.model_name, model_args=snapshot.model_args, data=snapshot.data, settings=SandboxSettings())
    assert report.ok, report.message
    assert "nn.Sigmoid" not in answer.code
    assert "BatchNorm" in answer.code or "LayerNorm" in answer.code


def _accuracy_after_training(model: torch.nn.Module, data, *, epochs: int) -> float:
    """Adam at 1e-3, batch 64: what following the offline advisor on bad_cnn ends with (its second round)."""
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    cpu = torch.device("cpu")
    for _ in range(epochs):
        model.train()
        for inputs, targets in iterate_batches(data.train, 64, shuffle=True, generator=generator, device=cpu):
            optimizer.zero_grad()
            F.cross_entropy(model(inputs), targets).backward()
            optimizer.step()
    model.eval()
    correct = 0
    with torch.no_grad():
        for inputs, targets in iterate_batches(data.val, 256, shuffle=False, generator=None, device=cpu):
            correct += (model(inputs).argmax(1) == targets).sum().item()
    return correct / len(data.val)


@pytest.mark.slow
def test_the_generated_cnn_learns_the_shapes_set_that_bad_cnn_cannot() -> None:
    data = load_data(DataSettings(train_size=6000, val_size=1000), torch.device("cpu"))
    facts = _facts("bad_cnn", data=data.spec)
    code, _, _ = generate(facts, "standard")

    spec = importlib.util.spec_from_file_location("bad_cnn", SAMPLE_MODELS / "bad_cnn.py")
    bad_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bad_module)
    torch.manual_seed(0)
    broken_accuracy = _accuracy_after_training(bad_module.BadCNN(), data, epochs=3)
    torch.manual_seed(0)
    generated_accuracy = _accuracy_after_training(_load(code, "BadCNN")(), data, epochs=3)

    print(f"shapes validation accuracy after 3 epochs: bad_cnn {broken_accuracy:.3f}, generated {generated_accuracy:.3f}")
    assert broken_accuracy < 0.3
    assert generated_accuracy > 0.9
    assert generated_accuracy - broken_accuracy > 0.6


def test_constructor_arguments_size_the_generated_model() -> None:
    resnet = _facts("resnet_small", model_args={"width": 8, "num_classes": 10})
    model = _load(generate(resnet, "standard")[0], "ResNetSmall")(width=8)
    assert model.stem[0][0].out_channels == 8 and model.head.in_features == 32

    mlp = _facts("deep_sigmoid_mlp")
    mlp_model = _load(generate(mlp, "standard")[0], "DeepSigmoidMLP")(width=32, depth=4)
    assert len(mlp_model.blocks) == 2 and mlp_model.head.in_features == 32
    assert mlp_model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_the_generated_transformer_is_pre_ln_and_causal() -> None:
    facts = _facts("tiny_transformer")
    code, changes, _ = generate(facts, "standard")
    model = _load(code, "TinyTransformer")().eval()

    assert "VOCAB_SIZE = 30" in code and any("pre-LN" in change for change in changes)
    assert isinstance(model.blocks[0].norm1, torch.nn.LayerNorm) and isinstance(model.norm, torch.nn.LayerNorm)
    tokens = torch.randint(0, 30, (2, 64))
    changed = tokens.clone()
    changed[:, -1] = (changed[:, -1] + 1) % 30
    with torch.no_grad():
        before, after = model(tokens), model(changed)
    assert before.shape == (2, 64, 30)
    # Next-token prediction: no position may see a later token.
    assert torch.allclose(before[:, :-1], after[:, :-1], atol=1e-5)
    assert not torch.allclose(before[:, -1], after[:, -1])


LOSS_AND_SIGMOID = '''"""A shallow model with batch norm whose only problem is its sigmoid."""

import torch
from torch import nn

HPARAMS = {"optimizer": "Adam", "lr": 0.001}


class Shallow(nn.Module):
    def __init__(self, num_classes=10, smoothing=0.1):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)  # keep this comment
        self.norm = nn.BatchNorm2d(8)
        self.act = nn.Sigmoid()
        self.fc = nn.Linear(8, num_classes)
        self.smoothing = smoothing

    def forward(self, x):
        x = self.act(self.norm(self.conv(x)))
        return self.fc(torch.sigmoid(x).mean((2, 3)))

    def loss_function(self, outputs, targets):
        # A sigmoid here is part of the loss, not a hidden layer.
        probabilities = torch.sigmoid(outputs)
        return nn.functional.cross_entropy(outputs, targets, label_smoothing=self.smoothing) + 0 * probabilities.sum()
'''


def test_a_shallow_saturating_model_gets_a_targeted_activation_swap() -> None:
    edit = swap_saturating_activations(LOSS_AND_SIGMOID)
    layers = [("conv", "Conv2d"), ("norm", "BatchNorm2d"), ("act", "Sigmoid"), ("fc", "Linear")]
    summary = ModelSummary(
        class_name="Shallow",
        source_path="shallow.py",
        total_params=314,
        trainable_params=314,
        modules=tuple(ModuleInfo(name=name, type=kind, params=0) for name, kind in layers),
        activations=("Sigmoid",),
        has_normalization=True,
    )
    facts = ModelFacts("Shallow", "shallow.py", LOSS_AND_SIGMOID, SHAPES, summary, {})

    assert edit is not None
    assert edit.changes == ("line 14: nn.Sigmoid -> nn.ReLU", "line 20: torch.sigmoid -> torch.relu")
    assert "# keep this comment" in edit.code
    assert "probabilities = torch.sigmoid(outputs)" in edit.code
    assert edit.code.replace("nn.ReLU()", "nn.Sigmoid()").replace("torch.relu(x)", "torch.sigmoid(x)") == LOSS_AND_SIGMOID
    answer = write_architecture(facts, Diagnosis(health="warning", route="architecture"), {"saturated"}, None)
    assert answer.code == edit.code and answer.summary == "swap sigmoid/tanh for ReLU"
    assert _sandbox(answer.code, facts).ok


# A character model written as nanoGPT writes its forward, with plain constructor arguments.
OWN_LOSS_LM = """
import torch
from torch import nn
from torch.nn import functional as F


class CharLM(nn.Module):
    def __init__(self, vocab_size: int = 30, n_embd: int = 16):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.lm_head = nn.Linear(n_embd, vocab_size)

    def forward(self, idx, targets=None):
        logits = self.lm_head(self.wte(idx))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        return logits, loss
"""


@pytest.mark.parametrize(
    "contract",
    [ForwardContract(form="(logits, loss)", passes_targets=True), ForwardContract(form="dict", passes_targets=False)],
    ids=["nanogpt", "dict"],
)
def test_a_regenerated_model_keeps_the_runs_forward_signature_and_output_form(contract: ForwardContract) -> None:
    facts = ModelFacts("CharLM", "char_lm.py", OWN_LOSS_LM, TEXT, None, {}, forward_contract=contract)
    code, changes, _ = generate(facts, "standard")
    report = _sandbox(code, facts)  # the sandbox refuses a changed signature or output form
    assert report.ok, report
    kept = "forward(x, targets) and its own loss, " if contract.passes_targets else ""
    assert f"kept: {kept}the output as {contract.form}" in changes
    model = _load(code, "CharLM")(vocab_size=30, n_embd=16)
    tokens = torch.randint(0, 30, (2, 64))
    if contract.passes_targets:
        logits, loss = model(tokens, tokens)
        assert logits.shape == (2, 64, 30) and loss.dim() == 0
        assert model(tokens)[1] is None  # no targets, no loss, as nanoGPT's
    else:
        assert model(tokens)["logits"].shape == (2, 64, 30)


def test_a_regenerated_model_keeps_loss_function_and_the_attributes_it_reads() -> None:
    facts = _facts("Shallow", source=LOSS_AND_SIGMOID)
    code, changes, _ = generate(facts, "standard")

    assert "kept: loss_function" in changes
    model = _load(code, "Shallow")(smoothing=0.2)
    outputs = model(torch.randn(4, 3, 32, 32))
    assert model.smoothing == 0.2
    assert math.isfinite(model.loss_function(outputs, torch.tensor([0, 1, 2, 3])).item())
    assert _sandbox(code, facts).ok


def test_a_sandbox_failure_gets_a_smaller_model_then_an_honest_refusal() -> None:
    facts = _facts("bad_cnn")
    first = write_architecture(facts, CRITICAL, {"crash"}, None)
    too_big = SandboxReport(ok=False, stage="params", message="60,000,000 parameters > budget 50,000,000")

    compact = fix_architecture(facts, first, too_big)
    minimal = fix_architecture(facts, compact, too_big)
    refusal = fix_architecture(facts, minimal, too_big)

    assert len({first.code, compact.code, minimal.code}) == 3
    assert "params stage" in compact.rationale and "compact" in compact.summary
    assert "ResidualBlock" not in minimal.code
    assert all(_sandbox(answer.code, facts).ok for answer in (compact, minimal))
    assert refusal.code == minimal.code and "Not fixed" in refusal.rationale and "no smaller variant" in refusal.rationale

    # Code the offline advisor did not write (an LLM's, or the human's edit) is replaced by a regenerated module.
    foreign = ArchitectureAnswer(summary="x", rationale="x", changes=["x"], code="import os\n")
    assert fix_architecture(facts, foreign, SandboxReport(ok=False, stage="static", message="os")).code == first.code


def test_a_rejection_reason_picks_a_smaller_or_a_targeted_answer() -> None:
    facts = _facts("bad_cnn")
    smaller = write_architecture(facts, CRITICAL, {"chance"}, "too big for my laptop, something smaller")
    targeted = write_architecture(facts, CRITICAL, {"chance"}, "keep my model, just swap the activation")

    assert smaller.code == generate(facts, "compact")[0]
    assert targeted.code == (SAMPLE_MODELS / "bad_cnn.py").read_text().replace("nn.Sigmoid()", "nn.ReLU()")


def test_an_unreadable_original_still_gets_a_model_that_accepts_any_arguments() -> None:
    facts = _facts("Broken", source="class Broken(nn.Module):\n    def __init__(self, width=\n")
    code, changes, _ = generate(facts, "standard")

    assert "def __init__(self, *args, **kwargs):" in code
    assert any("could not be read" in change for change in changes)
    assert _sandbox(code, facts).ok


def test_only_an_edit_of_the_init_calls_is_an_initialisation_change() -> None:
    source = (SAMPLE_MODELS / "tiny_init_tanh.py").read_text(encoding="utf-8")
    glorot = use_glorot_init(source, "tanh")
    assert glorot is not None and changes_only_initialisation(source, glorot.code)
    relu = swap_saturating_activations(source, {"TinyInitTanh"})
    assert relu is not None and not changes_only_initialisation(source, relu.code)
    both = swap_saturating_activations(glorot.code, {"TinyInitTanh"})
    assert both is not None and not changes_only_initialisation(source, both.code)  # more than the init changed
    assert not changes_only_initialisation(source, source + "\n# a comment\n")  # nothing changed at all
