"""A Hugging Face model id (`org/name`) found in the local Hugging Face cache; never downloaded.

The server does not fetch weights at start-up: `huggingface-cli download org/name` (or any
`from_pretrained` run) fills the cache first. `HF_HOME` / `HF_HUB_CACHE` say where it is.
"""

from __future__ import annotations

import glob
import os
import re

_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def looks_like_repo_id(path: str) -> bool:
    return bool(_REPO_ID.fullmatch(path)) and not os.path.exists(path)


def resolve_repo_id(repo_id: str, revision: str | None = None) -> str:
    """The cached snapshot of `repo_id`: its folder, or its one .gguf file."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = snapshot_download(repo_id, revision=revision, local_files_only=True)
    except LocalEntryNotFoundError:
        raise FileNotFoundError(
            f"model_path: {repo_id!r} is not in the local Hugging Face cache and this server "
            f"downloads nothing; run `huggingface-cli download {repo_id}` first (or give a path)"
        ) from None
    if os.path.exists(os.path.join(folder, "config.json")):
        return folder
    ggufs = sorted(glob.glob(os.path.join(folder, "**", "*.gguf"), recursive=True))
    if len(ggufs) == 1:
        return ggufs[0]
    if ggufs:
        names = ", ".join(os.path.relpath(g, folder) for g in ggufs)
        raise ValueError(
            f"model_path: {repo_id} holds several GGUF files ({names}); give the path of one"
        )
    raise FileNotFoundError(f"model_path: the cached {repo_id} has no config.json or .gguf file")
