"""A healthy small CNN that converges on the shapes set well within its budget.

Nothing is wrong with it: conv-BN-ReLU, pooling, Adam at 1e-3. The advisor should let
it train (continue) and finish only once the validation loss stops improving.
"""

import torch
from torch import nn

HPARAMS = {"optimizer": "Adam", "lr": 1e-3, "batch_size": 64, "epochs": 8}


class HealthyCNN(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(x), 1))
