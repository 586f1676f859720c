"""Sampling parameters and the batched sampler."""

from runtime.sampling.sampling_params import SamplingParams

__all__ = ["SamplingParams"]
