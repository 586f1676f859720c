"""`--config FILE.yaml`, as SGLang has it: a YAML mapping of flag names to values.

Keys are flag names without the dashes (`model-path` or `model_path`); `true` sets a switch,
`false` leaves it off, a list gives several values. Flags on the command line win over the file.
"""

from __future__ import annotations

import os


def expand_config(argv: list[str]) -> list[str]:
    """argv with `--config FILE` replaced by the flags the file holds, put first."""
    for i, arg in enumerate(argv):
        if arg == "--config" or arg.startswith("--config="):
            if "=" in arg:
                path, rest = arg.split("=", 1)[1], argv[i + 1 :]
            elif i + 1 < len(argv):
                path, rest = argv[i + 1], argv[i + 2 :]
            else:
                raise ValueError("--config: give the path of a YAML file")
            return config_flags(path) + argv[:i] + expand_config(rest)
    return list(argv)


def config_flags(path: str) -> list[str]:
    """The command-line flags a YAML config file stands for."""
    import yaml

    if not os.path.isfile(path):
        raise ValueError(f"--config: no such file: {path}")
    with open(path) as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ValueError(f"--config: {path} is not valid YAML ({e})") from None
    if data is None:
        return []
    if not isinstance(data, dict):
        raise ValueError(f"--config: {path} must hold a mapping of flag names to values")
    flags: list[str] = []
    for key, value in data.items():
        flag = "--" + str(key).replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value is False or value is None:
            continue
        elif isinstance(value, list):
            flags += [flag, *(str(v) for v in value)]
        elif isinstance(value, dict):
            raise ValueError(f"--config: {key}: give a value or a list, not a mapping")
        else:
            flags += [flag, str(value)]
    return flags
