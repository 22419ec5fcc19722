"""A tiny character-level transformer whose gradients explode.

What is wrong with it: there is no layer norm anywhere, so every residual block adds
to an unnormalised stream that grows from layer to layer and step to step, and it is
trained with Adam at lr 0.03, ten times what such a model tolerates. The gradient norm
spikes by orders of magnitude, the loss jumps back up after each spike, and the run
may end in NaN. Made for copilot's `text` set: next-character prediction over a
30-character vocabulary, output [batch, sequence, vocabulary].
"""

import torch
from torch import nn

HPARAMS = {
    "optimizer": "Adam",
    "lr": 0.03,
    "batch_size": 64,
    "epochs": 10,
}

VOCAB_SIZE = 30  # the `text` set's vocabulary: newline, space, comma, full stop, a-z


class Block(nn.Module):
    """Causal self-attention then an MLP, each added to the stream; no normalisation."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.ReLU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor, causal_mask: torch.Tensor) -> torch.Tensor:
        attended, _ = self.attention(x, x, x, attn_mask=causal_mask, need_weights=False)
        x = x + attended
        return x + self.mlp(x)


class TinyTransformer(nn.Module):
    def __init__(
        self,
        vocab_size: int = VOCAB_SIZE,
        dim: int = 64,
        heads: int = 4,
        layers: int = 2,
        max_length: int = 256,
    ):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, dim)
        self.position_embedding = nn.Embedding(max_length, dim)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(layers))
        self.head = nn.Linear(dim, vocab_size)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        positions = torch.arange(length, device=tokens.device)
        x = self.token_embedding(tokens) + self.position_embedding(positions)
        future = torch.ones(length, length, dtype=torch.bool, device=tokens.device)
        causal_mask = torch.triu(future, diagonal=1)  # True where a position would see the future
        for block in self.blocks:
            x = block(x, causal_mask)
        return self.head(x)
