"""The SGLang paper's program workloads, written once with `frontend_lang`, at this machine's
scale: few-shot multiple choice and sentence completion with `select`, multi-turn chat,
tree-of-thought with `fork`, an agent loop over one long system prompt. Data is generated here.

Chat turns are written as the model's own ChatML text rather than roles, so every backend gets
the same prompt text (the OpenAI backend has no chat template of its own).
"""

from __future__ import annotations

import random
import time

import frontend_lang as fl
from peers.prompts import TextMaker
from peers.workloads import pct

LETTERS = ["A", "B", "C", "D"]
SERIES = [
    "one two three four five six seven eight nine ten eleven twelve".split(),
    "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split(),
    "January February March April May June July August September October November".split(),
    "A B C D E F G H I J K L M N O P Q R S T".split(),
    "2 4 6 8 10 12 14 16 18 20 22 24".split(),
    "10 20 30 40 50 60 70 80 90 100".split(),
]


def turn(role: str, text: str | None = None) -> str:
    """A ChatML turn (SmolLM2's template); without `text`, the opening of one."""
    head = f"<|im_start|>{role}\n"
    return head if text is None else f"{head}{text}<|im_end|>\n"


# ---- data, generated ----


def arithmetic_question(rng: random.Random) -> tuple[str, str]:
    """An MMLU-style question with four options and its answer letter."""
    a, b = rng.randint(2, 60), rng.randint(2, 40)
    right = a + b
    options = {right}
    while len(options) < 4:
        options.add(right + rng.choice([-11, -10, -2, -1, 1, 2, 9, 10]))
    opts = list(options)
    rng.shuffle(opts)
    body = f"Question: What is {a} + {b}?\n" + "".join(
        f"{LETTERS[i]}. {o}\n" for i, o in enumerate(opts)
    )
    return body + "Answer:", LETTERS[opts.index(right)]


def series_item(rng: random.Random) -> tuple[str, list[str], int]:
    """A HellaSwag-style context (a series begun), four endings, the index of the right one."""
    k = rng.randrange(len(SERIES))
    s = SERIES[k]
    start = rng.randint(0, len(s) - 5)
    context = ", ".join(s[start : start + 3]) + ","
    right = " " + ", ".join(s[start + 3 : start + 5]) + "."
    wrong = []
    for j in rng.sample([i for i in range(len(SERIES)) if i != k], 3):
        o = SERIES[j]
        p = rng.randint(0, len(o) - 2)
        wrong.append(" " + ", ".join(o[p : p + 2]) + ".")
    endings = [right, *wrong]
    rng.shuffle(endings)
    return context, endings, endings.index(right)


# ---- programs ----


def _timed(s, t0: float, timings: list | None) -> None:
    """Waits for the program's calls, then records how long it took from its start."""
    s.sync()
    if timings is not None:
        timings.append(time.perf_counter() - t0)


@fl.function
def multiple_choice(s, shots: str, question: str, timings: list | None = None):
    t0 = time.perf_counter()
    s += shots + question
    s += fl.select("answer", choices=[" " + c for c in LETTERS])
    _timed(s, t0, timings)


@fl.function
def completion(s, shots: str, context: str, endings: list[str], timings: list | None = None):
    t0 = time.perf_counter()
    s += shots + "Continue the series: " + context
    s += fl.select("ending", choices=endings)
    _timed(s, t0, timings)


@fl.function
def chat(s, system: str, questions: list[str], answer_tokens: int, timings: list | None = None):
    t0 = time.perf_counter()
    s += turn("system", system)
    for q in questions:
        s += turn("user", q) + turn("assistant")
        s += fl.gen("answer", max_tokens=answer_tokens, temperature=0, ignore_eos=True)
        s += "<|im_end|>\n"
    _timed(s, t0, timings)


@fl.function
def tree_of_thought(
    s, question: str, width: int, depth: int, tokens: int, timings: list | None = None
):
    t0 = time.perf_counter()
    s += turn("user", question) + turn("assistant")
    states = [s]
    for level in range(depth):
        nxt = []
        for st in states:
            forks = st.fork(width)
            for i, f in enumerate(forks):
                f += f"\nThought {level + 1}.{i + 1}:"
                f += fl.gen("thought", max_tokens=tokens, temperature=0, ignore_eos=True)
            forks.join()
            nxt.extend(forks)
        states = nxt
    for st in states:
        st.sync()
    _timed(s, t0, timings)


@fl.function
def agent(s, system: str, observations: list[str], tokens: int, timings: list | None = None):
    t0 = time.perf_counter()
    s += turn("system", system)
    for i, obs in enumerate(observations):
        s += turn("user", f"Observation {i}: {obs}") + turn("assistant") + "Action:"
        s += fl.gen("action", max_tokens=tokens, temperature=0, ignore_eos=True)
        s += "<|im_end|>\n"
    _timed(s, t0, timings)


def build(workload: str, maker: TextMaker, n: int, salt: str) -> tuple[object, list[dict], list]:
    """(program, kwargs per program, expected answer per program or None)."""
    rng = random.Random(f"{salt}-{workload}")
    if workload == "mmlu":
        shots = f"[{salt}] The following are questions about arithmetic.\n\n" + "".join(
            f"{q} {a}\n\n" for q, a in (arithmetic_question(rng) for _ in range(5))
        )
        items = [arithmetic_question(rng) for _ in range(n)]
        return (
            multiple_choice,
            [{"shots": shots, "question": q} for q, _ in items],
            [" " + a for _, a in items],
        )
    if workload == "hellaswag":
        shots = f"[{salt}]\n"
        for _ in range(20):
            c, e, k = series_item(rng)
            shots += f"Continue the series: {c}{e[k]}\n"
        items = [series_item(rng) for _ in range(n)]
        kws = [{"shots": shots, "context": c, "endings": e} for c, e, _ in items]
        return completion, kws, [e[k] for _, e, k in items]
    if workload in ("chat-short", "chat-long"):
        tokens = 16 if workload == "chat-short" else 96
        kws = [
            {
                "system": f"[{salt}-{i}] You are a helpful assistant.",
                "questions": [maker.text(20, f"{salt}-{workload}-{i}-{t}") + "?" for t in range(4)],
                "answer_tokens": tokens,
            }
            for i in range(n)
        ]
        return chat, kws, [None] * n
    if workload == "tot":
        kws = [
            {
                "question": f"[{salt}-{i}] Plan a trip: " + maker.text(40, f"{salt}-tot-{i}"),
                "width": 2,
                "depth": 3,
                "tokens": 16,
            }
            for i in range(n)
        ]
        return tree_of_thought, kws, [None] * n
    if workload == "agent":
        system = f"[{salt}] You are an agent with these tools. " + maker.text(
            1200, f"{salt}-agent-system"
        )
        kws = [
            {
                "system": system,
                "observations": [maker.text(40, f"{salt}-obs-{i}-{t}") for t in range(4)],
                "tokens": 24,
            }
            for i in range(n)
        ]
        return agent, kws, [None] * n
    raise ValueError(f"workload: unknown program workload {workload!r}")


PROGRAM_WORKLOADS = ("mmlu", "hellaswag", "chat-short", "chat-long", "tot", "agent")
ANSWER_VAR = {"mmlu": "answer", "hellaswag": "ending"}


def run_programs(
    workload: str, backend, maker: TextMaker, n: int, salt: str, threads: int = 8
) -> dict:
    """Runs `n` programs with `run_batch`; programs/s, latency, accuracy where there is one."""
    program, kws, expected = build(workload, maker, n, salt)
    timings: list[float] = []  # list.append is atomic: the pool's threads share it
    for kw in kws:
        kw["timings"] = timings
    t0 = time.perf_counter()
    states = program.run_batch(kws, backend=backend, num_threads=threads)
    wall = time.perf_counter() - t0
    errors = [str(s.error()) for s in states if s.error() is not None]
    out = {
        "programs": len(states),
        "wall_s": wall,
        "programs_per_s": len(states) / wall,
        "latency_p50_s": pct(timings, 0.5),
        "latency_p99_s": pct(timings, 0.99),
        "errors": len(errors),
    }
    if errors:
        out["first_error"] = errors[0][:300]
    if workload in ANSWER_VAR:
        got = [s.get_var(ANSWER_VAR[workload]) if s.error() is None else None for s in states]
        out["accuracy"] = sum(g == e for g, e in zip(got, expected)) / len(states)
    return out
