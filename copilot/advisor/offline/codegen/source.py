"""What a user's model file declares, read with `ast` and never executed.

The code generators must keep a model's contract: the same class name, the same
constructor signature (with its defaults), a `loss_function` method if there was one,
and the module-level `HPARAMS` if present. This module finds those pieces in the
original source and hands them back as source text. It does not import or run the
file (that is the sandbox's job) and it does not write code.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass, field

from copilot.errors import AdvisorError

# Modules whose import statements a generated file may carry over from the original:
# the sandbox's default allow-list (copilot.config.SandboxSettings.allowed_imports).
CARRIED_IMPORT_ROOTS = frozenset(
    {"torch", "math", "typing", "dataclasses", "functools", "collections", "itertools", "__future__"}
)


@dataclass(frozen=True)
class ConstructorParameter:
    name: str
    default: str | None  # the default as source text, None when the parameter has none


@dataclass(frozen=True)
class ModelSource:
    """The parts of a model file a regenerated file must keep."""

    class_name: str
    constructor_signature: str  # e.g. "self, num_classes: int = 10, width=16"
    parameters: tuple[ConstructorParameter, ...]  # without self, *args and **kwargs
    loss_function: str | None  # the method's source, dedented to column 0
    hparams_assignment: str | None  # `HPARAMS = {...}` as written
    carried_imports: tuple[str, ...]  # import lines from the allow-list, as written
    constants: tuple[str, ...] = ()  # module-level `NAME = <literal>` lines (defaults may name them)
    constant_values: Mapping[str, object] = field(default_factory=dict)

    def parameter_names(self) -> frozenset[str]:
        return frozenset(parameter.name for parameter in self.parameters)


def _is_module_subclass(node: ast.ClassDef) -> bool:
    for base in node.bases:
        name = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "")
        if name == "Module":
            return True
    return False


def guess_model_class(source: str) -> str | None:
    """The class the trainer would load: the last `nn.Module` subclass with a `forward` (helpers come first)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    candidates = [
        node.name
        for node in tree.body
        if isinstance(node, ast.ClassDef)
        and _is_module_subclass(node)
        and any(isinstance(item, ast.FunctionDef) and item.name == "forward" for item in node.body)
    ]
    return candidates[-1] if candidates else None


def declared_hparams(source: str) -> dict[str, object]:
    """The file's module-level `HPARAMS` dict when it is a plain literal, else {}."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "HPARAMS" for t in node.targets):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                return {}
            return value if isinstance(value, dict) else {}
    return {}


def _segment(source: str, node: ast.AST) -> str:
    text = ast.get_source_segment(source, node, padded=True)
    return text if text is not None else ast.unparse(node)


def _dedent_method(source: str, node: ast.FunctionDef) -> str:
    lines = source.splitlines()
    first = min([node.lineno, *(decorator.lineno for decorator in node.decorator_list)])
    body = lines[first - 1 : node.end_lineno]
    indent = min(len(line) - len(line.lstrip()) for line in body if line.strip())
    return "\n".join(line[indent:] for line in body)


def _signature_text(source: str, arguments: ast.arguments) -> str:
    """The parameter list as the user wrote it (spacing, annotations, defaults), else as ast writes it."""
    nodes: list[ast.AST] = [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]
    nodes += [node for node in (arguments.vararg, arguments.kwarg) if node is not None]
    nodes += [node for node in (*arguments.defaults, *arguments.kw_defaults) if node is not None]
    if not nodes:
        return ast.unparse(arguments)
    first = min(nodes, key=lambda node: (node.lineno, node.col_offset))
    last = max(nodes, key=lambda node: (node.end_lineno, node.end_col_offset))
    lines = source.splitlines()
    if first.lineno == last.end_lineno:
        line = lines[first.lineno - 1].encode("utf-8")
        return line[first.col_offset : last.end_col_offset].decode("utf-8")
    return ast.unparse(arguments)


def parse_model_source(source: str, class_name: str) -> ModelSource:
    """Read the contract of `class_name` from `source`; an `AdvisorError` if it is not there."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise AdvisorError(
            f"the model source does not parse: line {exc.lineno}: {exc.msg}",
            "fix the syntax error in the model file",
        ) from None
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    if class_name not in classes:
        raise AdvisorError(
            f"the model source defines no class {class_name}",
            "point copilot at the model file that defines it",
        )
    model_class = classes[class_name]
    methods = {item.name: item for item in model_class.body if isinstance(item, ast.FunctionDef)}

    signature = "self"
    parameters: tuple[ConstructorParameter, ...] = ()
    if "__init__" in methods:
        arguments = methods["__init__"].args
        signature = _signature_text(source, arguments)
        positional = [*arguments.posonlyargs, *arguments.args]
        defaults: list[ast.expr | None] = [None] * (len(positional) - len(arguments.defaults)) + list(arguments.defaults)
        named = [
            ConstructorParameter(arg.arg, None if default is None else ast.unparse(default))
            for arg, default in zip(positional, defaults)
        ]
        named += [
            ConstructorParameter(arg.arg, None if default is None else ast.unparse(default))
            for arg, default in zip(arguments.kwonlyargs, arguments.kw_defaults)
        ]
        parameters = tuple(parameter for parameter in named if parameter.name != "self")

    loss_function = _dedent_method(source, methods["loss_function"]) if "loss_function" in methods else None

    hparams_assignment = None
    carried_imports: list[str] = []
    constants: list[str] = []
    constant_values: dict[str, object] = {}
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [target.id for target in targets if isinstance(target, ast.Name)]
            if "HPARAMS" in names:
                hparams_assignment = _segment(source, node)
            elif len(names) == 1 and node.value is not None:
                try:
                    constant_values[names[0]] = ast.literal_eval(node.value)
                except ValueError:
                    continue
                constants.append(_segment(source, node))
        elif isinstance(node, ast.Import):
            if all(alias.name.split(".")[0] in CARRIED_IMPORT_ROOTS for alias in node.names):
                carried_imports.append(_segment(source, node))
        elif isinstance(node, ast.ImportFrom):
            if (node.module or "").split(".")[0] in CARRIED_IMPORT_ROOTS and node.level == 0:
                carried_imports.append(_segment(source, node))
    return ModelSource(
        class_name=class_name,
        constructor_signature=signature,
        parameters=parameters,
        loss_function=loss_function,
        hparams_assignment=hparams_assignment,
        carried_imports=tuple(carried_imports),
        constants=tuple(constants),
        constant_values=constant_values,
    )
