"""Generated multilayer perceptrons: pre-norm residual blocks with GELU.

For a classifier over flat (or flattened) float inputs. Each block is
`x + Linear(GELU(Linear(LayerNorm(x))))`: layer norm (Ba et al. 2016) keeps every
block's input at unit scale, the skip connection (He et al. 2016) gives the gradient a
path around every block, and GELU (Hendrycks and Gimpel 2016) does not saturate for
positive inputs, so depth no longer starves the first layers of gradient as a
sigmoid stack does. It writes source text only.
"""

from __future__ import annotations

import math

from copilot.advisor.offline.codegen.module_file import Bindings, GeneratedModel, Profile, Size, helper_name, parameters_read
from copilot.events import DataSpec

BLOCKS_BY_PROFILE = {"standard": 3, "compact": 2, "minimal": 1}


def _residual_block(name: str) -> str:
    return f'''class {name}(nn.Module):
    """Pre-norm residual block: x + Linear(GELU(Linear(LayerNorm(x))))."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, 2 * width)
        self.fc2 = nn.Linear(2 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(F.gelu(self.fc1(self.norm(x))))'''


def mlp_classifier(*, class_name: str, data: DataSpec, bindings: Bindings, profile: Profile) -> GeneratedModel:
    in_features = math.prod(data.input_shape)
    classes = bindings.size("classes", data.num_classes)
    default_width = 256 if in_features >= 1024 else 128
    width = Size.literal(default_width // 2) if profile == "minimal" else bindings.size("width", default_width)
    depth = bindings.size("depth", 0)
    block = helper_name("ResidualMLPBlock", class_name)

    if profile == "standard" and depth.parameter:
        # Two linear layers per block: about as many layers as the original asked for.
        blocks = max(1, depth.value // 2)
        count = f"max(1, {depth.expression} // 2)"
    else:
        blocks = BLOCKS_BY_PROFILE[profile]
        count = str(blocks)
        depth = Size.literal(0)
    init = (
        f"self.stem = nn.Linear({in_features}, {width.expression})",
        f"self.blocks = nn.Sequential(*[{block}({width.expression}) for _ in range({count})])",
        f"self.norm = nn.LayerNorm({width.expression})",
        f"self.head = nn.Linear({width.expression}, {classes.expression})",
    )
    changes = (
        f"input: flatten {list(data.input_shape)} to {in_features} features and project to {width.value}",
        f"{blocks} pre-norm residual block(s): LayerNorm, Linear {width.value}->{2 * width.value}, GELU, "
        f"Linear {2 * width.value}->{width.value}, plus the skip connection",
        f"final layer norm and a linear classifier {width.value} -> {classes.value} classes",
        "no sigmoid between hidden layers: GELU does not saturate for positive inputs",
    )
    return GeneratedModel(
        description=(
            f"Classifier for {in_features} input features and {classes.value} classes: "
            "pre-norm residual MLP blocks with GELU and layer norm."
        ),
        helpers=(_residual_block(block),),
        init_lines=init,
        forward_signature="self, x: torch.Tensor",
        forward_lines=("x = self.stem(torch.flatten(x, 1))", "return self.head(self.norm(self.blocks(x)))"),
        changes=changes,
        used_parameters=parameters_read(classes, width, depth),
    )
