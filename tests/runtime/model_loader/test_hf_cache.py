"""Model ids found in a local Hugging Face cache, laid out as the hub client writes it."""

from __future__ import annotations

import os

import pytest

from runtime.model_loader.hf_cache import looks_like_repo_id, resolve_repo_id
from runtime.model_loader.loader import default_model_path

COMMIT = "0" * 40


def cached_repo(cache, repo_id: str, files: dict[str, str]) -> str:
    """Writes a snapshot of `repo_id` into the cache folder; returns the snapshot folder."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / COMMIT
    for name, target in files.items():
        path = snap / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if target.startswith("/"):
            os.symlink(target, path)
        else:
            path.write_text(target)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return str(snap)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    return tmp_path


def test_repo_ids_are_told_from_paths(tmp_path, monkeypatch):
    assert looks_like_repo_id("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert not looks_like_repo_id("model.gguf") and not looks_like_repo_id("/a/b")
    (tmp_path / "org").mkdir()
    (tmp_path / "org" / "name").mkdir()
    monkeypatch.chdir(tmp_path)
    assert not looks_like_repo_id("org/name")  # a folder that exists is a path


def test_a_cached_folder_or_its_one_gguf_file(cache):
    folder = cached_repo(cache, "org/hf-model", {"config.json": "{}"})
    assert resolve_repo_id("org/hf-model") == folder
    gguf = cached_repo(cache, "org/gguf-model", {"q4/model.gguf": default_model_path()})
    assert resolve_repo_id("org/gguf-model") == os.path.join(gguf, "q4", "model.gguf")


def test_a_missing_id_says_how_to_get_it_and_downloads_nothing(cache):
    with pytest.raises(FileNotFoundError, match="huggingface-cli download org/absent"):
        resolve_repo_id("org/absent")
    cached_repo(cache, "org/two", {"a.gguf": "x", "b.gguf": "y"})
    with pytest.raises(ValueError, match=r"several GGUF files \(a.gguf, b.gguf\)"):
        resolve_repo_id("org/two")
