"""What an expert looks at while a model trains, measured on the device.

Owns the per-module views of a model: which modules own trainable parameters and in
which order the forward pass reaches them (recorded once by forward-pre-hooks on the
first forward), gradient norms and weight-update sizes per module computed with grouped
`torch._foreach_norm` calls and one segment sum, activation statistics (dead ReLU units,
saturated sigmoid/tanh outputs) through hooks attached only for a sampled step, and the
search for the module where a non-finite value first appears.

Everything here returns device tensors; the loop gathers them and copies them to the
host with `fetch_together`, once per logged step. Nothing here may call `.item()` per
parameter or per module on the normal path, run optimizer steps, or emit events.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils.hooks import RemovableHandle

from copilot.training.model_outputs import OutputContract

# A sigmoid output this close to 0 or 1 (a tanh output this close to -1 or 1) has a gradient
# too small to learn through.
SATURATION_MARGIN = 0.01

# Activation functions called inside forward (F.relu(x), x.sigmoid()) rather than as modules.
_FUNCTIONAL_ACTIVATIONS: dict[Callable, str] = {
    torch.relu: "relu",
    torch.relu_: "relu",
    Tensor.relu: "relu",
    Tensor.relu_: "relu",
    F.relu: "relu",
    F.relu6: "relu6",
    torch.sigmoid: "sigmoid",
    torch.sigmoid_: "sigmoid",
    Tensor.sigmoid: "sigmoid",
    Tensor.sigmoid_: "sigmoid",
    torch.tanh: "tanh",
    torch.tanh_: "tanh",
    Tensor.tanh: "tanh",
    Tensor.tanh_: "tanh",
    F.hardtanh: "hardtanh",
}
# Checked in this order: ReLU6 is a subclass of Hardtanh but dies like a ReLU.
_ACTIVATION_MODULES: tuple[tuple[type[nn.Module], str], ...] = (
    (nn.ReLU, "relu"),
    (nn.ReLU6, "relu6"),
    (nn.Sigmoid, "sigmoid"),
    (nn.Tanh, "tanh"),
    (nn.Hardtanh, "hardtanh"),
)


@dataclass(frozen=True)
class WeightSnapshot:
    """Copies of the trainable parameters taken just before an optimizer step."""

    tensors: list[Tensor]


@dataclass(frozen=True)
class ActivationSample:
    """Per-layer activation statistics of one forward pass, still on the device."""

    dead_fraction: dict[str, Tensor]
    saturated_fraction: dict[str, Tensor]


class Instruments:
    """Measurements of one model; build a new one (and `close` the old) after an architecture swap."""

    def __init__(self, model: nn.Module) -> None:
        self._model = model
        self._parameters_by_module = _trainable_parameters_by_module(model)
        self.module_names: list[str] = list(self._parameters_by_module)
        self._order_hooks: list[RemovableHandle] = []
        self._arrange_parameters()
        self._record_forward_order()

    def close(self) -> None:
        """Remove every hook this object attached to the model."""
        _remove_all(self._order_hooks)

    # ------------------------------------------------------------------ gradients and updates

    def gradient_norms(self) -> tuple[Tensor, Tensor]:
        """(gradient norm of each module in `module_names` order, total gradient norm), on the device.

        Call after backward and before any clipping. A module's norm covers its own
        parameters only, combined as the root of the sum of squares; a parameter without a
        gradient counts as zero. An infinite or NaN gradient makes its module's norm non-finite.
        """
        with_grad = [index for index, parameter in enumerate(self._parameters) if parameter.grad is not None]
        if not with_grad:
            zeros = torch.zeros(len(self.module_names), dtype=self._norm_dtype, device=self._device)
            return zeros, zeros.sum()
        grads = [self._parameters[index].grad for index in with_grad]
        squares = torch.stack(torch._foreach_norm(grads, 2, dtype=self._norm_dtype)).square()
        module_squares = self._sum_by_module(squares, self._module_index(tuple(with_grad)))
        return module_squares.sqrt(), squares.sum().sqrt()

    @property
    def parameters(self) -> list[nn.Parameter]:
        """The trainable parameters, grouped by module in forward order."""
        return self._parameters

    def snapshot_weights(self) -> WeightSnapshot:
        """Copy the trainable parameters; only on logged steps, just before the optimizer step."""
        with torch.no_grad():
            # Multiplying by 1.0 is an exact copy, done as one grouped kernel instead of one clone per tensor.
            return WeightSnapshot(list(torch._foreach_mul(self._parameters, 1.0)))

    def weight_norms(self, before: WeightSnapshot) -> Tensor:
        """Per-module norms [3, modules]: of the weights before the step, of the actual change
        the step made (whatever the optimizer: momentum and Adam included), and of the weights after."""
        if not self._parameters:
            return torch.zeros(3, 0, device=self._device)
        with torch.no_grad():
            change = torch._foreach_sub(self._parameters, before.tensors)
            squares = torch.stack(
                [
                    torch.stack(torch._foreach_norm(tensors, 2, dtype=self._norm_dtype))
                    for tensors in (before.tensors, change, self._parameters)
                ]
            ).square()
            index = self._module_index(tuple(range(len(self._parameters))))
            return self._sum_by_module(squares, index).sqrt()

    # ------------------------------------------------------------------ activations

    @contextmanager
    def sampling_activations(self) -> Iterator[ActivationSample]:
        """Attach activation hooks for the forward passes inside the block; the yielded sample
        fills in as they run, and the hooks are gone when the block ends."""
        probe = _ActivationProbe(self._model)
        with probe.attached():
            yield probe.sample

    # ------------------------------------------------------------------ non-finite values

    def locate_nonfinite_output(
        self,
        inputs: Tensor,
        weights: WeightSnapshot,
        targets: Tensor | None = None,
        contract: OutputContract = OutputContract(),
    ) -> str | None:
        """The first module (in forward order) whose output is not finite when `inputs` run
        through the model with `weights` (called as `contract` says, with `targets` when it
        takes them); None when no submodule's output is.

        For the rare step whose loss is not finite: it reruns one forward pass with the
        weights the step started from, then restores the current weights, buffers and
        random state, so training continues as if it had not run.
        """
        found: list[str] = []

        def check_output(name: str) -> Callable:
            def hook(module: nn.Module, args: object, output: object) -> None:
                if not found and not all(torch.isfinite(tensor).all() for tensor in _tensors_in(output)):
                    found.append(name)

            return hook

        handles = [
            module.register_forward_hook(check_output(name))
            for name, module in self._model.named_modules()
            if name  # the root's output is the whole model's: not a location
        ]
        current = self.snapshot_weights()
        buffers = [buffer.detach().clone() for buffer in self._model.buffers()]
        devices = [inputs.device] if inputs.device.type == "cuda" else []
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=devices):
                torch._foreach_copy_(self._parameters, weights.tensors)
                contract.forward(self._model, inputs, targets)
        except Exception:  # noqa: BLE001 - a failing rerun only means the location stays unknown
            pass
        finally:
            _remove_all(handles)
            with torch.no_grad():
                torch._foreach_copy_(self._parameters, current.tensors)
                for buffer, saved in zip(self._model.buffers(), buffers):
                    buffer.copy_(saved)
        return found[0] if found else None

    # ------------------------------------------------------------------ internals

    def _arrange_parameters(self) -> None:
        """Flatten the parameters in module order; the segment index maps each to its module."""
        self._parameters = [p for group in self._parameters_by_module.values() for p in group]
        self._module_of_parameter = [
            module for module, group in enumerate(self._parameters_by_module.values()) for _ in group
        ]
        self._index_cache: dict[tuple[torch.device, tuple[int, ...]], Tensor] = {}
        self._norm_dtype = torch.float32
        for parameter in self._parameters:
            self._norm_dtype = torch.promote_types(self._norm_dtype, parameter.dtype)

    @property
    def _device(self) -> torch.device:
        """Read each time: the model may have moved since these instruments were built."""
        return self._parameters[0].device if self._parameters else torch.device("cpu")

    def _module_index(self, parameter_indices: tuple[int, ...]) -> Tensor:
        key = (self._device, parameter_indices)
        index = self._index_cache.get(key)
        if index is None:
            modules = [self._module_of_parameter[i] for i in parameter_indices]
            index = torch.tensor(modules, dtype=torch.long, device=self._device)
            self._index_cache[key] = index
        return index

    def _sum_by_module(self, values: Tensor, index: Tensor) -> Tensor:
        """Sum the last dimension of `values` (one entry per parameter) into one entry per module."""
        shape = (*values.shape[:-1], len(self.module_names))
        return torch.zeros(shape, dtype=values.dtype, device=values.device).index_add_(-1, index, values)

    def _record_forward_order(self) -> None:
        """Hooks that note the order modules start their forward in; gone after the first full pass."""
        if not self.module_names:
            return
        started: list[str] = []

        def note_start(name: str) -> Callable:
            def hook(module: nn.Module, args: object) -> None:
                if name not in started:
                    started.append(name)

            return hook

        def restart(module: nn.Module, args: object) -> None:
            started.clear()

        def finish(module: nn.Module, args: object, output: object) -> None:
            _remove_all(self._order_hooks)
            unused = [name for name in self.module_names if name not in started]
            order = [name for name in started if name in self._parameters_by_module] + unused
            self._parameters_by_module = {name: self._parameters_by_module[name] for name in order}
            self.module_names = order
            self._arrange_parameters()

        # A forward that raises leaves the hooks in place; the next one starts the list afresh.
        self._order_hooks.append(self._model.register_forward_pre_hook(restart))
        for name in self.module_names:
            module = self._model.get_submodule(name)
            self._order_hooks.append(module.register_forward_pre_hook(note_start(name)))
        self._order_hooks.append(self._model.register_forward_hook(finish))


def fetch_together(*tensors: Tensor) -> list[list[float]]:
    """Copy device tensors to the host in ONE transfer, returned flattened, one list per tensor."""
    flat = [tensor.detach().reshape(-1).to(torch.float64) for tensor in tensors]
    # Empty parts are skipped: they may sit on another device than the rest.
    present = [tensor for tensor in flat if tensor.numel()]
    values = torch.cat(present).tolist() if present else []
    out, start = [], 0
    for tensor in flat:
        out.append(values[start : start + tensor.numel()])
        start += tensor.numel()
    return out


def dead_unit_fraction(output: Tensor) -> Tensor | None:
    """Fraction of units that output <= 0 for every sample in the batch.

    A unit is a channel of a [B, C, ...] feature map, a feature of [B, F], or the last
    dimension of [B, S, F] (sequence models). None for outputs without a batch and unit axis.
    """
    if output.dim() < 2:
        return None
    unit_dim = output.dim() - 1 if output.dim() == 3 else 1
    other_dims = [dim for dim in range(output.dim()) if dim != unit_dim]
    alive = output.detach().amax(dim=other_dims) > 0
    return 1.0 - alive.float().mean()


def saturated_fraction(output: Tensor, low: float, high: float) -> Tensor:
    """Fraction of elements at or beyond the flat ends of a squashing function."""
    centre, half_width = (low + high) / 2, (high - low) / 2
    # One temporary and one count: this runs over whole activation maps.
    saturated = torch.count_nonzero(output.detach().sub(centre).abs_() >= half_width)
    return saturated / max(output.numel(), 1)


def _saturation_bounds(kind: str, module: nn.Module | None, args: Sequence, kwargs: dict) -> tuple[float, float]:
    if kind == "sigmoid":
        return SATURATION_MARGIN, 1.0 - SATURATION_MARGIN
    if kind == "tanh":
        return -1.0 + SATURATION_MARGIN, 1.0 - SATURATION_MARGIN
    if isinstance(module, nn.Hardtanh):
        return module.min_val, module.max_val
    low = args[1] if len(args) > 1 else kwargs.get("min_val", -1.0)
    high = args[2] if len(args) > 2 else kwargs.get("max_val", 1.0)
    return float(low), float(high)


class _ActivationProbe(TorchFunctionMode):
    """Activation statistics of the forward passes it is attached to.

    Activation modules are hooked directly; activation functions called inside a module's
    forward are caught by a torch function mode and named after the module they run in
    (`block1.relu`). Repeated calls of one activation get `#2`, `#3`, ...
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self._model = model
        self.sample = ActivationSample(dead_fraction={}, saturated_fraction={})
        self._running: list[tuple[str, nn.Module]] = []
        self._calls: dict[str, int] = {}
        self._handles: list[RemovableHandle] = []

    @contextmanager
    def attached(self) -> Iterator[None]:
        for name, module in self._model.named_modules():
            self._handles.append(module.register_forward_pre_hook(self._entered(name)))
            self._handles.append(module.register_forward_hook(self._left(name)))
        try:
            with self:
                yield
        finally:
            _remove_all(self._handles)


    def __torch_function__(self, func: Callable, types: object, args: Sequence = (), kwargs: dict | None = None):
        kwargs = kwargs or {}
        output = func(*args, **kwargs)
        kind = _FUNCTIONAL_ACTIVATIONS.get(func)
        inside_activation_module = self._running and _activation_kind(self._running[-1][1]) is not None
        if kind is not None and not inside_activation_module and isinstance(output, Tensor):
            where = self._running[-1][0] if self._running else ""
            self._record(f"{where}.{kind}" if where else kind, kind, output, None, args, kwargs)
        return output

    def _entered(self, name: str) -> Callable:
        def hook(module: nn.Module, args: object) -> None:
            self._running.append((name, module))

        return hook

    def _left(self, name: str) -> Callable:
        def hook(module: nn.Module, args: object, output: object) -> None:
            if self._running and self._running[-1][1] is module:
                self._running.pop()
            kind = _activation_kind(module)
            if kind is not None and isinstance(output, Tensor):
                self._record(name or kind, kind, output, module, (), {})

        return hook

    def _record(
        self, name: str, kind: str, output: Tensor, module: nn.Module | None, args: Sequence, kwargs: dict
    ) -> None:
        calls = self._calls.get(name, 0) + 1
        self._calls[name] = calls
        label = name if calls == 1 else f"{name}#{calls}"
        if kind in ("relu", "relu6"):
            dead = dead_unit_fraction(output)
            if dead is not None:
                self.sample.dead_fraction[label] = dead
        else:
            low, high = _saturation_bounds(kind, module, args, kwargs)
            self.sample.saturated_fraction[label] = saturated_fraction(output, low, high)


def _activation_kind(module: nn.Module) -> str | None:
    for module_type, kind in _ACTIVATION_MODULES:
        if isinstance(module, module_type):
            return kind
    return None


def _trainable_parameters_by_module(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Each trainable parameter under the module that owns it directly (shared ones once)."""
    by_module: dict[str, list[nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            module_name = name.rpartition(".")[0]
            by_module.setdefault(module_name, []).append(parameter)
    return by_module


def _tensors_in(output: object) -> list[Tensor]:
    if isinstance(output, Tensor):
        return [output]
    if isinstance(output, (tuple, list)):
        return [item for part in output for item in _tensors_in(part)]
    if isinstance(output, dict):
        return [item for part in output.values() for item in _tensors_in(part)]
    return []


def _remove_all(handles: list[RemovableHandle]) -> None:
    for handle in handles:
        handle.remove()
    handles.clear()
