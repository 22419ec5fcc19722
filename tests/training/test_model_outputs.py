"""Reading what forward returns: every output form people write, where the loss is, and the class layout."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from copilot.training.model_outputs import (
    OutputContract,
    UnreadableOutputs,
    class_dimension,
    passes_targets,
    read_outputs,
)

LOGITS = torch.randn(2, 5, 7)
LOSS = torch.tensor(1.5)


@dataclass
class CausalLMOutput:  # the shape of Hugging Face's ModelOutput dataclasses
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


@pytest.mark.parametrize(
    ("outputs", "form", "loss"),
    [
        (LOGITS, "tensor", None),
        ((LOGITS, LOSS), "(logits, loss)", LOSS),  # nanoGPT and minGPT with targets
        ((LOGITS, None), "(logits, loss)", None),  # minGPT without targets
        ([LOGITS, LOSS], "(logits, loss)", LOSS),
        ((LOSS, LOGITS, torch.randn(2, 5, 3)), "(loss, logits)", LOSS),  # Hugging Face, return_dict=False
        ((LOGITS,), "(logits,)", None),
        ({"logits": LOGITS, "loss": LOSS}, "dict", LOSS),
        (OrderedDict(logits=LOGITS), "dict", None),
        (CausalLMOutput(loss=LOSS, logits=LOGITS), "object", LOSS),
        (CausalLMOutput(logits=LOGITS), "object", None),
    ],
)
def test_every_output_form_gives_the_logits_and_the_returned_loss(outputs: object, form: str, loss: object) -> None:
    read = read_outputs(outputs)
    assert read.logits is LOGITS
    assert read.loss is loss
    assert read.form == form


@pytest.mark.parametrize(
    ("outputs", "says"),
    [
        ("logits", "forward returned a str"),
        ((LOSS, None), "tuple of 2 items without a logits tensor"),
        ({"scores": LOGITS}, "dict without a logits tensor"),
        (CausalLMOutput(), "CausalLMOutput without a logits tensor"),
    ],
)
def test_outputs_without_logits_say_what_came_back(outputs: object, says: str) -> None:
    with pytest.raises(UnreadableOutputs, match=says):
        read_outputs(outputs)


def test_targets_are_passed_only_to_a_forward_that_names_them() -> None:
    class TakesTargets(nn.Module):
        def forward(self, idx, targets=None):
            return idx

    class TakesLabels(nn.Module):  # Hugging Face shifts labels itself: next-token targets must not go there
        def forward(self, input_ids, labels=None):
            return input_ids

    assert passes_targets(TakesTargets())
    assert not passes_targets(TakesLabels())
    assert not passes_targets(nn.Linear(2, 2))


def test_class_layout_is_found_and_an_ambiguous_one_is_not_guessed() -> None:
    targets = torch.Size((2, 5))
    assert class_dimension(torch.randn(2, 5, 7), targets, 7) == -1
    assert class_dimension(torch.randn(2, 7, 5), targets, 7) == 1  # as F.cross_entropy takes it natively
    assert class_dimension(torch.randn(2, 5, 5), targets, 5) is None
    assert class_dimension(torch.randn(2, 5, 6), targets, 7) is None


def test_the_header_names_the_form_and_whether_targets_go_in() -> None:
    assert OutputContract().describe() == "tensor"
    assert (
        OutputContract(form="(logits, loss)", passes_targets=True).describe()
        == "(logits, loss) tuple, targets passed to forward"
    )
    assert OutputContract(form="object", class_dim=1).describe() == "object with .logits [batch, classes, sequence]"
