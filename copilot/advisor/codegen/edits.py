"""Targeted edits of the user's own model source, for when a small change suffices.

Swapping a saturating activation for ReLU is the smallest architecture change that
helps a shallow network whose sigmoid or tanh units sit in their flat tails (Glorot
and Bengio 2010; Nair and Hinton 2010). The edit finds the calls with `ast` and
rewrites only those spans of text, so the user's comments, layout and everything else
stay as they were. `loss_function` is left alone: a sigmoid there is part of the loss,
not a hidden layer. It writes source text only.
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

    if not replacements:
        return None
    edited = source
    for start, end, _, new, _ in sorted(replacements, reverse=True):
        edited = edited[:start] + new + edited[end:]
    changes = tuple(f"line {line}: {old} -> {new}" for _, _, old, new, line in sorted(replacements))
    return SourceEdit(code=edited, changes=changes)
