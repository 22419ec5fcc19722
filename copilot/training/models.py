"""Load a user's model file, check it against the data, describe it, and carry weights across a swap.

The user writes an ordinary Python file; we import it under a unique module name, pick
the model (`file.py:Name`, else `build_model()`, else the one `nn.Module` subclass the
file defines), and turn every way that can go wrong into a one-line `ModelLoadError`
with a hint. Files are taken as people write them: a training script's
`if __name__ == "__main__":` block does not run (the module is not `__main__`), sibling
modules import as when the script runs, and a constructor taking a config object
(`GPT(config: GPTConfig)`) gets one built from `config.field=value` arguments, with the
data set's `vocab_size` and `block_size` filled in; `construction.py` does the picking
and the building, for the advisor's sandbox too. How forward is called and read is
`model_outputs.OutputContract`, found here by the forward check.

This runs in the trainer process (and the advisor's sandbox), never in the
UI: importing a user's file runs their code. It must not train, print or write files.
"""

from __future__ import annotations

import importlib.util
import itertools
import math
import re
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Literal

import pydantic
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from copilot.config import DataSettings, SandboxSettings
from copilot.errors import CopilotError, EnvironmentSetupError, ModelLoadError, error_summary, first_line
from copilot.events import DataSpec, ModelRef, ModelSummary, ModuleInfo
from copilot.training.data import IMAGE_INPUT_SHAPES, IMAGE_SETTINGS_HONOURED
from copilot.training.construction import ConstructionError, UserCode, build_model, fields_from_data, find_factory
from copilot.training.launcher import ensure_model_file
from copilot.training.model_outputs import OutputContract, UnreadableOutputs, class_dimension, passes_targets, read_outputs

_module_counter = itertools.count()


@dataclass(frozen=True)
class LoadedModel:
    """A model built from a user's file, with the optional hooks that file defines."""

    model: nn.Module
    class_name: str
    source_path: Path
    file_hparams: dict[str, object] | None  # the file's module-level HPARAMS
    has_custom_loss: bool  # the model defines loss_function(outputs, targets)
    # Hooks the model defines that copilot does not call, for the run header (configure_optimizers).
    ignored_hooks: tuple[str, ...] = ()


class ModelCheckError(ModelLoadError):
    """The model was built but does not fit the data: its forward fails or its output has the wrong shape."""

    def __init__(self, message: str, hint: str, kind: Literal["forward", "shape"]) -> None:
        super().__init__(message, hint)
        self.kind = kind


# Hooks of nanoGPT and minGPT models whose signatures differ between code bases: named, not called.
IGNORED_HOOKS = ("configure_optimizers",)


def load_model(
    ref: ModelRef,
    data: DataSpec | None = None,
    max_params: int = SandboxSettings.model_fields["max_params"].default,
) -> LoadedModel:
    """Import `ref`'s file and build its model (its pick, else the file's own) with its arguments.

    `config.field=value` arguments build the config object a constructor takes; `data`
    fills its `vocab_size` and `block_size` for the sequence task; a config whose model
    would have more than `max_params` parameters is refused before it is built.
    """
    path = ref.path
    module = _import_file(path)
    data_fields = fields_from_data(data.task, data.input_shape, data.num_classes) if data is not None else {}
    try:
        factory, factory_name = find_factory(module, ref.name, _user_code(path))
        model = build_model(factory, factory_name, module, ref.args, data_fields, max_params, _user_code(path))
    except ConstructionError as exc:
        raise ModelLoadError(exc.message, exc.hint) from None
    hparams = getattr(module, "HPARAMS", None)
    if hparams is not None and not isinstance(hparams, Mapping):
        raise ModelLoadError(
            f"HPARAMS in {path.name} is a {type(hparams).__name__}, not a dict",
            'write it as HPARAMS = {"lr": 0.01, ...}',
        )
    return LoadedModel(
        model=model,
        class_name=type(model).__name__,
        source_path=path.resolve(),
        file_hparams=dict(hparams) if hparams is not None else None,
        has_custom_loss=callable(getattr(model, "loss_function", None)),
        ignored_hooks=tuple(hook for hook in IGNORED_HOOKS if callable(getattr(model, hook, None))),
    )


def _import_file(path: Path) -> ModuleType:
    ensure_model_file(path)
    safe_stem = re.sub(r"\W", "_", path.stem)
    package, package_root = _enclosing_package(path.resolve())
    # Inside a package (mingpt/model.py), the module is named under it so `from .utils import CfgNode` resolves.
    module_name = ".".join(filter(None, (package, f"copilot_user_model_{next(_module_counter)}_{safe_stem}")))
    # The absolute path becomes the code's file name, so tracebacks can be matched to the user's file.
    import_spec = importlib.util.spec_from_file_location(module_name, path.resolve())
    if import_spec is None or import_spec.loader is None:
        raise ModelLoadError(f"{path} is not a Python file", "give a .py file that defines the model")
    module = importlib.util.module_from_spec(import_spec)
    # Registered before running so dataclasses and pickling inside the file can find their module.
    sys.modules[module_name] = module
    # The file's folder goes first on the path, as when the script runs, so modules beside it import;
    # the folder above its package too, so `from mingpt.utils import ...` does.
    added_to_path = [folder for folder in (str(path.resolve().parent), package_root) if folder and folder not in sys.path]
    sys.path[:0] = added_to_path
    # A training script parses its flags at import time more often than not: it sees no flags,
    # as when run bare, not the trainer process's own.
    trainer_argv, sys.argv = sys.argv, [str(path)]
    try:
        import_spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise _import_error(exc, path) from None
    except SystemExit as exc:  # argparse refusing, or an explicit exit() at the top level
        sys.modules.pop(module_name, None)
        raise ModelLoadError(
            f"{path.name} exited while it was imported (exit status {exc.code})",
            'move the top-level script code under if __name__ == "__main__":',
        ) from None
    finally:
        sys.argv = trainer_argv
        for folder in added_to_path:
            sys.path.remove(folder)
    return module


def _enclosing_package(path: Path) -> tuple[str | None, str | None]:
    """("mingpt", "/src") for /src/mingpt/model.py when mingpt/ has an __init__.py; (None, None) outside a package."""
    parts: list[str] = []
    folder = path.parent
    while (folder / "__init__.py").is_file() and folder.name.isidentifier():
        parts.insert(0, folder.name)
        folder = folder.parent
    return (".".join(parts), str(folder)) if parts else (None, None)


def _import_error(exc: Exception, path: Path) -> CopilotError:
    """What went wrong while the file ran its top level: a syntax error, a missing package, a
    package that fails as it is imported (torchvision beside a torch it was not built for), anything else.

    A package that is missing or fails inside its own code is the machine's set-up, not the
    model (`EnvironmentSetupError`: no proposal can fix it); the user's own code is the model's.
    """
    if isinstance(exc, SyntaxError):
        return ModelLoadError(f"syntax error in {path.name}:{exc.lineno}: {exc.msg}", "fix that line and run again")
    where = _user_frame(exc, path)
    statement = _import_statement(exc, path)
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        return EnvironmentSetupError(
            f"{where} imports '{exc.name}', which is not installed",
            f"install it (pip install {exc.name.split('.')[0]}) or remove the import",
        )
    package = _failing_package(exc, path)
    if statement is not None and package is not None:
        return EnvironmentSetupError(
            f"{where} `{statement}` failed: {error_summary(exc)}",
            _torchvision_pair_hint(exc) or f"reinstall {package} in a version built for this Python and torch, or remove the import",
        )
    if statement is not None:
        return ModelLoadError(
            f"{where} `{statement}` failed: {error_summary(exc)}",
            _torchvision_pair_hint(exc) or "fix the import in the model file, or the package it imports",
        )
    if isinstance(exc, ImportError):
        return ModelLoadError(f"import failed at {where}: {first_line(exc) or type(exc).__name__}", "fix the import in the model file")
    return ModelLoadError(
        f"running {where} failed: {error_summary(exc)}",
        "the model file must import without errors; run `python FILE` to see the whole traceback",
    )


def _import_statement(exc: BaseException, path: Path) -> str | None:
    """The `import ...` / `from ... import ...` line of the user's file that the failure went through, if any."""
    target = str(path.resolve())
    frames = [frame for frame in traceback.extract_tb(exc.__traceback__) if frame.filename == target]
    line = (frames[-1].line or "").strip() if frames else ""
    return line if line.startswith(("import ", "from ")) else None


def _torchvision_pair_hint(exc: BaseException) -> str | None:
    """torchvision's wheels are built against one torch release; a mismatched pair fails at import
    with "operator torchvision::nms does not exist". Name the torchvision that matches this torch."""
    if "torchvision::" not in str(exc):
        return None
    release = re.match(r"(\d+)\.(\d+)", torch.__version__)
    if release is None:
        return "install the torchvision release built for this torch"
    major, minor = int(release.group(1)), int(release.group(2))
    # torchvision 0.(minor + 15) pairs with torch 2.minor since torch 2.0 and torchvision 0.15.
    matching = f"0.{minor + 15}" if major == 2 else None
    wanted = f"torchvision=={matching}.*" if matching else "torchvision"
    index = " --index-url https://download.pytorch.org/whl/cpu" if torch.version.cuda is None else ""
    return f"install the pair built together: pip install torch=={torch.__version__.split('+')[0]} {wanted}{index}"


# `from pkg.sub import x` or `import pkg.sub as y`: the top-level package (a relative import names none).
IMPORT_LINE = re.compile(r"from\s+([A-Za-z_]\w*)[\w.]*\s+import\b|import\s+([A-Za-z_]\w*)")


def _failing_package(exc: BaseException, path: Path) -> str | None:
    """The top-level package an import line of the user's file names, when the error was raised
    inside that package (outside the user's folder): its installation is broken, not the model."""
    target, folder = str(path.resolve()), path.resolve().parent
    frames = traceback.extract_tb(exc.__traceback__)
    mine = [index for index, frame in enumerate(frames) if frame.filename == target]
    if not mine or mine[-1] == len(frames) - 1:
        return None
    deeper = frames[mine[-1] + 1 :]
    if any(Path(frame.filename).resolve().is_relative_to(folder) for frame in deeper):
        return None  # the user's own helper module crashed: theirs to fix
    named = IMPORT_LINE.match((frames[mine[-1]].line or "").strip())
    return (named.group(1) or named.group(2)) if named else None


def _user_code(path: Path) -> UserCode:
    """The user's file as its tracebacks name it (the absolute path it was imported from)."""
    return UserCode(filename=str(path.resolve()), name=path.name)


def _user_frame(exc: BaseException, path: Path) -> str:
    """`file.py:LINE` of the deepest traceback frame inside the user's file, or the file's name."""
    return _user_code(path).where(exc)


# --------------------------------------------------------------------------- checking against the data


def check_forward(
    loaded: LoadedModel, inputs: torch.Tensor, data: DataSpec, targets: torch.Tensor | None = None
) -> OutputContract:
    """Run one forward pass on a few real samples (with their `targets` when forward takes them);
    return how the model is called and read, or raise a `ModelCheckError` that says what does not fit.

    Runs in eval mode without gradients, so batch-norm statistics and dropout's random
    stream are left as they were: a checked model trains exactly like an unchecked one.
    """
    model = loaded.model
    calling = OutputContract(passes_targets=passes_targets(model) and targets is not None)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            outputs = calling.forward(model, inputs, targets)
    except Exception as exc:
        shape = list(inputs.shape)
        raise ModelCheckError(
            f"forward pass failed on input {shape} at {_user_frame(exc, loaded.source_path)}: {first_line(exc) or type(exc).__name__}",
            _first_layer_mismatch(model, data, inputs)
            or f"make the layer sizes fit one sample of shape {list(data.input_shape)} "
            f"({data.name} data set, task {data.task})",
            kind="forward",
        ) from None
    finally:
        model.train(was_training)
    expected = data.expected_output(inputs.shape[0])
    try:
        read = read_outputs(outputs)
    except UnreadableOutputs as exc:
        raise ModelCheckError(str(exc), f"return the logits as one tensor of shape {list(expected)}", kind="shape") from None
    logits = read.logits
    class_dim = -1 if tuple(logits.shape) == expected else None
    if data.task == "sequence":
        targets_shape = torch.Size(expected[:-1])
        class_dim = class_dimension(logits, targets_shape, data.num_classes)
        if class_dim is None and tuple(logits.shape) == expected:
            raise ModelCheckError(
                f"model output {list(logits.shape)} could be [batch, sequence, vocabulary] or [batch, vocabulary, "
                f"sequence]: the {data.name} data set's sequence length and vocabulary are both {expected[-1]}",
                "use sequences of another length than the vocabulary size, so the layout can be told apart",
                kind="shape",
            )
    if class_dim is None:
        layout = "[batch, classes]" if data.task == "classification" else "[batch, sequence, vocabulary]"
        raise ModelCheckError(
            f"model output has shape {list(logits.shape)} but the {data.name} data set needs "
            f"{list(expected)} {layout}",
            f"make the last layer produce {data.num_classes} outputs per "
            + ("sample" if data.task == "classification" else "position"),
            kind="shape",
        )
    return OutputContract(form=read.form, passes_targets=calling.passes_targets, class_dim=class_dim)


def _first_layer_mismatch(model: nn.Module, data: DataSpec, inputs: torch.Tensor) -> str | None:
    """One line naming what the model's first layer expects, what the data gives and what would fit
    (the data set's own `data.channels` or `data.image_size` where it honours them), or None when it fits."""
    first = next(
        ((name, module) for name, module in model.named_modules()
         if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear, nn.Embedding))),
        None,
    )  # fmt: skip
    if first is None:
        return None
    name, layer = first
    sample = " x ".join(str(size) for size in data.input_shape)
    gives = f"the {data.name} data set gives {sample} {'token ids' if data.input_dtype == 'int64' else 'samples'}"
    if isinstance(layer, nn.Embedding):
        if data.input_dtype == "int64":
            return None
        return f"first layer '{name}' is an embedding that expects token ids; {gives}: --dataset text would fit"
    if data.input_dtype == "int64":
        return f"first layer '{name}' expects float inputs; {gives}: add an nn.Embedding first, or use an image data set"
    if isinstance(layer, nn.modules.conv._ConvNd):
        channels = data.input_shape[0] if len(data.input_shape) == layer.weight.dim() - 1 else None
        is_image_model = layer.weight.dim() == 4 and len(data.input_shape) == 3 and data.task == "classification"
        size = _image_size_that_fits(model, layer.in_channels, data, inputs) if is_image_model else None
        if channels == layer.in_channels and size in (None, data.input_shape[-1]):
            return None
        takes = f"{layer.in_channels} input channel{'s' if layer.in_channels != 1 else ''}"
        if size is None:
            fitting = _bundled_sets_where(lambda shape: shape[0] == layer.in_channels)
            return f"first layer '{name}' expects {takes}; {gives}: {fitting}"
        fitting = _settings_that_fit(layer.in_channels, size, data)
        at = f" at {size} x {size}" if size != data.input_shape[-1] else ""
        return f"first layer '{name}' expects {takes}{at}; {gives}: {fitting}"
    features = math.prod(data.input_shape)
    if layer.in_features == features or layer.in_features == data.input_shape[-1]:
        return None
    image = _square_image_of(layer.in_features)
    fitting = (
        _settings_that_fit(*image, data)
        if image is not None and len(data.input_shape) == 3
        else _bundled_sets_where(lambda shape: math.prod(shape) == layer.in_features)
    )
    return (
        f"first layer '{name}' expects {layer.in_features:,} input features; {gives} ({features:,} flattened): "
        f"{fitting}, or make its in_features {features:,}"
    )


# Square image sizes models are commonly written for (MNIST, CIFAR, ImageNet crops), tried after the data's own.
COMMON_IMAGE_SIZES = (28, 32, 64, 96, 128, 224)


def _image_size_that_fits(model: nn.Module, channels: int, data: DataSpec, like: torch.Tensor) -> int | None:
    """The square size at which one blank image of `channels` goes through the model to one score per class.

    Tried only after the forward check failed, a forward pass per size: a model's later layers
    (an MNIST net's `nn.Linear(9216, 128)`) fix the size its first layer needs, and no layer says it.
    """
    for size in dict.fromkeys((data.input_shape[-1], *COMMON_IMAGE_SIZES)):
        if not _shapes_can_draw(channels, size):
            continue
        blank = torch.zeros((1, channels, size, size), dtype=like.dtype, device=like.device)
        try:
            with torch.no_grad():
                logits = read_outputs(model(blank)).logits
        except Exception:  # this size does not fit; the next may
            continue
        if tuple(logits.shape) == (1, data.num_classes):
            return size
    return None


def _square_image_of(features: int) -> tuple[int, int] | None:
    """(channels, size) of the grayscale or colour square image that flattens to `features`, if one does."""
    for channels in (1, 3):
        size = math.isqrt(features // channels)
        if channels * size * size == features and _shapes_can_draw(channels, size):
            return channels, size
    return None


def _shapes_can_draw(channels: int, size: int) -> bool:
    """Whether the shapes set's settings allow this image (their bounds live in DataSettings alone)."""
    try:
        DataSettings(channels=channels, image_size=size)
    except pydantic.ValidationError:
        return False
    return True


def _settings_that_fit(channels: int, size: int, data: DataSpec) -> str:
    """The fix for a model that takes `channels` x `size` x `size` images: the settings of the run's
    own data set where it honours them (an image folder is resized, not recoloured), else a bundled
    set as it is, else the shapes set with the settings that make it draw such images."""
    wanted = (channels, size, size)
    own_changes = _image_setting_changes(wanted, data.input_shape)
    if own_changes and all(setting in IMAGE_SETTINGS_HONOURED.get(data.name, ()) for setting, _value in own_changes):
        return f"set {_settings_text(own_changes)} in copilot.toml"
    if any(shape == wanted for name, shape in IMAGE_INPUT_SHAPES.items() if name != data.name):
        return _bundled_sets_where(lambda shape: shape == wanted)
    return f"--dataset shapes with {_settings_text(_image_setting_changes(wanted, IMAGE_INPUT_SHAPES['shapes']))} in copilot.toml would fit"


def _image_setting_changes(wanted: tuple[int, ...], current: tuple[int, ...]) -> list[tuple[str, int]]:
    """(setting, value) pairs that turn images of shape `current` into `wanted` ones."""
    return [
        (setting, value)
        for setting, value, now in (("channels", wanted[0], current[0]), ("image_size", wanted[-1], current[-1]))
        if value != now
    ]


def _settings_text(changes: list[tuple[str, int]]) -> str:
    return " and ".join(f"data.{setting} = {value}" for setting, value in changes)


def _bundled_sets_where(fits: Callable[[tuple[int, ...]], bool]) -> str:
    names = [f"--dataset {name}" for name, shape in IMAGE_INPUT_SHAPES.items() if fits(shape)]
    return f"{' or '.join(names)} would fit" if names else "a data set of that shape would fit (data.custom)"


# --------------------------------------------------------------------------- describing


_MODULE_ACTIVATIONS_EXCLUDED = {"MultiheadAttention", "Softmax", "LogSoftmax", "Softmin", "Softmax2d"}
_FUNCTIONAL_ACTIVATIONS = {
    "relu": "ReLU",
    "relu_": "ReLU",
    "relu6": "ReLU6",
    "leaky_relu": "LeakyReLU",
    "leaky_relu_": "LeakyReLU",
    "sigmoid": "Sigmoid",
    "sigmoid_": "Sigmoid",
    "tanh": "Tanh",
    "tanh_": "Tanh",
    "gelu": "GELU",
    "silu": "SiLU",
    "elu": "ELU",
    "selu": "SELU",
    "mish": "Mish",
    "softplus": "Softplus",
    "hardswish": "Hardswish",
}
_FUNCTIONAL_NORMALIZATIONS = {"batch_norm", "layer_norm", "group_norm", "instance_norm", "rms_norm"}
_NORMALIZATION_MODULES = {"torch.nn.modules.batchnorm", "torch.nn.modules.normalization", "torch.nn.modules.instancenorm"}
_ADDITIONS = {"add", "add_", "__add__", "__radd__", "__iadd__"}


def summarize_model(model: nn.Module, source_path: str | Path, example_input: torch.Tensor | None = None) -> ModelSummary:
    """The module tree with own-parameter counts and short details, for the UI and the advisor.

    With `example_input`, one traced forward pass also finds functional activations
    (`F.relu` in forward) and skip connections; without it those come from modules only.
    """
    modules: list[ModuleInfo] = []
    activations: dict[str, None] = {}  # ordered set
    has_normalization = False
    for name, module in model.named_modules():
        kind = type(module).__name__
        modules.append(
            ModuleInfo(
                name=name,
                type=kind,
                params=sum(p.numel() for p in module.parameters(recurse=False)),
                detail=_module_detail(module),
                is_leaf=next(module.children(), None) is None,
            )
        )
        if type(module).__module__ == "torch.nn.modules.activation" and kind not in _MODULE_ACTIVATIONS_EXCLUDED:
            activations[kind] = None
        if type(module).__module__ in _NORMALIZATION_MODULES or kind.endswith("Norm"):
            has_normalization = True
    has_residual = False
    if example_input is not None:
        trace = _trace_forward(model, example_input)
        activations.update(dict.fromkeys(trace.activations))
        has_normalization = has_normalization or trace.has_normalization
        has_residual = trace.has_residual
    return ModelSummary(
        class_name=type(model).__name__,
        source_path=str(source_path),
        total_params=sum(p.numel() for p in model.parameters()),
        trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        modules=tuple(modules),
        activations=tuple(activations),
        has_normalization=has_normalization,
        has_residual=has_residual,
    )


def _module_detail(module: nn.Module) -> str:
    """A few characters that say what a layer does: "3->16 k=3 p=1", "16384->10", "p=0.5"."""
    if isinstance(module, nn.modules.conv._ConvNd):
        text = f"{module.in_channels}->{module.out_channels} k={_compact(module.kernel_size)}"
        if any(s != 1 for s in module.stride):
            text += f" s={_compact(module.stride)}"
        if isinstance(module.padding, str) or any(p != 0 for p in module.padding):
            text += f" p={_compact(module.padding)}"
        return text
    if isinstance(module, nn.Linear):
        return f"{module.in_features}->{module.out_features}"
    if isinstance(module, nn.Embedding):
        return f"{module.num_embeddings}->{module.embedding_dim}"
    if isinstance(module, nn.modules.batchnorm._NormBase):
        return str(module.num_features)
    if isinstance(module, nn.LayerNorm):
        return _compact(module.normalized_shape)
    if isinstance(module, nn.GroupNorm):
        return f"{module.num_groups} groups of {module.num_channels}"
    if isinstance(module, nn.modules.dropout._DropoutNd):
        return f"p={module.p}"
    if isinstance(module, (nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd)):
        return f"k={_compact(module.kernel_size)}"
    if isinstance(module, nn.MultiheadAttention):
        return f"dim={module.embed_dim} heads={module.num_heads}"
    if isinstance(module, nn.RNNBase):
        return f"{module.input_size}->{module.hidden_size} layers={module.num_layers}"
    if isinstance(module, nn.LeakyReLU):
        return f"slope={module.negative_slope}"
    return ""


def _compact(value: object) -> str:
    """(3, 3) -> "3"; (3, 5) -> "3x5"; "same" -> "same"."""
    if isinstance(value, (tuple, list)):
        items = [str(v) for v in value]
        return items[0] if len(set(items)) == 1 else "x".join(items)
    return str(value)


@dataclass(frozen=True)
class _ForwardTrace:
    activations: tuple[str, ...]
    has_normalization: bool
    has_residual: bool


class _LineageMode(TorchFunctionMode):
    """Watches one forward pass: which tensors each tensor came from, and which functions ran.

    A skip connection is an addition of two tensors where one is an ancestor of the
    other and at least one layer with parameters ran between them (`x + block(x)`).
    """

    def __init__(self, example_input: torch.Tensor) -> None:
        super().__init__()
        self.layers_started = 0
        self.functions: set[str] = set()
        self.has_residual = False
        # id -> (ancestor bit set incl. itself, layers started when made); `alive` keeps ids from being reused.
        self._lineage: dict[int, tuple[int, int]] = {}
        self._alive: list[torch.Tensor] = []
        self._record(example_input, ancestors=0)

    def _record(self, tensor: torch.Tensor, ancestors: int) -> None:
        bit = 1 << len(self._alive)
        self._alive.append(tensor)
        self._lineage[id(tensor)] = (ancestors | bit, self.layers_started)

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        self.functions.add(name)
        inputs = [t for t in _tensors_in(args) + _tensors_in(tuple(kwargs.values())) if id(t) in self._lineage]
        if name in _ADDITIONS and len(inputs) == 2:
            self.has_residual = self.has_residual or self._is_skip(*inputs)
        ancestors = 0
        for tensor in inputs:
            ancestors |= self._lineage[id(tensor)][0]
        for output in _tensors_in(result if isinstance(result, (tuple, list)) else (result,)):
            if ancestors:
                self._record(output, ancestors)
        return result

    def _is_skip(self, first: torch.Tensor, second: torch.Tensor) -> bool:
        if first.shape != second.shape:
            return False
        older, newer = sorted((self._lineage[id(first)], self._lineage[id(second)]), key=lambda entry: entry[0].bit_length())
        older_ancestors, older_layers = older
        newer_ancestors, newer_layers = newer
        older_own_bit = 1 << (older_ancestors.bit_length() - 1)  # tensors are numbered in creation order
        return newer_layers > older_layers and bool(newer_ancestors & older_own_bit)


def _tensors_in(values: tuple | list) -> list[torch.Tensor]:
    found: list[torch.Tensor] = []
    for value in values:
        if isinstance(value, torch.Tensor):
            found.append(value)
        elif isinstance(value, (tuple, list)):
            found.extend(v for v in value if isinstance(v, torch.Tensor))
    return found


def _trace_forward(model: nn.Module, example_input: torch.Tensor) -> _ForwardTrace:
    mode = _LineageMode(example_input)

    def count_layer(module: nn.Module, _inputs: object) -> None:
        if next(module.parameters(recurse=False), None) is not None:
            mode.layers_started += 1

    handles = [module.register_forward_pre_hook(count_layer) for module in model.modules()]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), mode:
            model(example_input)
    except Exception:  # a description is best effort; check_forward reports real failures
        pass
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return _ForwardTrace(
        activations=tuple(sorted({_FUNCTIONAL_ACTIVATIONS[f] for f in mode.functions if f in _FUNCTIONAL_ACTIVATIONS})),
        has_normalization=bool(mode.functions & _FUNCTIONAL_NORMALIZATIONS),
        has_residual=mode.has_residual,
    )


# --------------------------------------------------------------------------- swapping


def transfer_weights(old: nn.Module, new: nn.Module) -> tuple[int, int]:
    """Copy every parameter and buffer of `old` whose name and shape match into `new`.

    Returns (tensors copied, tensors in `new`). Nothing is re-initialised: what does not
    match keeps the new model's own initialisation.
    """
    old_tensors = {**dict(old.named_parameters()), **dict(old.named_buffers())}
    new_tensors = {**dict(new.named_parameters()), **dict(new.named_buffers())}
    transferred = 0
    with torch.no_grad():
        for name, target in new_tensors.items():
            source = old_tensors.get(name)
            if source is not None and source.shape == target.shape:
                target.copy_(source)
                transferred += 1
    return transferred, len(new_tensors)

