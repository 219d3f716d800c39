// RandAugment's ops on the CPU, one image at a time, registered as torch.ops.nkat.randaugment_.
// Hand-written because on the CPU the batched torch version spends its time in per-op calls,
// not pixels: about 20 calls a layer cost 7-11 ms per batch of 128 small images, a tenth of a
// compact model's training step; here each image gets its op in one pass, images in parallel.
//
// randaugment_(images, kinds, params, theta) changes images (N, C, H, W, float32, contiguous,
// values in [0, 1]) in place. kinds and params are (N, L), theta (N, L, 2, 3): image n gets L
// ops in turn, op l picked by kinds[n, l] with the parameter params[n, l], as
// data/transforms.py's torch version (the reference, with torchvision's functional ops)
// defines them:
//   WARP         nearest resampling through theta[n] (2x3, affine_grid coordinates, zeros
//                outside), as F.affine_grid + F.grid_sample(mode="nearest", align_corners=False)
//   BRIGHTNESS, COLOR, CONTRAST, SHARPNESS
//                a blend with torchvision's degenerate image (black; grey; the grey mean; the
//                3x3 smoothed image with its border kept) by the factor params[n]
//   POSTERIZE    params[n] bits (8: nothing);  SOLARIZE: values >= params[n] inverted
//   AUTOCONTRAST, EQUALIZE   per channel, as torchvision's float versions (equalize on the
//                image's 8-bit levels)
//   IDENTITY     nothing
// Every op but WARP clamps to [0, 1] after, as the torch version does.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

enum Kind : int64_t {
  IDENTITY = 0, WARP, BRIGHTNESS, COLOR, CONTRAST, SHARPNESS, POSTERIZE, SOLARIZE,
  AUTOCONTRAST, EQUALIZE,
};

inline float clamp01(float v) { return std::min(std::max(v, 0.0f), 1.0f); }

// torchvision's grey: 0.2989 R + 0.587 G + 0.114 B; a single channel is its own grey.
void grey(const float* img, int64_t c, int64_t hw, float* out) {
  if (c == 1) {
    std::copy(img, img + hw, out);
    return;
  }
  for (int64_t i = 0; i < hw; ++i) {
    out[i] = img[i] * 0.2989f + img[hw + i] * 0.587f + img[2 * hw + i] * 0.114f;
  }
}

// std::rint rounds half to even, as grid_sample's nearest mode does (and compiles to one
// instruction, where nearbyint is a library call)
void warp(float* img, int64_t c, int64_t h, int64_t w, const float* t, std::vector<float>& buf) {
  const int64_t hw = h * w;
  buf.assign(img, img + c * hw);
  std::vector<int32_t> from(hw);  // source pixel of each pixel, -1 outside
  std::vector<float> centre(w);   // pixel centres in [-1, 1]
  for (int64_t x = 0; x < w; ++x) centre[x] = (2.0f * x + 1.0f) / w - 1.0f;
  const float fw = static_cast<float>(w), fh = static_cast<float>(h);
  const int32_t iw = static_cast<int32_t>(w);
  for (int64_t y = 0; y < h; ++y) {
    const float gy0 = (2.0f * y + 1.0f) / fh - 1.0f;
    const float bx = t[1] * gy0 + t[2], by = t[4] * gy0 + t[5];
    int32_t* row = from.data() + y * w;
    for (int64_t x = 0; x < w; ++x) {  // branch-free, so the compiler vectorises it
      const float sx = std::rint(((t[0] * centre[x] + bx + 1.0f) * fw - 1.0f) * 0.5f);
      const float sy = std::rint(((t[3] * centre[x] + by + 1.0f) * fh - 1.0f) * 0.5f);
      const bool inside = (sx >= 0.0f) & (sx < fw) & (sy >= 0.0f) & (sy < fh);
      const int32_t index = static_cast<int32_t>(sy) * iw + static_cast<int32_t>(sx);
      row[x] = inside ? index : -1;
    }
  }
  for (int64_t ch = 0; ch < c; ++ch) {
    const float* src = buf.data() + ch * hw;
    float* dst = img + ch * hw;
    for (int64_t i = 0; i < hw; ++i) dst[i] = from[i] >= 0 ? src[from[i]] : 0.0f;
  }
}

// image <- degenerate + factor * (image - degenerate), clamped
void blend(float* img, int64_t n, const float* degenerate, float factor) {
  for (int64_t i = 0; i < n; ++i) {
    img[i] = clamp01(degenerate[i] + factor * (img[i] - degenerate[i]));
  }
}

void colour_blend(float* img, int64_t kind, int64_t c, int64_t h, int64_t w, float factor,
                  std::vector<float>& buf) {
  const int64_t hw = h * w;
  buf.resize(c * hw);
  float* degenerate = buf.data();
  if (kind == BRIGHTNESS) {
    std::fill(degenerate, degenerate + c * hw, 0.0f);
  } else if (kind == COLOR || kind == CONTRAST) {
    std::vector<float> g(hw);
    grey(img, c, hw, g.data());
    if (kind == CONTRAST) {
      double sum = 0.0;
      for (float v : g) sum += v;
      std::fill(g.begin(), g.end(), static_cast<float>(sum / hw));
    }
    for (int64_t ch = 0; ch < c; ++ch) {
      for (int64_t i = 0; i < hw; ++i) degenerate[ch * hw + i] = clamp01(g[i]);
    }
  } else {  // SHARPNESS: 3x3 smoothing (1s around a 5, over 13) inside, the border as it is
    std::copy(img, img + c * hw, degenerate);
    if (h > 2 && w > 2) {
      const float a = 1.0f / 13.0f, b = 5.0f / 13.0f;
      for (int64_t ch = 0; ch < c; ++ch) {
        const float* p = img + ch * hw;
        for (int64_t y = 1; y < h - 1; ++y) {
          for (int64_t x = 1; x < w - 1; ++x) {
            const float* q = p + y * w + x;
            const float around = q[-w - 1] + q[-w] + q[-w + 1] + q[-1] + q[1] + q[w - 1] + q[w] +
                                 q[w + 1];
            const float smooth = a * around + b * q[0];
            degenerate[ch * hw + y * w + x] = clamp01(q[0] + (smooth - q[0]));
          }
        }
      }
    }
  }
  blend(img, c * hw, degenerate, factor);
}

// min and max in 16 lanes, so the loop vectorises (std::minmax_element branches per pixel)
std::pair<float, float> min_max(const float* p, int64_t n) {
  constexpr int64_t kLanes = 16;
  std::array<float, kLanes> lo, hi;
  lo.fill(p[0]);
  hi.fill(p[0]);
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int64_t l = 0; l < kLanes; ++l) {
      lo[l] = std::min(lo[l], p[i + l]);
      hi[l] = std::max(hi[l], p[i + l]);
    }
  }
  for (; i < n; ++i) {
    lo[0] = std::min(lo[0], p[i]);
    hi[0] = std::max(hi[0], p[i]);
  }
  return {*std::min_element(lo.begin(), lo.end()), *std::max_element(hi.begin(), hi.end())};
}

void autocontrast(float* img, int64_t c, int64_t hw) {
  for (int64_t ch = 0; ch < c; ++ch) {
    float* p = img + ch * hw;
    if (hw == 0) continue;
    const auto [minimum, maximum] = min_max(p, hw);
    if (maximum == minimum) continue;  // torchvision: offset 0, scale 1
    const float scale = maximum - minimum;
    for (int64_t i = 0; i < hw; ++i) p[i] = clamp01((p[i] - minimum) / scale);
  }
}

// torchvision's equalize_image on the 8-bit levels (x * 255.999, truncated), PIL's lookup table.
// The levels first (a vectorised loop), then the histogram in four parts, so that runs of one
// level do not wait on one counter.
void equalize(float* img, int64_t c, int64_t hw) {
  std::vector<int32_t> levels(hw);
  for (int64_t ch = 0; ch < c; ++ch) {
    float* p = img + ch * hw;
    for (int64_t i = 0; i < hw; ++i) {  // clamped (a NaN to 0), so every level indexes a count
      levels[i] = static_cast<int32_t>(std::min(std::max(0.0f, p[i] * 255.999f), 255.0f));
    }
    std::array<std::array<int32_t, 256>, 4> parts{};
    int64_t i = 0;
    for (; i + 4 <= hw; i += 4) {
      ++parts[0][levels[i]];
      ++parts[1][levels[i + 1]];
      ++parts[2][levels[i + 2]];
      ++parts[3][levels[i + 3]];
    }
    for (; i < hw; ++i) ++parts[0][levels[i]];
    std::array<int64_t, 256> hist{};
    for (int64_t v = 0; v < 256; ++v) hist[v] = parts[0][v] + parts[1][v] + parts[2][v] + parts[3][v];
    int64_t top = 255;
    while (top > 0 && hist[top] == 0) --top;
    const int64_t step = (hw - hist[top]) / 255;
    if (step <= 0) {  // the identity table
      const float to_float = static_cast<float>(1.0 / 255.0);
      for (int64_t k = 0; k < hw; ++k) p[k] = levels[k] * to_float;
      continue;
    }
    std::array<float, 256> lut{};
    int64_t cumulative = 0;
    for (int64_t v = 1; v < 256; ++v) {
      cumulative += hist[v - 1];
      lut[v] = static_cast<float>(std::min<int64_t>((cumulative + step / 2) / step, 255)) *
               static_cast<float>(1.0 / 255.0);
    }
    for (int64_t k = 0; k < hw; ++k) p[k] = lut[levels[k]];
  }
}

void augment_image(float* img, int64_t kind, float param, const float* theta, int64_t c,
                   int64_t h, int64_t w, std::vector<float>& buf) {
  const int64_t n = c * h * w;
  switch (kind) {
    case WARP:
      warp(img, c, h, w, theta, buf);
      return;  // no clamp: a warp moves values, it makes none
    case BRIGHTNESS:
    case COLOR:
    case CONTRAST:
    case SHARPNESS:
      colour_blend(img, kind, c, h, w, param, buf);
      break;
    case POSTERIZE: {
      const int64_t bits = static_cast<int64_t>(param);
      if (bits < 8) {
        const float levels = static_cast<float>(int64_t{1} << std::max<int64_t>(bits, 0));
        const float inverse = static_cast<float>(1.0 / levels);
        for (int64_t i = 0; i < n; ++i) {
          img[i] = std::min(std::max(std::floor(img[i] * levels), 0.0f), levels - 1.0f) * inverse;
        }
      }
      break;
    }
    case SOLARIZE: {
      for (int64_t i = 0; i < n; ++i) img[i] = img[i] >= param ? 1.0f - img[i] : img[i];
      break;
    }
    case AUTOCONTRAST:
      autocontrast(img, c, h * w);
      break;
    case EQUALIZE:
      equalize(img, c, h * w);
      break;
    default:
      break;
  }
  for (int64_t i = 0; i < n; ++i) img[i] = clamp01(img[i]);
}

void randaugment_(at::Tensor images, const at::Tensor& kinds, const at::Tensor& params,
                  const at::Tensor& theta) {
  TORCH_CHECK(images.dim() == 4 && images.scalar_type() == at::kFloat && images.is_contiguous(),
              "randaugment_: images must be a contiguous float32 (N, C, H, W) tensor");
  const int64_t batch = images.size(0), c = images.size(1), h = images.size(2),
                w = images.size(3);
  TORCH_CHECK(c == 1 || c == 3, "randaugment_: images must have 1 or 3 channels, got ", c);
  if (images.numel() == 0) return;
  const auto kind = kinds.to(at::kLong).contiguous();
  const auto param = params.to(at::kFloat).contiguous();
  const auto matrix = theta.to(at::kFloat).contiguous();
  const int64_t layers = batch ? kind.numel() / batch : 0;
  TORCH_CHECK(kind.numel() == batch * layers && param.numel() == batch * layers &&
                  matrix.numel() == batch * layers * 6,
              "randaugment_: the same number of kinds, parameters and 2x3 matrices per image");
  float* data = images.data_ptr<float>();
  const int64_t* k = kind.data_ptr<int64_t>();
  const float* p = param.data_ptr<float>();
  const float* t = matrix.data_ptr<float>();
  at::parallel_for(0, batch, 8, [&](int64_t begin, int64_t end) {
    std::vector<float> buf;
    for (int64_t i = begin; i < end; ++i) {
      for (int64_t l = i * layers; l < (i + 1) * layers; ++l) {
        augment_image(data + i * c * h * w, k[l], p[l], t + l * 6, c, h, w, buf);
      }
    }
  });
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(nkat, m) {
  m.def("randaugment_(Tensor(a!) images, Tensor kinds, Tensor params, Tensor theta) -> ()");
}

TORCH_LIBRARY_IMPL(nkat, CPU, m) { m.impl("randaugment_", &randaugment_); }
