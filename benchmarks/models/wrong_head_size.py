"""A sound CNN whose head has 7 outputs for a 10-class data set.

What is wrong with it: the classifier's output size does not match the classes, so the
first forward pass is refused before training starts.
"""

import torch
from torch import nn

HPARAMS = {"optimizer": "Adam", "lr": 1e-3, "batch_size": 64, "epochs": 6}


class WrongHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4))
        self.head = nn.Linear(16 * 4 * 4, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(x), 1))
