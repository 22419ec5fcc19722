"""Assembling a generated model file that keeps the original's contract.

A generator (image, MLP, transformer) decides the layers; this module writes them into
a complete file around the pieces the original must keep: its class name and
constructor signature, its forward contract (`forward(idx, targets=None)` returning
`(logits, loss)` as nanoGPT's does, or a dict), its `loss_function` (with any
`self.<attribute>` assignments that method reads), its `HPARAMS` and its allowed
imports. It also binds sizes to the constructor's parameters where their names say
what they are (`num_classes`, `vocab_size`, `d_model`, ...), so arguments the user
passes keep working. A config-object constructor or a `build_model()` factory is not
kept: the sandbox refuses such a module, built as the run builds its model.
It does not decide the architecture and does not run anything.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from copilot.advisor.offline.codegen.source import ModelSource
from copilot.events import ForwardContract

Profile = Literal["standard", "compact", "minimal"]
PROFILES: tuple[Profile, ...] = ("standard", "compact", "minimal")
STANDARD_IMPORTS = ("import torch", "import torch.nn.functional as F", "from torch import nn")

# Constructor parameter names, by the size they mean. The first present one is bound.
PARAMETER_ROLES: dict[str, tuple[str, ...]] = {
    "classes": ("num_classes", "n_classes", "classes", "num_outputs", "out_features"),
    "in_channels": ("in_channels", "input_channels", "channels", "in_ch"),
    "vocab": ("vocab_size", "n_vocab", "num_tokens", "vocab"),
    "width": ("width", "hidden", "hidden_size", "hidden_dim", "d_hidden", "base_width"),
    "depth": ("depth", "num_layers", "n_layers", "n_layer", "layers"),
    "d_model": ("d_model", "n_embd", "embed_dim", "embedding_dim", "dim", "hidden_size"),
    "heads": ("n_heads", "num_heads", "n_head", "nhead", "heads"),
    "context": ("block_size", "seq_len", "max_len", "max_length", "context_length", "max_seq_len", "context"),
}


@dataclass(frozen=True)
class Size:
    """A size in generated code: a constructor parameter's name (maybe scaled), or a literal."""

    value: int  # the value it takes with the run's arguments
    expression: str  # what the generated code writes
    parameter: str | None = None  # the constructor parameter it reads, if any

    @classmethod
    def literal(cls, value: int) -> Size:
        return cls(value, str(value))

    def times(self, factor: int) -> Size:
        if factor == 1:
            return self
        if self.parameter is None:
            return Size.literal(self.value * factor)
        return Size(self.value * factor, f"{factor} * {self.expression}", self.parameter)


@dataclass(frozen=True)
class Bindings:
    """The original constructor's parameters with the values they take in this run."""

    values: Mapping[str, object]  # name -> value (the run's argument, else the default)

    @classmethod
    def of(cls, source: ModelSource, model_args: Mapping[str, object]) -> Bindings:
        values: dict[str, object] = {}
        for parameter in source.parameters:
            if parameter.name in model_args:
                values[parameter.name] = model_args[parameter.name]
            elif parameter.default in source.constant_values:
                values[parameter.name] = source.constant_values[parameter.default]
            elif parameter.default is not None:
                try:
                    values[parameter.name] = ast.literal_eval(parameter.default)
                except (ValueError, SyntaxError):
                    continue
        return cls(values)

    def size(self, role: str, fallback: int) -> Size:
        """The first parameter named for `role` that holds a positive int, else `fallback` as a literal."""
        for name in PARAMETER_ROLES[role]:
            value = self.values.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return Size(value, name, name)
        return Size.literal(fallback)


def parameters_read(*sizes: Size) -> frozenset[str]:
    return frozenset(size.parameter for size in sizes if size.parameter)


@dataclass(frozen=True)
class GeneratedModel:
    """Layers decided by a generator, ready to be written around the original's contract."""

    description: str  # one line for the docstring: what the architecture is
    helpers: tuple[str, ...]  # helper class definitions, at column 0
    init_lines: tuple[str, ...]  # body of __init__ after super().__init__(), at column 0
    forward_signature: str  # e.g. "self, x: torch.Tensor"
    forward_lines: tuple[str, ...]  # body of forward, at column 0
    changes: tuple[str, ...]  # one human-readable line per change
    used_parameters: frozenset[str] = field(default_factory=frozenset)


def _indent(lines: Sequence[str], depth: int) -> list[str]:
    pad = "    " * depth
    return [pad + line if line else "" for line in lines]


def _self_attributes_read(loss_function: str) -> set[str]:
    tree = ast.parse(loss_function)
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self"
    }


def _attribute_assignments(original_source: str, class_name: str, names: set[str]) -> list[str]:
    """`self.<name> = ...` statements of the original __init__ for the attributes `names`."""
    tree = ast.parse(original_source)
    found: list[str] = []
    for node in tree.body:
        if not (isinstance(node, ast.ClassDef) and node.name == class_name):
            continue
        for method in node.body:
            if not (isinstance(method, ast.FunctionDef) and method.name == "__init__"):
                continue
            for statement in method.body:
                if isinstance(statement, (ast.Assign, ast.AnnAssign)):
                    targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
                    if any(
                        isinstance(target, ast.Attribute)
                        and isinstance(target.value, ast.Name)
                        and target.value.id == "self"
                        and target.attr in names
                        for target in targets
                    ):
                        found.append(ast.unparse(statement))
    return found


# How a forward packs its logits and loss, by the output forms the trainer reads (model_outputs.OutputForm).
# An "object with .logits" is the user's own class, which a generated file cannot rebuild.
PACKED_RESULTS = {
    "tensor": "return logits",
    "(logits, loss)": "return logits, loss",
    "(loss, logits)": "return (loss, logits) if loss is not None else (logits,)",  # as Hugging Face's tuples
    "(logits,)": "return (logits,)",
    "dict": 'return {"logits": logits, "loss": loss}',
}
OWN_LOSS = (
    "loss = None if targets is None else "
    "F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)"
)


def keep_forward_contract(generated: GeneratedModel, contract: ForwardContract | None) -> tuple[str, list[str]]:
    """The generated forward's signature and body, taking the targets and packing the result as the run's model does.

    A generated forward ends with `return <logits>`; a model whose forward took the targets
    computes its own loss from them (cross-entropy, `ignore_index=-1` as nanoGPT's).
    """
    if contract is None or contract.form not in PACKED_RESULTS or (contract.form == "tensor" and not contract.passes_targets):
        return f"def forward({generated.forward_signature}) -> torch.Tensor:", list(generated.forward_lines)
    *body, last = generated.forward_lines
    lines = [*body, f"logits = {last.removeprefix('return ')}"]
    signature = generated.forward_signature
    if contract.passes_targets:
        signature += ", targets: torch.Tensor | None = None"
        lines.append(OWN_LOSS)
    else:
        lines.append("loss = None")
    return f"def forward({signature}):", [*lines, PACKED_RESULTS[contract.form]]


def assemble(
    *,
    original: ModelSource,
    original_source: str,
    generated: GeneratedModel,
    title: str,
    keep_imports: bool = True,
    forward_contract: ForwardContract | None = None,
) -> str:
    """The complete module text: docstring, imports, HPARAMS, helpers, the model class.

    `forward_contract` is the run's: the generated forward takes and returns what the original's did.
    """
    lines = [
        f'"""{title}',
        "",
        generated.description,
        "",
        "Written by copilot's offline advisor; it keeps the original's class name,",
        "constructor signature, forward signature and input/output contract.",
        '"""',
        "",
    ]
    carried = [line for line in original.carried_imports if keep_imports and line not in STANDARD_IMPORTS]
    # A __future__ import must come before every other statement but the docstring.
    lines += [line for line in carried if line.startswith("from __future__")]
    lines += [*STANDARD_IMPORTS, *(line for line in carried if not line.startswith("from __future__")), ""]
    if original.hparams_assignment:
        lines += ["", original.hparams_assignment.strip(), ""]
    if original.constants:
        lines += ["", *original.constants, ""]
    for helper in generated.helpers:
        lines += ["", helper.rstrip(), ""]

    kept_attributes: list[str] = []
    if original.loss_function:
        kept_attributes = _attribute_assignments(original_source, original.class_name, _self_attributes_read(original.loss_function))
    unused = [p.name for p in original.parameters if p.name not in generated.used_parameters]

    body = ["super().__init__()"]
    if unused:
        body.append(f"# Not used by this architecture, kept so existing arguments still work: {', '.join(unused)}.")
    body += list(generated.init_lines)
    if kept_attributes:
        body.append("# Read by loss_function, kept from the original.")
        body += kept_attributes
    lines += ["", f"class {original.class_name}(nn.Module):"]
    lines += _indent([f"def __init__({original.constructor_signature}):"], 1)
    lines += _indent(body, 2)
    forward_definition, forward_lines = keep_forward_contract(generated, forward_contract)
    lines += ["", *_indent([forward_definition], 1)]
    lines += _indent(forward_lines, 2)
    if original.loss_function:
        lines += ["", *_indent(original.loss_function.splitlines(), 1)]
    text = "\n".join(lines).rstrip() + "\n"
    # Collapse runs of blank lines the optional parts leave behind (PEP 8: two between top-level blocks).
    while "\n\n\n\n" in text:
        text = text.replace("\n\n\n\n", "\n\n\n")
    return text


def helper_name(wanted: str, taken: str) -> str:
    """A helper class name that does not collide with the model's own class name."""
    return wanted if wanted != taken else f"{wanted}Layer"
