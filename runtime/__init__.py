"""The serving runtime: scheduler, model runner, memory pools, sampling, and the Engine."""


def __getattr__(name: str):
    # Engine pulls in torch and the model code; import it only when asked for.
    if name == "Engine":
        from runtime.engine import Engine

        return Engine
    raise AttributeError(name)


__all__ = ["Engine"]
