"""The static check of generated model code: a fast lint for honest mistakes, not a wall.

It reads the syntax tree of a model module and refuses, before anything runs, the
constructs a model file never needs and an escape always does: imports outside the
configured list, builtins that run or load code (`open`, `exec`, `eval`, `compile`,
`__import__`, `globals`, ...), interpreter internals reached through dunder or frame
attributes (`__subclasses__`, `__globals__`, `f_globals`, ...), modules that other
modules expose as attributes (`torch.os`, `typing.sys`, `F.np`), and torch's doors
to files and processes (`torch.load`, `torch.save`, `torch.hub`, `torch.from_file`,
`torch.utils.cpp_extension`, `torch.ops.load_library`, ...). A refusal names the
line and the construct.

It never imports, compiles for running, or executes the code it checks. Python has
too many doors for a syntax check to close them all (allowed modules re-export the
interpreter: `typing.stdlib_re.enum.bltns` is `builtins`), so it contains nothing:
containment is the operating system's (`copilot/walls.py`), around the sandbox child
and around every trainer that runs code the user did not write.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from dataclasses import dataclass

from copilot.errors import SandboxRefusal

GENERATED_FILENAME = "<generated model>"

# Modules whose only use in a model file would be to reach files, processes, the
# network or the interpreter. They are refused as imports whatever the configured
# list says, and as attribute names too, because other modules re-export them
# (`torch.os`, `typing.sys`, `torch.nn.functional.np`, `torch.multiprocessing.mp`).
DANGEROUS_MODULES = frozenset(
    {
        "os", "sys", "subprocess", "socket", "importlib", "ctypes", "shutil", "pathlib", "pickle",
        "builtins", "io", "inspect", "multiprocessing", "mp", "python_multiprocessing", "threading",
        "concurrent", "signal", "marshal", "runpy", "gc", "types", "operator", "tempfile", "glob",
        "platform", "np", "numpy", "logging", "gzip", "zipfile", "tarfile", "pkgutil", "atexit",
        "unittest", "linecache", "tokenize", "pickletools", "copyreg", "reduction", "reducer", "dis",
        "ast", "argparse", "traceback", "posix", "pty", "resource", "mmap", "urllib", "http", "code",
    }
)  # fmt: skip

# Attribute names that lead to files, processes, compilers or string evaluation,
# refused on any object: model code has no use for them, and refusing the name
# closes the door whichever alias the object was reached through.
FORBIDDEN_ATTRIBUTES = frozenset(
    {
        # torch's file, process and native-code doors
        "load", "save", "from_file", "load_library", "hub", "cpp_extension", "serialization",
        "package", "distributed", "onnx", "compile", "compiler", "profiler", "library", "export",
        "DataLoader", "collect_env", "tensorboard", "file_baton", "model_zoo", "hipify", "bottleneck",
        "show_pickle", "CompilationUnit", "PyTorchFileReader", "PyTorchFileWriter", "import_ir_module",
        "import_module", "profiler_util", "export_chrome_trace", "export_stacks", "tunable", "gds",
        "write_file", "read_file", "set_filename", "to_folder",
        "torch",  # a submodule's `torch` attribute would dodge the import-path checks below
        # numpy's file doors, reachable through Tensor.numpy()
        "tofile", "fromfile", "dump", "memmap",
        # process and environment
        "system", "popen", "fork", "environ", "getenv", "putenv",
        # string evaluation hidden in libraries
        "get_type_hints", "ForwardRef", "get_annotations",
        # frames, code and generator internals
        "f_globals", "f_locals", "f_builtins", "f_back", "f_code", "gi_frame", "gi_code",
        "cr_frame", "cr_code", "ag_frame", "ag_code", "tb_frame", "tb_next", "co_code",
    }
)  # fmt: skip

# The dunder names model code legitimately uses; every other dunder (`__globals__`,
# `__subclasses__`, `__builtins__`, `__code__`, `__dict__`, `__self__`, ...) is refused.
ALLOWED_DUNDERS = frozenset(
    {
        "__init__", "__name__", "__qualname__", "__class__", "__doc__", "__call__", "__len__",
        "__iter__", "__next__", "__getitem__", "__setitem__", "__contains__", "__repr__", "__str__",
        "__enter__", "__exit__", "__post_init__", "__main__", "__future__", "__version__", "__slots__",
        "__all__", "__constants__",
    }
)  # fmt: skip

FORBIDDEN_BUILTINS = frozenset(
    {"open", "exec", "eval", "compile", "globals", "locals", "vars", "breakpoint", "input", "help", "getattr"}
)

# torch.utils holds data loaders (which fork), C++ builds, tensorboard writers, ...;
# a model needs only activation checkpointing from it.
ALLOWED_TORCH_UTILS = frozenset({"checkpoint"})

# Refused as paths only: `classes` is too common a word to refuse as an attribute.
FORBIDDEN_TORCH_PATHS = frozenset({"torch.classes", "torch.fx"})

_DUNDER_IN_TEXT = re.compile(r"__\w+?__")

_HINT_SCOPE = "a model file may only define and compute with torch modules: no files, processes, network or introspection"


@dataclass(frozen=True)
class Refusal:
    """Why the static check refused a module: the first offending construct."""

    line: int | None
    message: str  # "line 12: call to open() is not allowed"
    hint: str


def static_check(code: str, allowed_imports: Sequence[str]) -> None:
    """Raise `SandboxRefusal` naming the line and construct if `code` may not run."""
    refusal = find_refusal(code, allowed_imports)
    if refusal is not None:
        raise SandboxRefusal(refusal.message, refusal.hint)


def find_refusal(code: str, allowed_imports: Sequence[str]) -> Refusal | None:
    """The first construct (by line) that the sandbox refuses in `code`, or None."""
    try:
        tree = ast.parse(code, filename=GENERATED_FILENAME)
        # Some errors (`return` outside a function, bad `nonlocal`) only appear when compiling.
        compile(tree, GENERATED_FILENAME, "exec", dont_inherit=True)
    except SyntaxError as error:
        where = f"line {error.lineno}: " if error.lineno else ""
        return Refusal(error.lineno, f"{where}syntax error: {error.msg}", "fix the syntax so the module parses")
    except ValueError as error:  # null bytes in the source
        return Refusal(None, f"the code cannot be parsed: {error}", "remove the null bytes")
    checker = _Checker(frozenset(allowed_imports))
    checker.visit(tree)
    if not checker.refusals:
        return None
    return min(checker.refusals, key=lambda refusal: refusal.line or 0)


def _is_dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


class _Checker(ast.NodeVisitor):
    """Walks the whole tree (function bodies and class bodies included) and records refusals."""

    def __init__(self, allowed_imports: frozenset[str]) -> None:
        self.allowed_imports = allowed_imports
        self.import_paths: dict[str, str] = {}  # local name -> dotted path it was imported as
        self.refusals: list[Refusal] = []

    def refuse(self, node: ast.AST, construct: str, hint: str = _HINT_SCOPE) -> None:
        line = getattr(node, "lineno", None)
        self.refusals.append(Refusal(line, f"line {line}: {construct} is not allowed", hint))

    # ------------------------------------------------------------------ imports

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if self.check_module_path(node, alias.name):
                local = alias.asname or alias.name.split(".")[0]
                self.import_paths[local] = alias.name if alias.asname else local

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            self.refuse(node, "a relative import", "import only from " + ", ".join(sorted(self.allowed_imports)))
            return
        module = node.module or ""
        if not self.check_module_path(node, module):
            return
        for alias in node.names:
            if alias.name == "*":
                self.refuse(node, f"'from {module} import *'", "import the names you use explicitly")
            elif self.check_dotted_path(node, f"{module}.{alias.name}"):
                self.import_paths[alias.asname or alias.name] = f"{module}.{alias.name}"

    def check_module_path(self, node: ast.AST, path: str) -> bool:
        top = path.split(".")[0]
        if top in DANGEROUS_MODULES or top not in self.allowed_imports:
            allowed = ", ".join(sorted(self.allowed_imports))
            self.refuse(node, f"import of '{path}'", f"model code may import only {allowed} (and their submodules)")
            return False
        return self.check_dotted_path(node, path)

    def check_dotted_path(self, node: ast.AST, path: str) -> bool:
        """Refuse an import path or attribute chain rooted at an import, e.g. `torch.utils.data`."""
        parts = path.split(".")
        for index, part in enumerate(parts[1:], start=1):
            if _is_dunder(part):
                if part in ALLOWED_DUNDERS:
                    continue
                self.refuse(node, f"access to attribute {part}")
                return False
            if part in DANGEROUS_MODULES or part in FORBIDDEN_ATTRIBUTES:
                self.refuse(node, path, _HINT_SCOPE)
                return False
            if part.startswith("_"):
                self.refuse(node, f"{path} (private API)", "use torch's public API")
                return False
            if index == 2 and parts[:2] == ["torch", "utils"] and part not in ALLOWED_TORCH_UTILS:
                self.refuse(node, path, "from torch.utils a model may use only torch.utils.checkpoint")
                return False
            if ".".join(parts[: index + 1]) in FORBIDDEN_TORCH_PATHS:
                self.refuse(node, path, _HINT_SCOPE)
                return False
        if parts[:2] == ["torch", "utils"] and len(parts) == 2:
            self.refuse(node, "torch.utils as a whole", "import torch.utils.checkpoint explicitly")
            return False
        return True

    # ------------------------------------------------------------------ names and attributes

    def visit_Name(self, node: ast.Name) -> None:
        if node.id in FORBIDDEN_BUILTINS:
            self.refuse(node, f"use of {node.id}()")
        elif _is_dunder(node.id) and isinstance(node.ctx, ast.Load) and node.id not in ALLOWED_DUNDERS:
            self.refuse(node, f"the name {node.id}")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        links: list[ast.Attribute] = []
        root: ast.expr = node
        while isinstance(root, ast.Attribute):
            links.append(root)
            root = root.value
        links.reverse()
        imported_as = self.import_paths.get(root.id) if isinstance(root, ast.Name) else None
        # A chain rooted at an import is named by its full path ("torch.load"), which says more.
        if imported_as is None or self.check_dotted_path(node, ".".join([imported_as, *(link.attr for link in links)])):
            for link in links:
                self.check_attribute_name(link, link.attr, link.value)
        self.visit(root)

    def check_attribute_name(self, node: ast.AST, name: str, receiver: ast.expr) -> None:
        if _is_dunder(name):
            if name not in ALLOWED_DUNDERS:
                self.refuse(node, f"access to attribute {name}")
        elif name in DANGEROUS_MODULES or name in FORBIDDEN_ATTRIBUTES:
            self.refuse(node, f"access to attribute .{name}")
        elif name.startswith("_") and not _is_own_object(receiver):
            self.refuse(node, f"access to private attribute .{name} of another object", "use public APIs; private names are allowed on self only")

    def visit_MatchClass(self, node: ast.MatchClass) -> None:
        # `case object(os=found)` reads attributes without an attribute expression.
        for name in node.kwd_attrs:
            self.check_attribute_name(node, name, node.cls)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Name) and func.id in ("getattr", "setattr", "delattr", "hasattr"):
            self.check_reflective_call(node, func.id)
        elif isinstance(func, ast.Name) and func.id in FORBIDDEN_BUILTINS:
            self.refuse(node, f"call to {func.id}()")
        else:
            self.visit(func)
        for argument in [*node.args, *node.keywords]:
            self.visit(argument)

    def check_reflective_call(self, node: ast.Call, function: str) -> None:
        name = node.args[1] if len(node.args) >= 2 else None
        if isinstance(name, ast.Constant) and isinstance(name.value, str):
            self.check_attribute_name(node, name.value, node.args[0])
        elif function == "getattr":
            # A computed name could spell "__globals__" or "os"; nothing above could see it.
            self.refuse(node, "getattr() with a computed attribute name", "use nn.ModuleList / nn.ModuleDict or name the attribute directly")

    def visit_Constant(self, node: ast.Constant) -> None:
        # Format strings ("{0.__globals__}") and library helpers that evaluate strings
        # reach internals through text, so a forbidden dunder is refused in text too.
        text = node.value.decode("latin-1") if isinstance(node.value, bytes) else node.value
        if isinstance(text, str):
            for dunder in _DUNDER_IN_TEXT.findall(text):
                if dunder not in ALLOWED_DUNDERS:
                    self.refuse(node, f"a string mentioning {dunder}")
                    return


def _is_own_object(receiver: ast.expr) -> bool:
    """`self._x`, `cls._x` and `super()._x` are the model's own private names."""
    if isinstance(receiver, ast.Name):
        return receiver.id in ("self", "cls")
    return isinstance(receiver, ast.Call) and isinstance(receiver.func, ast.Name) and receiver.func.id == "super"
