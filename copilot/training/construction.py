"""How a model is built from its file: which factory, constructor arguments, config objects, sizes from the data.

`find_factory` picks the class or function that builds the model (`file.py:Name`, else
`build_model()`, else the one top-level `nn.Module` subclass the file defines).
`build_model` calls it with the run's arguments:
plain `name=value` arguments as they are, `config.field=value` arguments gathered into
the config object (a dataclass or pydantic model) a parameter takes, with the data set's
`vocab_size` and `block_size` filled in for the sequence task. A config built here from
class defaults can be GPT-2 sized (minGPT's are), so its model is counted on the meta
device first and refused past the parameter budget. Every problem is one
`ConstructionError` with a message and a hint, before a bare TypeError could be.

The trainer (through `copilot.training.models`) and the sandbox child both pick and build
models here, so a proposal is checked exactly as it will be built. The child loads this file by
its path, behind its walls, so it imports only the standard library and torch, never
copilot or pydantic (a pydantic config can only exist once its file imported pydantic).
It must not train, print or write files.
"""

from __future__ import annotations

import inspect
import re
import sys
import traceback
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, fields, is_dataclass
from types import ModuleType

import torch
from torch import nn

_SCALAR_TYPES = (int, float, str, bool)


class ConstructionError(Exception):
    """The model cannot be built with these arguments: `message` says why, `hint` what to do.

    `cause` is the exception the user's own code raised (a constructor or config that
    failed), kept so the sandbox can report its line and its kind (out of memory, a
    refusal) as for any other failure of the checked code.
    """

    def __init__(self, message: str, hint: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.cause = cause


@dataclass(frozen=True)
class UserCode:
    """The code a model comes from: the file name its tracebacks carry, and the name messages give it."""

    filename: str
    name: str

    def where(self, exc: BaseException) -> str:
        """`name:LINE` of the deepest traceback frame inside this code, or the name alone."""
        lines = [frame.lineno for frame in traceback.extract_tb(exc.__traceback__) if frame.filename == self.filename]
        return f"{self.name}:{lines[-1]}" if lines else self.name


def _error_summary(exc: BaseException) -> str:
    """`copilot.errors.error_summary`, which this file cannot import: the sandbox child loads it
    by path, with the standard library and torch only."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def fields_from_data(task: str, input_shape: tuple[int, ...], num_classes: int) -> dict[str, int]:
    """The fields of a sequence model's config that the data set decides; none for other tasks."""
    if task != "sequence":
        return {}
    return {"vocab_size": num_classes, "block_size": input_shape[0]}


def find_factory(module: ModuleType, name: str | None, code: UserCode) -> tuple[Callable[..., object], str]:
    """The class or function that builds the model, and its name, by the rules in the module docstring.

    `name` is the reference the run was given (`file.py:Name`), None to let the file's own
    definitions decide; the sandbox passes the same reference, so a proposal that drops the
    `build_model()` the run relies on, or adds a second top-level model, fails its check.
    """
    candidates = _defined_modules(module)
    if name is not None:
        factory = getattr(module, name, None)
        if factory is None or not callable(factory):
            raise ConstructionError(
                f"{code.name} has no model class or function named '{name}'",
                f"models defined there: {', '.join(candidates) or 'none'}",
            )
        return factory, name
    factory = getattr(module, "build_model", None)
    if callable(factory):
        return factory, "build_model"
    if not candidates:
        raise ConstructionError(
            f"no model found in {code.name}", "define an nn.Module subclass or a build_model() function in the file"
        )
    top_level = _top_level_candidates(candidates)
    if len(top_level) == 1:
        return candidates[top_level[0]], top_level[0]
    raise ConstructionError(
        f"several models in {code.name}: {', '.join(top_level)}",
        f"pick one with {code.name}:{top_level[0]} (or define build_model())",
    )


def _defined_modules(module: ModuleType) -> dict[str, type[nn.Module]]:
    """nn.Module subclasses defined in the file itself, not imported into it."""
    return {
        attribute_name: value
        for attribute_name, value in vars(module).items()
        if inspect.isclass(value) and issubclass(value, nn.Module) and value.__module__ == module.__name__
    }


def _top_level_candidates(candidates: dict[str, type[nn.Module]]) -> list[str]:
    """Drop classes that another candidate builds in its __init__ (a `Block` used by `Net`).

    The source comes through linecache, which holds the sandbox's checked code as it holds a file's.
    """
    init_sources: dict[str, str] = {}
    for class_name, cls in candidates.items():
        init = cls.__dict__.get("__init__")
        try:
            init_sources[class_name] = inspect.getsource(init) if init is not None else ""
        except (OSError, TypeError):
            init_sources[class_name] = ""
    used = {
        inner
        for inner in candidates
        for outer, source in init_sources.items()
        if outer != inner and re.search(rf"\b{re.escape(inner)}\b", source)
    }
    return [class_name for class_name in candidates if class_name not in used] or list(candidates)


def build_model(
    factory: Callable[..., object],
    factory_name: str,
    module: ModuleType,
    model_args: Mapping[str, object],
    data_fields: Mapping[str, int],
    max_params: int,
    code: UserCode,
) -> nn.Module:
    """Call `factory` (defined in `module`) with `model_args`, config objects built, as the run builds it."""
    arguments = _resolve_arguments(factory, factory_name, module, model_args, data_fields, code)
    if arguments.built_configs:
        _refuse_oversized(factory, factory_name, arguments, max_params)
    try:
        model = factory(**arguments.values)
    except Exception as exc:
        raise ConstructionError(
            f"building {factory_name}() failed at {code.where(exc)}: {_error_summary(exc)}",
            "fix the constructor or the model arguments (--model-arg key=value)",
            cause=exc,
        ) from None
    if not isinstance(model, nn.Module):
        raise ConstructionError(
            f"{factory_name}() returned a {type(model).__name__}, not an nn.Module",
            "return the model instance from it",
        )
    return model


@dataclass(frozen=True)
class _Arguments:
    """What the factory is called with, after config objects were built from `name.field` arguments."""

    values: dict[str, object]
    built_configs: tuple[str, ...]  # "config=GPTConfig": the config objects built here
    default_sizes: tuple[str, ...]  # "config.n_layer": integer fields left at the class's default


def _resolve_arguments(
    factory: Callable[..., object],
    factory_name: str,
    module: ModuleType,
    model_args: Mapping[str, object],
    data_fields: Mapping[str, int],
    code: UserCode,
) -> _Arguments:
    """Build config objects, then name missing or unknown constructor arguments before calling, instead of a TypeError."""
    try:
        parameters = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):  # no introspectable signature: let the call speak
        return _Arguments(dict(model_args), (), ())
    plain = {key: value for key, value in model_args.items() if "." not in key}
    dotted: dict[str, dict[str, object]] = {}
    for key, value in model_args.items():
        if "." in key:
            owner, _dot, field_name = key.partition(".")
            dotted.setdefault(owner, {})[field_name] = value
    named = [p for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    annotations = _annotations(factory, module, named)
    values: dict[str, object] = dict(plain)
    built: list[str] = []
    default_sizes: list[str] = []
    for parameter in named:
        config_class = _config_class(parameter, annotations.get(parameter.name), module)
        wanted = parameter.name in dotted or parameter.default is inspect.Parameter.empty
        if config_class is None or parameter.name in plain or not wanted:
            continue
        config, used = _build_config(config_class, parameter.name, dotted.get(parameter.name, {}), data_fields, code)
        values[parameter.name] = config
        built.append(f"{parameter.name}={config_class.__name__}")
        default_sizes += [f"{parameter.name}.{name}" for name in _integer_fields(config_class) if name not in used]
    stray = [owner for owner in dotted if owner not in {entry.partition("=")[0] for entry in built}]
    if stray:
        owner = stray[0]
        raise ConstructionError(
            f"{factory_name}() has no config parameter '{owner}' for --model-arg {owner}.{next(iter(dotted[owner]))}",
            "config.field=value arguments need a parameter annotated with a dataclass or pydantic model",
        )
    _check_arguments(factory_name, named, values, annotations, code, any(p.kind is p.VAR_KEYWORD for p in parameters))
    return _Arguments(values, tuple(built), tuple(default_sizes))


def _check_arguments(
    factory_name: str,
    named: list[inspect.Parameter],
    values: Mapping[str, object],
    annotations: Mapping[str, object],
    code: UserCode,
    accepts_any: bool,
) -> None:
    missing = [p for p in named if p.default is inspect.Parameter.empty and p.name not in values]
    if missing:
        example = " ".join(f"--model-arg {p.name}=..." for p in missing)
        # A parameter no command-line value can give (an object, a config class of no known kind):
        # the file has to build the model itself.
        unbuildable = [p for p in missing if _looks_like_object(p, annotations.get(p.name))]
        hint = (
            f"define build_model() in {code.name} that returns the model built as you want it"
            if unbuildable
            else f"give them with {example} or under [model.args] in copilot.toml"
        )
        raise ConstructionError(f"{factory_name}() needs arguments: {', '.join(p.name for p in missing)}", hint)
    unknown = [key for key in values if key not in {p.name for p in named}]
    if unknown and not accepts_any:
        accepted = ", ".join(p.name for p in named) or "none"
        raise ConstructionError(
            f"{factory_name}() takes no argument {', '.join(repr(k) for k in unknown)}",
            f"arguments it accepts: {accepted}",
        )


def _annotations(factory: Callable[..., object], module: ModuleType, named: list[inspect.Parameter]) -> dict[str, object]:
    """Parameter annotations as objects; string annotations (`from __future__ import annotations`
    or quoted) are resolved in the file's namespace."""
    target = factory.__init__ if inspect.isclass(factory) else factory  # type: ignore[misc]
    try:
        resolved: dict[str, object] = typing.get_type_hints(target)
    except Exception:  # an annotation naming something not importable: look names up one by one
        resolved = {}
    for parameter in named:
        if parameter.name not in resolved and isinstance(parameter.annotation, str):
            found = vars(module).get(parameter.annotation.strip("'\""))
            if found is not None:
                resolved[parameter.name] = found
        elif parameter.name not in resolved and parameter.annotation is not inspect.Parameter.empty:
            resolved[parameter.name] = parameter.annotation
    return resolved


def _pydantic_base() -> type | None:
    """pydantic's BaseModel if some code imported pydantic; a class cannot be a pydantic model otherwise."""
    pydantic = sys.modules.get("pydantic")
    return getattr(pydantic, "BaseModel", None)


def _is_config_class(candidate: object) -> bool:
    if not inspect.isclass(candidate):
        return False
    base = _pydantic_base()
    return is_dataclass(candidate) or (base is not None and issubclass(candidate, base))


def _config_class(parameter: inspect.Parameter, annotation: object, module: ModuleType) -> type | None:
    """The dataclass or pydantic model a parameter takes: its annotation (`Optional[...]` too), or,
    for an unannotated `config` parameter as nanoGPT writes it, the one `*Config` dataclass of the file."""
    if annotation is not None:
        options = [annotation, *typing.get_args(annotation)]
        classes = [option for option in options if _is_config_class(option)]
        return classes[0] if len(classes) == 1 else None
    if "config" not in parameter.name.lower() and "cfg" not in parameter.name.lower():
        return None
    defined = [
        value
        for name, value in vars(module).items()
        if name.endswith("Config") and _is_config_class(value) and getattr(value, "__module__", None) == module.__name__
    ]
    return defined[0] if len(defined) == 1 else None


def _looks_like_object(parameter: inspect.Parameter, annotation: object) -> bool:
    if annotation is not None:
        return inspect.isclass(annotation) and not issubclass(annotation, _SCALAR_TYPES)
    return "config" in parameter.name.lower() or "cfg" in parameter.name.lower()


def _config_fields(config_class: type) -> dict[str, bool]:
    """Field name -> whether it has a default."""
    if is_dataclass(config_class):
        return {
            field.name: field.default is not MISSING or field.default_factory is not MISSING
            for field in fields(config_class)
            if field.init
        }
    return {name: not info.is_required() for name, info in config_class.model_fields.items()}  # type: ignore[attr-defined]


def _integer_fields(config_class: type) -> list[str]:
    if is_dataclass(config_class):
        return [f.name for f in fields(config_class) if f.init and isinstance(f.default, int) and not isinstance(f.default, bool)]
    return [
        name
        for name, info in config_class.model_fields.items()  # type: ignore[attr-defined]
        if isinstance(info.default, int) and not isinstance(info.default, bool)
    ]


def _build_config(
    config_class: type, parameter: str, given: Mapping[str, object], data_fields: Mapping[str, int], code: UserCode
) -> tuple[object, dict[str, object]]:
    """The config object, and the fields set on it (given, or filled from the data set)."""
    accepted = _config_fields(config_class)
    unknown = [name for name in given if name not in accepted]
    if unknown:
        raise ConstructionError(
            f"{config_class.__name__} has no field '{unknown[0]}' (--model-arg {parameter}.{unknown[0]})",
            f"its fields: {', '.join(accepted)}",
        )
    values = dict(given)
    for name, from_data in data_fields.items():
        if name in accepted and name not in values:
            values[name] = from_data
    missing = [name for name, has_default in accepted.items() if not has_default and name not in values]
    if missing:
        example = " ".join(f"--model-arg {parameter}.{name}=..." for name in missing)
        raise ConstructionError(f"{config_class.__name__} needs {', '.join(missing)}", f"give them with {example}")
    try:
        return config_class(**values), values
    except Exception as exc:
        pydantic = sys.modules.get("pydantic")
        if pydantic is not None and isinstance(exc, pydantic.ValidationError):
            first = exc.errors()[0]
            location = ".".join(str(part) for part in first["loc"])
            raise ConstructionError(
                f"{config_class.__name__}: {parameter}.{location}: {first['msg']}", "fix that --model-arg value"
            ) from None
        raise ConstructionError(
            f"building {config_class.__name__} failed at {code.where(exc)}: {_error_summary(exc)}",
            f"fix the {parameter}.field=value arguments",
            cause=exc,
        ) from None


def _refuse_oversized(factory: Callable[..., object], factory_name: str, arguments: _Arguments, max_params: int) -> None:
    """Count the parameters on the meta device, which allocates nothing, and refuse before building one for real."""
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            probe = factory(**arguments.values)
    except Exception:  # the real build reports what fails
        return
    if not isinstance(probe, nn.Module):
        return
    count = sum(parameter.numel() for parameter in probe.parameters())
    if count <= max_params:
        return
    smaller = " ".join(f"--model-arg {name}=..." for name in arguments.default_sizes[:3])
    raise ConstructionError(
        f"{factory_name}({', '.join(arguments.built_configs)}(...)) has {count:,} parameters, "
        f"past the budget of {max_params:,} (sandbox.max_params)",
        f"give smaller sizes ({smaller})" if smaller else "give smaller sizes as --model-arg config.field=value",
    )
