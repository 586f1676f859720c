"""Without CUDA, Triton kernels run in Triton's interpreter on the CPU (set before they load)."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
