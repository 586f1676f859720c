// The gated MLP's activation, silu(gate) * up, for bfloat16 rows on the CPU, in one pass.
//
// torch spends a decode step's activation on two ops over a split view (a SiLU, then a multiply,
// each a pass over memory and a dispatch). Rounded where those ops round: silu(gate) in float32,
// rounded to bfloat16, then the product rounded; silu's exp is our own (vec_math.h), so a value
// can land one bfloat16 unit from torch's.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "bf16.h"
#include "vec_math.h"

#include <cstdint>

namespace {

using namespace radixserve_cpu;

// x * sigmoid(x), with e = e^-|x| <= 1: sigmoid is 1/(1+e) for x >= 0, e/(1+e) below.
inline __m512 silu(__m512 x) {
  const __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_abs_ps(x)));
  const __m512 inv = _mm512_div_ps(_mm512_set1_ps(1.f), _mm512_add_ps(_mm512_set1_ps(1.f), e));
  const __mmask16 neg = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ);
  const __m512 sig = _mm512_mask_mul_ps(inv, neg, inv, e);
  return _mm512_mul_ps(x, sig);
}

// x [T, 2I] (gate, then up) -> [T, I].
at::Tensor silu_mul(const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kBFloat16 && x.stride(1) == 1 &&
                  x.size(1) % 2 == 0,
              "silu_mul: x must be bfloat16 [T, 2I] with a unit last stride");
  const int64_t rows = x.size(0), half = x.size(1) / 2, stride = x.stride(0);
  auto out = at::empty({rows, half}, x.options());
  const bf16* src = reinterpret_cast<const bf16*>(x.data_ptr<at::BFloat16>());
  bf16* dst = reinterpret_cast<bf16*>(out.data_ptr<at::BFloat16>());
  at::parallel_for(0, rows, 8, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const bf16* gate = src + t * stride;
      const bf16* up = gate + half;
      for (int64_t i = 0; i < half; i += 16) {
        const __mmask16 m = tail_mask(half - i);
        const __m512 act = round_bf16(silu(load_bf16(gate + i, m)));
        store_bf16(dst + t * half + i, _mm512_mul_ps(act, load_bf16(up + i, m)), m);
      }
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(radixserve_cpu, m) { m.def("silu_mul(Tensor x) -> Tensor"); }

TORCH_LIBRARY_IMPL(radixserve_cpu, CPU, m) { m.impl("silu_mul", silu_mul); }
