"""A deep multilayer perceptron that learns almost nothing: vanishing gradients.

What is wrong with it: twelve fully connected layers, each followed by a sigmoid. The
sigmoid's slope is at most 0.25, so the gradient shrinks by roughly that factor at
every layer on its way back: the first layers get gradients thousands of times smaller
than the last ones and barely move, and the loss stays near ln(10).
"""

import torch
from torch import nn

HPARAMS = {
    "optimizer": "SGD",
    "lr": 0.05,
    "momentum": 0.0,
    "batch_size": 128,
    "epochs": 10,
}


class DeepSigmoidMLP(nn.Module):
    def __init__(self, num_classes: int = 10, width: int = 128, depth: int = 12):
        super().__init__()
        layers = []
        in_features = 3 * 32 * 32
        for _ in range(depth):
            layers += [nn.Linear(in_features, width), nn.Sigmoid()]
            in_features = width
        self.hidden = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.hidden(torch.flatten(x, 1)))
