"""A small CNN whose ReLUs start dead: every bias is set to -5.

What is wrong with it: with inputs of unit scale, pre-activations sit far below zero,
so almost no ReLU ever fires and almost no gradient flows.
"""

import torch
from torch import nn

HPARAMS = {"optimizer": "SGD", "lr": 0.05, "momentum": 0.9, "batch_size": 64, "epochs": 6}


class DeadReluCNN(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(32 * 8 * 8, num_classes)
        for layer in (self.conv1, self.conv2):
            nn.init.constant_(layer.bias, -5.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        return self.fc(torch.flatten(x, 1))
