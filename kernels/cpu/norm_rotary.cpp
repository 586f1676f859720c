// RMSNorm and rotary embedding for bfloat16 activations on an AVX512-BF16 CPU, one pass each.
//
// In a decode step these are a few thousand elements per row, so torch's composite ops (a cast,
// a square, a mean, a reciprocal root, a multiply, a cast, a multiply; or four multiplies, a
// negation, a concatenation and two adds for rotary) cost their dispatch, not their arithmetic.
// Both round where the torch ops they replace round: RMSNorm normalizes in float32, rounds to
// bfloat16, then multiplies by the weight and rounds again; rotary rounds each product and the sum.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "bf16.h"

#include <cmath>
#include <cstdint>

namespace {

using namespace radixserve_cpu;

// out[t] = bf16(w * bf16(x[t] / rms(x[t]))); with `residual`, x[t] += residual[t] first (in
// bfloat16, written back to residual's buffer as the new hidden state).
void norm_rows(const bf16* x, int64_t x_stride, bf16* sum_out, const bf16* residual,
               const float* w, bf16* out, int64_t rows, int64_t hidden, float eps) {
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const bf16* xr = x + t * x_stride;
      bf16* sr = sum_out ? sum_out + t * hidden : nullptr;
      __m512 sq = _mm512_setzero_ps();
      for (int64_t i = 0; i < hidden; i += 16) {
        const __mmask16 m = tail_mask(hidden - i);
        __m512 v = load_bf16(xr + i, m);
        if (residual) {
          v = round_bf16(_mm512_add_ps(v, load_bf16(residual + t * hidden + i, m)));
          store_bf16(sr + i, v, m);
        }
        sq = _mm512_fmadd_ps(v, v, sq);
      }
      const float inv = 1.f / std::sqrt(_mm512_reduce_add_ps(sq) / hidden + eps);
      const bf16* src = residual ? sr : xr;
      const __m512 scale = _mm512_set1_ps(inv);
      for (int64_t i = 0; i < hidden; i += 16) {
        const __mmask16 m = tail_mask(hidden - i);
        const __m512 normed = round_bf16(_mm512_mul_ps(load_bf16(src + i, m), scale));
        store_bf16(out + t * hidden + i, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, w + i), normed), m);
      }
    }
  });
}

at::Tensor weight_floats(const at::Tensor& weight, int64_t hidden) {
  TORCH_CHECK(weight.dim() == 1 && weight.size(0) == hidden, "a weight of the hidden size");
  return weight.to(at::kFloat).contiguous();
}

void check_rows(const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kBFloat16 && x.stride(1) == 1,
              "bfloat16 rows [T, hidden] with a unit last stride");
}

// The normalized rows, rounded like the torch ops of runtime/layers/rmsnorm.py.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  check_rows(x);
  const int64_t rows = x.size(0), hidden = x.size(1);
  const at::Tensor w = weight_floats(weight, hidden);
  auto out = at::empty({rows, hidden}, x.options());
  norm_rows(reinterpret_cast<const bf16*>(x.data_ptr<at::BFloat16>()), x.stride(0), nullptr,
            nullptr, w.data_ptr<float>(), reinterpret_cast<bf16*>(out.data_ptr<at::BFloat16>()),
            rows, hidden, static_cast<float>(eps));
  return out;
}

// (x + residual, rms_norm(x + residual)): a layer's residual add and the next norm in one pass.
std::tuple<at::Tensor, at::Tensor> add_rms_norm(const at::Tensor& x, const at::Tensor& residual,
                                                const at::Tensor& weight, double eps) {
  check_rows(x);
  TORCH_CHECK(residual.sizes() == x.sizes() && residual.scalar_type() == at::kBFloat16 &&
                  residual.is_contiguous(),
              "a contiguous bfloat16 residual of x's shape");
  const int64_t rows = x.size(0), hidden = x.size(1);
  const at::Tensor w = weight_floats(weight, hidden);
  auto sum = at::empty({rows, hidden}, x.options());
  auto out = at::empty({rows, hidden}, x.options());
  norm_rows(reinterpret_cast<const bf16*>(x.data_ptr<at::BFloat16>()), x.stride(0),
            reinterpret_cast<bf16*>(sum.data_ptr<at::BFloat16>()),
            reinterpret_cast<const bf16*>(residual.data_ptr<at::BFloat16>()), w.data_ptr<float>(),
            reinterpret_cast<bf16*>(out.data_ptr<at::BFloat16>()), rows, hidden,
            static_cast<float>(eps));
  return {sum, out};
}

// x [T, H, D] (rows may be strided, heads and dims packed) rotated in place, rotate-half layout:
// x * cos + cat(-x2, x1) * sin, with cos and sin [T, D] in bfloat16.
void rotate(at::Tensor& x, const bf16* cos, const bf16* sin) {
  const int64_t rows = x.size(0), heads = x.size(1), dim = x.size(2), half = dim / 2;
  const int64_t stride = x.stride(0);
  bf16* base = reinterpret_cast<bf16*>(x.data_ptr<at::BFloat16>());
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const bf16* c = cos + t * dim;
      const bf16* s = sin + t * dim;
      for (int64_t h = 0; h < heads; ++h) {
        bf16* row = base + t * stride + h * dim;
        for (int64_t i = 0; i < half; i += 16) {
          const __mmask16 m = tail_mask(half - i);
          const __m512 x1 = load_bf16(row + i, m), x2 = load_bf16(row + half + i, m);
          const __m512 c1 = load_bf16(c + i, m), c2 = load_bf16(c + half + i, m);
          const __m512 s1 = load_bf16(s + i, m), s2 = load_bf16(s + half + i, m);
          // first half: x1 cos - x2 sin; second half: x2 cos + x1 sin (each product rounded)
          const __m512 lo = _mm512_sub_ps(round_bf16(_mm512_mul_ps(x1, c1)),
                                          round_bf16(_mm512_mul_ps(x2, s1)));
          const __m512 hi = _mm512_add_ps(round_bf16(_mm512_mul_ps(x2, c2)),
                                          round_bf16(_mm512_mul_ps(x1, s2)));
          store_bf16(row + i, lo, m);
          store_bf16(row + half + i, hi, m);
        }
      }
    }
  });
}

void rotary_(at::Tensor q, at::Tensor k, const at::Tensor& cos, const at::Tensor& sin) {
  for (const at::Tensor* x : {&q, &k}) {
    TORCH_CHECK(x->dim() == 3 && x->scalar_type() == at::kBFloat16 && x->stride(2) == 1 &&
                    x->stride(1) == x->size(2) && x->size(2) % 2 == 0,
                "bfloat16 [T, heads, D] with heads and dims packed");
    TORCH_CHECK(x->size(0) == cos.size(0) && cos.size(-1) == x->size(2), "cos/sin [T, D]");
  }
  TORCH_CHECK(cos.scalar_type() == at::kBFloat16 && sin.scalar_type() == at::kBFloat16 &&
                  cos.is_contiguous() && sin.is_contiguous() && sin.sizes() == cos.sizes(),
              "contiguous bfloat16 cos and sin of one shape");
  const auto* c = reinterpret_cast<const bf16*>(cos.data_ptr<at::BFloat16>());
  const auto* s = reinterpret_cast<const bf16*>(sin.data_ptr<at::BFloat16>());
  rotate(q, c, s);
  rotate(k, c, s);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(radixserve_cpu, m) {
  m.def("rms_norm(Tensor x, Tensor weight, float eps) -> Tensor");
  m.def("add_rms_norm(Tensor x, Tensor residual, Tensor weight, float eps) -> (Tensor, Tensor)");
  m.def("rotary_(Tensor(a!) q, Tensor(b!) k, Tensor cos, Tensor sin) -> ()");
}

TORCH_LIBRARY_IMPL(radixserve_cpu, CPU, m) {
  m.impl("rms_norm", rms_norm);
  m.impl("add_rms_norm", add_rms_norm);
  m.impl("rotary_", rotary_);
}
