"""Finding, converting and loading model weights and tokenizers."""

from runtime.model_loader.config import ModelConfig
from runtime.model_loader.loader import default_model_path, load_tokenizer, prepare_model_folder

__all__ = ["ModelConfig", "default_model_path", "load_tokenizer", "prepare_model_folder"]
