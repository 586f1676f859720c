"""The frontend language: @function programs with gen, select, fork and roles."""

from frontend_lang.api import (
    assistant,
    assistant_begin,
    assistant_end,
    function,
    gen,
    select,
    system,
    system_begin,
    system_end,
    user,
    user_begin,
    user_end,
)
from frontend_lang.backend import BackendError, OpenAI, Runtime, RuntimeEndpoint
from frontend_lang.default_backend import get_default_backend, set_default_backend
from frontend_lang.interpreter import ProgramError, ProgramState

__all__ = [
    "BackendError",
    "OpenAI",
    "ProgramError",
    "ProgramState",
    "Runtime",
    "RuntimeEndpoint",
    "assistant",
    "assistant_begin",
    "assistant_end",
    "function",
    "gen",
    "get_default_backend",
    "select",
    "set_default_backend",
    "system",
    "system_begin",
    "system_end",
    "user",
    "user_begin",
    "user_end",
]
