"""Generated image classifiers: conv-BN-ReLU stem, residual stages, global average pooling.

Sized from the data: the input's channels and resolution decide the stem's pooling
and how many stride-2 stages bring the feature map down to about 4x4; the class count
(or the constructor's own `num_classes`) sizes the classifier. The design follows
He et al. 2016 (residual blocks with batch norm) and Lin et al. 2014 (global average
pooling instead of a flatten into a huge linear layer): it trains well with plain
SGD at lr 0.1 as well as with Adam, which matters because an architecture round
keeps the run's optimiser. It writes source text only.
"""

from __future__ import annotations

from copilot.advisor.offline.codegen.module_file import Bindings, GeneratedModel, Profile, Size, helper_name, parameters_read
from copilot.events import DataSpec

TARGET_FEATURE_MAP = 4  # stop downsampling at about 4x4: enough positions for the pooling to summarise
MAX_DOWNSAMPLING_STAGES = 3
STEM_POOL_MIN_SIDE = 32  # from 32x32 up, a 2x2 pool after the stem halves the cost of every later layer


def _conv_bn_relu(name: str) -> str:
    return f'''class {name}(nn.Sequential):
    """3x3 convolution, batch norm, ReLU: the unit every stage is built from."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        )'''


def _residual_block(name: str, unit: str) -> str:
    return f'''class {name}(nn.Module):
    """Two 3x3 conv-BN layers around a skip connection; a 1x1 projection when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = {unit}(in_channels, out_channels, stride)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn2(self.conv2(self.conv1(x))) + self.shortcut(x))'''


def base_width(data: DataSpec) -> int:
    """16 channels for a few classes on small images, more for many classes or large images."""
    channels, height, width = data.input_shape
    if data.num_classes > 100 or min(height, width) >= 128:
        return 64
    if data.num_classes > 16 or min(height, width) >= 64:
        return 32
    return 16


def image_classifier(*, class_name: str, data: DataSpec, bindings: Bindings, profile: Profile) -> GeneratedModel:
    channels, height, width = data.input_shape
    in_channels = bindings.size("in_channels", channels)
    classes = bindings.size("classes", data.num_classes)
    base = bindings.size("width", base_width(data)) if profile != "minimal" else Size.literal(16)
    unit = helper_name("ConvBNReLU", class_name)
    block = helper_name("ResidualBlock", class_name)

    side = min(height, width)
    stem_pool = side >= STEM_POOL_MIN_SIDE
    init = [f"self.stem = nn.Sequential({unit}({in_channels.expression}, {base.expression})"]
    changes = [f"stem: 3x3 conv {in_channels.value}->{base.value} channels, batch norm, ReLU"]
    if stem_pool:
        init[0] += ", nn.MaxPool2d(2)"
        changes[0] += f", 2x2 max pooling ({height}x{width} -> {height // 2}x{width // 2})"
        side //= 2
    init[0] += ")"

    stage_names: list[str] = []
    current = base
    max_stages = {"standard": MAX_DOWNSAMPLING_STAGES, "compact": 2, "minimal": 1}[profile]
    if profile == "standard":
        init.append(f"self.stage1 = {block}({base.expression}, {base.expression})")
        changes.append(f"stage1: residual block, {base.value} channels at {side}x{side}")
        stage_names.append("stage1")
    factor = 1
    while side > TARGET_FEATURE_MAP and factor < 2**max_stages:
        factor *= 2
        following = base.times(factor)
        side = (side + 1) // 2
        name = f"stage{len(stage_names) + 1}"
        if profile == "minimal":
            init.append(f"self.{name} = {unit}({current.expression}, {following.expression}, stride=2)")
            changes.append(f"{name}: 3x3 conv-BN-ReLU with stride 2, {current.value}->{following.value} channels at {side}x{side}")
        else:
            init.append(f"self.{name} = {block}({current.expression}, {following.expression}, stride=2)")
            changes.append(f"{name}: residual block with stride 2, {current.value}->{following.value} channels at {side}x{side}")
        stage_names.append(name)
        current = following
    init += ["self.pool = nn.AdaptiveAvgPool2d(1)", f"self.head = nn.Linear({current.expression}, {classes.expression})"]
    changes.append(f"global average pooling, then a linear classifier {current.value} -> {classes.value} classes")

    forward = ["x = self.stem(x)"]
    forward += [f"x = self.{name}(x)" for name in stage_names]
    forward.append("return self.head(torch.flatten(self.pool(x), 1))")
    helpers = (_conv_bn_relu(unit),) if profile == "minimal" else (_conv_bn_relu(unit), _residual_block(block, unit))
    kind = "plain conv-BN-ReLU stages" if profile == "minimal" else "residual stages"
    return GeneratedModel(
        description=(
            f"Image classifier for {channels}x{height}x{width} inputs and {classes.value} classes: "
            f"a conv-BN-ReLU stem, {kind} that halve the resolution, global average pooling."
        ),
        helpers=helpers,
        init_lines=tuple(init),
        forward_signature="self, x: torch.Tensor",
        forward_lines=tuple(forward),
        changes=tuple(changes),
        used_parameters=parameters_read(in_channels, classes, base),
    )
