// GroupNorm of fp32 activations, forward and backward, as torch.nn.functional.group_norm: one pass per group for
// the statistics and one for the output. MindSpore's CPU GroupNorm kernels take ~20x a memory-bound pass (5.9 ms
// forward for a (8, 32, 64, 64) input; with the backward, ~21 % of the tiny world's vision-tokenizer training
// step). Set on a model's GroupNorms (their `kernel`) by emu3/nn/cpu_kernels.py as MindSpore "aot" Custom ops, on
// the CPU only.
//
// GroupNormForward: inputs x (B, G, Cg, S) fp32 (channels c = g * Cg + j, S spatial positions), weight (G * Cg,),
//   bias (G * Cg,), eps (1,); outputs y (B, G, Cg, S), mean (B, G), rstd (B, G): y = (x - mean) * rstd * weight[c]
//   + bias[c], mean and the biased variance over each (b, g) group, rstd = 1 / sqrt(var + eps). The statistics are
//   accumulated in double, so they are at least as exact as the portable kernel's.
// GroupNormBackward: inputs x, weight, mean, rstd, dy (B, G, Cg, S); outputs dx (B, G, Cg, S), dweight and dbias
//   (G * Cg,): with xhat = (x - mean) * rstd and g = dy * weight[c], dx = rstd * (g - mean(g) - xhat * mean(g *
//   xhat)) over the group; dweight[c] = sum over b and s of dy * xhat, dbias[c] = sum of dy.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {
bool float32(const char *dtype) { return std::strcmp(dtype, "float32") == 0; }

bool grouped_shape(int *ndims, int64_t **shapes, int64_t *b, int64_t *g, int64_t *cg, int64_t *s) {
  if (ndims[0] != 4) return false;
  *b = shapes[0][0];
  *g = shapes[0][1];
  *cg = shapes[0][2];
  *s = shapes[0][3];
  return ndims[1] == 1 && shapes[1][0] == *g * *cg;
}
}  // namespace

extern "C" int GroupNormForward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                void *stream, void *extra) {
  (void)stream;
  (void)extra;
  int64_t b, g, cg, s;
  if (nparam != 7 || !grouped_shape(ndims, shapes, &b, &g, &cg, &s)) return 1;
  for (int i = 0; i < 4; i++) {
    if (!float32(dtypes[i])) return 2;
  }
  const float *x = static_cast<const float *>(params[0]);
  const float *weight = static_cast<const float *>(params[1]);
  const float *bias = static_cast<const float *>(params[2]);
  const double eps = *static_cast<const float *>(params[3]);
  float *y = static_cast<float *>(params[4]);
  float *mean_out = static_cast<float *>(params[5]);
  float *rstd_out = static_cast<float *>(params[6]);
  const int64_t n = cg * s;
#pragma omp parallel for schedule(static)
  for (int64_t group = 0; group < b * g; group++) {
    const float *xg = x + group * n;
    double total = 0.0;
#pragma omp simd reduction(+ : total)
    for (int64_t i = 0; i < n; i++) total += xg[i];
    const double mean = total / n;
    double squares = 0.0;
#pragma omp simd reduction(+ : squares)
    for (int64_t i = 0; i < n; i++) squares += (xg[i] - mean) * (xg[i] - mean);
    const double rstd = 1.0 / std::sqrt(squares / n + eps);
    mean_out[group] = static_cast<float>(mean);
    rstd_out[group] = static_cast<float>(rstd);
    const int64_t first_channel = (group % g) * cg;
    const float centre = static_cast<float>(mean);
    for (int64_t j = 0; j < cg; j++) {
      // Centred first, so a large mean does not cost the output its precision.
      const float scale = static_cast<float>(rstd * weight[first_channel + j]);
      const float shift = bias[first_channel + j];
      const float *xc = xg + j * s;
      float *yc = y + group * n + j * s;
#pragma omp simd
      for (int64_t i = 0; i < s; i++) yc[i] = (xc[i] - centre) * scale + shift;
    }
  }
  return 0;
}

extern "C" int GroupNormBackward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                 void *stream, void *extra) {
  (void)stream;
  (void)extra;
  int64_t b, g, cg, s;
  if (nparam != 8 || !grouped_shape(ndims, shapes, &b, &g, &cg, &s)) return 1;
  for (int i = 0; i < 5; i++) {
    if (!float32(dtypes[i])) return 2;
  }
  const float *x = static_cast<const float *>(params[0]);
  const float *weight = static_cast<const float *>(params[1]);
  const float *mean_in = static_cast<const float *>(params[2]);
  const float *rstd_in = static_cast<const float *>(params[3]);
  const float *dy = static_cast<const float *>(params[4]);
  float *dx = static_cast<float *>(params[5]);
  float *dweight = static_cast<float *>(params[6]);
  float *dbias = static_cast<float *>(params[7]);
  const int64_t n = cg * s, channels = g * cg;
  // Per (sample, channel) sums of dy * xhat and dy, reduced over the samples afterwards (no atomics).
  std::vector<double> dw_part(b * channels), db_part(b * channels);
#pragma omp parallel for schedule(static)
  for (int64_t group = 0; group < b * g; group++) {
    const int64_t sample = group / g, first_channel = (group % g) * cg;
    const double mean = mean_in[group], rstd = rstd_in[group];
    const float *xg = x + group * n;
    const float *dyg = dy + group * n;
    double sum_g = 0.0, sum_g_xhat = 0.0;  // over the group, of g = dy * weight and of g * xhat
    for (int64_t j = 0; j < cg; j++) {
      const float *xc = xg + j * s;
      const float *dyc = dyg + j * s;
      double dy_sum = 0.0, dy_x = 0.0;
#pragma omp simd reduction(+ : dy_sum, dy_x)
      for (int64_t i = 0; i < s; i++) {
        dy_sum += dyc[i];
        dy_x += static_cast<double>(dyc[i]) * xc[i];
      }
      const double dy_xhat = (dy_x - mean * dy_sum) * rstd;
      dw_part[sample * channels + first_channel + j] = dy_xhat;
      db_part[sample * channels + first_channel + j] = dy_sum;
      sum_g += dy_sum * weight[first_channel + j];
      sum_g_xhat += dy_xhat * weight[first_channel + j];
    }
    const double mean_g = sum_g / n, mean_g_xhat = sum_g_xhat / n;
    const float centre = static_cast<float>(mean);
    const float c = static_cast<float>(-rstd * rstd * mean_g_xhat), d = static_cast<float>(-rstd * mean_g);
    for (int64_t j = 0; j < cg; j++) {
      // dx = rstd * (dy * w - mean_g - (x - mean) * rstd * mean_g_xhat) = dy * a + (x - mean) * c + d.
      const float a = static_cast<float>(rstd * weight[first_channel + j]);
      const float *xc = xg + j * s;
      const float *dyc = dyg + j * s;
      float *dxc = dx + group * n + j * s;
#pragma omp simd
      for (int64_t i = 0; i < s; i++) dxc[i] = dyc[i] * a + (xc[i] - centre) * c + d;
    }
  }
  for (int64_t c = 0; c < channels; c++) {
    double dw = 0.0, db = 0.0;
    for (int64_t sample = 0; sample < b; sample++) {
      dw += dw_part[sample * channels + c];
      db += db_part[sample * channels + c];
    }
    dweight[c] = static_cast<float>(dw);
    dbias[c] = static_cast<float>(db);
  }
  return 0;
}
