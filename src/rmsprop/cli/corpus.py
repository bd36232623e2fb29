"""Text for the character LSTM of the demo and the quality suite: sentences from a tiny
grammar, generated here (no download), with enough structure for an LSTM to learn."""

from __future__ import annotations

import numpy as np

SUBJECTS = ["the cat", "a dog", "my friend", "the old man", "a small bird", "the teacher"]
VERBS = ["sees", "likes", "follows", "finds", "draws", "greets"]
OBJECTS = ["the red ball", "a green tree", "the river", "a quiet house", "the moon", "her book"]


def generated_text(seed: int, sentences: int = 3000) -> str:
    """Sentences from a tiny grammar: enough structure for an LSTM to learn."""
    rng = np.random.default_rng(seed)
    parts = [
        f"{SUBJECTS[rng.integers(6)]} {VERBS[rng.integers(6)]} {OBJECTS[rng.integers(6)]}."
        for _ in range(sentences)
    ]
    return " ".join(parts)
