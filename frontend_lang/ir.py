"""What a program adds to its state: text, generations, selections, and role boundaries."""

from __future__ import annotations

from dataclasses import dataclass, field

# gen(dtype=...) as a constraint
DTYPE_REGEX = {
    int: r"-?(0|[1-9][0-9]{0,17})",
    float: r"-?(0|[1-9][0-9]{0,17})(\.[0-9]{1,8})?",
    bool: r"(True|False)",
    str: r'"[^"\n]{0,200}"',
}


class _Joinable:
    """`"text" + gen(...)` and `gen(...) + "text"` add both, in order."""

    def __add__(self, other):
        return [self, other]

    def __radd__(self, other):
        return [other, self]


@dataclass
class Gen(_Joinable):
    name: str | None
    sampling: dict = field(default_factory=dict)  # SGLang's sampling param names
    return_logprob: bool | None = None
    logprob_start_len: int | None = None
    top_logprobs_num: int | None = None
    tools: list[dict] | None = None  # OpenAI's tool definitions: calls come back in meta_info
    tool_choice: str | dict | None = None


@dataclass
class Select(_Joinable):
    name: str | None
    choices: list[str]
    temperature: float = 0.0
    choices_method: str = "token_length_normalized"


@dataclass
class RoleBegin:
    role: str


@dataclass
class RoleEnd:
    role: str


@dataclass
class Role(_Joinable):
    """`user("text")` adds a whole message; `with s.user():` opens one around what follows."""

    role: str
    content: object = None  # str, Gen, Select, or a list of them


def calls_model(expr) -> bool:
    """Whether adding `expr` needs the model (a gen or select anywhere inside it)."""
    if isinstance(expr, (Gen, Select)):
        return True
    if isinstance(expr, (list, tuple)):
        return any(calls_model(e) for e in expr)
    if isinstance(expr, Role):
        return calls_model(expr.content)
    return False
