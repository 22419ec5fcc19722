"""Ten tanh layers initialised far too small.

What is wrong with it: every weight is drawn with std 0.001, about 50 times under the
Glorot scale sqrt(2 / (fan_in + fan_out)) for 256-wide layers. Each layer multiplies
the signal by about 0.001 * sqrt(256) = 0.016, so after ten layers activations and
gradients have collapsed (Glorot and Bengio 2010) and nothing before the head learns.
"""

import torch
from torch import nn

HPARAMS = {"optimizer": "SGD", "lr": 0.05, "momentum": 0.9, "batch_size": 64, "epochs": 6}


class TinyInitTanh(nn.Module):
    def __init__(self, num_classes: int = 10, width: int = 256, depth: int = 10):
        super().__init__()
        layers = [nn.Flatten(), nn.Linear(3 * 32 * 32, width), nn.Tanh()]
        for _ in range(depth - 1):
            layers += [nn.Linear(width, width), nn.Tanh()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.001)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))
