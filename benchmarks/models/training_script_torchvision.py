"""A whole training script in the style of pytorch/examples mnist/main.py.

What is wrong with it: nothing in the model. Its top-level `from torchvision import
datasets, transforms` fails where torchvision does not match the installed torch (PyPI's
torchvision beside a CPU-only torch: "operator torchvision::nms does not exist"). That
is the machine's set-up: the fix is the matching torchvision build, not a new model.
"""

import argparse

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import datasets, transforms


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.fc1 = nn.Linear(64 * 14 * 14, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc2(x)


def main():
    parser = argparse.ArgumentParser(description="PyTorch example")
    parser.add_argument("--epochs", type=int, default=14)
    args = parser.parse_args()
    train = datasets.MNIST("../data", train=True, download=True, transform=transforms.ToTensor())
    loader = torch.utils.data.DataLoader(train, batch_size=64)
    model = Net()
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
    for _ in range(args.epochs):
        for data, target in loader:
            optimizer.zero_grad()
            F.cross_entropy(model(data), target).backward()
            optimizer.step()


if __name__ == "__main__":
    main()
