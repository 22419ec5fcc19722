"""The synthetic `text` set: sentences from a small grammar, for next-character prediction.

Sentences such as "the small cat sees two red birds." follow fixed rules (articles,
adjectives, singular and plural nouns, verbs that agree with their subject, numbers
that agree with their noun), so a character model can learn them well past the
letter frequencies but never perfectly (the word choices are random). The text is
produced by code from a seed; no book is copied. Each sample is `SEQUENCE_LENGTH`
characters and its targets are the same window shifted by one character.

This module knows nothing of splits, devices or batching: `copilot.training.data` does.
"""

from __future__ import annotations

import random

import torch
from torch import Tensor

# Fixed whatever the grammar uses, so a model built for this set fits every seed.
VOCABULARY = "\n ,.abcdefghijklmnopqrstuvwxyz"
VOCAB_SIZE = len(VOCABULARY)
SEQUENCE_LENGTH = 64

_NOUNS = {"cat": "cats", "dog": "dogs", "bird": "birds", "fox": "foxes", "child": "children", "mouse": "mice"}
_VERBS = {"see": "sees", "chase": "chases", "like": "likes", "watch": "watches", "follow": "follows"}
_ADJECTIVES = ("small", "big", "red", "quick", "lazy", "old")
_NUMBERS = ("two", "three", "four", "many")
_ENDINGS = ("today", "at night", "in the park", "near the river")


def _noun_phrase(rng: random.Random) -> tuple[str, bool]:
    """A noun phrase and whether it is plural."""
    noun = rng.choice(list(_NOUNS))
    adjective = rng.choice(_ADJECTIVES) + " " if rng.random() < 0.5 else ""
    if rng.random() < 0.35:
        return f"{rng.choice(_NUMBERS)} {adjective}{_NOUNS[noun]}", True
    article = rng.choice(("the", "a"))
    if article == "a" and (adjective or noun)[0] in "aeiou":
        article = "an"
    return f"{article} {adjective}{noun}", False


def _sentence(rng: random.Random) -> str:
    subject, plural = _noun_phrase(rng)
    verb = rng.choice(list(_VERBS))
    obj, _ = _noun_phrase(rng)
    clause = f"{subject} {verb if plural else _VERBS[verb]} {obj}"
    if rng.random() < 0.3:
        clause += f" {rng.choice(_ENDINGS)}"
    if rng.random() < 0.25:
        clause += ", and " + _sentence(rng).rstrip(".")
    return clause + "."


def generate_text(count: int, seed: int, sequence_length: int = SEQUENCE_LENGTH) -> tuple[Tensor, Tensor]:
    """`count` windows of characters (int64 [count, sequence_length]) and their next characters."""
    rng = random.Random(seed)
    needed = count * sequence_length + 1
    pieces: list[str] = []
    length = 0
    while length < needed:
        piece = _sentence(rng) + ("\n" if rng.random() < 0.2 else " ")
        pieces.append(piece)
        length += len(piece)
    characters = "".join(pieces)[:needed].encode("ascii")
    lookup = torch.zeros(256, dtype=torch.int64)
    lookup[list(VOCABULARY.encode("ascii"))] = torch.arange(VOCAB_SIZE)
    codes = lookup[torch.frombuffer(bytearray(characters), dtype=torch.uint8).long()]
    # Consecutive windows share one character: each one's last target is the next one's first input.
    windows = codes.unfold(0, sequence_length + 1, sequence_length)
    return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()

