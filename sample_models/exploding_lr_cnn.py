"""A sound small CNN trained at a learning rate that blows it up.

What is wrong with it: nothing in the model. SGD at lr 3 with momentum makes the first
steps overshoot: the loss jumps far above ln(10), the ReLUs die and the gradients then
vanish. A lower rate fixes it; a new model would not.
"""

import torch
from torch import nn

HPARAMS = {"optimizer": "SGD", "lr": 3.0, "momentum": 0.9, "batch_size": 64, "epochs": 6}


class SmallCNN(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Linear(32 * 8 * 8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(x), 1))
