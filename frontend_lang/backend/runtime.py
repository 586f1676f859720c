"""`Runtime(...)`: starts a server for the program and talks to it; closes it on exit."""

from __future__ import annotations

from frontend_lang.backend.runtime_endpoint import RuntimeEndpoint


class Runtime(RuntimeEndpoint):
    """`Runtime(model_path=None, **server_args)`: server args as `python -m runtime.launch`
    takes them (`max_total_tokens=8192`, `disable_radix_cache=True`, ...)."""

    def __init__(
        self, model_path: str | None = None, log_path: str | None = None, **server_args
    ) -> None:
        from runtime.server_args import ServerArgs
        from runtime.server_process import ServerProcess

        ServerArgs.from_kwargs(model_path=model_path, **server_args)  # bad args fail here, early
        flags = ["--model-path", model_path] if model_path else []
        for name, value in server_args.items():
            flag = "--" + name.replace("_", "-")
            if value is True:
                flags.append(flag)
            elif value not in (False, None):
                flags += [flag, str(value)]
        self.server = ServerProcess(*flags, log_path=log_path)
        try:
            super().__init__(self.server.url, api_key=server_args.get("api_key"))
        except BaseException:
            self.server.stop()
            raise

    def shutdown(self) -> None:
        self.http.close()
        self.server.stop()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
