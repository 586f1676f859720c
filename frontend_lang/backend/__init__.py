"""Where a program's calls go: a server over HTTP, or one started for the program."""

from frontend_lang.backend.base import Backend, BackendError
from frontend_lang.backend.openai_backend import OpenAI
from frontend_lang.backend.runtime import Runtime
from frontend_lang.backend.runtime_endpoint import RuntimeEndpoint

__all__ = ["Backend", "BackendError", "OpenAI", "Runtime", "RuntimeEndpoint"]
