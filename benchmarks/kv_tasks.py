"""Synthetic long-context tasks for KV compression, generated from a seed (nothing downloaded).

Each task is chat turns whose answers can be checked by a substring:
- needle: a 5-digit key hidden at a given depth of a 2,000-7,000-token filler;
- documents: four short documents, a question about one of them;
- two_keys: two keys in the filler, asked for one after the other in two turns (the second
  turn asks about what the first one's compression may have dropped).
Plain Python and a tokenizer, so the reference (kvpress) environment can use it too.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

FILLER = [
    "The river bends twice before it reaches the old mill.",
    "Every morning the baker opens the shutters at six.",
    "A gray cat sleeps on the warm stones of the wall.",
    "The train to the coast leaves from the second platform.",
    "In spring the orchard is full of white blossoms.",
    "The library keeps its maps in a cabinet by the window.",
    "Two fishermen mend their nets on the quiet pier.",
    "The clock in the square is always five minutes late.",
    "Children fly kites on the hill when the wind turns west.",
    "The market sells honey, cheese and bread on Saturdays.",
]
TOWNS = ["Arlen", "Brisk", "Corvo", "Dunmere", "Elsby", "Farrow", "Glenna", "Hollis"]


@dataclass
class Task:
    """turns: (question, expected answer) in order; `context` precedes the first question."""

    kind: str
    context: str
    turns: list[tuple[str, str]]
    depth: float  # where the fact sits in the context, 0 (start) to 1 (end)


def _filler(tok, n_tokens: int, rng: random.Random) -> list[str]:
    sentences: list[str] = []
    while len(tok.encode(" ".join(sentences), add_special_tokens=False)) < n_tokens:
        sentences.extend(rng.sample(FILLER, len(FILLER)))
    return sentences


def _insert(sentences: list[str], depth: float, fact: str) -> list[str]:
    at = round(depth * len(sentences))
    return sentences[:at] + [fact] + sentences[at:]


def needle(tok, n_tokens: int, depth: float, seed: int) -> Task:
    rng = random.Random(f"needle-{seed}")
    key = str(rng.randrange(10000, 100000))
    text = _insert(_filler(tok, n_tokens, rng), depth, f"The secret pass code is {key}.")
    question = "What is the secret pass code? Answer with the number."
    return Task("needle", " ".join(text), [(question, key)], depth)


def documents(tok, n_tokens: int, depth: float, seed: int) -> Task:
    """Four short documents, each naming its town's 4-digit postal code; the question asks one
    town's. (With eight documents and an export word per town, the default model answered few
    even with the exact KV: numbers and four documents are what a 135M model can do.)"""
    rng = random.Random(f"documents-{seed}")
    towns = TOWNS[:4]
    codes = [str(rng.randrange(1000, 10000)) for _ in towns]
    per_doc = max(40, n_tokens // len(towns))
    asked = min(len(towns) - 1, int(depth * len(towns)))
    docs = []
    for i, (town, code) in enumerate(zip(towns, codes)):
        body = _filler(tok, per_doc, rng)
        body = _insert(body, rng.random(), f"The postal code of {town} is {code}.")
        docs.append(f"Document {i + 1} ({town}):\n" + " ".join(body))
    question = f"What is the postal code of {towns[asked]}? Answer with the number."
    return Task("documents", "\n\n".join(docs), [(question, codes[asked])], depth)


def two_keys(tok, n_tokens: int, depth: float, seed: int) -> Task:
    """A pass code and a locker number; the first turn asks the code, the second the number.
    Two different nouns: with two door codes the default model, exact KV, often gave the one
    nearer the end."""
    rng = random.Random(f"two_keys-{seed}")
    codes = [str(rng.randrange(10000, 100000)) for _ in range(2)]
    text = _filler(tok, n_tokens, rng)
    text = _insert(text, depth, f"The secret pass code is {codes[0]}.")
    text = _insert(text, 1 - depth, f"The locker number is {codes[1]}.")
    turns = [
        ("What is the secret pass code? Answer with the number.", codes[0]),
        ("What is the locker number? Answer with the number.", codes[1]),
    ]
    return Task("two_keys", " ".join(text), turns, depth)


KINDS = {"needle": needle, "documents": documents, "two_keys": two_keys}


def make_tasks(tok, kinds, lengths, depths, seed: int = 0) -> list[Task]:
    return [
        KINDS[kind](tok, n, d, seed + i)
        for kind in kinds
        for i, (n, d) in enumerate((n, d) for n in lengths for d in depths)
    ]


def chat_ids(tok, messages: list[dict]) -> list[int]:
    """The ChatML prompt of `messages` with the assistant's turn opened."""
    enc = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(enc["input_ids"] if hasattr(enc, "keys") else enc)


def turn_ids(tok, task: Task, answers: list[str]) -> list[int]:
    """The whole conversation's prompt for turn len(answers), after the earlier answers."""
    msgs = [{"role": "user", "content": f"{task.context}\n\n{task.turns[0][0]}"}]
    for answer, (question, _) in zip(answers, task.turns[1:]):
        msgs += [{"role": "assistant", "content": answer}, {"role": "user", "content": question}]
    return chat_ids(tok, msgs)


def correct(answer_text: str, expected: str) -> bool:
    return expected.lower() in answer_text.lower()
