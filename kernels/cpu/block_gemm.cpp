// bfloat16 activations times weights kept in 4- or 8-bit blocks of 32 (GGUF's Q4_0 / Q4_1 /
// Q8_0 numbers), on the CPU's int8 dot products (AVX512-VNNI).
//
// A decode step reads every weight once, so its GEMMs are bound by the bytes read: 4-bit blocks
// read a quarter of bfloat16's. torch's weight-only int4 kernel widens each weight to bfloat16
// before multiplying and loses to oneDNN's bfloat16 GEMM from a few rows on. Here the
// activations are quantized too, per row and block of 32 (symmetric int8, as llama.cpp does), so
// the inner product is `vpdpbusd`: 64 unsigned-by-signed byte products per instruction, twice
// the multiplies of a bfloat16 pair dot product.
//
// A weight is w = d*u + m per block, u unsigned (0..15, or 0..255 for 8 bits), d and m float16.
// With the activation x = e*v (v int8), a block contributes d*e*sum(u*v) + m*e*sum(v).
// Layout, per tile of 16 output rows and block of 32 inputs (built by kernels/cpu/block_pack.py):
//   4 bits: 4 x 64 bytes; byte 4r+i of vector p holds u[r][8p+i] (low) and u[r][8p+4+i] (high)
//   8 bits: 8 x 64 bytes; byte 4r+i of vector g holds u[r][4g+i]
//   then 16 float16 d and 16 float16 m.
// Every row is computed alone in one order, so a row's result does not depend on its batch.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "bf16.h"

#include <cmath>
#include <cstdint>

namespace {

using namespace radixserve_cpu;

constexpr int64_t kBlock = 32, kTile = 16, kChunk = 8, kRowSlice = 128;

// x [M, K] bfloat16 -> v int8 [M, K], per block: scale e and e*sum(v).
void quantize_rows(const bf16* x, int64_t x_stride, int64_t rows, int64_t k, int8_t* v, float* e,
                   float* es) {
  const int64_t nb = k / kBlock;
  at::parallel_for(0, rows, 4, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      for (int64_t b = 0; b < nb; ++b) {
        const bf16* src = x + r * x_stride + b * kBlock;
        const __m512 a = load_bf16(src), c = load_bf16(src + 16);
        const float amax = _mm512_reduce_max_ps(
            _mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(c)));
        const float scale = amax / 127.f;
        const __m512 inv = _mm512_set1_ps(scale > 0.f ? 1.f / scale : 0.f);
        // round half to even, as torch.round; |x*inv| <= 127 so no saturation is needed
        const __m512i qa = _mm512_cvtps_epi32(_mm512_mul_ps(a, inv));
        const __m512i qc = _mm512_cvtps_epi32(_mm512_mul_ps(c, inv));
        int8_t* dst = v + r * k + b * kBlock;
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), _mm512_cvtepi32_epi8(qa));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 16), _mm512_cvtepi32_epi8(qc));
        e[r * nb + b] = scale;
        es[r * nb + b] = scale * static_cast<float>(_mm512_reduce_add_epi32(
                                     _mm512_add_epi32(qa, qc)));
      }
    }
  });
}

template <int Bits>
inline void unpack(const uint8_t* p, __m512i* u) {
  if constexpr (Bits == 4) {
    const __m512i low = _mm512_set1_epi8(0x0F);
    for (int j = 0; j < 4; ++j) {
      const __m512i b = _mm512_loadu_si512(p + 64 * j);
      u[2 * j] = _mm512_and_si512(b, low);
      u[2 * j + 1] = _mm512_and_si512(_mm512_srli_epi16(b, 4), low);
    }
  } else {
    for (int j = 0; j < 8; ++j) u[j] = _mm512_loadu_si512(p + 64 * j);
  }
}

// Rows [0, R) of the chunk times one tile: 16 outputs per row, written as bfloat16.
template <int Bits, int R>
void tile_chunk(const uint8_t* tile, int64_t nb, const int8_t* v, const float* e, const float* es,
                int64_t k, bf16* out, int64_t out_stride, __mmask16 cols) {
  constexpr int64_t code_bytes = Bits * 64, block_bytes = code_bytes + 64;
  __m512 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* p = tile + b * block_bytes;
    __m512i u[8];
    unpack<Bits>(p, u);
    const auto* halves = reinterpret_cast<const __m256i*>(p + code_bytes);
    const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(halves));
    const __m512 m = _mm512_cvtph_ps(_mm256_loadu_si256(halves + 1));
    for (int r = 0; r < R; ++r) {
      const int32_t* vb = reinterpret_cast<const int32_t*>(v + r * k + b * kBlock);
      __m512i dot = _mm512_setzero_si512();
      for (int g = 0; g < 8; ++g)
        dot = _mm512_dpbusd_epi32(dot, u[g], _mm512_set1_epi32(vb[g]));
      const __m512 scaled = _mm512_mul_ps(d, _mm512_set1_ps(e[r * nb + b]));
      acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scaled, acc[r]);
      acc[r] = _mm512_fmadd_ps(m, _mm512_set1_ps(es[r * nb + b]), acc[r]);
    }
  }
  for (int r = 0; r < R; ++r) store_bf16(out + r * out_stride, acc[r], cols);
}

template <int Bits>
void tile_rows(const uint8_t* tile, int64_t nb, const int8_t* v, const float* e, const float* es,
               int64_t k, int64_t rows, bf16* out, int64_t n, __mmask16 cols) {
  for (int64_t r0 = 0; r0 < rows; r0 += kChunk) {
    const int64_t left = std::min(kChunk, rows - r0);
    const int8_t* vr = v + r0 * k;
    const float *er = e + r0 * nb, *esr = es + r0 * nb;
    bf16* o = out + r0 * n;
    switch (left) {
#define CHUNK(R) \
  case R: tile_chunk<Bits, R>(tile, nb, vr, er, esr, k, o, n, cols); break;
      CHUNK(1) CHUNK(2) CHUNK(3) CHUNK(4) CHUNK(5) CHUNK(6) CHUNK(7) CHUNK(8)
#undef CHUNK
    }
  }
}

// x [M, K] bfloat16 (unit last stride) times the packed weight of `n` outputs -> [M, n].
at::Tensor block_gemm(const at::Tensor& x, const at::Tensor& packed, int64_t n, int64_t bits) {
  TORCH_CHECK(bits == 4 || bits == 8, "block_gemm: bits must be 4 or 8");
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kBFloat16 && x.stride(1) == 1,
              "block_gemm: x must be bfloat16 [M, K] with a unit last stride");
  TORCH_CHECK(packed.scalar_type() == at::kByte && packed.is_contiguous(),
              "block_gemm: packed must be a contiguous uint8 tensor");
  const int64_t rows = x.size(0), k = x.size(1), nb = k / kBlock;
  const int64_t tiles = (n + kTile - 1) / kTile, block_bytes = bits * 64 + 64;
  TORCH_CHECK(k % kBlock == 0, "block_gemm: K must be a multiple of 32, got ", k);
  TORCH_CHECK(packed.numel() == tiles * nb * block_bytes,
              "block_gemm: packed holds ", packed.numel(), " bytes, not ",
              tiles * nb * block_bytes, " for ", n, " outputs of ", k, " inputs at ", bits,
              " bits");
  auto out = at::empty({rows, n}, x.options());
  if (rows == 0 || n == 0) return out;
  auto v = at::empty({rows, k}, x.options().dtype(at::kChar));
  auto e = at::empty({rows, nb}, x.options().dtype(at::kFloat));
  auto es = at::empty({rows, nb}, x.options().dtype(at::kFloat));
  quantize_rows(reinterpret_cast<const bf16*>(x.data_ptr<at::BFloat16>()), x.stride(0), rows, k,
                v.data_ptr<int8_t>(), e.data_ptr<float>(), es.data_ptr<float>());
  const uint8_t* w = packed.data_ptr<uint8_t>();
  bf16* o = reinterpret_cast<bf16*>(out.data_ptr<at::BFloat16>());
  const int8_t* vp = v.data_ptr<int8_t>();
  const float *ep = e.data_ptr<float>(), *esp = es.data_ptr<float>();
  // A prefill's rows in slices whose int8 activations stay in the core's cache while every tile
  // of the weight passes over them (all rows at once would stream them from memory per tile).
  for (int64_t r0 = 0; r0 < rows; r0 += kRowSlice) {
    const int64_t slice = std::min(kRowSlice, rows - r0);
    at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const __mmask16 cols = tail_mask(n - t * kTile);
        const uint8_t* tile = w + t * nb * block_bytes;
        bf16* dst = o + r0 * n + t * kTile;
        if (bits == 4)
          tile_rows<4>(tile, nb, vp + r0 * k, ep + r0 * nb, esp + r0 * nb, k, slice, dst, n, cols);
        else
          tile_rows<8>(tile, nb, vp + r0 * k, ep + r0 * nb, esp + r0 * nb, k, slice, dst, n, cols);
      }
    });
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(radixserve_cpu, m) {
  m.def("block_gemm(Tensor x, Tensor packed, int n, int bits) -> Tensor");
}

TORCH_LIBRARY_IMPL(radixserve_cpu, CPU, m) { m.impl("block_gemm", block_gemm); }
