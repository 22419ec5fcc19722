"""The sandbox's checks: the static check on its own, then real child processes on small models."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from copilot.advisor.sandbox.parent import SANDBOX_BATCH_SIZE, check_model_code
from copilot.advisor.sandbox.static_lint import find_refusal, static_check
from copilot.config import SandboxSettings
from copilot.errors import SandboxRefusal
from copilot.events import DataSpec, ForwardContract

ALLOWED = SandboxSettings().allowed_imports
IMAGES = DataSpec(name="shapes", task="classification", input_shape=(3, 8, 8), num_classes=10, train_size=64, val_size=16)
TOKENS = DataSpec(
    name="text", task="sequence", input_shape=(6,), input_dtype="int64", num_classes=20, train_size=64, val_size=16
)
CONVENTIONS = Path(__file__).resolve().parents[1] / "training" / "conventions"
NANOGPT_FILE = CONVENTIONS / "nanogpt_style.py"
MINGPT_WRAPPER_FILE = CONVENTIONS / "mingpt_wrapper_style.py"
# The text set as copilot bundles it, the sizes mingpt_wrapper_style.py's build_model() writes in.
TEXT_SET = DataSpec(
    name="text", task="sequence", input_shape=(64,), input_dtype="int64", num_classes=30, train_size=64, val_size=16
)
# The run's arguments as copilot.toml's `[model.args.config]` table gives them, flattened.
TINY_GPT_ARGS = {"config.n_layer": 1, "config.n_head": 2, "config.n_embd": 16}
# Roomy limits: these tests check results, not limits, on a loaded 2-core machine.
SETTINGS = SandboxSettings(timeout_s=60, cpu_seconds=30)

GOOD_MODEL = '''
"""A small convolutional classifier: __init__ builds it, forward runs it."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


@dataclass(frozen=True)
class Widths:
    conv: int = 4


class SmallNet(nn.Module):
    def __init__(self, width: int = 4, num_classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.norm = nn.BatchNorm2d(width)
        self.head = nn.Linear(width, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.kaiming_normal_(self.conv.weight, nonlinearity="relu")
        nn.init.zeros_(getattr(self.head, "bias"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        print("the model may print; it does not disturb the report")
        x = F.relu(self.norm(self.conv(x))) * math.sqrt(2.0)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.head(x)


if __name__ == "__main__":
    print(SmallNet().__class__.__name__)
'''


def _small_net_params(width: int, classes: int = 10) -> int:
    return (3 * 9 * width + width) + 2 * width + (width * classes + classes)


def model_code(forward_body: str, init_body: str = "self.linear = nn.Linear(3 * 8 * 8, 10)") -> str:
    """A model module whose __init__ and forward bodies a test writes."""
    init = textwrap.indent(textwrap.dedent(init_body).strip(), " " * 8)
    forward = textwrap.indent(textwrap.dedent(forward_body).strip(), " " * 8)
    return (
        "import torch\nfrom torch import nn\n\n\nclass Model(nn.Module):\n"
        f"    def __init__(self):\n        super().__init__()\n{init}\n\n"
        f"    def forward(self, x):\n{forward}\n"
    )


# ---------------------------------------------------------------------------------- static check


def test_static_check_accepts_an_ordinary_model_file() -> None:
    assert find_refusal(GOOD_MODEL, ALLOWED) is None
    static_check(GOOD_MODEL, ALLOWED)


@pytest.mark.parametrize(
    ("snippet", "construct"),
    [
        ("import os", "import of 'os'"),
        ("import numpy as np", "import of 'numpy'"),
        ("from subprocess import run", "import of 'subprocess'"),
        ("import importlib", "import of 'importlib'"),
        ("from . import sibling", "a relative import"),
        ("from torch.nn import *", "'from torch.nn import *'"),
        ("data = open('/etc/passwd').read()", "call to open()"),
        ("exec('x = 1')", "call to exec()"),
        ("value = eval('1 + 1')", "call to eval()"),
        ("code = compile('1', 'f', 'eval')", "call to compile()"),
        ("os = __import__('os')", "the name __import__"),
        ("names = globals()", "call to globals()"),
        ("names = vars(torch)", "call to vars()"),
        ("found = ().__class__.__base__.__subclasses__()", "access to attribute __base__"),
        ("found = torch.nn.Module.forward.__globals__", "access to attribute __globals__"),
        ("found = print.__self__", "access to attribute __self__"),
        ("found = __builtins__", "the name __builtins__"),
        ("found = '{0.__globals__}'.format(torch.nn.Module.forward)", "a string mentioning __globals__"),
        ("torch.os.system('ls')", "torch.os"),
        ("import typing\nmodules = typing.sys.modules", "typing.sys"),
        ("import torch.nn.functional as F\nF.np.save('x', 1)", "torch.nn.functional.np"),
        ("weights = torch.load('w.pt')", "torch.load"),
        ("torch.save({}, 'w.pt')", "torch.save"),
        ("import torch as t\nweights = t.load('w.pt')", "torch.load"),
        ("from torch import load", "torch.load"),
        ("from torch import save as keep", "torch.save"),
        ("model = torch.hub.load('repo', 'net')", "torch.hub"),
        ("tensor = torch.from_file('x', size=4)", "torch.from_file"),
        ("storage = torch.UntypedStorage.from_file('x', True, 4)", "torch.UntypedStorage.from_file"),
        ("torch.ops.load_library('evil.so')", "torch.ops.load_library"),
        ("thing = torch.classes.evil.Thing()", "torch.classes"),
        ("net = torch.jit.load('net.pt')", "torch.jit.load"),
        ("import torch.utils.cpp_extension", "torch.utils.cpp_extension"),
        ("from torch.utils.data import DataLoader", "torch.utils.data"),
        ("import torch.multiprocessing", "torch.multiprocessing"),
        ("fast = torch.compile(torch.nn.Linear(1, 1))", "torch.compile"),
        ("state = torch._C._get_tracing_state()", "torch._C"),
        ("torch.zeros(2).numpy().tofile('x')", "access to attribute .tofile"),
        ("alias = torch\nalias.load('w.pt')", "access to attribute .load"),
        ("found = getattr(torch, 'o' + 's')", "getattr() with a computed attribute name"),
        ("found = getattr(torch, '__builtins__')", "access to attribute __builtins__"),
        ("import functools\nfound = functools.reduce(getattr, ['os'], torch)", "use of getattr()"),
        ("def probe(error):\n    return error.__traceback__.tb_frame.f_globals", "access to attribute __traceback__"),
        ("breakpoint()", "call to breakpoint()"),
        ("match torch:\n    case object(os=found):\n        found.execv('/bin/sh', [])", "access to attribute .os"),
        ("torch.ops.import_module('antigravity')", "torch.ops.import_module"),
        ("events = torch.autograd.profiler_util.EventList()", "torch.autograd.profiler_util"),
        ("def trace(events):\n    events.export_chrome_trace('x')", "access to attribute .export_chrome_trace"),
        ("graph = torch.fx.symbolic_trace(torch.nn.Linear(1, 1))", "torch.fx"),
    ],
)
def test_static_check_refuses_and_names_line_and_construct(snippet: str, construct: str) -> None:
    code = "import torch\n\n" + snippet + "\n"
    refusal = find_refusal(code, ALLOWED)
    assert refusal is not None, snippet
    assert construct in refusal.message
    assert refusal.line is not None and refusal.line >= 3
    assert refusal.message.startswith(f"line {refusal.line}: ")
    assert refusal.hint


def test_static_check_raises_a_refusal_with_line_and_hint() -> None:
    code = "import torch\n\n\nclass Net(torch.nn.Module):\n    def forward(self, x):\n        open('x', 'w')\n"
    with pytest.raises(SandboxRefusal) as caught:
        static_check(code, ALLOWED)
    assert caught.value.message == "line 6: call to open() is not allowed"
    assert "files" in caught.value.hint


def test_static_check_names_the_line_of_a_syntax_error() -> None:
    refusal = find_refusal("import torch\n\ndef forward(x:\n    return x\n", ALLOWED)
    assert refusal is not None and refusal.line == 3
    assert "syntax error" in refusal.message
    # Errors that only compiling finds are static too.
    late = find_refusal("import torch\nreturn 1\n", ALLOWED)
    assert late is not None and late.line == 2 and "'return' outside function" in late.message


def test_allowed_imports_are_configurable_but_never_include_os() -> None:
    assert find_refusal("import einops\n", [*ALLOWED, "einops"]) is None
    refusal = find_refusal("import os\n", [*ALLOWED, "os"])
    assert refusal is not None and "import of 'os'" in refusal.message


# ---------------------------------------------------------------------------------- child checks


def test_a_good_model_passes_with_shape_params_and_timing() -> None:
    report = check_model_code(GOOD_MODEL, model_name="SmallNet", model_args={"width": 5}, data=IMAGES, settings=SETTINGS)
    assert report.ok, report
    assert report.stage == "passed" and report.message == "passed"
    assert report.output_shape == report.expected_shape == (SANDBOX_BATCH_SIZE, 10)
    assert report.param_count == _small_net_params(width=5)  # built with the constructor arguments given
    assert report.forward_backward_ms is not None and report.forward_backward_ms > 0


def test_a_sequence_model_passes_and_its_own_loss_function_is_used() -> None:
    code = textwrap.dedent(
        """
        import torch
        from torch import nn


        class TinyLM(nn.Module):
            def __init__(self, vocab: int = 20, dim: int = 8):
                super().__init__()
                self.embed = nn.Embedding(vocab, dim)
                self.head = nn.Linear(dim, vocab)

            def forward(self, tokens):
                return self.head(self.embed(tokens))

            def loss_function(self, outputs, targets):
                return LOSS
        """
    )
    passing = check_model_code(
        code.replace("LOSS", "nn.functional.cross_entropy(outputs.flatten(0, 1), targets.flatten())"),
        model_name="TinyLM", model_args={}, data=TOKENS, settings=SETTINGS,
    )  # fmt: skip
    assert passing.ok, passing
    assert passing.output_shape == (SANDBOX_BATCH_SIZE, 6, 20)
    nan_loss = check_model_code(
        code.replace("LOSS", "outputs.sum() * float('nan')"), model_name="TinyLM", model_args={}, data=TOKENS, settings=SETTINGS
    )
    assert (nan_loss.ok, nan_loss.stage) == (False, "backward")
    assert "the loss is nan" in nan_loss.message


def test_a_wrong_output_shape_fails_at_shape() -> None:
    code = GOOD_MODEL.replace("self.head = nn.Linear(width, num_classes)", "self.head = nn.Linear(width, 12)")
    report = check_model_code(code, model_name="SmallNet", model_args={}, data=IMAGES, settings=SETTINGS)
    assert (report.ok, report.stage) == (False, "shape")
    assert report.output_shape == (4, 12) and report.expected_shape == (4, 10)
    assert "(4, 12)" in report.message and "(4, 10)" in report.message


def test_the_expected_output_can_be_given_by_the_caller() -> None:
    report = check_model_code(
        GOOD_MODEL, model_name="SmallNet", model_args={}, data=IMAGES, expected_output=(4, 7), settings=SETTINGS
    )
    assert (report.stage, report.expected_shape, report.output_shape) == ("shape", (4, 7), (4, 10))


def test_an_unused_parameter_fails_at_backward_and_is_named() -> None:
    code = model_code("return self.linear(x.flatten(1))", "self.linear = nn.Linear(3 * 8 * 8, 10)\nself.unused = nn.Linear(4, 4)")
    report = check_model_code(code, model_name="Model", model_args={}, data=IMAGES, settings=SETTINGS)
    assert (report.ok, report.stage) == (False, "backward")
    assert "unused.weight" in report.message and "unused.bias" in report.message
    assert "linear.weight" not in report.message


def test_a_non_finite_gradient_fails_at_backward_and_is_named() -> None:
    # d/ds sqrt(0 * s) = 0 * inf: the forward is finite, the gradient of `scale` is not.
    code = model_code(
        "return self.linear(x.flatten(1)) + torch.sqrt(self.scale * 0)",
        "self.linear = nn.Linear(3 * 8 * 8, 10)\nself.scale = nn.Parameter(torch.ones(1))",
    )
    report = check_model_code(code, model_name="Model", model_args={}, data=IMAGES, settings=SETTINGS)
    assert (report.ok, report.stage) == (False, "backward")
    assert report.message == "non-finite gradient in scale"


def test_a_model_over_the_parameter_budget_fails_at_params() -> None:
    report = check_model_code(
        GOOD_MODEL, model_name="SmallNet", model_args={}, data=IMAGES, settings=SETTINGS.model_copy(update={"max_params": 100})
    )
    assert (report.ok, report.stage) == (False, "params")
    assert report.param_count == _small_net_params(width=4)
    assert "budget of 100" in report.message


def test_a_syntax_error_fails_at_static_with_its_line() -> None:
    code = GOOD_MODEL.replace("return self.head(x)", "return self.head(x))")
    report = check_model_code(code, model_name="SmallNet", model_args={}, data=IMAGES, settings=SETTINGS)
    assert (report.ok, report.stage) == (False, "static")
    assert report.line == code.splitlines().index("        return self.head(x))") + 1
    assert report.message.startswith(f"line {report.line}: syntax error")


def test_a_forward_error_reports_the_failing_line_and_a_trimmed_traceback() -> None:
    code = model_code("hidden = x.flatten(1)\nreturn self.linear(hidden[:, :10])")
    report = check_model_code(code, model_name="Model", model_args={}, data=IMAGES, settings=SETTINGS)
    assert (report.ok, report.stage) == (False, "forward")
    assert report.line == code.splitlines().index("        return self.linear(hidden[:, :10])") + 1
    assert report.message.startswith(f"forward failed at line {report.line}: RuntimeError: mat1 and mat2 shapes")
    assert '"<generated model>"' in report.traceback and "site-packages" not in report.traceback
    assert "self.linear(hidden[:, :10])" in report.traceback


def test_a_missing_model_fails_at_import_and_a_bad_argument_at_instantiate() -> None:
    missing = check_model_code(GOOD_MODEL, model_name="BigNet", model_args={}, data=IMAGES, settings=SETTINGS)
    assert (missing.stage, missing.message) == (
        "import",
        "the proposed code has no model class or function named 'BigNet'; models defined there: SmallNet",
    )
    unexpected = check_model_code(GOOD_MODEL, model_name="SmallNet", model_args={"depth": 3}, data=IMAGES, settings=SETTINGS)
    # Named before the call, as the trainer names it: the same construction code builds both.
    assert (unexpected.stage, unexpected.message) == (
        "instantiate",
        "SmallNet() takes no argument 'depth'; arguments it accepts: width, num_classes",
    )


def test_a_nanogpt_style_model_gets_its_targets_and_its_returned_loss_is_checked() -> None:
    code = textwrap.dedent(
        """
        import torch
        from torch import nn
        from torch.nn import functional as F


        class TinyGPT(nn.Module):
            def __init__(self, vocab: int = 20, dim: int = 8):
                super().__init__()
                self.embed = nn.Embedding(vocab, dim)
                self.head = nn.Linear(dim, vocab)

            def forward(self, idx, targets=None):
                logits = self.head(self.embed(idx))
                if targets is None:
                    return logits[:, [-1], :], None
                return logits, LOSS
        """
    )
    passing = check_model_code(
        code.replace("LOSS", "F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-1)"),
        model_name="TinyGPT", model_args={}, data=TOKENS, settings=SETTINGS,
    )  # fmt: skip
    assert passing.ok, passing
    assert passing.output_shape == (SANDBOX_BATCH_SIZE, 6, 20)  # every position: the targets went in
    nan_loss = check_model_code(
        code.replace("LOSS", "logits.sum() * float('nan')"), model_name="TinyGPT", model_args={}, data=TOKENS, settings=SETTINGS
    )
    assert (nan_loss.ok, nan_loss.stage) == (False, "backward")
    assert "the loss is nan" in nan_loss.message  # the model's own loss is the one checked


def test_an_edit_of_a_nanogpt_file_is_built_with_the_runs_config_fields_and_the_datas_sizes() -> None:
    """GPT(config) with a GPTConfig dataclass: the sandbox builds the config from the run's
    `config.field` arguments and the data set's vocab_size and block_size, as the trainer does."""
    original = NANOGPT_FILE.read_text(encoding="utf-8")
    edited = original.replace("nn.GELU(),", "nn.ReLU(),")
    assert edited != original
    report = check_model_code(edited, model_name="GPT", model_args=TINY_GPT_ARGS, data=TOKENS, settings=SETTINGS)
    assert report.ok, report
    assert report.output_shape == (SANDBOX_BATCH_SIZE, 6, 20)  # block_size 6 and vocab_size 20 came from TOKENS
    # 1 block of width 16 with a tied 20-token head, not GPT-2's defaults: the run's fields were used.
    assert report.param_count is not None and report.param_count < 10_000


def test_an_edit_that_breaks_the_config_fails_with_the_field_named() -> None:
    original = NANOGPT_FILE.read_text(encoding="utf-8")
    # A field the run sets: refused before the call, with the fields that remain.
    without_n_head = original.replace("    n_head: int = 12\n", "")
    assert without_n_head != original
    report = check_model_code(without_n_head, model_name="GPT", model_args=TINY_GPT_ARGS, data=TOKENS, settings=SETTINGS)
    assert (report.ok, report.stage) == (False, "instantiate")
    assert report.message == (
        "GPTConfig has no field 'n_head' (--model-arg config.n_head); its fields: block_size, vocab_size, n_layer, n_embd, bias"
    )
    # A field only the model reads: the model's own error, at its line.
    without_bias = original.replace("    bias: bool = True\n", "")
    report = check_model_code(without_bias, model_name="GPT", model_args=TINY_GPT_ARGS, data=TOKENS, settings=SETTINGS)
    assert (report.ok, report.stage) == (False, "instantiate")
    assert "'GPTConfig' object has no attribute 'bias'" in report.message
    assert "\n" not in report.message
    assert report.line is not None and "config.bias" in without_bias.splitlines()[report.line - 1]


def test_without_a_model_reference_the_model_is_picked_as_the_trainer_picks_it() -> None:
    """A run started as `copilot train net.py` (no `:Name`): the file's one top-level class, else a clear line."""
    report = check_model_code(GOOD_MODEL, model_name=None, model_args={}, data=IMAGES, settings=SETTINGS)
    assert report.ok, report
    second = GOOD_MODEL + "\n\nclass OtherNet(SmallNet):\n    pass\n"
    report = check_model_code(second, model_name=None, model_args={}, data=IMAGES, settings=SETTINGS)
    assert (report.ok, report.stage) == (False, "import")
    assert report.message.startswith("several models in the proposed code: SmallNet, OtherNet;")


def test_an_edit_of_a_build_model_file_is_built_by_its_build_model() -> None:
    """minGPT wrapped in build_model(): its CfgNode is no dataclass, so no class reference and no
    --model-arg could build GPT; the sandbox calls the file's build_model(), as the trainer does."""
    original = MINGPT_WRAPPER_FILE.read_text(encoding="utf-8")
    edited = original.replace("act=NewGELU(),", "act=nn.GELU(),")
    assert edited != original
    report = check_model_code(edited, model_name=None, model_args={}, data=TEXT_SET, settings=SETTINGS)
    assert report.ok, report
    assert report.output_shape == (SANDBOX_BATCH_SIZE, 64, 30)
    # gpt-nano's 3 blocks of width 48, as build_model() asked for: 90,864 parameters with the tied-free head.
    assert report.param_count == 90_864


def test_an_edit_that_breaks_a_build_model_file_fails_with_one_line() -> None:
    original = MINGPT_WRAPPER_FILE.read_text(encoding="utf-8")
    # A rewrite that keeps the class but drops build_model(), as a regenerated file could.
    without_factory = original[: original.index("def build_model")]
    report = check_model_code(without_factory, model_name=None, model_args={}, data=TEXT_SET, settings=SETTINGS)
    assert (report.ok, report.stage) == (False, "instantiate")
    assert report.message == (
        "GPT() needs arguments: config; define build_model() in the proposed code that returns the model built as you want it"
    )
    # An edit inside build_model(): GPT-2's vocabulary instead of the data's 30 characters.
    gpt2_vocabulary = original.replace("model_config.vocab_size = 30", "model_config.vocab_size = 50257")
    report = check_model_code(gpt2_vocabulary, model_name=None, model_args={}, data=TEXT_SET, settings=SETTINGS)
    assert (report.ok, report.stage, report.message) == (
        False, "shape", "output shape (4, 64, 50257) but the data needs (4, 64, 30)"
    )  # fmt: skip


def test_a_proposal_keeps_the_runs_forward_signature_and_output_form() -> None:
    """The user's own code calls forward(idx, targets) and unpacks (logits, loss): a proposal may not change that."""
    code = textwrap.dedent(
        """
        import torch
        from torch import nn
        from torch.nn import functional as F


        class TinyGPT(nn.Module):
            def __init__(self, vocab: int = 20, dim: int = 8):
                super().__init__()
                self.embed = nn.Embedding(vocab, dim)
                self.head = nn.Linear(dim, vocab)

            def forward(SIGNATURE):
                logits = self.head(self.embed(idx))
                loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-1) if targets is not None else None
                return RESULT
        """
    )
    run = ForwardContract(form="(logits, loss)", passes_targets=True)

    def check(signature: str, result: str):  # type: ignore[no-untyped-def]
        proposal = code.replace("SIGNATURE", signature).replace("RESULT", result)
        return check_model_code(proposal, model_name=None, model_args={}, data=TOKENS, forward_contract=run, settings=SETTINGS)

    kept = check("self, idx, targets=None", "logits, loss")
    assert kept.ok, kept
    no_targets = check("self, idx", "logits")
    assert (no_targets.ok, no_targets.stage, no_targets.message) == (
        False, "forward", "forward takes no targets where the run's model takes forward(idx, targets); keep that signature"
    )  # fmt: skip
    logits_only = check("self, idx, targets=None", "logits")
    assert (logits_only.ok, logits_only.stage, logits_only.message) == (
        False,
        "forward",
        "forward returns a tensor where the run's model returns a (logits, loss) tuple; "
        "keep its output form, which the user's own code unpacks",
    )
