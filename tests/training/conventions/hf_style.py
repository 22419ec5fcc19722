"""
A classifier written the way Hugging Face models are: a config object (a pydantic model
standing in for PretrainedConfig), forward(pixel_values, labels=None) returning a
ModelOutput-like dataclass with .logits and .loss, or a (loss, logits) tuple when
return_dict is off.
"""
from dataclasses import dataclass
from typing import Optional

import torch
from pydantic import BaseModel
from torch import nn


class TinyImageConfig(BaseModel):
    num_channels: int = 3
    hidden_size: int = 8
    num_labels: int = 10
    return_dict: bool = True


@dataclass
class ImageClassifierOutput:
    loss: Optional[torch.Tensor] = None
    logits: Optional[torch.Tensor] = None


class TinyImageClassifier(nn.Module):
    def __init__(self, config: "TinyImageConfig"):
        super().__init__()
        self.config = config
        self.embeddings = nn.Conv2d(config.num_channels, config.hidden_size, 3, padding=1)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, pixel_values, labels=None):
        pooled = torch.relu(self.embeddings(pixel_values)).mean((2, 3))
        logits = self.classifier(pooled)
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        if not self.config.return_dict:
            return (loss, logits) if loss is not None else (logits,)
        return ImageClassifierOutput(loss=loss, logits=logits)
