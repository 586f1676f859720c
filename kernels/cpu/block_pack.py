"""The weight layout `radixserve_cpu.block_gemm` reads (described in block_gemm.cpp).

Packing happens once at load, in torch ops: tiles of 16 output rows, each block of 32 inputs as
the byte vectors `vpdpbusd` multiplies (four inputs of one row per 32-bit lane), then the
block's 16 scales and 16 minimums in float16. GGUF stores both in float16, so its blocks keep
their numbers exactly.
"""

from __future__ import annotations

import torch

BLOCK, TILE = 32, 16


def pack_blocks(
    codes: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor, bits: int
) -> torch.Tensor:
    """codes [N, K] unsigned (0..15 or 0..255), scales and mins [N, K/32]: w = scale*code + min.
    Returns the flat uint8 tensor `block_gemm(x, packed, N, bits)` takes."""
    if bits not in (4, 8):
        raise ValueError(f"bits must be 4 or 8, got {bits}")
    n, k = codes.shape
    if k % BLOCK:
        raise ValueError(f"the input size {k} is not a multiple of {BLOCK}")
    if scales.shape != (n, k // BLOCK) or mins.shape != scales.shape:
        raise ValueError(f"scales and mins must be [{n}, {k // BLOCK}]")
    if int(codes.min()) < 0 or int(codes.max()) >= 2**bits:
        raise ValueError(f"codes must lie in [0, {2**bits - 1}]")
    pad = -n % TILE
    tiles, nb = (n + pad) // TILE, k // BLOCK
    u = torch.nn.functional.pad(codes.to(torch.int32), (0, 0, 0, pad)).to(torch.uint8)
    # [tiles, 16 rows, blocks, 8 groups, 4 inputs] -> [tiles, blocks, groups, rows, inputs]
    u = u.reshape(tiles, TILE, nb, 8, 4).permute(0, 2, 3, 1, 4)
    if bits == 4:  # groups 2p and 2p+1 share a vector: low and high nibbles
        u = u.reshape(tiles, nb, 4, 2, TILE, 4)
        u = u[:, :, :, 0] | (u[:, :, :, 1] << 4)
    code_bytes = u.reshape(tiles, nb, -1)

    def half_bytes(t: torch.Tensor) -> torch.Tensor:
        t = torch.nn.functional.pad(t.float(), (0, 0, 0, pad)).to(torch.float16)
        return t.reshape(tiles, TILE, nb).transpose(1, 2).contiguous().view(torch.uint8)

    packed = torch.cat([code_bytes, half_bytes(scales), half_bytes(mins)], dim=-1)
    return packed.contiguous().reshape(-1)
