"""Model families written over the ForwardBatch."""

from runtime.models.llama import LlamaForCausalLM

__all__ = ["LlamaForCausalLM"]
