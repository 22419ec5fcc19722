"""The study's broken baseline: a CNN that cannot learn the shapes set.

What is wrong with it: one 3x3 convolution squashed by a sigmoid, no pooling, and all
16x32x32 = 16384 activations fed to a single linear layer, trained with plain SGD at
lr 0.1 and no momentum. The sigmoid outputs sit around 0.5 on every one of those
inputs, so each step moves the logits by hundreds: the loss jumps around and the
accuracy stays near chance, while the convolution's gradients are tiny next to the
linear layer's.
"""

import torch
from torch import nn

HPARAMS = {
    "optimizer": "SGD",
    "lr": 0.1,
    "momentum": 0.0,
    "batch_size": 64,
    "epochs": 10,
}


class BadCNN(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, kernel_size=3, padding=1)
        self.activation = nn.Sigmoid()
        self.fc = nn.Linear(16 * 32 * 32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.activation(self.conv(x))
        return self.fc(torch.flatten(x, 1))
