"""A model that imports a package this machine does not have.

What is wrong with it: `import fancy_layers_xyz` fails; installing it (or removing the
import) is the fix, not a new model.
"""

import fancy_layers_xyz  # noqa: F401
import torch
from torch import nn


class NeedsPackage(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.head = nn.Linear(3 * 32 * 32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(x, 1))
