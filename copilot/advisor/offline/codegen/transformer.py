"""Generated transformers: pre-layer-norm blocks for token inputs.

For next-token prediction ([B, S] token ids -> [B, S, vocabulary], causal attention)
and for sequence classification ([B, S] -> [B, classes], mean over positions). Each
block is `x + attention(LayerNorm(x))` then `x + MLP(LayerNorm(x))`, with a final
layer norm before the head: the pre-LN arrangement (Xiong et al. 2020) keeps the
residual stream's gradients bounded at initialisation, which is what a transformer
without layer norm lacks when it explodes. It writes source text only.
"""

from __future__ import annotations

from copilot.advisor.offline.codegen.module_file import Bindings, GeneratedModel, Profile, Size, helper_name, parameters_read
from copilot.events import DataSpec

D_MODEL_BY_PROFILE = {"standard": 64, "compact": 48, "minimal": 32}
LAYERS_BY_PROFILE = {"standard": 2, "compact": 2, "minimal": 1}
BYTE_VOCABULARY = 256  # token ids of a classifier whose vocabulary nothing names


def _attention(name: str) -> str:
    return f'''class {name}(nn.Module):
    """Multi-head self-attention through torch's fused scaled_dot_product_attention."""

    def __init__(self, d_model: int, n_heads: int, causal: bool):
        super().__init__()
        self.n_heads = n_heads
        self.causal = causal
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, d_model = x.shape
        q, k, v = self.qkv(x).split(d_model, dim=2)
        q, k, v = (t.view(batch, length, self.n_heads, d_model // self.n_heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.proj(y.transpose(1, 2).reshape(batch, length, d_model))'''


def _block(name: str, attention: str) -> str:
    return f'''class {name}(nn.Module):
    """Pre-LN transformer block: x + attention(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, d_model: int, n_heads: int, causal: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attention = {attention}(d_model, n_heads, causal)
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))'''


def _heads(bindings: Bindings, d_model: Size) -> Size:
    bound = bindings.size("heads", 0)
    if bound.parameter and d_model.value % bound.value == 0:
        return bound
    # The most heads (up to 4) that divide d_model and leave each at least 8 dimensions; one head always fits.
    return Size.literal(next(h for h in (4, 2, 1) if h == 1 or (d_model.value % h == 0 and d_model.value // h >= 8)))


def transformer(*, class_name: str, data: DataSpec, bindings: Bindings, profile: Profile) -> GeneratedModel:
    sequence_length = data.input_shape[0]
    next_token = data.task == "sequence"
    if next_token:
        vocabulary = bindings.size("vocab", data.num_classes)
        outputs = vocabulary
    else:
        vocabulary = bindings.size("vocab", BYTE_VOCABULARY)
        outputs = bindings.size("classes", data.num_classes)
    d_model = bindings.size("d_model", D_MODEL_BY_PROFILE[profile]) if profile != "minimal" else Size.literal(32)
    heads = _heads(bindings, d_model)
    layers = bindings.size("depth", LAYERS_BY_PROFILE[profile]) if profile == "standard" else Size.literal(LAYERS_BY_PROFILE[profile])
    context = bindings.size("context", sequence_length)
    if context.value < sequence_length:
        context = Size.literal(sequence_length)
    attention = helper_name("SelfAttention", class_name)
    block = helper_name("PreNormBlock", class_name)
    causal = "True" if next_token else "False"

    init = (
        f"self.token_embedding = nn.Embedding({vocabulary.expression}, {d_model.expression})",
        f"self.position_embedding = nn.Embedding({context.expression}, {d_model.expression})",
        f"self.blocks = nn.Sequential(*[{block}({d_model.expression}, {heads.expression}, causal={causal}) "
        f"for _ in range({layers.expression})])",
        f"self.norm = nn.LayerNorm({d_model.expression})",
        f"self.head = nn.Linear({d_model.expression}, {outputs.expression})",
    )
    forward = [
        "positions = torch.arange(tokens.shape[1], device=tokens.device)",
        "x = self.token_embedding(tokens) + self.position_embedding(positions)",
        "x = self.norm(self.blocks(x))",
        "return self.head(x)" if next_token else "return self.head(x.mean(dim=1))",
    ]
    shape = f"[B, {sequence_length}] -> [B, {sequence_length}, {outputs.value}]" if next_token else f"[B, {sequence_length}] -> [B, {outputs.value}]"
    changes = (
        f"token and learned position embeddings, d_model {d_model.value}, context {context.value}",
        f"{layers.value} pre-LN block(s): LayerNorm before attention ({heads.value} heads"
        f"{', causal' if next_token else ''}) and before the MLP, each inside its residual branch",
        "a final LayerNorm before the output head",
        f"same contract: {shape}",
    )
    return GeneratedModel(
        description=f"Pre-layer-norm transformer for {'next-token prediction' if next_token else 'sequence classification'}: {shape}.",
        helpers=(_attention(attention), _block(block, attention)),
        init_lines=init,
        forward_signature="self, tokens: torch.Tensor",
        forward_lines=tuple(forward),
        changes=changes,
        used_parameters=parameters_read(vocabulary, outputs, d_model, heads, layers, context),
    )
