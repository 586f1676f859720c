"""SGLang's frontend surface: `function`, `gen`, `select` and the chat roles."""

from __future__ import annotations

from frontend_lang.ir import DTYPE_REGEX, Gen, Role, RoleBegin, RoleEnd, Select
from frontend_lang.program import Program


def function(func=None, **_):
    """`@function def prog(s, ...)`: a program; `prog.run(...)` / `prog.run_batch([...])`."""
    if func is None:
        return lambda f: Program(f)
    return Program(func)


def gen(
    name: str | None = None,
    max_tokens: int | None = None,
    min_tokens: int | None = None,
    stop: str | list[str] | None = None,
    stop_token_ids: list[int] | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    min_p: float | None = None,
    frequency_penalty: float | None = None,
    presence_penalty: float | None = None,
    ignore_eos: bool | None = None,
    n: int | None = None,
    return_logprob: bool | None = None,
    logprob_start_len: int | None = None,
    top_logprobs_num: int | None = None,
    regex: str | None = None,
    json_schema: str | None = None,
    choices: list[str] | None = None,
    dtype: type | None = None,
    tools: list[dict] | None = None,
    tool_choice: str | dict | None = None,
) -> Gen | Select:
    """A generation stored in `s[name]`; with `choices` it is a `select`. With `n > 1`,
    `s[name]` is the list of n samples and the program goes on with the first. With `tools`
    (OpenAI's definitions), calls are constrained to their schemas as `tool_choice` says
    (auto by default) and read back into `s.get_meta_info(name)["tool_calls"]`; the prompt
    should describe the tools."""
    if choices is not None:
        return Select(name, list(choices), temperature or 0.0)
    if dtype is not None:
        if dtype not in DTYPE_REGEX:
            raise ValueError(f"dtype: must be one of int, float, bool, str, got {dtype!r}")
        if regex is not None or json_schema is not None:
            raise ValueError("dtype: give dtype, regex or json_schema, not several")
        regex = DTYPE_REGEX[dtype]
    if n is not None and (not isinstance(n, int) or n < 1):
        raise ValueError(f"n: must be a positive integer, got {n!r}")
    given = {
        "max_new_tokens": max_tokens,
        "min_new_tokens": min_tokens,
        "stop": stop,
        "stop_token_ids": stop_token_ids,
        "temperature": temperature,
        "top_p": top_p,
        "top_k": top_k,
        "min_p": min_p,
        "frequency_penalty": frequency_penalty,
        "presence_penalty": presence_penalty,
        "ignore_eos": ignore_eos,
        "n": n if n != 1 else None,
        "regex": regex,
        "json_schema": json_schema,
    }
    sampling = {k: v for k, v in given.items() if v is not None}
    if tool_choice is not None and tools is None:
        raise ValueError("tool_choice: needs tools")
    return Gen(
        name, sampling, return_logprob, logprob_start_len, top_logprobs_num, tools, tool_choice
    )


def select(
    name: str | None = None,
    choices: list[str] | None = None,
    temperature: float = 0.0,
    choices_method: str = "token_length_normalized",
) -> Select:
    """Picks one of `choices` by the model's logprobs after the text so far."""
    if not choices:
        raise ValueError("choices: give a non-empty list of strings")
    return Select(name, list(choices), temperature, choices_method)


def system(content=None) -> Role:
    return Role("system", content)


def user(content=None) -> Role:
    return Role("user", content)


def assistant(content=None) -> Role:
    return Role("assistant", content)


def system_begin() -> RoleBegin:
    return RoleBegin("system")


def system_end() -> RoleEnd:
    return RoleEnd("system")


def user_begin() -> RoleBegin:
    return RoleBegin("user")


def user_end() -> RoleEnd:
    return RoleEnd("user")


def assistant_begin() -> RoleBegin:
    return RoleBegin("assistant")


def assistant_end() -> RoleEnd:
    return RoleEnd("assistant")
