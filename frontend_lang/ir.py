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


@dataclass
class Gen:
    name: str | None
    sampling: dict = field(default_factory=dict)  # SGLang's sampling param names
    return_logprob: bool | None = None
    logprob_start_len: int | None = None
    top_logprobs_num: int | None = None


@dataclass
class Select:
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
class Role:
    """`user("text")` adds a whole message; `with s.user():` opens one around what follows."""

    role: str
    content: object = None  # str, Gen, Select, or a list of them
