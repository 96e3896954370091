// torch.optim.AdamW's update of one fp32 parameter, in place: one pass that reads the weight, both moments and the
// gradient and writes the weight and the moments back. MindSpore's graph computes the new values into fresh
// buffers and then copies them into the parameters (Assign): on the CPU those copies cost as much as the update.
// Called by train/optim.py as a MindSpore "aot" Custom op (its calling convention below), on the CPU only.
//
// Inputs: weight, exp_avg, exp_avg_sq (written in place), grad (all fp32, one shape), hyper (7 fp32: beta1, beta2,
// eps, lr, step_size = lr / (1 - beta1^t), bias_correction2_rsqrt = 1 / sqrt(1 - beta2^t), grad_scale), decay
// (fp32 scalar: this parameter's weight decay). Output: one fp32, 1 (the graph orders on it).
// The arithmetic is train/optim.py's portable update, operation for operation; built with -ffp-contract=off so
// that no multiply-add is fused and the roundings are those of the portable update's separate kernels, and with
// -fno-math-errno so that the loop vectorises (sqrt setting errno kept it scalar; vsqrtps rounds as sqrtss does).
#include <cmath>
#include <cstdint>
#include <cstring>

extern "C" int InplaceAdamW(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                            void *stream, void *extra) {
  (void)stream;
  (void)extra;
  if (nparam != 7) return 1;
  for (int i = 0; i < 6; i++) {
    if (std::strcmp(dtypes[i], "float32") != 0) return 2;
  }
  int64_t n = 1;
  for (int d = 0; d < ndims[0]; d++) n *= shapes[0][d];
  for (int i = 1; i < 4; i++) {
    int64_t other = 1;
    for (int d = 0; d < ndims[i]; d++) other *= shapes[i][d];
    if (other != n) return 3;
  }
  float *weight = static_cast<float *>(params[0]);
  float *exp_avg = static_cast<float *>(params[1]);
  float *exp_avg_sq = static_cast<float *>(params[2]);
  const float *grad = static_cast<const float *>(params[3]);
  const float *hyper = static_cast<const float *>(params[4]);
  const float decay = *static_cast<const float *>(params[5]);
  const float beta1 = hyper[0], beta2 = hyper[1], eps = hyper[2], lr = hyper[3], step_size = hyper[4];
  const float bias_correction2_rsqrt = hyper[5], grad_scale = hyper[6];
  const float one_minus_beta1 = 1.0f - beta1, one_minus_beta2 = 1.0f - beta2, keep = 1.0f - lr * decay;
  // Threads only for tensors worth waking them for (norm weights are a few hundred elements).
#pragma omp parallel for simd schedule(static) if (n > 32768)
  for (int64_t i = 0; i < n; i++) {
    const float g = grad[i] * grad_scale;
    const float m = exp_avg[i] * beta1 + g * one_minus_beta1;
    const float v = exp_avg_sq[i] * beta2 + g * g * one_minus_beta2;
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
    weight[i] = weight[i] * keep - (step_size * m) / (std::sqrt(v) * bias_correction2_rsqrt + eps);
  }
  static_cast<float *>(params[6])[0] = 1.0f;
  return 0;
}
