// im2col and its gradient (col2im) for fp32 images, as torch.nn.functional.unfold / fold with dilation 1: the
// convolutions of emu3.nn.conv.Conv2d on the CPU are an unfold and a batched matmul. MindSpore's CPU Im2Col and
// Col2Im kernels took 54 + 88 ms of the tiny world's vision-tokenizer training step (Col2Im 7-9 ms per call at the
// 64x64 level, ~5 GB/s). Set on the convolutions (emu3.nn.conv.Conv2d.unfold) by emu3/nn/cpu_kernels.py as
// MindSpore "aot" Custom ops, on the CPU only.
//
// Unfold: inputs x (B, C, H, W) fp32, geometry (6,) int32 = (kh, kw, sh, sw, ph, pw); output cols (B, C * kh * kw,
//   out_h * out_w), rows ordered (c, ky, kx), out_h = (H + 2 ph - kh) / sh + 1 (likewise out_w); zero padding.
// Fold: inputs cols, geometry, x (only its shape is read); output dx (B, C, H, W): the sum, for every input pixel,
//   of the columns' entries Unfold copied it to (the gradient of Unfold).
#include <cstdint>
#include <cstring>

namespace {
struct Geometry {
  int64_t b, c, h, w, kh, kw, sh, sw, ph, pw, out_h, out_w;
};

bool read_geometry(int64_t *image_shape, int image_ndim, const int32_t *g, int64_t *cols_shape, int cols_ndim,
                   Geometry *out) {
  if (image_ndim != 4 || cols_ndim != 3) return false;
  Geometry q{image_shape[0], image_shape[1], image_shape[2], image_shape[3], g[0], g[1], g[2], g[3], g[4], g[5], 0, 0};
  if (q.kh < 1 || q.kw < 1 || q.sh < 1 || q.sw < 1 || q.ph < 0 || q.pw < 0) return false;
  q.out_h = (q.h + 2 * q.ph - q.kh) / q.sh + 1;
  q.out_w = (q.w + 2 * q.pw - q.kw) / q.sw + 1;
  if (q.out_h < 1 || q.out_w < 1) return false;
  if (cols_shape[0] != q.b || cols_shape[1] != q.c * q.kh * q.kw || cols_shape[2] != q.out_h * q.out_w) return false;
  *out = q;
  return true;
}

// The output columns [*lo, *hi) whose input column ox * sw + kx - pw lies inside the image.
void valid_columns(const Geometry &q, int64_t kx, int64_t *lo, int64_t *hi) {
  const int64_t first = q.pw - kx;  // ox * sw >= first
  *lo = first <= 0 ? 0 : (first + q.sw - 1) / q.sw;
  const int64_t last = q.w - 1 + q.pw - kx;  // ox * sw <= last
  *hi = last < 0 ? 0 : last / q.sw + 1;
  if (*hi > q.out_w) *hi = q.out_w;
  if (*lo > *hi) *lo = *hi;
}
}  // namespace

extern "C" int Unfold(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                      void *extra) {
  (void)stream;
  (void)extra;
  Geometry q;
  if (nparam != 3 || std::strcmp(dtypes[0], "float32") != 0 || std::strcmp(dtypes[1], "int32") != 0) return 2;
  if (!read_geometry(shapes[0], ndims[0], static_cast<const int32_t *>(params[1]), shapes[2], ndims[2], &q)) return 1;
  const float *x = static_cast<const float *>(params[0]);
  float *cols = static_cast<float *>(params[2]);
  const int64_t rows = q.c * q.kh * q.kw, length = q.out_h * q.out_w;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t n = 0; n < q.b; n++) {
    for (int64_t row = 0; row < rows; row++) {
      const int64_t channel = row / (q.kh * q.kw), ky = row / q.kw % q.kh, kx = row % q.kw;
      const float *image = x + (n * q.c + channel) * q.h * q.w;
      float *out = cols + (n * rows + row) * length;
      for (int64_t oy = 0; oy < q.out_h; oy++) {
        const int64_t iy = oy * q.sh + ky - q.ph;
        float *line = out + oy * q.out_w;
        if (iy < 0 || iy >= q.h) {
          std::memset(line, 0, sizeof(float) * q.out_w);
          continue;
        }
        const float *source = image + iy * q.w;
        const int64_t offset = kx - q.pw;  // output column ox reads input column ox * sw + offset
        int64_t lo, hi;
        valid_columns(q, kx, &lo, &hi);
        for (int64_t ox = 0; ox < lo; ox++) line[ox] = 0.0f;
        if (q.sw == 1) {
          if (hi > lo) std::memcpy(line + lo, source + lo + offset, sizeof(float) * (hi - lo));
        } else {
          for (int64_t ox = lo; ox < hi; ox++) line[ox] = source[ox * q.sw + offset];
        }
        for (int64_t ox = hi; ox < q.out_w; ox++) line[ox] = 0.0f;
      }
    }
  }
  return 0;
}

extern "C" int Fold(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                    void *extra) {
  (void)stream;
  (void)extra;
  Geometry q;
  if (nparam != 4 || std::strcmp(dtypes[0], "float32") != 0 || std::strcmp(dtypes[1], "int32") != 0) return 2;
  if (!read_geometry(shapes[3], ndims[3], static_cast<const int32_t *>(params[1]), shapes[0], ndims[0], &q)) return 1;
  const float *cols = static_cast<const float *>(params[0]);
  float *dx = static_cast<float *>(params[3]);
  const int64_t taps = q.kh * q.kw, rows = q.c * taps, length = q.out_h * q.out_w;
  // One (sample, channel) plane per task: its taps add into it in a fixed order, so the sums are deterministic.
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t n = 0; n < q.b; n++) {
    for (int64_t channel = 0; channel < q.c; channel++) {
      float *image = dx + (n * q.c + channel) * q.h * q.w;
      std::memset(image, 0, sizeof(float) * q.h * q.w);
      for (int64_t tap = 0; tap < taps; tap++) {
        const int64_t ky = tap / q.kw, kx = tap % q.kw;
        const float *in = cols + (n * rows + channel * taps + tap) * length;
        for (int64_t oy = 0; oy < q.out_h; oy++) {
          const int64_t iy = oy * q.sh + ky - q.ph;
          if (iy < 0 || iy >= q.h) continue;
          float *target = image + iy * q.w;
          const int64_t offset = kx - q.pw;  // output column ox came from input column ox * sw + offset
          const float *line = in + oy * q.out_w;
          int64_t lo, hi;
          valid_columns(q, kx, &lo, &hi);
          if (q.sw == 1) {
#pragma omp simd
            for (int64_t ox = lo; ox < hi; ox++) target[ox + offset] += line[ox];
          } else {
            for (int64_t ox = lo; ox < hi; ox++) target[ox * q.sw + offset] += line[ox];
          }
        }
      }
    }
  }
  return 0;
}
