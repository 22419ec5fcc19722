"""The variant printed in the study: it does not even run.

What is wrong with it: the convolution was changed to a 15x15 kernel without padding,
so a 32x32 image comes out 18x18 (16x18x18 = 5184 values), but the linear layer still
expects 16x32x32 = 16384 inputs. The first forward pass fails with
"mat1 and mat2 shapes cannot be multiplied (Bx5184 and 16384x10)".
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


class BrokenCNN(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, kernel_size=15)
        self.activation = nn.Sigmoid()
        self.fc = nn.Linear(16 * 32 * 32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.activation(self.conv(x))
        return self.fc(torch.flatten(x, 1))
