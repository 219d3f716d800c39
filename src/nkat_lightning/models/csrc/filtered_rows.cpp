// Top-k then top-p filtering of attention logits on the CPU, registered as
// torch.ops.nkat.filtered_rows_cpu: the CPU kernel of the custom op nkat::filtered_rows
// (models/filtering.py, which gives it its fake, autograd and other devices). Hand-written because torch's CPU topk costs about three times
// a whole fused attention at 49 tokens (a partial sort with its own allocations per row);
// here 32 rows are filtered together in SIMD lanes, branch-free, blocks in parallel.
//
// filtered_rows(logits, k, p, probabilities) over the last dimension:
// keeps the k largest logits (the earlier index first among equals, so exactly k), then the
// smallest prefix of those whose softmax mass reaches p (the first always; p >= 1: all k).
// probabilities=true: the softmax over the kept logits, 0 elsewhere (computed here: torch's exp
// over a row that is mostly -inf was about 7 times slower than over finite values).
// probabilities=false: an additive mask, 0 where kept and -inf elsewhere. A row holding a NaN
// comes back as NaN, or as a mask that keeps everything, so its softmax is NaN as without the
// filter.

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

namespace {

constexpr int64_t kBlock = 32;  // rows filtered together

// One SIMD register of T as a GCC/Clang vector (64 bytes with AVX-512, 32 with AVX2, else 16:
// SSE or NEON), so the compiler emits SIMD for it on any target, and the same-sized integers
// for its masks.
#if defined(__AVX512F__) && defined(__AVX512DQ__)
constexpr int64_t kVectorBytes = 64;
#elif defined(__AVX2__)
constexpr int64_t kVectorBytes = 32;
#else
constexpr int64_t kVectorBytes = 16;
#endif

template <typename T>
struct Lanes {
  static constexpr int64_t width = kVectorBytes / sizeof(T);
  static constexpr int64_t vectors = kBlock / width;  // per column of a block
  typedef T values __attribute__((vector_size(kVectorBytes)));
  typedef std::conditional_t<sizeof(T) == 4, int32_t, int64_t> integer;
  typedef integer bits __attribute__((vector_size(kVectorBytes)));
};

template <typename T>
typename Lanes<T>::bits as_bits(typename Lanes<T>::values v) {
  return __builtin_bit_cast(typename Lanes<T>::bits, v);
}

template <typename T>
typename Lanes<T>::values as_values(typename Lanes<T>::bits v) {
  return __builtin_bit_cast(typename Lanes<T>::values, v);
}

// Per-block scratch: the block transposed (column j of all rows together), the k slots of
// the insertion network, and per-row results, all column-major in lanes.
// exp of the lanes where ``keep`` is set, 0 elsewhere. For float a Cephes-style polynomial
// (about 1 ulp; arguments below -87.3 give about 1e-38 instead of a denormal), else std::exp.
template <typename T>
typename Lanes<T>::values exp_where(typename Lanes<T>::values x, typename Lanes<T>::bits keep) {
  using values_t = typename Lanes<T>::values;
  using bits_t = typename Lanes<T>::bits;
  if constexpr (std::is_same_v<T, float>) {
    x = x < -87.3f ? values_t{} - 87.3f : x;
    x = x > 88.3f ? values_t{} + 88.3f : x;
    values_t n = x * 1.44269504088896341f + 0.5f;  // floor(x / ln 2 + 1/2)
    const values_t truncated = __builtin_convertvector(__builtin_convertvector(n, bits_t), values_t);
    n = truncated - as_values<T>((truncated > n) & as_bits<T>(values_t{} + 1.0f));
    x = x - n * 0.693359375f + n * 2.12194440e-4f;  // x - n ln 2, in two parts
    values_t y = values_t{} + 1.9875691500e-4f;
    y = y * x + 1.3981999507e-3f;
    y = y * x + 8.3334519073e-3f;
    y = y * x + 4.1665795894e-2f;
    y = y * x + 1.6666665459e-1f;
    y = y * x + 5.0000001201e-1f;
    y = y * (x * x) + x + 1.0f;
    const bits_t two_to_n = (__builtin_convertvector(n, bits_t) + 127) << 23;
    return as_values<T>(as_bits<T>(y * as_values<T>(two_to_n)) & keep);
  } else {
    values_t result = {};
    for (int64_t lane = 0; lane < Lanes<T>::width; ++lane)
      if (keep[lane]) result[lane] = std::exp(x[lane]);
    return result;
  }
}

template <typename acc_t>
struct Scratch {
  Scratch(int64_t n, int64_t k) : columns(n * kBlock), top(k * Lanes<acc_t>::vectors), weight(k) {}
  std::vector<acc_t> columns;
  std::vector<typename Lanes<acc_t>::bits> top;  // slot i, vector v at i * vectors + v (aligned)
  std::vector<acc_t> weight;
  acc_t threshold[kBlock], shift[kBlock];
  typename Lanes<acc_t>::integer wanted[kBlock];  // how many logits equal to the threshold
};

template <typename scalar_t>
void filter_block(const scalar_t* in, scalar_t* out, int64_t rows, int64_t n, int64_t k, double p,
                  bool probabilities, Scratch<at::opmath_type<scalar_t>>& s) {
  using acc_t = at::opmath_type<scalar_t>;
  using L = Lanes<acc_t>;
  using values_t = typename L::values;
  using bits_t = typename L::bits;
  constexpr acc_t minus_inf = -std::numeric_limits<acc_t>::infinity();
  for (int64_t r = 0; r < kBlock; ++r)  // missing rows of the last block as -inf
    for (int64_t j = 0; j < n; ++j)
      s.columns[j * kBlock + r] = r < rows ? static_cast<acc_t>(in[r * n + j]) : minus_inf;

  // The k largest values of every row, sorted: each column passes down the k slots, each slot
  // keeping the larger value and passing the smaller one on.
  bits_t* slots = s.top.data();
  std::fill(s.top.begin(), s.top.end(), as_bits<acc_t>(values_t{} + minus_inf));
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t v = 0; v < L::vectors; ++v) {
      bits_t carry;
      std::memcpy(&carry, &s.columns[j * kBlock + v * L::width], sizeof(carry));
      for (int64_t i = 0; i < k; ++i) {
        bits_t& slot = slots[i * L::vectors + v];
        const bits_t greater = as_values<acc_t>(slot) > as_values<acc_t>(carry);
        const bits_t swap = (slot ^ carry) & ~greater;  // nonzero where the carried value wins
        slot ^= swap;
        carry ^= swap;
      }
    }
  }

  // Per row, from its sorted top k: top-p's cut, the last kept value (the threshold), how many
  // logits equal to it are kept, and the log of the softmax denominator over the kept ones. The running
  // mass is summed in double, as torch's CPU cumsum does.
  for (int64_t r = 0; r < kBlock; ++r) {
    // rank i at top[i * kBlock] (GCC/Clang vectors alias their element type)
    const acc_t* top = reinterpret_cast<const acc_t*>(s.top.data()) + r;
    const acc_t largest = top[0];
    double total = 0.0;
    for (int64_t i = 0; i < k; ++i) {
      s.weight[i] = std::exp(top[i * kBlock] - largest);
      total += s.weight[i];
    }
    int64_t kept = k;
    if (p < 1.0) {
      const acc_t limit = static_cast<acc_t>(p) * static_cast<acc_t>(total);
      double mass = 0.0;
      for (int64_t i = 0; i < k; ++i) {
        mass += s.weight[i];
        if (!(static_cast<acc_t>(static_cast<acc_t>(mass) - s.weight[i]) < limit)) {
          kept = i;
          break;
        }
      }
    }
    acc_t sum = 0;
    int64_t above = 0;
    s.threshold[r] = top[(kept - 1) * kBlock];
    for (int64_t i = 0; i < kept; ++i) {
      sum += s.weight[i];
      above += top[i * kBlock] > s.threshold[r];
    }
    s.wanted[r] = kept - above;
    s.shift[r] = largest + std::log(sum);
  }

  // Every logit above the threshold is kept, and of those equal to it the first ``wanted``;
  // written back into the transposed block.
  for (int64_t v = 0; v < L::vectors; ++v) {
    values_t threshold, shift;
    bits_t wanted, seen = {}, nan = {};
    std::memcpy(&threshold, s.threshold + v * L::width, sizeof(threshold));
    std::memcpy(&shift, s.shift + v * L::width, sizeof(shift));
    std::memcpy(&wanted, s.wanted + v * L::width, sizeof(wanted));
    const bits_t dropped = as_bits<acc_t>(values_t{} + minus_inf);
    for (int64_t j = 0; j < n; ++j) {
      values_t column;
      acc_t* at = &s.columns[j * kBlock + v * L::width];
      std::memcpy(&column, at, sizeof(column));
      const bits_t equal = column == threshold;
      const bits_t keep = (column > threshold) | (equal & (seen < wanted));
      seen -= equal;  // masks are -1 where true
      nan |= column != column;
      const bits_t result = probabilities
                                ? as_bits<acc_t>(exp_where<acc_t>(column - shift, keep))
                                : dropped & ~keep;
      std::memcpy(at, &result, sizeof(result));
    }
    for (int64_t lane = 0; lane < L::width; ++lane) {
      if (!nan[lane]) continue;
      const int64_t r = v * L::width + lane;
      const acc_t fill = probabilities ? std::numeric_limits<acc_t>::quiet_NaN() : acc_t(0);
      for (int64_t j = 0; j < n; ++j) s.columns[j * kBlock + r] = fill;
    }
  }
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < n; ++j) out[r * n + j] = static_cast<scalar_t>(s.columns[j * kBlock + r]);
}

at::Tensor filtered_rows(const at::Tensor& logits, int64_t k, double p, bool probabilities) {
  TORCH_CHECK(logits.device().is_cpu(), "filtered_rows: CPU tensors only");
  TORCH_CHECK(logits.dim() >= 1 && logits.size(-1) > 0, "filtered_rows: empty last dimension");
  const at::Tensor in = logits.contiguous();
  const int64_t n = in.size(-1);
  TORCH_CHECK(k >= 1 && k <= n, "filtered_rows: k must be in 1..", n, ", got ", k);
  at::Tensor out = at::empty_like(in);
  const int64_t rows = in.numel() / n;
  const int64_t blocks = (rows + kBlock - 1) / kBlock;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, in.scalar_type(), "filtered_rows", [&] {
    const scalar_t* src = in.const_data_ptr<scalar_t>();
    scalar_t* dst = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, blocks, 8, [&](int64_t begin, int64_t end) {
      Scratch<at::opmath_type<scalar_t>> scratch(n, k);
      for (int64_t b = begin; b < end; ++b) {
        const int64_t first = b * kBlock;
        filter_block<scalar_t>(src + first * n, dst + first * n, std::min(kBlock, rows - first), n,
                               k, p, probabilities, scratch);
      }
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(nkat, m) {
  m.def("filtered_rows_cpu(Tensor logits, int k, float p, bool probabilities) -> Tensor");
}

TORCH_LIBRARY_IMPL(nkat, CPU, m) { m.impl("filtered_rows_cpu", &filtered_rows); }
