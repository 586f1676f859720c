// Decode attention over the KV pool on an AVX512-BF16 CPU: one query token per request, keys and
// values read in place by slot (no gathered copy), q.k as bfloat16 dot products accumulated in
// float32, softmax and the weighted sum of values in float32.
//
// The CPU flash-attention kernel spends most of a decode batch in per-(row, head) set-up: with three
// queries per KV head it ran at about 12 GFLOP/s here. This kernel keeps a KV head's queries and
// their running sums in registers and walks each row's own keys once.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <torch/library.h>

#include "bf16.h"
#include "vec_math.h"

#include <cmath>
#include <algorithm>
#include <cstdint>
#include <vector>

namespace {

using namespace radixserve_cpu;

// One (request, KV head): its G queries over its n keys. `scores` holds G * stride floats.
template <int G, int D>
void attend_one(const bf16* q, const bf16* k_pool, const bf16* v_pool, const int64_t* slots,
                int64_t n, int64_t row_stride, float scale, float* scores, int64_t stride,
                bf16* out, float* lse) {
  constexpr int Q = D / 32;  // 32 bfloat16 pairs-of-lanes per register
  constexpr int F = D / 16;  // 16 floats per register
  __m512bh qv[G][Q];
  for (int g = 0; g < G; ++g)
    for (int c = 0; c < Q; ++c)
      qv[g][c] = (__m512bh)_mm512_loadu_si512(q + g * D + c * 32);

  for (int64_t j = 0; j < n; ++j) {
    if (j + 4 < n) _mm_prefetch(reinterpret_cast<const char*>(k_pool + slots[j + 4] * row_stride), _MM_HINT_T0);
    const bf16* key = k_pool + slots[j] * row_stride;
    __m512bh kv[Q];
    for (int c = 0; c < Q; ++c) kv[c] = (__m512bh)_mm512_loadu_si512(key + c * 32);
    for (int g = 0; g < G; ++g) {
      __m512 acc = _mm512_setzero_ps();
      for (int c = 0; c < Q; ++c) acc = _mm512_dpbf16_ps(acc, qv[g][c], kv[c]);
      scores[g * stride + j] = _mm512_reduce_add_ps(acc) * scale;
    }
  }

  float total[G];
  for (int g = 0; g < G; ++g) {
    float* s = scores + g * stride;
    __m512 top = _mm512_set1_ps(-INFINITY);
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) top = _mm512_max_ps(top, _mm512_loadu_ps(s + j));
    const __mmask16 tail = tail_mask(n - j);
    top = _mm512_max_ps(top, _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), tail, s + j));
    const float m = _mm512_reduce_max_ps(top);
    const __m512 mv = _mm512_set1_ps(m);
    __m512 sum = _mm512_setzero_ps();
    for (j = 0; j + 16 <= n; j += 16) {
      const __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(s + j), mv));
      _mm512_storeu_ps(s + j, e);
      sum = _mm512_add_ps(sum, e);
    }
    const __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, s + j), mv));
    _mm512_mask_storeu_ps(s + j, tail, e);
    sum = _mm512_add_ps(sum, _mm512_maskz_mov_ps(tail, e));
    total[g] = _mm512_reduce_add_ps(sum);
    lse[g] = m + std::log(total[g]);
  }

  __m512 acc[G][F];
  for (int g = 0; g < G; ++g)
    for (int c = 0; c < F; ++c) acc[g][c] = _mm512_setzero_ps();
  for (int64_t j = 0; j < n; ++j) {
    if (j + 4 < n) _mm_prefetch(reinterpret_cast<const char*>(v_pool + slots[j + 4] * row_stride), _MM_HINT_T0);
    const bf16* value = v_pool + slots[j] * row_stride;
    __m512 vf[F];
    for (int c = 0; c < F; ++c) vf[c] = load_bf16(value + c * 16);
    for (int g = 0; g < G; ++g) {
      const __m512 p = _mm512_set1_ps(scores[g * stride + j]);
      for (int c = 0; c < F; ++c) acc[g][c] = _mm512_fmadd_ps(p, vf[c], acc[g][c]);
    }
  }
  for (int g = 0; g < G; ++g) {
    const __m512 inv = _mm512_set1_ps(1.f / total[g]);
    for (int c = 0; c < F; ++c) {
      const __m256bh o = _mm512_cvtneps_pbh(_mm512_mul_ps(acc[g][c], inv));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + g * D + c * 16), (__m256i)o);
    }
  }
}

template <int G, int D>
void attend_batch(const at::Tensor& q, const at::Tensor& k_pool, const at::Tensor& v_pool,
                  const at::Tensor& slots, const at::Tensor& lens, double scale, at::Tensor& out,
                  at::Tensor& lse) {
  const int64_t batch = q.size(0), heads = q.size(1), width = slots.size(1);
  const int64_t slot_stride = slots.stride(0);
  const auto* qp = reinterpret_cast<const bf16*>(q.data_ptr<at::BFloat16>());
  const auto* kp = reinterpret_cast<const bf16*>(k_pool.data_ptr<at::BFloat16>());
  const auto* vp = reinterpret_cast<const bf16*>(v_pool.data_ptr<at::BFloat16>());
  auto* op = reinterpret_cast<bf16*>(out.data_ptr<at::BFloat16>());
  const int64_t* sp = slots.data_ptr<int64_t>();
  const int64_t* np = lens.data_ptr<int64_t>();
  float* lp = lse.data_ptr<float>();
  const int64_t stride = (width + 15) / 16 * 16;
  const int64_t row_stride = heads * D;
  at::parallel_for(0, batch * heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(G * stride);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / heads, h = task % heads;
      attend_one<G, D>(qp + task * G * D, kp + h * D, vp + h * D, sp + b * slot_stride, np[b],
                       row_stride, static_cast<float>(scale), scores.data(), stride,
                       op + task * G * D, lp + task * G);
    }
  });
}

using Kernel = void (*)(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                        const at::Tensor&, double, at::Tensor&, at::Tensor&);

template <int D>
Kernel pick(int64_t group) {
  switch (group) {
    case 1: return attend_batch<1, D>;
    case 2: return attend_batch<2, D>;
    case 3: return attend_batch<3, D>;
    case 4: return attend_batch<4, D>;
    case 6: return attend_batch<6, D>;
    case 8: return attend_batch<8, D>;
    default: return nullptr;
  }
}

// q [B, Hkv, G, D]; k_pool, v_pool [slots, Hkv, D]; slots [B, W] int64 (a row's first lens[b] are
// its keys; an extend's tokens share one row, expanded); lens [B] int64, each in 1..W. Returns (out [B, Hkv, G, D],
// log-sum-exp [B, Hkv, G] in float32).
std::tuple<at::Tensor, at::Tensor> decode_attention(const at::Tensor& q, const at::Tensor& k_pool,
                                                    const at::Tensor& v_pool,
                                                    const at::Tensor& slots,
                                                    const at::Tensor& lens, double scale) {
  TORCH_CHECK(q.dim() == 4 && k_pool.dim() == 3 && v_pool.dim() == 3,
              "q [B, Hkv, G, D] and pools [slots, Hkv, D]");
  TORCH_CHECK(q.scalar_type() == at::kBFloat16 && k_pool.scalar_type() == at::kBFloat16 &&
                  v_pool.scalar_type() == at::kBFloat16,
              "bfloat16 q and pools");
  TORCH_CHECK(slots.scalar_type() == at::kLong && lens.scalar_type() == at::kLong,
              "int64 slots and lens");
  TORCH_CHECK(q.is_contiguous() && k_pool.is_contiguous() && v_pool.is_contiguous() &&
                  slots.stride(1) == 1 && lens.is_contiguous(),
              "contiguous inputs (rows of slots may repeat one row: a stride of 0)");
  const int64_t batch = q.size(0), heads = q.size(1), group = q.size(2), dim = q.size(3);
  TORCH_CHECK(k_pool.size(1) == heads && k_pool.size(2) == dim && v_pool.sizes() == k_pool.sizes(),
              "pools of q's KV heads and head size");
  TORCH_CHECK(slots.dim() == 2 && slots.size(0) == batch && lens.size(0) == batch,
              "a slot row and a length per request");
  const int64_t width = slots.size(1), pool = k_pool.size(0), slot_stride = slots.stride(0);
  const int64_t* sp = slots.data_ptr<int64_t>();
  const int64_t* np = lens.data_ptr<int64_t>();
  int64_t longest = 0;
  for (int64_t b = 0; b < batch; ++b) {
    TORCH_CHECK(np[b] >= 1 && np[b] <= width, "lens[", b, "] = ", np[b], " outside 1..", width);
    longest = std::max(longest, np[b]);
  }
  for (int64_t b = 0; b < (slot_stride ? batch : std::min<int64_t>(batch, 1)); ++b)
    for (int64_t j = 0; j < (slot_stride ? np[b] : longest); ++j)
      TORCH_CHECK(sp[b * slot_stride + j] >= 0 && sp[b * slot_stride + j] < pool,
                  "slot outside the pool");
  Kernel kernel = dim == 64 ? pick<64>(group) : dim == 128 ? pick<128>(group) : nullptr;
  TORCH_CHECK(kernel != nullptr, "head size 64 or 128 and 1, 2, 3, 4, 6 or 8 queries per KV head");
  auto out = at::empty_like(q);
  auto lse = at::empty({batch, heads, group}, q.options().dtype(at::kFloat));
  if (batch) kernel(q, k_pool, v_pool, slots, lens, scale, out, lse);
  return {out, lse};
}

}  // namespace

TORCH_LIBRARY(radixserve_cpu, m) {
  m.def("decode_attention(Tensor q, Tensor k_pool, Tensor v_pool, Tensor slots, Tensor lens, "
        "float scale) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(radixserve_cpu, CPU, m) { m.impl("decode_attention", decode_attention); }
