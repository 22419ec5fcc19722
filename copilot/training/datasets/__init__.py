"""Generators and readers behind the data registry in `copilot.training.data`.

`shapes` and `text` generate synthetic sets from a seed; `files` reads CIFAR-10, image
folders and the user's own datasets. These modules return plain tensors or torch
Datasets: splits, devices and batching belong to `copilot.training.data`.
"""
