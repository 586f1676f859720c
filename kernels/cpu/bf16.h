// bfloat16 <-> float32 on AVX-512 registers, shared by the CPU kernels: 16 lanes at a time, with a
// mask for a row's last, shorter run.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace radixserve_cpu {

using bf16 = uint16_t;

inline __mmask16 tail_mask(int64_t left) {
  return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
}

inline __m512 load_bf16(const bf16* p, __mmask16 m = 0xFFFF) {
  const __m256i bits = _mm256_maskz_loadu_epi16(m, p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}

inline void store_bf16(bf16* p, __m512 x, __mmask16 m = 0xFFFF) {
  _mm256_mask_storeu_epi16(p, m, (__m256i)_mm512_cvtneps_pbh(x));
}

// To bfloat16 and back, as a bfloat16 tensor op rounds its result.
inline __m512 round_bf16(__m512 x) {
  const __m256i bits = (__m256i)_mm512_cvtneps_pbh(x);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}

}  // namespace radixserve_cpu
