"""Targeted edits of the user's own model source, for when a small change suffices.

Swapping a saturating activation for ReLU is the smallest architecture change that
helps a shallow network whose sigmoid or tanh units sit in their flat tails (Glorot
and Bengio 2010; Nair and Hinton 2010). The edit finds the calls with `ast` and
rewrites only those spans of text, so the user's comments, layout and everything else
stay as they were. `loss_function` is left alone: a sigmoid there is part of the loss,
not a hidden layer. Removing a softmax that `forward` returns into the trainer's
cross-entropy (which applies its own log-softmax) is the same kind of edit: the call is
replaced by its argument. It writes source text only.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

# Call target (as written) -> replacement, for the spellings PyTorch code uses.
ACTIVATION_SWAPS: dict[str, str] = {
    "nn.Sigmoid": "nn.ReLU",
    "nn.Tanh": "nn.ReLU",
    "torch.nn.Sigmoid": "torch.nn.ReLU",
    "torch.nn.Tanh": "torch.nn.ReLU",
    "torch.sigmoid": "torch.relu",
    "torch.tanh": "torch.relu",
    "F.sigmoid": "F.relu",
    "F.tanh": "F.relu",
    "torch.nn.functional.sigmoid": "torch.nn.functional.relu",
    "torch.nn.functional.tanh": "torch.nn.functional.relu",
}
METHOD_SWAPS = {"sigmoid": "relu", "tanh": "relu"}  # x.sigmoid() -> x.relu()


@dataclass(frozen=True)
class SourceEdit:
    code: str
    changes: tuple[str, ...]  # "line 25: nn.Sigmoid -> nn.ReLU"


def _position(lines: list[str], line: int, column: int) -> int:
    # ast columns are UTF-8 byte offsets; convert them to character offsets in the line.
    text = lines[line - 1]
    return sum(len(previous) for previous in lines[: line - 1]) + len(text.encode("utf-8")[:column].decode("utf-8"))


def swap_saturating_activations(source: str, class_names: set[str] | None = None) -> SourceEdit | None:
    """Replace sigmoid and tanh calls in the model classes by ReLU; None when there are none.

    `class_names` limits the edit to those classes (all `nn.Module` classes of the file when None).
    """
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    replacements: list[tuple[int, int, str, str, int]] = []  # start, end, old, new, line

    for node in tree.body:
        if not isinstance(node, ast.ClassDef) or (class_names is not None and node.name not in class_names):
            continue
        for method in node.body:
            if isinstance(method, ast.FunctionDef) and method.name == "loss_function":
                continue
            for call in ast.walk(method):
                if not isinstance(call, ast.Call):
                    continue
                target = call.func
                written = ast.unparse(target)
                if written in ACTIVATION_SWAPS:
                    new = ACTIVATION_SWAPS[written]
                elif isinstance(target, ast.Attribute) and target.attr in METHOD_SWAPS and not call.args:
                    # x.sigmoid(): only the attribute name changes.
                    new = f"{ast.unparse(target.value)}.{METHOD_SWAPS[target.attr]}"
                else:
                    continue
                start = _position(lines, target.lineno, target.col_offset)
                end = _position(lines, target.end_lineno, target.end_col_offset)
                if source[start:end] != written:
                    continue  # written across lines or with odd spacing: leave it rather than guess
                replacements.append((start, end, written, new, target.lineno))

    return _spliced(source, replacements)


# Softmax spellings whose result, returned from `forward`, is fed to the trainer's cross-entropy.
SOFTMAX_CALLS = {"F.softmax", "torch.softmax", "torch.nn.functional.softmax", "nn.functional.softmax"}


def _returned_softmax_calls(method: ast.FunctionDef) -> list[ast.Call]:
    """Softmax calls whose result `forward` returns, directly or through one name (attention's softmax is not returned)."""
    assigned: dict[str, ast.expr] = {}
    found: list[ast.Call] = []
    for node in ast.walk(method):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            assigned[node.targets[0].id] = node.value
    for node in ast.walk(method):
        if not isinstance(node, ast.Return) or node.value is None:
            continue
        value = assigned.get(node.value.id, node.value) if isinstance(node.value, ast.Name) else node.value
        if isinstance(value, ast.Call) and _is_softmax(value):
            found.append(value)
    return found


def _is_softmax(call: ast.Call) -> bool:
    written = ast.unparse(call.func)
    if written in SOFTMAX_CALLS:
        return bool(call.args)
    return isinstance(call.func, ast.Attribute) and call.func.attr == "softmax" and written not in SOFTMAX_CALLS


def defines_loss_function(source: str) -> bool:
    """Whether the file brings its own loss (then the trainer's cross-entropy is not what follows the output)."""
    tree = ast.parse(source)
    return any(isinstance(node, ast.FunctionDef) and node.name == "loss_function" for node in ast.walk(tree))


def remove_softmax_before_loss(source: str, class_names: set[str] | None = None) -> SourceEdit | None:
    """Return the logits where `forward` returns softmax probabilities; None when it does not.

    Cross-entropy applies its own log-softmax, so probabilities fed to it are squashed twice.
    `log_softmax` is left alone: before nll_loss or cross-entropy it is exact.
    """
    tree = ast.parse(source)
    if defines_loss_function(source):
        return None
    lines = source.splitlines(keepends=True)
    replacements: list[tuple[int, int, str, str, int]] = []
    for node in tree.body:
        if not isinstance(node, ast.ClassDef) or (class_names is not None and node.name not in class_names):
            continue
        for method in node.body:
            if not (isinstance(method, ast.FunctionDef) and method.name == "forward"):
                continue
            for call in _returned_softmax_calls(method):
                inner = call.args[0] if call.args else call.func.value  # type: ignore[attr-defined]
                start = _position(lines, call.lineno, call.col_offset)
                end = _position(lines, call.end_lineno, call.end_col_offset)
                inner_start = _position(lines, inner.lineno, inner.col_offset)
                inner_end = _position(lines, inner.end_lineno, inner.end_col_offset)
                replacements.append((start, end, source[start:end], source[inner_start:inner_end], call.lineno))
    return _spliced(source, replacements)


def _spliced(source: str, replacements: list[tuple[int, int, str, str, int]]) -> SourceEdit | None:
    """`source` with each (start, end, old, new, line) span replaced; everything else byte for byte."""
    if not replacements:
        return None
    edited = source
    for start, end, _, new, _ in sorted(replacements, reverse=True):
        edited = edited[:start] + new + edited[end:]
    changes = tuple(f"line {line}: {old} -> {new}" for _, _, old, new, line in sorted(replacements))
    return SourceEdit(code=edited, changes=changes)


# An init call drawing weights at a constant scale under 0.02 (std, or uniform bound) is
# "far too small" for the layers these models use: a third of the Glorot std
# sqrt(2 / (fan_in + fan_out)) of a 256-wide layer, so each tanh layer shrinks the signal
# (Glorot and Bengio 2010). The rules edit it only when gradients are measured vanishing.
SMALL_INIT_SCALE = 0.02
INIT_SCALE_ARGUMENT = {"normal_": ("std", 2), "uniform_": ("b", 2), "trunc_normal_": ("std", 2)}


def _small_init_scale(call: ast.Call) -> float | None:
    """The constant scale of an `init.normal_`/`uniform_`/`trunc_normal_` call when it is under SMALL_INIT_SCALE."""
    if not isinstance(call.func, ast.Attribute) or call.func.attr not in INIT_SCALE_ARGUMENT or not call.args:
        return None
    if "init" not in ast.unparse(call.func.value).split("."):
        return None  # tensor.normal_(...) on something that is not nn.init: not a weight initialiser we know
    keyword, position = INIT_SCALE_ARGUMENT[call.func.attr]
    given = next((k.value for k in call.keywords if k.arg == keyword), call.args[position] if len(call.args) > position else None)
    try:
        scale = abs(float(ast.literal_eval(given))) if given is not None else None
    except ValueError:
        return None
    return scale if scale is not None and 0 < scale < SMALL_INIT_SCALE else None


def smallest_init_scale(source: str) -> float | None:
    """The smallest constant init scale under SMALL_INIT_SCALE in the source, or None."""
    scales = [_small_init_scale(node) for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Call)]
    return min((scale for scale in scales if scale is not None), default=None)


def use_glorot_init(source: str, nonlinearity: str) -> SourceEdit | None:
    """Replace weight inits at a tiny constant scale by Glorot's (`xavier_normal_` with the activation's gain)."""
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    replacements: list[tuple[int, int, str, str, int]] = []
    for call in ast.walk(tree):
        if not isinstance(call, ast.Call) or _small_init_scale(call) is None:
            continue
        init = ast.unparse(call.func.value)  # type: ignore[attr-defined]  ("nn.init", "torch.nn.init", "init")
        weight = ast.get_source_segment(source, call.args[0]) or ast.unparse(call.args[0])
        start = _position(lines, call.lineno, call.col_offset)
        end = _position(lines, call.end_lineno, call.end_col_offset)
        new = f'{init}.xavier_normal_({weight}, gain={init}.calculate_gain("{nonlinearity}"))'
        replacements.append((start, end, source[start:end], new, call.lineno))
    return _spliced(source, replacements)


class _InitCallsBlanked(ast.NodeTransformer):
    """Every `nn.init.*(...)` call replaced by the same placeholder."""

    def visit_Call(self, node: ast.Call) -> ast.AST:
        if isinstance(node.func, ast.Attribute) and "init" in ast.unparse(node.func.value).split("."):
            return ast.Constant(value="<init>")
        return self.generic_visit(node)


def changes_only_initialisation(old: str, new: str) -> bool:
    """Whether `new` differs from `old` only in its `nn.init` calls (comments and formatting aside).

    Such an edit is the initialisation itself: weights carried over from the trained model
    would undo it, so the swapped-in model must start from its own `__init__`.
    """
    try:
        before, after = ast.parse(old), ast.parse(new)
    except SyntaxError:
        return False
    if ast.dump(before) == ast.dump(after):
        return False
    blanked = _InitCallsBlanked()
    return ast.dump(blanked.visit(before)) == ast.dump(blanked.visit(after))


def resize_head(source: str, class_name: str, wrong: int, right: int) -> SourceEdit | None:
    """Give the class's last `Linear(..., wrong)` layer `right` outputs; None when there is no such literal."""
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    heads: list[ast.expr] = []
    for node in tree.body:
        if not (isinstance(node, ast.ClassDef) and node.name == class_name):
            continue
        for call in ast.walk(node):
            if not (isinstance(call, ast.Call) and ast.unparse(call.func).split(".")[-1] == "Linear"):
                continue
            size = next((k.value for k in call.keywords if k.arg == "out_features"), call.args[1] if len(call.args) > 1 else None)
            if isinstance(size, ast.Constant) and size.value == wrong:
                heads.append(size)
    if not heads:
        return None
    head = max(heads, key=lambda size: (size.lineno, size.col_offset))  # the last one written is the head
    start = _position(lines, head.lineno, head.col_offset)
    end = _position(lines, head.end_lineno, head.end_col_offset)
    return _spliced(source, [(start, end, str(wrong), str(right), head.lineno)])
