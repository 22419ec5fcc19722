"""What a model's forward returns, read one way everywhere: the logits and, when the model computes it, the loss.

People write models that return a tensor of logits; a tuple or list holding the logits
and a loss (minGPT and nanoGPT return `(logits, loss)`, Hugging Face tuples put the loss
first); a dict or a `ModelOutput`-like object with `logits` (and `loss`). `read_outputs`
turns each into one `ReadOutputs`, and names the form found for the run header. Some
models take the targets too (`forward(idx, targets=None)`) and compute their own loss;
`passes_targets` says whether to give them.

The training loop, validation, the instruments, the forward check and the advisor's
sandbox all read outputs here. The sandbox child loads this file on its own, by path,
so it imports only the standard library and torch, never copilot. It must not train,
print or decide which loss is used.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

OutputForm = Literal["tensor", "(logits, loss)", "(loss, logits)", "(logits,)", "dict", "object"]
# The forward parameter that receives the targets, as minGPT, nanoGPT and most hand-written models name it.
# Not Hugging Face's `labels`: its causal language models shift labels themselves, so the text
# set's next-token targets would end up one position off.
TARGETS_PARAMETERS = ("targets", "target")


class UnreadableOutputs(TypeError):
    """The forward's result holds no logits tensor this module can find."""


@dataclass(frozen=True)
class ReadOutputs:
    logits: Tensor
    loss: Tensor | None  # the model's own loss, a 0-dimensional tensor
    form: OutputForm


def read_outputs(outputs: Any) -> ReadOutputs:
    """The logits and the loss in whatever form the model returned them; `UnreadableOutputs` when none fits."""
    if isinstance(outputs, Tensor):
        return ReadOutputs(logits=outputs, loss=None, form="tensor")
    if isinstance(outputs, Mapping):  # Hugging Face's ModelOutput is an OrderedDict too
        return _named(outputs.get("logits"), outputs.get("loss"), "dict", type(outputs).__name__)
    if isinstance(outputs, (tuple, list)):
        return _positional(outputs)
    if hasattr(outputs, "logits"):
        return _named(getattr(outputs, "logits"), getattr(outputs, "loss", None), "object", type(outputs).__name__)
    raise UnreadableOutputs(
        f"forward returned a {type(outputs).__name__}; expected the logits as a tensor, a (logits, loss) tuple "
        "or an object with .logits"
    )


def passes_targets(model: nn.Module) -> bool:
    """True when forward takes the targets as its second parameter (`forward(idx, targets=None)`)."""
    try:
        parameters = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return False
    return len(parameters) >= 2 and parameters[1].name in TARGETS_PARAMETERS


def own_loss_is_scalar(loss: Any) -> bool:
    return isinstance(loss, Tensor) and loss.dim() == 0 and loss.is_floating_point()


def _named(logits: Any, loss: Any, form: OutputForm, type_name: str) -> ReadOutputs:
    if not isinstance(logits, Tensor):
        raise UnreadableOutputs(f"forward returned a {type_name} without a logits tensor")
    return ReadOutputs(logits=logits, loss=loss if own_loss_is_scalar(loss) else None, form=form)


def _positional(outputs: tuple[Any, ...] | list[Any]) -> ReadOutputs:
    """The loss is the 0-dimensional tensor; the logits the first tensor with dimensions (None items are skipped)."""
    logits_at = next((i for i, item in enumerate(outputs) if isinstance(item, Tensor) and item.dim() > 0), None)
    if logits_at is None:
        raise UnreadableOutputs(f"forward returned a {type(outputs).__name__} of {len(outputs)} items without a logits tensor")
    loss_at = next((i for i, item in enumerate(outputs) if own_loss_is_scalar(item)), None)
    loss = outputs[loss_at] if loss_at is not None else None
    if loss_at is not None and loss_at < logits_at:
        form: OutputForm = "(loss, logits)"
    else:  # minGPT's second item is None when no targets were given
        form = "(logits, loss)" if len(outputs) > 1 else "(logits,)"
    return ReadOutputs(logits=outputs[logits_at], loss=loss, form=form)


@dataclass(frozen=True)
class OutputContract:
    """How a model is called and its result read, found once by the forward check before training."""

    form: OutputForm = "tensor"
    passes_targets: bool = False
    class_dim: int = -1  # -1: [batch, ..., classes]; 1: [batch, classes, ...] as cross-entropy takes it natively

    def forward(self, model: nn.Module, inputs: Tensor, targets: Tensor) -> Any:
        # nanoGPT returns only the last position's logits without targets, so they go in wherever forward takes them.
        return model(inputs, targets) if self.passes_targets else model(inputs)

    def describe(self) -> str:
        """How the run header names it: "tensor", "(logits, loss) tuple, targets passed to forward"."""
        named = {"dict": "dict with logits", "object": "object with .logits", "tensor": "tensor"}.get(
            self.form, f"{self.form} tuple"
        )
        if self.class_dim == 1:
            named += " [batch, classes, sequence]"
        return f"{named}, targets passed to forward" if self.passes_targets else named


def class_dimension(logits: Tensor, targets_shape: torch.Size, num_classes: int) -> int | None:
    """Where the `num_classes` scores sit: -1 for [batch, ..., classes], 1 for [batch, classes, ...]
    as cross-entropy takes it natively; None when neither fits or both do (ambiguous)."""
    last = tuple(logits.shape) == (*targets_shape, num_classes)
    second = len(targets_shape) >= 2 and tuple(logits.shape) == (targets_shape[0], num_classes, *targets_shape[1:])
    if last == second:
        return None
    return -1 if last else 1
