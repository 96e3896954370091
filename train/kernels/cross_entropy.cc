// Softmax cross-entropy per row of fp32 logits, forward and backward, one pass over the logits each.
// MindSpore's CPU graph builds ops.cross_entropy from a one-hot comparison, a log-softmax and a masked sum: seven
// kernels, each a pass over the (tokens x vocabulary) logits (for 512 tokens of a 32,000 vocabulary, 64 MB per
// pass, ~25 ms of a 0.46 s training step). Called by train/step.py as MindSpore "aot" Custom ops, on the CPU only.
//
// CrossEntropyForward: inputs logits (N, V) fp32, targets (N,) int32 or int64; outputs loss (N,) and lse (N,) fp32:
//   lse = log(sum(exp(logits))), loss = lse - logits[target]; a row whose target is ignore_index (-100) has loss 0.
// CrossEntropyBackward: inputs logits, targets, lse, dloss (N,); output dlogits (N, V) =
//   (softmax(logits) - onehot(target)) * dloss per row, 0 on ignored rows.
// A target outside [0, V) other than -100 is an error (return code 4: MindSpore raises). A NaN or infinite logit
// makes its row's loss and gradient NaN, as ops.cross_entropy's (fp16 loss scaling detects overflow by it).
//
// The exp is written on GCC vector types: a plain loop calling expf (or a scalar polynomial) stays scalar without
// -ffast-math (measured: 35 ms per pass over 64 MB, against 6 ms here), and -ffast-math is not used by the build.
#include <cmath>
#include <cstdint>
#include <cstring>

namespace {
const int64_t kIgnoreIndex = -100;
const int kLanes = 16;  // one AVX-512 register; the compiler splits it in two on AVX2 machines, in four on SSE
typedef float floats __attribute__((vector_size(kLanes * sizeof(float))));
typedef int32_t ints __attribute__((vector_size(kLanes * sizeof(int32_t))));

inline floats splat(float v) {
  floats out;
  for (int k = 0; k < kLanes; k++) out[k] = v;
  return out;
}

// exp(x) for x <= 0 (every call subtracts the row's maximum or its log-sum-exp first): x = n ln2 + r, |r| <= ln2/2,
// exp(r) by Cephes' degree-6 polynomial (relative error below 1e-7 here), times 2^n added to the exponent bits.
// Below -87 (exp < 1.7e-38, nothing next to the row's maximum) it is 0; NaN stays NaN.
inline floats exp_nonpositive(floats x) {
  const floats floor_value = splat(-87.0f);
  const floats clamped = x < floor_value ? floor_value : x;
  const ints n_int = __builtin_convertvector(clamped * splat(1.44269504088896341f) - splat(0.5f), ints);
  const floats n = __builtin_convertvector(n_int, floats);
  const floats r = clamped - n * splat(0.693359375f) + n * splat(2.12194440e-4f);
  floats p = splat(1.9875691500e-4f);
  p = p * r + splat(1.3981999507e-3f);
  p = p * r + splat(8.3334519073e-3f);
  p = p * r + splat(4.1665795894e-2f);
  p = p * r + splat(1.6666665459e-1f);
  p = p * r + splat(5.0000001201e-1f);
  const floats e = p * r * r + r + splat(1.0f);
  const floats scaled = (floats)((ints)e + (n_int << 23));
  const floats out = x < floor_value ? splat(0.0f) : scaled;
  return x == x ? out : x;
}

// The lanes [j, j + kLanes) of a row, or of its last partial block padded with -inf (whose exp is 0).
inline floats load(const float *row, int64_t j, int64_t vocab) {
  floats v;
  if (j + kLanes <= vocab) {
    std::memcpy(&v, row + j, sizeof(v));
  } else {
    v = splat(-INFINITY);
    std::memcpy(&v, row + j, sizeof(float) * (vocab - j));
  }
  return v;
}

inline void store(float *row, int64_t j, int64_t vocab, floats v) {
  std::memcpy(row + j, &v, sizeof(float) * (j + kLanes <= vocab ? kLanes : vocab - j));
}

bool shapes_ok(int nparam, int expected, int *ndims, int64_t **shapes, const char **dtypes, int64_t *rows,
               int64_t *vocab) {
  if (nparam != expected || ndims[0] != 2 || ndims[1] != 1) return false;
  if (std::strcmp(dtypes[0], "float32") != 0) return false;
  if (std::strcmp(dtypes[1], "int32") != 0 && std::strcmp(dtypes[1], "int64") != 0) return false;
  *rows = shapes[0][0];
  *vocab = shapes[0][1];
  return shapes[1][0] == *rows && *vocab > 0;
}

int64_t target_at(const void *targets, bool wide, int64_t i) {
  return wide ? static_cast<const int64_t *>(targets)[i] : static_cast<const int32_t *>(targets)[i];
}
}  // namespace

extern "C" int CrossEntropyForward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                   void *stream, void *extra) {
  (void)stream;
  (void)extra;
  int64_t rows, vocab;
  if (!shapes_ok(nparam, 4, ndims, shapes, dtypes, &rows, &vocab)) return 1;
  const float *logits = static_cast<const float *>(params[0]);
  const bool wide = std::strcmp(dtypes[1], "int64") == 0;
  float *loss = static_cast<float *>(params[2]);
  float *lse = static_cast<float *>(params[3]);
  int bad = 0;
#pragma omp parallel for schedule(static) reduction(| : bad)
  for (int64_t i = 0; i < rows; i++) {
    const float *x = logits + i * vocab;
    float peak = x[0];
#pragma omp simd reduction(max : peak)
    for (int64_t j = 1; j < vocab; j++) peak = x[j] > peak ? x[j] : peak;
    // A NaN logit (or +inf, whose difference from the peak is inf - inf) turns its exp, and so the row, into NaN.
    floats sum = splat(0.0f);
    for (int64_t j = 0; j < vocab; j += kLanes) sum += exp_nonpositive(load(x, j, vocab) - splat(peak));
    float total = 0.0f;
    for (int k = 0; k < kLanes; k++) total += sum[k];
    lse[i] = peak + std::log(total);
    const int64_t t = target_at(params[1], wide, i);
    if (t == kIgnoreIndex) {
      loss[i] = 0.0f;
    } else if (t < 0 || t >= vocab) {
      bad = 1;
      loss[i] = 0.0f;
    } else {
      loss[i] = lse[i] - x[t];
    }
  }
  return bad ? 4 : 0;
}

extern "C" int CrossEntropyBackward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                    void *stream, void *extra) {
  (void)stream;
  (void)extra;
  int64_t rows, vocab;
  if (!shapes_ok(nparam, 5, ndims, shapes, dtypes, &rows, &vocab)) return 1;
  const float *logits = static_cast<const float *>(params[0]);
  const bool wide = std::strcmp(dtypes[1], "int64") == 0;
  const float *lse = static_cast<const float *>(params[2]);
  const float *dloss = static_cast<const float *>(params[3]);
  float *dlogits = static_cast<float *>(params[4]);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < rows; i++) {
    const float *x = logits + i * vocab;
    float *d = dlogits + i * vocab;
    const int64_t t = target_at(params[1], wide, i);
    if (t == kIgnoreIndex || t < 0 || t >= vocab) {
      std::memset(d, 0, sizeof(float) * vocab);
      continue;
    }
    const floats g = splat(dloss[i]), offset = splat(lse[i]);
    for (int64_t j = 0; j < vocab; j += kLanes) store(d, j, vocab, exp_nonpositive(load(x, j, vocab) - offset) * g);
    d[t] -= dloss[i];
  }
  return 0;
}
