// float32 activations times the packed 4- or 8-bit blocks of block_gemm.cpp, on AVX2 alone: the
// CPUs without AVX-512 (AMD before Zen 4, Intel client cores) run the model in float32, where
// torch's weight-only int4 / int8 kernels ran 3-66x slower than the dense GEMM.
//
// The arithmetic is block_gemm.cpp's: activations quantized to int8 per row and block of 32, a
// block contributing d*e*sum(u*v) + m*e*sum(v); with `fine`, in two parts (about 15 bits),
// which float32's users expect and one part (about bfloat16's 8) does not give. AVX2 has no `vpdpbusd`; `vpmaddubsw` multiplies
// unsigned by signed bytes into pairs of int16. With 4-bit codes a pair is at most
// 2*15*127 = 3810, so the eight groups of a block add up in int16 without overflow (30480)
// before one `vpmaddwd` widens them. 8-bit codes are split into their two nibbles, each taken
// the same way, and joined as 16*high + low.
//
// The packed layout is block_pack.py's, made for 512-bit vectors over 16 output rows: its two
// 256-bit halves are rows 0-7 and 8-15, so a tile runs as two halves of 8 rows. Every row is
// computed alone in one order, so a row's result does not depend on its batch.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace {

constexpr int64_t kBlock = 32, kTile = 16, kHalf = 8, kChunk = 4, kRowSlice = 128;

// x [M, K] float32 -> `parts` int8 parts of [M, K], each with its per-block scale e, and per
// block the sum of e*sum(v) over the parts (the term the weights' minimum multiplies). A second
// part carries the first one's rounding remainder at a scale 254 times finer.
void quantize_rows(const float* x, int64_t x_stride, int64_t rows, int64_t k, int parts,
                   int8_t* v, float* e, float* es) {
  const int64_t nb = k / kBlock;
  at::parallel_for(0, rows, 4, [&](int64_t begin, int64_t end) {
    float rest[kBlock];
    for (int64_t r = begin; r < end; ++r) {
      for (int64_t b = 0; b < nb; ++b) {
        std::memcpy(rest, x + r * x_stride + b * kBlock, sizeof(rest));
        float amax = 0.f;
        for (int i = 0; i < kBlock; ++i) amax = std::max(amax, std::fabs(rest[i]));
        float scale = amax / 127.f, sum = 0.f;
        for (int part = 0; part < parts; ++part, scale /= 254.f) {
          const float inv = scale > 0.f ? 1.f / scale : 0.f;
          int8_t* dst = v + (part * rows + r) * k + b * kBlock;
          int codes = 0;
          for (int i = 0; i < kBlock; ++i) {
            // round half to even, as torch.round (the default rounding mode); a remainder's
            // float error may round one step past 127
            const float q = std::clamp(std::nearbyint(rest[i] * inv), -127.f, 127.f);
            dst[i] = static_cast<int8_t>(q);
            codes += static_cast<int>(q);
            rest[i] -= q * scale;
          }
          e[(part * rows + r) * nb + b] = scale;
          sum += scale * static_cast<float>(codes);
        }
        es[r * nb + b] = sum;
      }
    }
  });
}

// The eight 4-input groups of one block for one half: u[g] holds inputs 4g..4g+3 of 8 rows.
template <int Bits>
inline void unpack_half(const uint8_t* p, int half, __m256i* u) {
  const __m256i low = _mm256_set1_epi8(0x0F);
  if constexpr (Bits == 4) {
    for (int j = 0; j < 4; ++j) {
      const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 64 * j + 32 * half));
      u[2 * j] = _mm256_and_si256(b, low);
      u[2 * j + 1] = _mm256_and_si256(_mm256_srli_epi16(b, 4), low);
    }
  } else {  // u[g] the low nibbles, u[8 + g] the high ones
    for (int g = 0; g < 8; ++g) {
      const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 64 * g + 32 * half));
      u[g] = _mm256_and_si256(b, low);
      u[8 + g] = _mm256_and_si256(_mm256_srli_epi16(b, 4), low);
    }
  }
}

// sum over a block of u*v for 8 rows, u 4-bit: int16 sums of the groups, widened once.
inline __m256i dot_nibbles(const __m256i* u, const int8_t* vb) {
  int32_t quad[8];
  std::memcpy(quad, vb, sizeof(quad));
  __m256i s = _mm256_maddubs_epi16(u[0], _mm256_set1_epi32(quad[0]));
  for (int g = 1; g < 8; ++g)
    s = _mm256_add_epi16(s, _mm256_maddubs_epi16(u[g], _mm256_set1_epi32(quad[g])));
  return _mm256_madd_epi16(s, _mm256_set1_epi16(1));
}

// Rows [0, R) of the chunk times one half tile: 8 outputs per row, `cols` of them written;
// `part_v` and `part_e` step from one activation part to the next.
template <int Bits, int R, int Parts>
void half_chunk(const uint8_t* tile, int half, int64_t nb, const int8_t* v, const float* e,
                const float* es, int64_t k, int64_t part_v, int64_t part_e, float* out,
                int64_t out_stride, int cols) {
  constexpr int64_t code_bytes = Bits * 64, block_bytes = code_bytes + 64;
  __m256 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* p = tile + b * block_bytes;
    __m256i u[Bits == 4 ? 8 : 16];
    unpack_half<Bits>(p, half, u);
    const __m256 d = _mm256_cvtph_ps(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + code_bytes + 16 * half)));
    const __m256 m = _mm256_cvtph_ps(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + code_bytes + 32 + 16 * half)));
    for (int r = 0; r < R; ++r) {
      for (int part = 0; part < Parts; ++part) {
        const int8_t* vb = v + part * part_v + r * k + b * kBlock;
        __m256i dot = dot_nibbles(u, vb);
        if constexpr (Bits == 8)
          dot = _mm256_add_epi32(dot, _mm256_slli_epi32(dot_nibbles(u + 8, vb), 4));
        const __m256 scaled = _mm256_mul_ps(d, _mm256_set1_ps(e[part * part_e + r * nb + b]));
        acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), scaled, acc[r]);
      }
      acc[r] = _mm256_fmadd_ps(m, _mm256_set1_ps(es[r * nb + b]), acc[r]);
    }
  }
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(cols), lanes);
  for (int r = 0; r < R; ++r) _mm256_maskstore_ps(out + r * out_stride, mask, acc[r]);
}

template <int Bits, int Parts>
void half_rows(const uint8_t* tile, int half, int64_t nb, const int8_t* v, const float* e,
               const float* es, int64_t k, int64_t part_v, int64_t part_e, int64_t rows,
               float* out, int64_t n, int cols) {
  for (int64_t r0 = 0; r0 < rows; r0 += kChunk) {
    const int64_t left = std::min(kChunk, rows - r0);
    const int8_t* vr = v + r0 * k;
    const float *er = e + r0 * nb, *esr = es + r0 * nb;
    float* o = out + r0 * n;
    switch (left) {
#define CHUNK(R)                                                                    \
  case R:                                                                           \
    half_chunk<Bits, R, Parts>(tile, half, nb, vr, er, esr, k, part_v, part_e, o, n, \
                               cols);                                               \
    break;
      CHUNK(1) CHUNK(2) CHUNK(3) CHUNK(4)
#undef CHUNK
    }
  }
}

// x [M, K] float32 (unit last stride) times the packed weight of `n` outputs -> [M, n] float32;
// `fine` takes the activations in two int8 parts instead of one.
at::Tensor block_gemm_f32(const at::Tensor& x, const at::Tensor& packed, int64_t n, int64_t bits,
                          bool fine) {
  TORCH_CHECK(bits == 4 || bits == 8, "block_gemm_f32: bits must be 4 or 8");
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.stride(1) == 1,
              "block_gemm_f32: x must be float32 [M, K] with a unit last stride");
  TORCH_CHECK(packed.scalar_type() == at::kByte && packed.is_contiguous(),
              "block_gemm_f32: packed must be a contiguous uint8 tensor");
  const int64_t rows = x.size(0), k = x.size(1), nb = k / kBlock;
  const int64_t tiles = (n + kTile - 1) / kTile, block_bytes = bits * 64 + 64;
  const int parts = fine ? 2 : 1;
  TORCH_CHECK(k % kBlock == 0, "block_gemm_f32: K must be a multiple of 32, got ", k);
  TORCH_CHECK(packed.numel() == tiles * nb * block_bytes,
              "block_gemm_f32: packed holds ", packed.numel(), " bytes, not ",
              tiles * nb * block_bytes, " for ", n, " outputs of ", k, " inputs at ", bits,
              " bits");
  auto out = at::empty({rows, n}, x.options());
  if (rows == 0 || n == 0) return out;
  auto v = at::empty({parts, rows, k}, x.options().dtype(at::kChar));
  auto e = at::empty({parts, rows, nb}, x.options());
  auto es = at::empty({rows, nb}, x.options());
  quantize_rows(x.data_ptr<float>(), x.stride(0), rows, k, parts, v.data_ptr<int8_t>(),
                e.data_ptr<float>(), es.data_ptr<float>());
  const uint8_t* w = packed.data_ptr<uint8_t>();
  float* o = out.data_ptr<float>();
  const int8_t* vp = v.data_ptr<int8_t>();
  const float *ep = e.data_ptr<float>(), *esp = es.data_ptr<float>();
  const int64_t part_v = rows * k, part_e = rows * nb;
  // as in block_gemm.cpp: a prefill's rows in slices whose int8 copy stays in the core's cache
  for (int64_t r0 = 0; r0 < rows; r0 += kRowSlice) {
    const int64_t slice = std::min(kRowSlice, rows - r0);
    at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const uint8_t* tile = w + t * nb * block_bytes;
        for (int half = 0; half < 2; ++half) {
          const int64_t first = t * kTile + half * kHalf;
          const int cols = static_cast<int>(std::min<int64_t>(kHalf, n - first));
          if (cols <= 0) break;
          float* dst = o + r0 * n + first;
          const int8_t* vr = vp + r0 * k;
          const float *er = ep + r0 * nb, *esr = esp + r0 * nb;
#define ROWS(B, P) \
  half_rows<B, P>(tile, half, nb, vr, er, esr, k, part_v, part_e, slice, dst, n, cols)
          if (bits == 4)
            fine ? ROWS(4, 2) : ROWS(4, 1);
          else
            fine ? ROWS(8, 2) : ROWS(8, 1);
#undef ROWS
        }
      }
    });
  }
  return out;
}

// The float32 weight [n, K] the packed blocks stand for, w = d*u + m: for batches whose GEMM is
// bound by arithmetic, where float32's GEMM outruns the int8 parts, without keeping a dense copy.
at::Tensor block_dequantize_f32(const at::Tensor& packed, int64_t n, int64_t k, int64_t bits) {
  TORCH_CHECK(bits == 4 || bits == 8, "block_dequantize_f32: bits must be 4 or 8");
  TORCH_CHECK(k % kBlock == 0, "block_dequantize_f32: K must be a multiple of 32, got ", k);
  const int64_t nb = k / kBlock, tiles = (n + kTile - 1) / kTile, block_bytes = bits * 64 + 64;
  TORCH_CHECK(packed.scalar_type() == at::kByte && packed.is_contiguous() &&
                  packed.numel() == tiles * nb * block_bytes,
              "block_dequantize_f32: packed must be the contiguous uint8 blocks of ", n, "x", k,
              " at ", bits, " bits");
  auto out = at::empty({n, k}, packed.options().dtype(at::kFloat));
  const uint8_t* w = packed.data_ptr<uint8_t>();
  float* o = out.data_ptr<float>();
  at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t rows = std::min(kTile, n - t * kTile);
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* p = w + (t * nb + b) * block_bytes;
        const auto* halves = reinterpret_cast<const uint16_t*>(p + bits * 64);
        for (int64_t r = 0; r < rows; ++r) {
          const __m256 d = _mm256_set1_ps(_cvtsh_ss(halves[r]));
          const __m256 m = _mm256_set1_ps(_cvtsh_ss(halves[kTile + r]));
          float* dst = o + (t * kTile + r) * k + b * kBlock;
          for (int j = 0; j < 4; ++j) {  // 8 inputs at a time
            uint64_t codes;
            if (bits == 4) {  // vector j: inputs 8j..8j+3 low, 8j+4..8j+7 high
              uint32_t q;
              std::memcpy(&q, p + 64 * j + 4 * r, 4);
              codes = (q & 0x0F0F0F0Fu) | (static_cast<uint64_t>((q >> 4) & 0x0F0F0F0Fu) << 32);
            } else {  // vectors 2j and 2j+1: inputs 8j..8j+3 and 8j+4..8j+7
              uint32_t lo, hi;
              std::memcpy(&lo, p + 64 * (2 * j) + 4 * r, 4);
              std::memcpy(&hi, p + 64 * (2 * j + 1) + 4 * r, 4);
              codes = lo | (static_cast<uint64_t>(hi) << 32);
            }
            const __m256 u = _mm256_cvtepi32_ps(
                _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(static_cast<int64_t>(codes))));
            _mm256_storeu_ps(dst + 8 * j, _mm256_fmadd_ps(u, d, m));
          }
        }
      }
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(radixserve_cpu, m) {
  m.def("block_gemm_f32(Tensor x, Tensor packed, int n, int bits, bool fine=False) -> Tensor");
  m.def("block_dequantize_f32(Tensor packed, int n, int k, int bits) -> Tensor");
}

TORCH_LIBRARY_IMPL(radixserve_cpu, CPU, m) {
  m.impl("block_gemm_f32", block_gemm_f32);
  m.impl("block_dequantize_f32", block_dequantize_f32);
}
