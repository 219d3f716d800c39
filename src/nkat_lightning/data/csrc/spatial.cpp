// The packs' spatial random ops on the CPU, one pass per image, images in parallel: the crop and
// flip, or the affine, from the loader's uint8 batch straight to float32 in [0, 1]
// (torch.ops.nkat.crop_flip, torch.ops.nkat.affine), and Cutout in place (cutout_).
// Hand-written because torch's batched ops at 28-32 px spend their time in calls, index tensors
// and masks, not pixels: the padded crop's gather and the flip's where took about 1 ms per batch
// of 128 CIFAR images, the affine's affine_grid + grid_sample 0.6-1.4 ms, Cutout's masked fill
// 0.3-0.4 ms, each 0.5-1.5 % of a compact model's step; data/transforms.py's torch ops stay the
// reference (and the GPU path).
//
// crop_flip(images, top, left, flip, padding): images (N, C, H, W) uint8, top/left (N) int64,
//   flip (N) bool. out[n, c, i, j] = padded[n, c, top[n] + i, left[n] + (flip[n] ? W-1-j : j)]
//   / 255, padded = the image with `padding` zero pixels on every side: random_crop, then
//   random_flip.
// affine(images, theta): theta (N, 2, 3) float, affine_grid coordinates. Each image resampled
//   bilinearly through its matrix, zeros outside: F.affine_grid + F.grid_sample(mode="bilinear",
//   padding_mode="zeros", align_corners=False) on images / 255.
// cutout_(images, top, left, size): images (N, C, H, W) float32, top/left (N) int64. Sets
//   images[n, :, top[n]:top[n] + size, left[n]:left[n] + size] to 0 in place.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

// torchvision's to_dtype(scale=True): image.to(float32).mul_(1.0 / 255)
const float kScale = static_cast<float>(1.0 / 255.0);

void check_images(const at::Tensor& images, const char* op) {
  TORCH_CHECK(images.dim() == 4 && images.scalar_type() == at::kByte, op,
              ": images must be a uint8 (N, C, H, W) tensor");
}

at::Tensor crop_flip(const at::Tensor& images, const at::Tensor& top, const at::Tensor& left,
                     const at::Tensor& flip, int64_t padding) {
  check_images(images, "crop_flip");
  const auto source = images.contiguous();
  const int64_t batch = source.size(0), c = source.size(1), h = source.size(2),
                w = source.size(3);
  const auto t = top.to(at::kLong).contiguous(), l = left.to(at::kLong).contiguous();
  const auto f = flip.to(at::kBool).contiguous();
  TORCH_CHECK(t.numel() == batch && l.numel() == batch && f.numel() == batch,
              "crop_flip: one top, left and flip per image");
  auto out = at::empty(source.sizes(), source.options().dtype(at::kFloat));
  const uint8_t* src = source.data_ptr<uint8_t>();
  const int64_t* tp = t.data_ptr<int64_t>();
  const int64_t* lp = l.data_ptr<int64_t>();
  const bool* fp = f.data_ptr<bool>();
  float* dst = out.data_ptr<float>();
  for (int64_t n = 0; n < batch; ++n) {
    TORCH_CHECK(tp[n] >= 0 && tp[n] <= 2 * padding && lp[n] >= 0 && lp[n] <= 2 * padding,
                "crop_flip: top and left must lie in [0, 2 * padding]");
  }
  at::parallel_for(0, batch, 16, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      const int64_t dy = tp[n] - padding, dx = lp[n] - padding;  // source = output + offset
      for (int64_t ch = 0; ch < c; ++ch) {
        const uint8_t* image = src + (n * c + ch) * h * w;
        float* plane = dst + (n * c + ch) * h * w;
        for (int64_t i = 0; i < h; ++i) {
          float* row = plane + i * w;
          const int64_t y = i + dy;
          if (y < 0 || y >= h) {
            std::fill(row, row + w, 0.0f);
            continue;
          }
          // output j reads source x = j + dx, or (w - 1 + dx) - j flipped; j in [lo, hi) is inside
          const int64_t lo = std::clamp<int64_t>(fp[n] ? dx : -dx, 0, w);
          const int64_t hi = std::min<int64_t>(w, fp[n] ? w + dx : w - dx);
          std::fill(row, row + lo, 0.0f);
          std::fill(row + std::max(lo, hi), row + w, 0.0f);
          const uint8_t* line = image + y * w;
          if (fp[n]) {
            const int64_t last = w - 1 + dx;
            for (int64_t j = lo; j < hi; ++j) row[j] = line[last - j] * kScale;
          } else {
            for (int64_t j = lo; j < hi; ++j) row[j] = line[j + dx] * kScale;
          }
        }
      }
    }
  });
  return out;
}

// Scratch space of one thread: an image's zero-bordered float copy, and each output pixel's
// top-left source corner and its two bilinear weights.
struct AffineScratch {
  std::vector<float> source, ex, ey, centre;
  std::vector<int32_t> corner;
};

// One channel: each pixel from its four source corners (a vectorised gather).
void bilinear_plane(const float* __restrict p, const int32_t* __restrict corner,
                    const float* __restrict ex, const float* __restrict ey,
                    float* __restrict plane, int64_t hw, int32_t row_stride) {
  for (int64_t i = 0; i < hw; ++i) {
    const int32_t k = corner[i];
    plane[i] = (p[k] * (1.0f - ex[i]) + p[k + 1] * ex[i]) * (1.0f - ey[i]) +
               (p[k + row_stride] * (1.0f - ex[i]) + p[k + row_stride + 1] * ex[i]) * ey[i];
  }
}

// One image's channels through its 2x3 matrix. The source is copied into a float buffer with a
// zero border (1 pixel before, 2 after) and sample coordinates are clamped to [-1, size], so
// every corner read is inside the buffer and a corner outside the image reads 0, as
// grid_sample's zeros padding. Coordinates first (branch-free, so vectorised: floor needs
// -fno-trapping-math, which transforms.py builds with), then per channel one gather of four
// corners a pixel.
void affine_image(const uint8_t* image, float* out, const float* t, int64_t c, int64_t h,
                  int64_t w, AffineScratch& s) {
  const int64_t pw = w + 3, ph = h + 3, hw = h * w;
  s.source.assign(c * ph * pw, 0.0f);
  for (int64_t ch = 0; ch < c; ++ch) {
    for (int64_t y = 0; y < h; ++y) {
      const uint8_t* line = image + (ch * h + y) * w;
      float* row = s.source.data() + (ch * ph + y + 1) * pw + 1;
      for (int64_t x = 0; x < w; ++x) row[x] = line[x] * kScale;
    }
  }
  s.ex.resize(hw);
  s.ey.resize(hw);
  s.corner.resize(hw);
  s.centre.resize(w);
  const float fw = static_cast<float>(w), fh = static_cast<float>(h);
  for (int64_t x = 0; x < w; ++x) s.centre[x] = (2.0f * x + 1.0f) / fw - 1.0f;
  const float* __restrict centre = s.centre.data();
  float* __restrict ex = s.ex.data();
  float* __restrict ey = s.ey.data();
  int32_t* __restrict corner = s.corner.data();
  const int32_t row_stride = static_cast<int32_t>(pw);
  const float t0 = t[0], t1 = t[1], t2 = t[2], t3 = t[3], t4 = t[4], t5 = t[5];
  for (int64_t y = 0; y < h; ++y) {
    const float gy = (2.0f * y + 1.0f) / fh - 1.0f;
    const float bx = t1 * gy + t2, by = t4 * gy + t5;
    for (int64_t x = 0; x < w; ++x) {
      float ix = ((t0 * centre[x] + bx + 1.0f) * fw - 1.0f) * 0.5f;
      float iy = ((t3 * centre[x] + by + 1.0f) * fh - 1.0f) * 0.5f;
      ix = std::min(std::max(-1.0f, ix), fw);  // in this order a NaN becomes -1: reads 0
      iy = std::min(std::max(-1.0f, iy), fh);
      const float x0 = std::floor(ix), y0 = std::floor(iy);
      ex[y * w + x] = ix - x0;
      ey[y * w + x] = iy - y0;
      corner[y * w + x] = (static_cast<int32_t>(y0) + 1) * row_stride + static_cast<int32_t>(x0) + 1;
    }
  }
  for (int64_t ch = 0; ch < c; ++ch) {
    bilinear_plane(s.source.data() + ch * ph * pw, corner, ex, ey, out + ch * hw, hw, row_stride);
  }
}

at::Tensor affine(const at::Tensor& images, const at::Tensor& theta) {
  check_images(images, "affine");
  const auto source = images.contiguous();
  const int64_t batch = source.size(0), c = source.size(1), h = source.size(2),
                w = source.size(3);
  const auto matrix = theta.to(at::kFloat).contiguous();
  TORCH_CHECK(matrix.dim() == 3 && matrix.size(0) == batch && matrix.size(1) == 2 &&
                  matrix.size(2) == 3,
              "affine: theta must be (N, 2, 3), one 2x3 matrix per image");
  TORCH_CHECK((h + 3) * (w + 3) < (int64_t{1} << 31), "affine: images too large");
  auto out = at::empty(source.sizes(), source.options().dtype(at::kFloat));
  const uint8_t* src = source.data_ptr<uint8_t>();
  const float* tp = matrix.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  at::parallel_for(0, batch, 16, [&](int64_t begin, int64_t end) {
    AffineScratch scratch;
    for (int64_t n = begin; n < end; ++n) {
      affine_image(src + n * c * h * w, dst + n * c * h * w, tp + n * 6, c, h, w, scratch);
    }
  });
  return out;
}

void cutout_(at::Tensor images, const at::Tensor& top, const at::Tensor& left, int64_t size) {
  TORCH_CHECK(images.dim() == 4 && images.scalar_type() == at::kFloat && images.is_contiguous(),
              "cutout_: images must be a contiguous float32 (N, C, H, W) tensor");
  const int64_t batch = images.size(0), c = images.size(1), h = images.size(2),
                w = images.size(3);
  const auto t = top.to(at::kLong).contiguous(), l = left.to(at::kLong).contiguous();
  TORCH_CHECK(t.numel() == batch && l.numel() == batch, "cutout_: one top and left per image");
  const int64_t* tp = t.data_ptr<int64_t>();
  const int64_t* lp = l.data_ptr<int64_t>();
  for (int64_t n = 0; n < batch; ++n) {
    TORCH_CHECK(tp[n] >= 0 && tp[n] + size <= h && lp[n] >= 0 && lp[n] + size <= w,
                "cutout_: the square must lie inside the image");
  }
  float* data = images.data_ptr<float>();
  for (int64_t plane = 0; plane < batch * c; ++plane) {  // a few hundred short fills: one thread
    const int64_t n = plane / c;
    for (int64_t y = tp[n]; y < tp[n] + size; ++y) {
      float* row = data + (plane * h + y) * w + lp[n];
      std::fill(row, row + size, 0.0f);
    }
  }
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(nkat, m) {
  m.def("crop_flip(Tensor images, Tensor top, Tensor left, Tensor flip, int padding) -> Tensor");
  m.def("affine(Tensor images, Tensor theta) -> Tensor");
  m.def("cutout_(Tensor(a!) images, Tensor top, Tensor left, int size) -> ()");
}

TORCH_LIBRARY_IMPL(nkat, CPU, m) {
  m.impl("crop_flip", &crop_flip);
  m.impl("affine", &affine);
  m.impl("cutout_", &cutout_);
}
