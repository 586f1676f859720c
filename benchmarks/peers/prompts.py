"""Synthetic prompts of a known length in the default model's tokens, generated, never downloaded.

Each prompt opens with a tag (the run's salt and an index) so that no system finds it cached
from an earlier workload; prompts that should share a prefix share their tag.
"""

from __future__ import annotations

import random

WORDS = (
    "river market station garden window letter morning silver engine harbor ticket office "
    "winter forest bridge number yellow kitchen doctor museum travel paper summer village "
    "minute camera button island mirror orange planet school signal theater valley wooden "
    "account answer battery bottle castle circle cotton desert dinner flower friend hammer"
).split()


class TextMaker:
    """Makes filler text of `n` tokens; without a tokenizer a word stands for a token."""

    def __init__(self, tokenizer=None) -> None:
        self.tokenizer = tokenizer

    def count(self, text: str) -> int:
        if self.tokenizer is None:
            return len(text.split())
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def text(self, n_tokens: int, seed: int | str, tag: str = "") -> str:
        rng = random.Random(str(seed))
        words = [tag] if tag else []
        sentence: list[str] = []
        while len(words) < n_tokens * 1.3 + 8:
            sentence.append(rng.choice(WORDS))
            if len(sentence) >= rng.randint(6, 12):
                words.append(" ".join(sentence).capitalize() + ".")
                sentence = []
        text = " ".join(words)
        if self.tokenizer is None:
            return " ".join(text.split()[:n_tokens])
        ids = self.tokenizer.encode(text, add_special_tokens=False)[:n_tokens]
        return self.tokenizer.decode(ids)


def load_tokenizer(folder: str):
    """The default model's tokenizer from the folder our loader writes (no downloads)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def shared_prefix_prompts(
    maker: TextMaker, groups: int, per_group: int, system_tokens: int, salt: str
) -> list[str]:
    """`groups` long system prompts with `per_group` short questions each, shuffled."""
    prompts = []
    for g in range(groups):
        system = "You are the help desk of site " + maker.text(system_tokens, f"{salt}-g{g}", salt)
        for q in range(per_group):
            question = maker.text(14, f"{salt}-g{g}-q{q}")
            prompts.append(f"{system}\n\nQuestion {q}: {question}?\nAnswer:")
    random.Random(salt).shuffle(prompts)
    return prompts
