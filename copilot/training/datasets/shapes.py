"""The synthetic `shapes` set: ten kinds of shape drawn on 3x32x32 images, or another size.

Every image holds one shape (circle, square, triangle, cross, ring, bars, diamond,
X mark, frame or a row of dots) in a random colour, position, size and orientation, on
a random background, with Gaussian noise. A small CNN learns it to well above 95%; a
model that cannot see shapes independently of their position stays near chance.

By default images are 3x32x32 (CIFAR-sized colour); `channels` and `image_size` draw
others, 1x28x28 grayscale for a model written for MNIST, with every length (sizes,
positions, strokes) scaled by `image_size / 32`. The defaults draw exactly the images they
always drew, so earlier runs and snapshots stay the same.

Drawing is vectorised: each class's masks come from a few tensor expressions over a
shared coordinate grid, so ten thousand images take well under a second. Generation
depends only on the seed, the number of images and the image's shape. This module knows nothing of
splits, devices or batching: `copilot.training.data` does that.
"""

from __future__ import annotations

import torch
from torch import Tensor

SHAPE_NAMES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "cross",
    "ring",
    "bars",
    "diamond",
    "x_mark",
    "frame",
    "dot_row",
)
NUM_CLASSES = len(SHAPE_NAMES)
IMAGE_SIZE = 32  # the default; the sizes below are drawn for it and scaled for others
CHANNELS = 3
NOISE_STD = 0.1


def _shape_masks(class_index: int, u: Tensor, v: Tensor, radius: Tensor, stroke: Tensor) -> Tensor:
    """Boolean masks of one kind of shape; `u`, `v` are offsets from each centre, oriented."""
    abs_u, abs_v = u.abs(), v.abs()
    box = torch.maximum(abs_u, abs_v)
    distance = torch.sqrt(u * u + v * v)
    name = SHAPE_NAMES[class_index]
    if name == "circle":
        return distance <= radius
    if name == "square":
        return box <= radius * 0.8
    if name == "triangle":
        # Apex at v = -radius, base of half-width `radius` at v = +radius.
        return (abs_v <= radius) & (abs_u <= (v + radius) / 2)
    if name == "cross":
        return ((abs_u <= stroke) & (abs_v <= radius)) | ((abs_v <= stroke) & (abs_u <= radius))
    if name == "ring":
        return (distance <= radius) & (distance >= radius - 2 * stroke)
    if name == "bars":
        # Five stripes across the box; the even ones are drawn: three bars.
        stripe = torch.floor((u + radius) / (2 * radius / 5))
        return (box <= radius) & (stripe.remainder(2) == 0)
    if name == "diamond":
        return abs_u + abs_v <= radius
    if name == "x_mark":
        return ((abs_u - abs_v).abs() <= stroke * 1.2) & (box <= radius * 0.85)
    if name == "frame":
        return (box <= radius) & (box >= radius - 2 * stroke)
    # dot_row: three dots along u; the nearest centre decides each pixel.
    spacing = radius * 0.75
    nearest = torch.clamp(torch.round(u / spacing), -1, 1)
    along = u - nearest * spacing
    return along * along + v * v <= (radius * 0.27) ** 2


def generate_shapes(
    count: int, seed: int, *, channels: int = CHANNELS, image_size: int = IMAGE_SIZE
) -> tuple[Tensor, Tensor]:
    """`count` images (float32 [count, channels, image_size, image_size], values about 0..1)
    and labels (int64 [count]).

    Classes are balanced: every class has `count // 10` or one more images.
    """
    scale = image_size / IMAGE_SIZE
    generator = torch.Generator().manual_seed(seed)

    def uniform(low: float, high: float, *shape: int) -> Tensor:
        return low + (high - low) * torch.rand(*shape, generator=generator)

    def coin() -> Tensor:
        return torch.rand(count, 1, 1, generator=generator) < 0.5

    # Drawn grouped by class (contiguous slices, no gathers), shuffled at the end.
    labels = torch.arange(NUM_CLASSES).repeat_interleave(
        torch.bincount(torch.arange(count) % NUM_CLASSES, minlength=NUM_CLASSES)
    )
    radius = uniform(6.0 * scale, 11.0 * scale, count, 1, 1)
    centre_x = uniform(0, 1, count, 1, 1) * (image_size - 1 - 2 * radius) + radius
    centre_y = uniform(0, 1, count, 1, 1) * (image_size - 1 - 2 * radius) + radius
    stroke = uniform(0.8 * scale, 1.6 * scale, count, 1, 1)
    transpose, flip_u, flip_v = coin(), coin(), coin()
    # Dark shape on light ground or the reverse, so every channel (a grayscale one too) keeps some contrast.
    dark = uniform(0.0, 0.4, count, channels, 1, 1)
    light = uniform(0.6, 1.0, count, channels, 1, 1)
    light_shape = coin()[:, None]
    foreground = torch.where(light_shape, light, dark)
    background = torch.where(light_shape, dark, light)
    images = torch.randn(count, channels, image_size, image_size, generator=generator) * NOISE_STD

    grid = torch.arange(image_size, dtype=torch.float32)
    rows, cols = grid[None, :, None], grid[None, None, :]
    dx, dy = cols - centre_x, rows - centre_y
    u = torch.where(transpose, dy, dx) * torch.where(flip_u, -1.0, 1.0)
    v = torch.where(transpose, dx, dy) * torch.where(flip_v, -1.0, 1.0)

    first = 0
    for class_index, class_count in enumerate(torch.bincount(labels, minlength=NUM_CLASSES).tolist()):
        members = slice(first, first + class_count)
        mask = _shape_masks(class_index, u[members], v[members], radius[members], stroke[members])
        images[members] += torch.where(mask[:, None], foreground[members], background[members])
        first += class_count

    order = torch.randperm(count, generator=generator)
    return images[order], labels[order]
