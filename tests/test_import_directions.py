"""Imports between copilot's packages point one way; each rule here names one direction.

Every module under `copilot/` is parsed with `ast`, never imported, and every `import` and
`from ... import` in it counts, at module level or inside a function or an
`if TYPE_CHECKING:` block alike. `from copilot import walls` counts as an import of
`copilot.walls`. A failure lists the offending `module -> import` pairs.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

import copilot

PACKAGE_FOLDER = Path(copilot.__file__).resolve().parent

# What the trainer process may import: it runs behind walls, so it reads as little of
# copilot as it can. `copilot` itself is here because `training/launcher.py` does
# `import copilot` for `copilot.__file__`, the package folder it lets the walled trainer
# read and puts on the trainer's path; the package file holds only `__version__`.
TRAINING_MAY_IMPORT = (
    "copilot",
    "copilot.training",
    "copilot.events",
    "copilot.errors",
    "copilot.config",
    "copilot.walls",
    "copilot.run_folder",
    "copilot.metrics_file",
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_FOLDER.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE_FOLDER.rglob("*.py"))}


def _is_within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


@cache
def _imports(module: str) -> tuple[str, ...]:
    """Every module `module` imports, copilot's and others', in the order they appear."""
    path = _modules()[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    targets: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's own package, `level - 1` folders up
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, node.module] if node.module else anchor)
            else:
                base = node.module or ""
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                # `from copilot import walls` imports the module copilot.walls; `from copilot.x import f` imports copilot.x.
                targets.append(submodule if submodule in _modules() else base)
    return tuple(targets)


def _training_may_import(name: str) -> bool:
    # `copilot` the package file only, not everything under it.
    return name == "copilot" or any(_is_within(name, allowed) for allowed in TRAINING_MAY_IMPORT if allowed != "copilot")


@dataclass(frozen=True)
class Rule:
    """Modules within `scope` (and not within `unless`) must not import what `refused` says."""

    scope: str
    refused: Callable[[str, str], bool]  # (module, imported) -> True when the import breaks the rule
    unless: str | None = None


RULES = {
    "training_imports_only_the_contract_and_the_walls": Rule(
        "copilot.training", lambda _, name: _is_within(name, "copilot") and not _training_may_import(name)
    ),
    "offline_advisor_never_imports_the_llm_side": Rule(
        "copilot.advisor.offline", lambda _, name: _is_within(name, "copilot.advisor.llm")
    ),
    "llm_side_never_imports_the_offline_advisor": Rule(
        "copilot.advisor.llm", lambda _, name: _is_within(name, "copilot.advisor.offline")
    ),
    "only_the_tui_imports_textual": Rule("copilot", lambda _, name: _is_within(name, "textual"), unless="copilot.tui"),
    "session_never_imports_the_command_line_or_the_console": Rule(
        "copilot.session",
        lambda _, name: _is_within(name, "copilot.commands") or _is_within(name, "copilot.console"),
    ),
    "tuning_never_imports_the_session_the_console_or_the_app": Rule(
        "copilot.tuning",
        lambda _, name: any(_is_within(name, package) for package in ("copilot.session", "copilot.console", "copilot.commands", "copilot.tui")),
    ),
        "console_never_imports_the_command_line": Rule(
        "copilot.console",
        lambda module, name: _is_within(name, "copilot.commands"),
    ),
}


@pytest.mark.parametrize("rule_name", list(RULES))
def test_import_direction(rule_name: str) -> None:
    rule = RULES[rule_name]
    scoped = [
        module
        for module in _modules()
        if _is_within(module, rule.scope) and not (rule.unless and _is_within(module, rule.unless))
    ]
    assert scoped, f"no module under {rule.scope}: the rule would hold for nothing"
    offending = [f"{module} -> {name}" for module in scoped for name in _imports(module) if rule.refused(module, name)]
    assert not offending, f"{rule_name}:\n" + "\n".join(offending)


def test_the_parser_sees_imports_inside_functions_and_from_the_package() -> None:
    """The rules above mean something: a lazy import and `from copilot import walls` are both found."""
    assert "copilot.console.headless" in _imports("copilot.commands.session")  # inside a function
    assert "copilot.walls" in _imports("copilot.training.launcher")  # `from copilot import walls`
    assert "textual.app" in _imports("copilot.tui.app")
