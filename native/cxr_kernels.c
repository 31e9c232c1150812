/*
 * Fused CPU kernels for MobileNetV3's training step (and two for inference), registered in
 * TensorFlow through its C API (tensorflow/c/ops.h and kernels.h), loaded with TF_LoadLibrary
 * (lib/engine/kernels.ts).
 * Built by `deno task setup` (scripts/setup/kernels.ts) with the system's C compiler; no C++ and
 * no TensorFlow C++ headers, so nothing here depends on the wheel's C++ ABI.
 *
 * Why (BatchNorm): a BatchNorm in training mode followed by its activation is, with TensorFlow's
 * kernels, FusedBatchNormV3 and then 1 (ReLU) or 4 (hard-swish: add, relu6, two muls) element-wise
 * ops, each a full pass over the activation, and as many again in the backward pass. They run at
 * memory speed (engine/profile.ts measured them at ~45 % of a 446 px step). Here the forward is two
 * passes (statistics; normalise and activate) and the backward two (the two channel sums; the input
 * gradient), and the only tensor kept for the backward pass is the BatchNorm's input.
 *
 * Ops (float32, channels last: the last dimension is the channel):
 *   CxrBatchNormAct(x, gamma, beta, moving_mean, moving_variance)
 *     -> y, new_moving_mean, new_moving_variance, batch_mean, batch_inv_std
 *   y = act(gamma * (x - mean) / sqrt(var + epsilon) + beta) with the batch's mean and (biased)
 *   variance; the moving averages blend in the batch's with weight exponential_avg_factor, the
 *   variance Bessel-corrected, as FusedBatchNormV3 does in training mode.
 *   CxrBatchNormMoments(x, moving_mean, moving_variance) -> CxrBatchNormAct's outputs but y
 *   CxrBatchNormActGrad(dy, x, gamma, beta, batch_mean, batch_inv_std) -> dx, dgamma, dbeta
 *   CxrBatchNormActGradScaled(dy, x, gamma, beta, batch_mean, batch_inv_std, gate, pooled_grad)
 *     -> as CxrBatchNormActGrad for y's gradient dy · gate + pooled_grad / (H · W) (y fed
 *     squeeze-excite's scaling and pooling)
 *   CxrBatchNormActApply(x, gamma, beta, batch_mean, batch_inv_std) -> y (as the forward op's y)
 *   CxrHardSwish(x) -> x * relu6(x + 3) / 6, in one pass (inference only: it has no gradient)
 *   CxrScaleShift(x, scale, shift) -> x * scale + shift per channel (the input's normalisation;
 *   no gradient: the image needs none)
 *   CxrChannelDot(a, b) -> the sums over H and W of a * b per image and channel (the gradient of
 *   squeeze-excite's gate)
 *   CxrDepthwiseConv(x, filter) -> y, CxrDepthwiseConvInputGrad(dy, filter) -> dx,
 *   CxrDepthwiseConvFilterGrad(dy, x, filter) -> dfilter, and CxrDepthwiseConvBiasAct(x, filter,
 *   bias) -> act(y + bias) for inference: depthwise convolutions with their zero padding inside
 *   (see the section further down for why).
 *   CxrDepthwiseConvFilterGradOfBatchNorm(dy, x, filter, gamma, beta, batch_mean, batch_inv_std)
 *   -> dfilter of a depthwise convolution whose input is CxrBatchNormAct's output for x, and
 *   CxrDepthwiseConvOfBatchNorm(x, filter, gamma, beta, batch_mean, batch_inv_std) -> y, the
 *   convolution itself of that output.
 * And one plain function, not an op: cxr_augment, the training augmentation (flip, colour jitter)
 * of a batch, which lib/engine/augmenter.ts calls through Deno's FFI.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <pthread.h>
#include <stdio.h>
#include <unistd.h>
#if defined(__x86_64__)
#include <xmmintrin.h>
/* The hot loops in AVX-512, AVX2 and plain x86-64 versions, chosen when the library loads. */
#define VECTOR_VERSIONS __attribute__((target_clones("avx512f", "avx2", "default")))
/* Threads started here take the caller's floating-point mode (TensorFlow's flush denormals). */
#define GET_FP_MODE() _mm_getcsr()
#define SET_FP_MODE(mode) _mm_setcsr(mode)
#else
#define VECTOR_VERSIONS
#define GET_FP_MODE() 0u
#define SET_FP_MODE(mode) ((void)(mode))
#endif

#include "tensorflow/c/kernels.h"
/* ops.h declares these as C++ does (struct without typedef); C needs the typedefs first. */
typedef struct TF_DimensionHandle TF_DimensionHandle;
typedef struct TF_OpDefinitionBuilder TF_OpDefinitionBuilder;
typedef struct TF_ShapeHandle TF_ShapeHandle;
typedef struct TF_ShapeInferenceContext TF_ShapeInferenceContext;
#include "tensorflow/c/ops.h"
#include "tensorflow/c/tf_status.h"
#include "tensorflow/c/tf_tensor.h"

enum { ACT_IDENTITY = 0, ACT_RELU = 1, ACT_HARD_SWISH = 2 };

/* Channel sums are accumulated in float over CHUNK rows, then added into double totals: float
 * alone loses digits over the ~200,000 rows of a 446 px batch. */
#define CHUNK 64

typedef struct {
  float epsilon;
  float avg_factor;
  int activation;
} Attrs;

static void* create_kernel(TF_OpKernelConstruction* ctx) {
  Attrs* a = calloc(1, sizeof *a);
  TF_Status* s = TF_NewStatus();
  char name[32] = {0};
  TF_OpKernelConstruction_GetAttrFloat(ctx, "epsilon", &a->epsilon, s);
  if (TF_GetCode(s) == TF_OK) {
    TF_OpKernelConstruction_GetAttrFloat(ctx, "exponential_avg_factor", &a->avg_factor, s);
  }
  if (TF_GetCode(s) == TF_OK) {
    TF_OpKernelConstruction_GetAttrString(ctx, "activation", name, sizeof name - 1, s);
  }
  if (TF_GetCode(s) == TF_OK) {
    a->activation = strcmp(name, "relu") == 0 ? ACT_RELU
                    : strcmp(name, "hard_swish") == 0 ? ACT_HARD_SWISH
                                                      : ACT_IDENTITY;
  } else {
    TF_OpKernelConstruction_Failure(ctx, s);
  }
  TF_DeleteStatus(s);
  return a;
}

static void delete_kernel(void* kernel) { free(kernel); }

/* act(y) and d act / d y, written so that GCC vectorises the loops that call them. */
static inline float activate(float y, int act) {
  if (act == ACT_RELU) return y > 0.0f ? y : 0.0f;
  if (act == ACT_HARD_SWISH) {
    float t = y + 3.0f;
    t = t < 0.0f ? 0.0f : t;
    t = t > 6.0f ? 6.0f : t;
    return y * t * (1.0f / 6.0f);
  }
  return y;
}

/* The derivative TensorFlow's composed ops give: hard-swish' is 0 at y <= -3, 1 at y >= 3, and
 * (2y + 3) / 6 between; ReLU' is 1 where y > 0. */
static inline float slope(float y, int act) {
  if (act == ACT_RELU) return y > 0.0f ? 1.0f : 0.0f;
  if (act == ACT_HARD_SWISH) {
    float d = (2.0f * y + 3.0f) * (1.0f / 6.0f);
    d = y <= -3.0f ? 0.0f : d;
    return y >= 3.0f ? 1.0f : d;
  }
  return 1.0f;
}

/* Per-channel sum of (x - shift) and of its square over rows [r0, r1). */
VECTOR_VERSIONS static void moments_rows(
    const float* restrict x, int64_t r0, int64_t r1, int64_t C, const float* restrict shift,
    double* restrict sum, double* restrict sumsq, float* restrict s, float* restrict q) {
  for (int64_t r = r0; r < r1; r += CHUNK) {
    int64_t end = r + CHUNK < r1 ? r + CHUNK : r1;
    memset(s, 0, C * sizeof *s);
    memset(q, 0, C * sizeof *q);
    for (int64_t i = r; i < end; i++) {
      const float* restrict xr = x + i * C;
      for (int64_t c = 0; c < C; c++) {
        float d = xr[c] - shift[c];
        s[c] += d;
        q[c] += d * d;
      }
    }
    for (int64_t c = 0; c < C; c++) {
      sum[c] += s[c];
      sumsq[c] += q[c];
    }
  }
}

/* y = act(x * scale + offset) over rows [r0, r1). */
VECTOR_VERSIONS static void normalise_rows(
    const float* restrict x, float* restrict y, int64_t r0, int64_t r1, int64_t C,
    const float* restrict scale, const float* restrict offset, int act) {
  for (int64_t i = r0; i < r1; i++) {
    const float* restrict xr = x + i * C;
    float* restrict yr = y + i * C;
    if (act == ACT_RELU) {
      for (int64_t c = 0; c < C; c++) yr[c] = activate(xr[c] * scale[c] + offset[c], ACT_RELU);
    } else if (act == ACT_HARD_SWISH) {
      for (int64_t c = 0; c < C; c++) {
        yr[c] = activate(xr[c] * scale[c] + offset[c], ACT_HARD_SWISH);
      }
    } else {
      for (int64_t c = 0; c < C; c++) yr[c] = xr[c] * scale[c] + offset[c];
    }
  }
}

/*
 * CxrBatchNormActGradScaled's: the BatchNorm's output y fed squeeze-excite's y · gate and its
 * pooling, so y's gradient is dy · gate + spread per image and channel (gate and spread [B, C],
 * spread the pooling's gradient over H · W), with `positions` = H · W rows per image.
 */
typedef struct {
  const float *gate, *spread;
  int64_t positions;
} Scaled;

/* Over rows [r0, r1): g = dy * act'(y), with y = x * scale + offset exactly as the forward pass
 * computed it (so a value the forward put on one side of a kink stays there); sums of g and of
 * g * xhat; with `scaled`, g from dy · gate + spread (Scaled). Inlined once per activation and
 * `scaled` (constants: BY_ACTIVATION), so each loop vectorises without branching on them. */
static inline __attribute__((always_inline)) void grad_sums_impl(
    const float* restrict dy, const float* restrict x, int64_t r0, int64_t r1, int64_t C,
    const float* restrict mean, const float* restrict inv, const float* restrict scale,
    const float* restrict offset, const int act, const int scaled, const Scaled* sc,
    double* restrict sum_g, double* restrict sum_gx, float* restrict s, float* restrict q) {
  /* With `scaled`: the image of row i is b (counted, not divided: a division a row cost as much as
   * the row's arithmetic). */
  int64_t b = scaled ? r0 / sc->positions : 0, next = scaled ? (b + 1) * sc->positions : 0;
  for (int64_t r = r0; r < r1; r += CHUNK) {
    int64_t end = r + CHUNK < r1 ? r + CHUNK : r1;
    memset(s, 0, C * sizeof *s);
    memset(q, 0, C * sizeof *q);
    for (int64_t i = r; i < end; i++) {
      const float* restrict xr = x + i * C;
      const float* restrict dr = dy + i * C;
      if (scaled && i == next) b++, next += sc->positions;
      const float* restrict gate = scaled ? sc->gate + b * C : NULL;
      const float* restrict spread = scaled ? sc->spread + b * C : NULL;
      for (int64_t c = 0; c < C; c++) {
        float xhat = (xr[c] - mean[c]) * inv[c];
        float d = scaled ? dr[c] * gate[c] + spread[c] : dr[c];
        float g = d * slope(xr[c] * scale[c] + offset[c], act);
        s[c] += g;
        q[c] += g * xhat;
      }
    }
    for (int64_t c = 0; c < C; c++) {
      sum_g[c] += s[c];
      sum_gx[c] += q[c];
    }
  }
}

/* call(act, scaled) with both as constants (each loop then vectorises without branching). */
#define BY_ACTIVATION(call, act, sc)                            \
  do {                                                          \
    if (sc) {                                                   \
      if (act == ACT_RELU) call(ACT_RELU, 1);                   \
      else if (act == ACT_HARD_SWISH) call(ACT_HARD_SWISH, 1);  \
      else call(ACT_IDENTITY, 1);                               \
    } else {                                                    \
      if (act == ACT_RELU) call(ACT_RELU, 0);                   \
      else if (act == ACT_HARD_SWISH) call(ACT_HARD_SWISH, 0);  \
      else call(ACT_IDENTITY, 0);                               \
    }                                                           \
  } while (0)

VECTOR_VERSIONS static void grad_sums_rows(
    const float* restrict dy, const float* restrict x, int64_t r0, int64_t r1, int64_t C,
    const float* restrict mean, const float* restrict inv, const float* restrict scale,
    const float* restrict offset, int act, const Scaled* sc, double* restrict sum_g,
    double* restrict sum_gx, float* restrict s, float* restrict q) {
#define SUMS(A, S) \
  grad_sums_impl(dy, x, r0, r1, C, mean, inv, scale, offset, A, S, sc, sum_g, sum_gx, s, q)
  BY_ACTIVATION(SUMS, act, sc);
#undef SUMS
}

/* dx = gamma * inv * (g - dbeta / M - xhat * dgamma / M) over rows [r0, r1). */
static inline __attribute__((always_inline)) void grad_input_impl(
    const float* restrict dy, const float* restrict x, float* restrict dx, int64_t r0, int64_t r1,
    int64_t C, const float* restrict mean, const float* restrict inv,
    const float* restrict scale, const float* restrict offset, const float* restrict mean_g,
    const float* restrict mean_gx, const int act, const int scaled, const Scaled* sc) {
  int64_t b = scaled ? r0 / sc->positions : 0, next = scaled ? (b + 1) * sc->positions : 0;
  for (int64_t i = r0; i < r1; i++) {
    const float* restrict xr = x + i * C;
    const float* restrict dr = dy + i * C;
    if (scaled && i == next) b++, next += sc->positions;
    const float* restrict gate = scaled ? sc->gate + b * C : NULL;
    const float* restrict spread = scaled ? sc->spread + b * C : NULL;
    float* restrict out = dx + i * C;
    for (int64_t c = 0; c < C; c++) {
      float xhat = (xr[c] - mean[c]) * inv[c];
      float d = scaled ? dr[c] * gate[c] + spread[c] : dr[c];
      float g = d * slope(xr[c] * scale[c] + offset[c], act);
      out[c] = scale[c] * (g - mean_g[c] - xhat * mean_gx[c]);
    }
  }
}

VECTOR_VERSIONS static void grad_input_rows(
    const float* restrict dy, const float* restrict x, float* restrict dx, int64_t r0, int64_t r1,
    int64_t C, const float* restrict mean, const float* restrict inv,
    const float* restrict scale, const float* restrict offset, const float* restrict mean_g,
    const float* restrict mean_gx, int act, const Scaled* sc) {
#define INPUT(A, S) \
  grad_input_impl(dy, x, dx, r0, r1, C, mean, inv, scale, offset, mean_g, mean_gx, A, S, sc)
  BY_ACTIVATION(INPUT, act, sc);
#undef INPUT
}

/*
 * Fork-join over row ranges: the calling thread (one of TensorFlow's) takes the first range and a
 * thread started for the call takes each other one, then they are joined. No pool that waits
 * spinning between calls: an OpenMP team did, and took a core from the convolutions that ran next
 * (they were 50 % slower with OpenMP in the library, measured). Tensors under a million values run
 * on the calling thread alone. Measured in one process, alternating step by step at 446 px: batch 1
 * 8 % faster than with splits from 64 K values (142 against 155 ms per image), batch 4 and 16 the
 * same; from 4 M values batch 4 was 4 % slower. Why, not traced: starting a thread costs some tens
 * of microseconds, and TensorFlow may have another op ready for the other core (the backward
 * pass's weight and input gradients are independent).
 * The ops only predictions use (CxrDepthwiseConvBiasAct, CxrHardSwish) split from a quarter of
 * that: a forward pass is one chain, with no other op ready for the other core. Measured the same
 * way at batch 1: 27.3 against 25.5 ms per image (from a million values and from 256 K; 512 K and
 * 128 K within 0.3 ms of 256 K); batch 4 the same.
 */
#define MAX_PARTS 8
#define MIN_ELEMENTS_PER_PART (1024 * 1024)
#define MIN_ELEMENTS_PER_PART_PREDICTING (256 * 1024)

/* One pass of a kernel over rows [r0, r1), as part `part` of the split. */
typedef void (*RowsFn)(const void* args, int64_t r0, int64_t r1, int part);

typedef struct {
  RowsFn fn;
  const void* args;
  int64_t r0, r1;
  int part;
  unsigned int csr;
} Job;

static void* run_job(void* p) {
  Job* j = p;
  SET_FP_MODE(j->csr);
  j->fn(j->args, j->r0, j->r1, j->part);
  return NULL;
}

/* How many parts to split `elements` values into on this machine, at least `least` in each. */
static int parts_for(int64_t elements, int64_t least) {
  static int cpus = 0;
  if (cpus == 0) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    cpus = n < 1 ? 1 : n > MAX_PARTS ? MAX_PARTS : (int)n;
  }
  int64_t by_size = elements / least;
  return by_size < 1 ? 1 : by_size < cpus ? (int)by_size : cpus;
}

/* fn over [0, rows) in `parts` consecutive ranges, in parallel. */
static void parallel_rows(RowsFn fn, const void* args, int64_t rows, int parts) {
  Job jobs[MAX_PARTS];
  pthread_t threads[MAX_PARTS];
  int started[MAX_PARTS] = {0};
  unsigned int csr = GET_FP_MODE();
  for (int p = 0; p < parts; p++) {
    jobs[p] = (Job){fn, args, rows * p / parts, rows * (p + 1) / parts, p, csr};
  }
  for (int p = 1; p < parts; p++) {
    started[p] = pthread_create(&threads[p], NULL, run_job, &jobs[p]) == 0;
    if (!started[p]) run_job(&jobs[p]); /* no thread to be had: do it here */
  }
  run_job(&jobs[0]);
  for (int p = 1; p < parts; p++) {
    if (started[p]) pthread_join(threads[p], NULL);
  }
}

/* What the passes of one call share. */
typedef struct {
  const float *x, *dy, *mean, *inv, *scale, *offset, *shift, *mean_g, *mean_gx;
  float *y, *dx, *work;
  double* totals;
  const Scaled* scaled; /* CxrBatchNormActGradScaled's, else NULL */
  int64_t C;
  int act;
} PassArgs;

static void moments_pass(const void* v, int64_t r0, int64_t r1, int p) {
  const PassArgs* a = v;
  size_t o = (size_t)p * 2 * a->C;
  moments_rows(a->x, r0, r1, a->C, a->shift, a->totals + o, a->totals + o + a->C, a->work + o,
               a->work + o + a->C);
}

static void normalise_pass(const void* v, int64_t r0, int64_t r1, int p) {
  (void)p;
  const PassArgs* a = v;
  normalise_rows(a->x, a->y, r0, r1, a->C, a->scale, a->offset, a->act);
}

static void grad_sums_pass(const void* v, int64_t r0, int64_t r1, int p) {
  const PassArgs* a = v;
  size_t o = (size_t)p * 2 * a->C;
  grad_sums_rows(a->dy, a->x, r0, r1, a->C, a->mean, a->inv, a->scale, a->offset, a->act,
                 a->scaled, a->totals + o, a->totals + o + a->C, a->work + o,
                 a->work + o + a->C);
}

static void grad_input_pass(const void* v, int64_t r0, int64_t r1, int p) {
  (void)p;
  const PassArgs* a = v;
  grad_input_rows(a->dy, a->x, a->dx, r0, r1, a->C, a->mean, a->inv, a->scale, a->offset,
                  a->mean_g, a->mean_gx, a->act, a->scaled);
}

/*
 * y = x · scale + offset per channel, from the batch's statistics: the one place this arithmetic
 * lives, so the forward op, the recompute and the gradient's kink tests all see the same y, bit for
 * bit.
 */
static void affine_from_stats(const float* gamma, const float* beta, const float* mean,
                              const float* inv, int64_t C, float* scale, float* offset) {
  for (int64_t c = 0; c < C; c++) {
    scale[c] = gamma[c] * inv[c];
    offset[c] = beta[c] - mean[c] * scale[c];
  }
}

/* The dimensions of `t` into dims[8], returning how many; -1 with the status set above rank 8. */
static int dims_of(const TF_Tensor* t, int64_t* dims, TF_Status* s) {
  int nd = TF_NumDims(t);
  if (nd > 8) {
    TF_SetStatus(s, TF_INVALID_ARGUMENT, "cxr_kernels: tensors of rank above 8 are not supported");
    return -1;
  }
  for (int i = 0; i < nd; i++) dims[i] = TF_Dim(t, i);
  return nd;
}

/* Output `index` of the context, float32, shaped like `like`; NULL with the status set else. */
static TF_Tensor* allocate_like(TF_OpKernelContext* ctx, int index, const TF_Tensor* like,
                                TF_Status* s) {
  int64_t dims[8];
  int nd = dims_of(like, dims, s);
  if (nd < 0) return NULL;
  return TF_AllocateOutput(ctx, index, TF_FLOAT, dims, nd,
                           TF_TensorElementCount(like) * sizeof(float), s);
}

/* Inputs 0..n-1 of the context, or a failure reported to TensorFlow (then returns 0). */
static int get_inputs(TF_OpKernelContext* ctx, TF_Tensor** t, int n, TF_Status* s) {
  for (int i = 0; i < n; i++) {
    TF_GetInput(ctx, i, &t[i], s);
    if (TF_GetCode(s) != TF_OK) return 0;
  }
  return 1;
}

static void delete_all(TF_Tensor** t, int n) {
  for (int i = 0; i < n; i++) {
    if (t[i]) TF_DeleteTensor(t[i]);
  }
}

/* The channel count of x = t[xi] when x has rank >= 1 and every per-channel input (t[first] to
 * t[n - 1]) has that many elements; else 0 with the status set to `message`. */
static int64_t channels(TF_Tensor** t, int xi, int first, int n, TF_Status* s,
                        const char* message) {
  TF_Tensor* x = t[xi];
  int nd = TF_NumDims(x);
  int64_t C = nd > 0 ? TF_Dim(x, nd - 1) : 0;
  for (int i = first; i < n && C > 0; i++) {
    if (TF_TensorElementCount(t[i]) != C) C = 0;
  }
  if (C <= 0) {
    TF_SetStatus(s, TF_INVALID_ARGUMENT, message);
  }
  return C;
}

/*
 * The batch's mean and 1/std of x [rows, C] per channel, and the moving averages blended with
 * them: the one place this arithmetic lives (CxrBatchNormAct and CxrBatchNormMoments give the same
 * bits). `threads` parts, each with 2·C of `totals` and `work`.
 */
static void batch_statistics(const Attrs* a, PassArgs* pass, int64_t rows, int threads,
                             const float* mm, const float* mv, float* new_mean, float* new_var,
                             float* mean, float* inv) {
  const int64_t C = pass->C;
  const float* shift = pass->shift;
  parallel_rows(moments_pass, pass, rows, threads);
  for (int64_t c = 0; c < C; c++) {
    double sum = 0, sumsq = 0;
    for (int t = 0; t < threads; t++) {
      sum += pass->totals[(size_t)t * 2 * C + c];
      sumsq += pass->totals[(size_t)t * 2 * C + C + c];
    }
    double m = sum / rows, var = sumsq / rows - m * m;
    if (var < 0) var = 0;
    double unbiased = rows > 1 ? var * rows / (rows - 1) : var;
    mean[c] = (float)(shift[c] + m);
    inv[c] = (float)(1.0 / sqrt(var + a->epsilon));
    new_mean[c] = (float)((1.0 - a->avg_factor) * mm[c] + a->avg_factor * (shift[c] + m));
    new_var[c] = (float)((1.0 - a->avg_factor) * mv[c] + a->avg_factor * unbiased);
  }
}

/*
 * CxrBatchNormAct, and CxrBatchNormMoments (x, moving_mean, moving_variance -> the same outputs
 * but y): the statistics alone, for a BatchNorm whose output only a depthwise convolution reads,
 * which makes it row by row (CxrDepthwiseConvOfBatchNorm).
 */
static void batch_norm_act(void* kernel, TF_OpKernelContext* ctx) {
  const Attrs* a = kernel;
  TF_Status* s = TF_NewStatus();
  TF_Tensor* in[5] = {0};
  TF_Tensor* out[5] = {0};
  const int moments_only = TF_NumInputs(ctx) == 3;
  const int n_in = moments_only ? 3 : 5;
  if (!get_inputs(ctx, in, n_in, s)) goto done;
  int64_t C = channels(in, 0, 1, n_in, s,
                       moments_only
                           ? "CxrBatchNormMoments: the moving averages need one value per channel "
                             "(the last dimension of x)"
                           : "CxrBatchNormAct: gamma, beta and the moving averages need one value "
                             "per channel (the last dimension of x)");
  if (!C) goto done;
  int64_t total = TF_TensorElementCount(in[0]), rows = total / C;
  /* out[] by role (y, new mean and variance, batch mean and 1/std); without y, output k is
   * role k + 1. */
  if (!moments_only) out[0] = allocate_like(ctx, 0, in[0], s);
  for (int role = 1; role < 5 && TF_GetCode(s) == TF_OK; role++) {
    out[role] =
        TF_AllocateOutput(ctx, role - moments_only, TF_FLOAT, &C, 1, C * sizeof(float), s);
  }
  if (TF_GetCode(s) != TF_OK || rows == 0) goto done;

  const float* x = TF_TensorData(in[0]);
  const float *mm = TF_TensorData(in[n_in - 2]), *mv = TF_TensorData(in[n_in - 1]);
  float *new_mean = TF_TensorData(out[1]), *new_var = TF_TensorData(out[2]);
  float *mean = TF_TensorData(out[3]), *inv = TF_TensorData(out[4]);

  int threads = parts_for(total, MIN_ELEMENTS_PER_PART);
  double* totals = calloc((size_t)threads * 2 * C, sizeof(double));
  float* work = malloc((size_t)threads * 2 * C * sizeof(float));
  float* scale = malloc(2 * C * sizeof(float));
  float* offset = scale + C;
  /* Shifting by the first row keeps the single-pass variance from cancelling. */
  PassArgs pass = {.x = x, .shift = x, .scale = scale, .offset = offset, .totals = totals,
                   .work = work, .C = C, .act = a->activation};
  batch_statistics(a, &pass, rows, threads, mm, mv, new_mean, new_var, mean, inv);
  if (!moments_only) {
    pass.y = TF_TensorData(out[0]);
    affine_from_stats(TF_TensorData(in[1]), TF_TensorData(in[2]), mean, inv, C, scale, offset);
    parallel_rows(normalise_pass, &pass, rows, threads);
  }
  free(totals);
  free(work);
  free(scale);
done:
  if (TF_GetCode(s) != TF_OK) TF_OpKernelContext_Failure(ctx, s);
  delete_all(in, 5);
  delete_all(out, 5);
  TF_DeleteStatus(s);
}

/*
 * y again from x and the batch's statistics, bit for bit as CxrBatchNormAct computed it: the
 * backward pass recomputes the BatchNorm's output where the next layer's gradient needs it, so the
 * forward pass need not keep it (graph_train.ts). One pass: read x, write y.
 */
static void batch_norm_act_apply(void* kernel, TF_OpKernelContext* ctx) {
  const Attrs* a = kernel;
  TF_Status* s = TF_NewStatus();
  TF_Tensor* in[5] = {0};
  TF_Tensor* out[1] = {0};
  if (!get_inputs(ctx, in, 5, s)) goto done;
  int64_t C = channels(in, 0, 1, 5, s,
                       "CxrBatchNormActApply: gamma, beta, mean and inverse std need one value "
                       "per channel (the last dimension of x)");
  if (!C) goto done;
  int64_t total = TF_TensorElementCount(in[0]), rows = total / C;
  out[0] = allocate_like(ctx, 0, in[0], s);
  if (TF_GetCode(s) != TF_OK || rows == 0) goto done;
  const float *gamma = TF_TensorData(in[1]), *beta = TF_TensorData(in[2]);
  const float *mean = TF_TensorData(in[3]), *inv = TF_TensorData(in[4]);
  float* scale = malloc(2 * C * sizeof(float));
  float* offset = scale + C;
  affine_from_stats(gamma, beta, mean, inv, C, scale, offset);
  PassArgs pass = {.x = TF_TensorData(in[0]), .y = TF_TensorData(out[0]), .scale = scale,
                   .offset = offset, .C = C, .act = a->activation};
  parallel_rows(normalise_pass, &pass, rows, parts_for(total, MIN_ELEMENTS_PER_PART));
  free(scale);
done:
  if (TF_GetCode(s) != TF_OK) TF_OpKernelContext_Failure(ctx, s);
  delete_all(in, 5);
  delete_all(out, 1);
  TF_DeleteStatus(s);
}

VECTOR_VERSIONS static void hard_swish_range(
    const float* restrict x, float* y, int64_t i0, int64_t i1) {
  /* y may be x itself (the input's buffer forwarded): each element is read before written. */
  for (int64_t i = i0; i < i1; i++) y[i] = activate(x[i], ACT_HARD_SWISH);
}

static void hard_swish_pass(const void* v, int64_t r0, int64_t r1, int p) {
  (void)p;
  const PassArgs* a = v;
  hard_swish_range(a->x, a->y, r0, r1);
}

/*
 * Output 0 in the shape of input 0 (`x`), written over the input when nothing else reads it (saves
 * a buffer the size of the tensor); NULL with the status set on failure.
 */
static TF_Tensor* output_over_input(TF_OpKernelContext* ctx, const TF_Tensor* x, TF_Status* s) {
  int64_t dims[8];
  int nd = dims_of(x, dims, s);
  if (nd < 0) return NULL;
  int candidate = 0, forwarded = -1;
  return TF_ForwardInputOrAllocateOutput(ctx, &candidate, 1, 0, dims, nd, &forwarded, s);
}

/* Hard-swish in one pass where TensorFlow's ops take four (add, relu6, two multiplies). */
static void hard_swish(void* kernel, TF_OpKernelContext* ctx) {
  (void)kernel;
  TF_Status* s = TF_NewStatus();
  TF_Tensor* in[1] = {0};
  TF_Tensor* out[1] = {0};
  if (!get_inputs(ctx, in, 1, s)) goto done;
  int64_t total = TF_TensorElementCount(in[0]);
  out[0] = output_over_input(ctx, in[0], s);
  if (TF_GetCode(s) != TF_OK || total == 0) goto done;
  PassArgs pass = {.x = TF_TensorData(in[0]), .y = TF_TensorData(out[0])};
  parallel_rows(hard_swish_pass, &pass, total,
                parts_for(total, MIN_ELEMENTS_PER_PART_PREDICTING));
done:
  if (TF_GetCode(s) != TF_OK) TF_OpKernelContext_Failure(ctx, s);
  delete_all(in, 1);
  delete_all(out, 1);
  TF_DeleteStatus(s);
}

/*
 * CxrScaleShift: x * scale + shift per channel, the product rounded to float before the sum (as
 * TensorFlow's Mul and then AddV2 round: the same bits; no FMA, see the build flags). For the
 * input's normalisation, three channels: TensorFlow's broadcasting Mul and AddV2 found each
 * value's channel by index arithmetic, 4 ms together at 446 px, batch 1, in the training step.
 * Here the scale and shift are laid out once along a period of P values (a multiple of the
 * channels and of the vector width) so the loop is plain vector arithmetic over the flat tensor.
 */
typedef struct {
  const float* x;
  float* y;
  const float *scale, *shift; /* P values each: channel i % C at i */
  int64_t period, total;
} ScaleShiftArgs;

static void scale_shift_pass(const void* v, int64_t r0, int64_t r1, int p) {
  (void)p;
  const ScaleShiftArgs* a = v;
  for (int64_t r = r0; r < r1; r++) {
    int64_t start = r * a->period;
    int64_t n = a->total - start < a->period ? a->total - start : a->period;
    const float* restrict x = a->x + start;
    float* y = a->y + start; /* may be x: each value is read before it is written */
    const float* restrict sc = a->scale;
    const float* restrict sh = a->shift;
    for (int64_t i = 0; i < n; i++) {
      float product = x[i] * sc[i];
      y[i] = product + sh[i];
    }
  }
}

static void scale_shift(void* kernel, TF_OpKernelContext* ctx) {
  (void)kernel;
  TF_Status* s = TF_NewStatus();
  TF_Tensor* in[3] = {0};
  TF_Tensor* out[1] = {0};
  float* pattern = NULL;
  if (!get_inputs(ctx, in, 3, s)) goto done;
  int64_t C = channels(in, 0, 1, 3, s,
                       "CxrScaleShift: scale and shift need one value per channel (the last "
                       "dimension of x)");
  if (!C) goto done;
  int64_t total = TF_TensorElementCount(in[0]);
  out[0] = output_over_input(ctx, in[0], s);
  if (TF_GetCode(s) != TF_OK || total == 0) goto done;
  int64_t period = C % 8 == 0 ? C : 8 * C;
  pattern = malloc(2 * (size_t)period * sizeof(float));
  const float *scale = TF_TensorData(in[1]), *shift = TF_TensorData(in[2]);
  for (int64_t i = 0; i < period; i++) {
    pattern[i] = scale[i % C];
    pattern[period + i] = shift[i % C];
  }
  ScaleShiftArgs pass = {.x = TF_TensorData(in[0]), .y = TF_TensorData(out[0]), .scale = pattern,
                         .shift = pattern + period, .period = period, .total = total};
  parallel_rows(scale_shift_pass, &pass, (total + period - 1) / period,
                parts_for(total, MIN_ELEMENTS_PER_PART_PREDICTING));
done:
  if (TF_GetCode(s) != TF_OK) TF_OpKernelContext_Failure(ctx, s);
  free(pattern);
  delete_all(in, 3);
  delete_all(out, 1);
  TF_DeleteStatus(s);
}

/*
 * CxrBatchNormActGrad, and CxrBatchNormActGradScaled: two more inputs, gate [B, 1, 1, C] and
 * pooled_grad [B, C], where y fed squeeze-excite's y · gate and its global average pooling and dy
 * is the product's gradient. y's gradient, dy · gate + pooled_grad / (H · W), is made as it is
 * read, where the graph wrote three tensors for it (TensorFlow's Mul, Tile and AddN) and read them
 * back. The same float arithmetic, so the same bits (1 / (H · W) rounded to float, as the graph's
 * constant).
 */
static void batch_norm_act_grad(void* kernel, TF_OpKernelContext* ctx) {
  const Attrs* a = kernel;
  TF_Status* s = TF_NewStatus();
  TF_Tensor* in[8] = {0};
  TF_Tensor* out[3] = {0};
  float* spread = NULL;
  Scaled scaled = {0};
  const int n_in = TF_NumInputs(ctx);
  if (!get_inputs(ctx, in, n_in, s)) goto done;
  int64_t C = channels(in, 1, 2, 6, s,
                       "CxrBatchNormActGrad: gamma, beta, mean and inverse std need one value "
                       "per channel (the last dimension of x)");
  if (!C) goto done;
  int64_t total = TF_TensorElementCount(in[1]), rows = total / C;
  if (TF_TensorElementCount(in[0]) != total) {
    TF_SetStatus(s, TF_INVALID_ARGUMENT, "CxrBatchNormActGrad: dy and x differ in size");
    goto done;
  }
  out[0] = allocate_like(ctx, 0, in[1], s);
  for (int i = 1; i < 3 && TF_GetCode(s) == TF_OK; i++) {
    out[i] = TF_AllocateOutput(ctx, i, TF_FLOAT, &C, 1, C * sizeof(float), s);
  }
  if (TF_GetCode(s) != TF_OK || rows == 0) goto done;

  const float *dy = TF_TensorData(in[0]), *x = TF_TensorData(in[1]);
  const float *gamma = TF_TensorData(in[2]), *beta = TF_TensorData(in[3]);
  const float *mean = TF_TensorData(in[4]), *inv = TF_TensorData(in[5]);
  float* dx = TF_TensorData(out[0]);
  float *dgamma = TF_TensorData(out[1]), *dbeta = TF_TensorData(out[2]);
  if (n_in == 8) {
    const int64_t B = TF_NumDims(in[1]) == 4 ? TF_Dim(in[1], 0) : 0;
    if (B < 1 || TF_TensorElementCount(in[6]) != B * C ||
        TF_TensorElementCount(in[7]) != B * C) {
      TF_SetStatus(s, TF_INVALID_ARGUMENT,
                   "CxrBatchNormActGradScaled: x must be [B, H, W, C], the gate [B, 1, 1, C] "
                   "and the pooling's gradient [B, C]");
      goto done;
    }
    scaled.positions = rows / B;
    const float* pooled = TF_TensorData(in[7]);
    const float per_position = (float)(1.0 / (double)scaled.positions);
    spread = malloc(B * C * sizeof(float));
    for (int64_t i = 0; i < B * C; i++) spread[i] = pooled[i] * per_position;
    scaled.gate = TF_TensorData(in[6]), scaled.spread = spread;
  }

  int threads = parts_for(total, MIN_ELEMENTS_PER_PART);
  double* totals = calloc((size_t)threads * 2 * C, sizeof(double));
  float* work = malloc((size_t)threads * 2 * C * sizeof(float));
  float* scale = malloc(4 * C * sizeof(float));
  float *offset = scale + C, *mean_g = scale + 2 * C, *mean_gx = scale + 3 * C;
  affine_from_stats(gamma, beta, mean, inv, C, scale, offset);
  PassArgs pass = {.x = x, .dy = dy, .dx = dx, .mean = mean, .inv = inv, .scale = scale,
                   .offset = offset, .mean_g = mean_g, .mean_gx = mean_gx, .totals = totals,
                   .work = work, .C = C, .act = a->activation,
                   .scaled = n_in == 8 ? &scaled : NULL};
  parallel_rows(grad_sums_pass, &pass, rows, threads);
  for (int64_t c = 0; c < C; c++) {
    double sg = 0, sgx = 0;
    for (int t = 0; t < threads; t++) {
      sg += totals[(size_t)t * 2 * C + c];
      sgx += totals[(size_t)t * 2 * C + C + c];
    }
    dbeta[c] = (float)sg;
    dgamma[c] = (float)sgx;
    mean_g[c] = (float)(sg / rows);
    mean_gx[c] = (float)(sgx / rows);
  }
  parallel_rows(grad_input_pass, &pass, rows, threads);
  free(totals);
  free(work);
  free(scale);
done:
  if (TF_GetCode(s) != TF_OK) TF_OpKernelContext_Failure(ctx, s);
  free(spread);
  delete_all(in, 8);
  delete_all(out, 3);
  TF_DeleteStatus(s);
}

/* Output i gets input j's shape, for each (i, j) pair. */
static void copy_shapes(TF_ShapeInferenceContext* ctx, TF_Status* s, const int* pairs, int n) {
  TF_ShapeHandle* h = TF_NewShapeHandle();
  for (int k = 0; k < n && TF_GetCode(s) == TF_OK; k++) {
    TF_ShapeInferenceContextGetInput(ctx, pairs[2 * k + 1], h, s);
    if (TF_GetCode(s) == TF_OK) TF_ShapeInferenceContextSetOutput(ctx, pairs[2 * k], h, s);
  }
  TF_DeleteShapeHandle(h);
}

/*
 * Depthwise convolution (channel multiplier 1) with its zero padding inside. TensorFlow's graph is
 * Pad then DepthwiseConv2dNative, and oneDNN's filter gradient for it was the slowest op of the
 * step (66 ms of 475 at 446 px, batch 4, where its forward took 20). Here each pass (forward, input
 * gradient, filter gradient) reads the activations once, eight channels at a time (channels last:
 * eight neighbouring floats), and the padding is never written out.
 *
 *   CxrDepthwiseConv(x [B, H, W, C], w [K, K, C, 1]) -> y [B, OH, OW, C]
 *   CxrDepthwiseConvInputGrad(dy, w) -> dx (attribute input_size = [H, W]),
 *   CxrDepthwiseConvFilterGrad(dy, x, w) -> dw
 * attributes: stride, paddings = [top, bottom, left, right]; OH = (H + top + bottom − K) / stride
 * + 1, OW likewise. C must be at least 8 (MobileNetV3's depthwise layers have 16 to 960).
 * cache_bytes (default 0: the machine's last-level cache) only changes the order of the loops
 * (see strip()), never a result; the tests set it to take both orders on small tensors.
 */
typedef struct {
  int64_t stride, pads[4];
  int64_t cache_bytes;   /* the cache the loop order plans for (see strip()); 0: the machine's */
  int64_t input_size[2]; /* CxrDepthwiseConvInputGrad's: the input's height and width */
  int activation;        /* CxrDepthwiseConvBiasAct's; ACT_IDENTITY for the others */
} ConvAttrs;

static void* create_conv_kernel(TF_OpKernelConstruction* ctx) {
  ConvAttrs* a = calloc(1, sizeof *a);
  TF_Status* s = TF_NewStatus();
  TF_OpKernelConstruction_GetAttrInt64(ctx, "stride", &a->stride, s);
  if (TF_GetCode(s) == TF_OK) {
    TF_OpKernelConstruction_GetAttrInt64List(ctx, "paddings", a->pads, 4, s);
  }
  if (TF_GetCode(s) == TF_OK) {
    TF_OpKernelConstruction_GetAttrInt64(ctx, "cache_bytes", &a->cache_bytes, s);
  }
  int ok = a->stride >= 1 && a->pads[0] >= 0 && a->pads[1] >= 0 && a->pads[2] >= 0 &&
           a->pads[3] >= 0 && a->cache_bytes >= 0;
  if (TF_GetCode(s) == TF_OK && !ok) {
    TF_SetStatus(s, TF_INVALID_ARGUMENT,
                 "CxrDepthwiseConv: stride must be at least 1, paddings 4 values >= 0 and "
                 "cache_bytes >= 0");
  }
  if (TF_GetCode(s) != TF_OK) TF_OpKernelConstruction_Failure(ctx, s);
  TF_DeleteStatus(s);
  return a;
}

static void* create_conv_input_grad_kernel(TF_OpKernelConstruction* ctx) {
  ConvAttrs* a = create_conv_kernel(ctx);
  TF_Status* s = TF_NewStatus();
  TF_OpKernelConstruction_GetAttrInt64List(ctx, "input_size", a->input_size, 2, s);
  if (TF_GetCode(s) == TF_OK && (a->input_size[0] < 1 || a->input_size[1] < 1)) {
    TF_SetStatus(s, TF_INVALID_ARGUMENT,
                 "CxrDepthwiseConvInputGrad: input_size must be [height, width], both >= 1");
  }
  if (TF_GetCode(s) != TF_OK) TF_OpKernelConstruction_Failure(ctx, s);
  TF_DeleteStatus(s);
  return a;
}

static void* create_conv_act_kernel(TF_OpKernelConstruction* ctx) {
  ConvAttrs* a = create_conv_kernel(ctx);
  TF_Status* s = TF_NewStatus();
  char name[32] = {0};
  TF_OpKernelConstruction_GetAttrString(ctx, "activation", name, sizeof name - 1, s);
  a->activation = strcmp(name, "relu") == 0 ? ACT_RELU
                  : strcmp(name, "hard_swish") == 0 ? ACT_HARD_SWISH
                                                    : ACT_IDENTITY;
  if (TF_GetCode(s) != TF_OK) TF_OpKernelConstruction_Failure(ctx, s);
  TF_DeleteStatus(s);
  return a;
}

/*
 * Eight floats as one vector (an AVX register; two SSE ones in the plain x86-64 version), read and
 * written at any float's alignment; may_alias: they are the tensors' floats.
 */
typedef float v8 __attribute__((vector_size(32), aligned(4), may_alias));
#define LOAD8(p) (*(const v8*)(p))
#define STORE8(p, v) (*(v8*)(p) = (v))
typedef int v8i __attribute__((vector_size(32)));

/*
 * activate() on eight lanes at once, in place, as the same arithmetic (a comparison is a lane
 * mask). By pointer: a vector argument would be passed differently in the non-AVX version.
 */
static inline __attribute__((always_inline)) void activate8(v8* v, int act) {
  const v8 y = *v;
  if (act == ACT_RELU) *v = (v8)((v8i)y & (y > 0.0f));
  if (act == ACT_HARD_SWISH) {
    v8 t = y + 3.0f;
    t = (v8)((v8i)t & (t > 0.0f));
    const v8i below = t < 6.0f;
    const v8 six = {6, 6, 6, 6, 6, 6, 6, 6};
    t = (v8)(((v8i)t & below) | ((v8i)six & ~below));
    *v = y * t * (1.0f / 6.0f);
  }
}

/* One call's geometry and tensors. */
typedef struct {
  const float *x, *dy, *w, *bias; /* bias: CxrDepthwiseConvBiasAct's, else NULL */
  /* CxrDepthwiseConvOfBatchNorm's and …FilterGradOfBatchNorm's: the convolution's input is
   * act(x · scale + offset), per channel, computed from x row by row (else NULL) */
  const float *scale, *offset;
  float *y, *dx;
  double* dw_parts; /* per part, the K·K·C sums of the filter gradient */
  int64_t B, H, W, C, K, OH, OW, s, top, left;
  int act;         /* applied after the bias (forward), or to x · scale + offset */
  int by_position; /* x is larger than the last-level cache: see strip() */
} ConvArgs;

/*
 * Channels go in blocks of eight (one vector): block k covers [8k, 8k + 8), except that when C is
 * not a multiple of eight the last block starts at C − 8 and overlaps the one before. The forward
 * and input-gradient passes then write those channels twice with the same values; the filter
 * gradient adds each channel once (`block_fresh`).
 *
 * Why strips: a multiply-add takes a vector of the data and one of the weights. Position by
 * position (as this file did before) that is two loads per multiply-add, and a core loads two
 * vectors a cycle, so it did at most one multiply-add a cycle of the two it can; the taps were
 * listed anew for every position too. Here a strip of up to STRIP neighbouring positions (along a
 * row, with the same taps) shares each weight vector and the list of taps: 1 + 1/STRIP loads per
 * multiply-add, STRIP accumulators in flight. The filter gradient keeps one accumulator per kernel
 * column, so each vector of dy is loaded once for the K columns. Every sum is taken in the same
 * order as before (taps in kernel order; outputs in row order), so the results are the same bits
 * (checked on MobileNetV3's layer shapes and odd ones, one and two threads, both loop orders).
 * Measured in the training step (TensorFlow's step stats, 446 px, batch 4, the 15 layers): forward
 * 31.5 → 23.4 ms a step, gradients 66.5 → 44.7.
 */
#define STRIP 8

static inline int64_t block_count(int64_t C) { return (C + 7) / 8; }

static inline int64_t block_start(int64_t k, int64_t C) { return 8 * k < C - 8 ? 8 * k : C - 8; }

/* The first lane of block k that the block before it does not have. */
static inline int block_fresh(int64_t k, int64_t C) {
  return k == block_count(C) - 1 ? (int)(8 * block_count(C) - C) : 0;
}

/* The taps of one position: offsets of the data vectors (x, or dy) and of the weights'. */
typedef struct {
  int64_t data[32 * 32];
  int64_t weight[32 * 32];
  int n;
} Taps;

/*
 * For the T positions of a strip (their data `step` floats apart, their outputs `out_step`), G
 * blocks of eight channels from c0[0..G): act(sum over the taps of data · weight + bias), bias may
 * be NULL. T and G are constants when inlined, so the accumulators stay in registers.
 */
static inline __attribute__((always_inline)) void strip_taps(
    const float* restrict data, int64_t step, const float* restrict w,
    const float* restrict bias, int act, const Taps* taps, const int64_t* c0, float* restrict out,
    int64_t out_step, const int T, const int G) {
  v8 acc[STRIP][4];
  for (int t = 0; t < T; t++) {
    for (int j = 0; j < G; j++) acc[t][j] = (v8){0};
  }
  for (int i = 0; i < taps->n; i++) {
    const float* dp = data + taps->data[i];
    const float* wp = w + taps->weight[i];
    for (int j = 0; j < G; j++) {
      const v8 wv = LOAD8(wp + c0[j]);
      for (int t = 0; t < T; t++) acc[t][j] += LOAD8(dp + t * step + c0[j]) * wv;
    }
  }
  for (int t = 0; t < T; t++) {
    for (int j = 0; j < G; j++) {
      if (bias) acc[t][j] += LOAD8(bias + c0[j]);
      activate8(&acc[t][j], act);
      STORE8(out + t * out_step + c0[j], acc[t][j]);
    }
  }
}

/*
 * A strip for every channel. Block by block (each weight vector loaded once for the strip), unless
 * `by_position`: then position by position, four blocks at a time, reading the data in memory
 * order. That is for tensors larger than the last-level cache: read from memory block by block,
 * the strip's lines arrive out of order (every fourth line, then the next ones) and the prefetcher
 * does not keep up; measured on a [4, 223, 223, 64] stride-2 layer (51 MB): 7.6-8.4 ms block by
 * block against 4.1-4.3 position by position, one thread.
 */
static inline __attribute__((always_inline)) void strip(
    const float* restrict data, int64_t step, const float* restrict w,
    const float* restrict bias, int act, const Taps* taps, int64_t C, float* restrict out,
    int64_t out_step, int T, int by_position) {
  const int64_t blocks = block_count(C);
  if (by_position) {
    for (int t = 0; t < T; t++) {
      for (int64_t k = 0; k < blocks; k += 4) {
        int64_t c0[4];
        const int G = blocks - k < 4 ? (int)(blocks - k) : 4;
        for (int j = 0; j < G; j++) c0[j] = block_start(k + j, C);
        const float* d = data + t * step;
        float* o = out + t * out_step;
        switch (G) {
          case 4: strip_taps(d, step, w, bias, act, taps, c0, o, out_step, 1, 4); break;
          case 3: strip_taps(d, step, w, bias, act, taps, c0, o, out_step, 1, 3); break;
          case 2: strip_taps(d, step, w, bias, act, taps, c0, o, out_step, 1, 2); break;
          default: strip_taps(d, step, w, bias, act, taps, c0, o, out_step, 1, 1); break;
        }
      }
    }
    return;
  }
  for (int64_t k = 0; k < blocks; k++) {
    const int64_t c0 = block_start(k, C);
    if (T == STRIP) {
      strip_taps(data, step, w, bias, act, taps, &c0, out, out_step, STRIP, 1);
    } else if (T == STRIP / 2) {
      strip_taps(data, step, w, bias, act, taps, &c0, out, out_step, STRIP / 2, 1);
    } else {
      strip_taps(data, step, w, bias, act, taps, &c0, out, out_step, 1, 1);
    }
  }
}

/*
 * The last-level cache of the core this runs on, in bytes, as Linux describes it (sysconf's figure
 * is the whole processor's on these AMD machines: 256 MB against 32 per core complex); 32 MB when
 * there is no description.
 */
static int64_t last_level_cache(void) {
  static int64_t bytes = 0;
  if (bytes == 0) {
    long size = 0;
    FILE* f = fopen("/sys/devices/system/cpu/cpu0/cache/index3/size", "r");
    if (f) {
      if (fscanf(f, "%ldK", &size) != 1) size = 0;
      fclose(f);
    }
    bytes = size > 0 ? (int64_t)size * 1024 : 32 << 20;
  }
  return bytes;
}

/* The widest strip (STRIP, STRIP / 2, else 1) from `first` whose positions all lie in [lo, hi). */
static inline int strip_width(int64_t first, int64_t lo, int64_t hi) {
  if (first < lo) return 1;
  return first + STRIP <= hi ? STRIP : first + STRIP / 2 <= hi ? STRIP / 2 : 1;
}

/*
 * The input rows a thread has made of a BatchNorm's output, act(x · scale + offset) (the depthwise
 * ops ...OfBatchNorm): the last K, row ih in slot ih mod K (an output row's K input rows are
 * consecutive, so they never share a slot). In the thread's cache: K rows of W · C floats.
 */
typedef struct {
  float* rows;
  int64_t held[32]; /* which row (b · H + ih) each slot holds; -1: none */
} Ring;

static void ring_open(Ring* ring, const ConvArgs* a) {
  ring->rows = a->scale ? malloc((size_t)a->K * a->W * a->C * sizeof(float)) : NULL;
  for (int64_t k = 0; k < a->K; k++) ring->held[k] = -1;
}

/* Input row ih of image b as the convolution reads it, made first when the ring has not got it. */
static inline const float* ring_row(Ring* ring, const ConvArgs* a, int64_t b, int64_t ih) {
  const int64_t row = b * a->H + ih, row_floats = a->W * a->C;
  float* slot = ring->rows + (ih % a->K) * row_floats;
  if (ring->held[ih % a->K] != row) {
    /* The same function CxrBatchNormAct's output comes from: the same values, bit for bit. */
    normalise_rows(a->x + row * row_floats, slot, 0, a->W, a->C, a->scale, a->offset, a->act);
    ring->held[ih % a->K] = row;
  }
  return slot;
}

/*
 * Output rows [r0, r1) of the B·OH: each position sums its K·K taps (those inside the input). With
 * scale and offset (CxrDepthwiseConvOfBatchNorm) the input is act(x · scale + offset), made K rows
 * at a time as the filter gradient makes it (row ih in slot ih mod K): the taps then read the
 * rows made, which are in the cache, so channel block by channel block whatever x's size.
 */
VECTOR_VERSIONS static void dw_forward_rows(const ConvArgs* a, int64_t r0, int64_t r1) {
  const int64_t C = a->C, K = a->K, s = a->s;
  /* The outputs whose taps all fall inside the row: 0 <= ow·s − left and ow·s − left + K <= W. */
  const int64_t lo = (a->left + s - 1) / s;
  const int64_t hi = a->W - K + a->left < 0 ? 0 : (a->W - K + a->left) / s + 1;
  Ring ring;
  ring_open(&ring, a);
  const int made = ring.rows != NULL;
  const float* data = made ? ring.rows : a->x;
  const int out_act = made ? ACT_IDENTITY : a->act;
  Taps* t = malloc(sizeof *t);
  for (int64_t r = r0; r < r1; r++) {
    const int64_t b = r / a->OH, oh = r % a->OH;
    for (int64_t kh = 0; made && kh < K; kh++) {
      const int64_t ih = oh * s - a->top + kh;
      if (ih >= 0 && ih < a->H) ring_row(&ring, a, b, ih);
    }
    for (int64_t ow = 0, T; ow < a->OW; ow += T) {
      T = strip_width(ow, lo, hi);
      t->n = 0;
      for (int64_t kh = 0; kh < K; kh++) {
        const int64_t ih = oh * s - a->top + kh;
        if (ih < 0 || ih >= a->H) continue;
        const int64_t first = made ? (ih % K) * a->W : (b * a->H + ih) * a->W;
        for (int64_t kw = 0; kw < K; kw++) {
          const int64_t iw = ow * s - a->left + kw;
          if (iw < 0 || iw >= a->W) continue;
          t->data[t->n] = (first + iw) * C;
          t->weight[t->n++] = (kh * K + kw) * C;
        }
      }
      strip(data, s * C, a->w, a->bias, out_act, t, C, a->y + (r * a->OW + ow) * C, C, (int)T,
            a->by_position && !made);
    }
  }
  free(t);
  free(ring.rows);
}

/*
 * Input-gradient rows [r0, r1) of the B·H: each input position gathers the outputs it fed. The
 * positions iw ≡ ρ (mod stride) meet the same kernel columns, each one output further along, so
 * strips run over every stride-th position.
 */
VECTOR_VERSIONS static void dw_input_grad_rows(const ConvArgs* a, int64_t r0, int64_t r1) {
  const int64_t C = a->C, K = a->K, s = a->s;
  Taps* t = malloc(sizeof *t);
  for (int64_t r = r0; r < r1; r++) {
    const int64_t b = r / a->H, ih = r % a->H;
    /* The kernel rows that reach this input row: ih = oh·s − top + kh for a whole oh. */
    int64_t rows[32], first_out[32];
    int n_rows = 0;
    for (int64_t kh = (ih + a->top) % s; kh < K && kh <= ih + a->top; kh += s) {
      const int64_t oh = (ih + a->top - kh) / s;
      if (oh < a->OH) rows[n_rows] = kh, first_out[n_rows++] = (b * a->OH + oh) * a->OW;
    }
    float* out = a->dx + r * a->W * C;
    for (int64_t rho = 0; rho < s && rho < a->W; rho++) {
      /* Kernel columns kw ≡ ρ + left (mod s), from kw0; the last reaches back `back` outputs. */
      const int64_t kw0 = (rho + a->left) % s, back = kw0 < K ? (K - 1 - kw0) / s : 0;
      for (int64_t iw = rho, T; iw < a->W; iw += T * s) {
        const int64_t ow0 = (iw + a->left - kw0) / s;
        /* A strip's T positions must lie in the row, and each tap's outputs in [0, OW). */
        const int64_t in_row = (a->W - 1 - iw) / s + 1;
        T = strip_width(ow0, back, ow0 + (in_row < a->OW - ow0 ? in_row : a->OW - ow0));
        t->n = 0;
        for (int i = 0; i < n_rows; i++) {
          for (int64_t kw = kw0, ow = ow0; kw < K && ow >= 0; kw += s, ow--) {
            if (ow >= a->OW) continue;
            t->data[t->n] = (first_out[i] + ow) * C;
            t->weight[t->n++] = (rows[i] * K + kw) * C;
          }
        }
        strip(a->dy, C, a->w, NULL, ACT_IDENTITY, t, C, out + iw * C, s * C, (int)T,
              a->by_position);
      }
    }
  }
  free(t);
}

/*
 * Kernel row kh's share of one output row of the filter gradient, eight channels from c0: for each
 * kernel column kw, the sum over outputs [first[kw], end[kw]) of x · dy, in the outputs' order,
 * added to dw[kw·C + c0 + lane] from lane `fresh`. All columns have their taps inside the row over
 * [lo, hi); the outputs before and after are checked column by column. K is a constant when
 * inlined (then the accumulators stay in registers).
 */
static inline __attribute__((always_inline)) void filter_row(
    const float* restrict xr, const float* restrict dyr, const ConvArgs* a, int64_t c0,
    int fresh, const int64_t* first, const int64_t* end, int64_t from, int64_t lo, int64_t hi,
    int64_t to, double* restrict dw, const int K) {
  const int64_t C = a->C, s = a->s, left = a->left;
  v8 acc[32];
  for (int kw = 0; kw < K; kw++) acc[kw] = (v8){0};
  for (int64_t ow = from; ow < lo; ow++) {
    const v8 d = LOAD8(dyr + ow * C + c0);
    for (int kw = 0; kw < K; kw++) {
      if (ow >= first[kw] && ow < end[kw]) {
        acc[kw] += LOAD8(xr + (ow * s - left + kw) * C + c0) * d;
      }
    }
  }
  for (int64_t ow = lo; ow < hi; ow++) {
    const v8 d = LOAD8(dyr + ow * C + c0);
    const float* xp = xr + (ow * s - left) * C + c0;
    for (int kw = 0; kw < K; kw++) acc[kw] += LOAD8(xp + kw * C) * d;
  }
  for (int64_t ow = hi; ow < to; ow++) {
    const v8 d = LOAD8(dyr + ow * C + c0);
    for (int kw = 0; kw < K; kw++) {
      if (ow >= first[kw] && ow < end[kw]) {
        acc[kw] += LOAD8(xr + (ow * s - left + kw) * C + c0) * d;
      }
    }
  }
  for (int kw = 0; kw < K; kw++) {
    for (int l = fresh; l < 8; l++) dw[kw * C + c0 + l] += acc[kw][l];
  }
}

/*
 * Filter-gradient sums over output rows [r0, r1) of the B·OH, into `dw` (K·K·C doubles): float
 * within a row (at most OW terms per tap), double across rows (a 446 px batch has ~200,000).
 */
VECTOR_VERSIONS static void dw_filter_grad_rows(const ConvArgs* a, int64_t r0, int64_t r1,
                                                double* restrict dw) {
  const int64_t C = a->C, K = a->K, s = a->s;
  /* For each kernel column, the outputs whose tap falls inside the row: 0 <= ow·s − left + kw < W;
   * [from, to) covers them all, [lo, hi) is where every column's does. */
  int64_t first[32], end[32], from = a->OW, lo = 0, hi = a->OW, to = 0;
  for (int64_t kw = 0; kw < K; kw++) {
    first[kw] = kw >= a->left ? 0 : (a->left - kw + s - 1) / s;
    const int64_t reach = a->W - 1 + a->left - kw;
    end[kw] = reach < 0 ? 0 : reach / s + 1;
    if (end[kw] > a->OW) end[kw] = a->OW;
    if (end[kw] < first[kw]) end[kw] = first[kw];
    if (end[kw] > first[kw]) {
      from = first[kw] < from ? first[kw] : from;
      to = end[kw] > to ? end[kw] : to;
    }
    lo = first[kw] > lo ? first[kw] : lo;
    hi = end[kw] < hi ? end[kw] : hi;
  }
  lo = lo < from ? from : lo > to ? to : lo;
  hi = hi < lo ? lo : hi > to ? to : hi;
  /* With scale and offset, the input rows are made as they are needed (Ring). */
  Ring ring;
  ring_open(&ring, a);
  for (int64_t r = r0; r < r1; r++) {
    const int64_t b = r / a->OH, oh = r % a->OH;
    const float* dyr = a->dy + r * a->OW * C;
    for (int64_t kh = 0; kh < K; kh++) {
      const int64_t ih = oh * s - a->top + kh;
      if (ih < 0 || ih >= a->H) continue;
      const float* xr =
          ring.rows ? ring_row(&ring, a, b, ih) : a->x + (b * a->H + ih) * a->W * C;
      double* dwr = dw + kh * K * C;
      for (int64_t k = 0, blocks = block_count(C); k < blocks; k++) {
        const int64_t c0 = block_start(k, C);
        const int fresh = block_fresh(k, C);
        if (K == 3) {
          filter_row(xr, dyr, a, c0, fresh, first, end, from, lo, hi, to, dwr, 3);
        } else if (K == 5) {
          filter_row(xr, dyr, a, c0, fresh, first, end, from, lo, hi, to, dwr, 5);
        } else {
          filter_row(xr, dyr, a, c0, fresh, first, end, from, lo, hi, to, dwr, (int)K);
        }
      }
    }
  }
  free(ring.rows);
}

static void dw_forward_pass(const void* v, int64_t r0, int64_t r1, int p) {
  (void)p;
  dw_forward_rows(v, r0, r1);
}

static void dw_input_grad_pass(const void* v, int64_t r0, int64_t r1, int p) {
  (void)p;
  dw_input_grad_rows(v, r0, r1);
}

static void dw_filter_grad_pass(const void* v, int64_t r0, int64_t r1, int p) {
  const ConvArgs* a = v;
  dw_filter_grad_rows(a, r0, r1, a->dw_parts + (size_t)p * a->K * a->K * a->C);
}

/* A pass's parts: TensorFlow's threads are busy with other ops too, so by the work, not rows. */
static int conv_parts(const ConvArgs* a, int64_t positions, int64_t least) {
  return parts_for(positions * a->C * a->K * a->K / 4, least);
}

/* A tensor's four dimensions into `dims`; 0 with the status set when it has another rank. */
static int dims4(const TF_Tensor* t, int64_t* dims, TF_Status* s) {
  if (TF_NumDims(t) != 4) {
    TF_SetStatus(s, TF_INVALID_ARGUMENT,
                 "CxrDepthwiseConv: x must be [B, H, W, C] with C >= 8 and w [K, K, C, 1] with "
                 "K <= 32");
    return 0;
  }
  for (int i = 0; i < 4; i++) dims[i] = TF_Dim(t, i);
  return 1;
}

/*
 * The geometry from x's dimensions [B, H, W, C], w [K, K, C, 1] and the attributes; 0 with the
 * status set when the shapes do not fit together.
 */
static int conv_geometry(const int64_t* x, const TF_Tensor* w, const ConvAttrs* at, ConvArgs* a,
                         TF_Status* s) {
  int ok = TF_NumDims(w) == 4;
  if (ok) {
    a->B = x[0], a->H = x[1], a->W = x[2], a->C = x[3];
    a->K = TF_Dim(w, 0), a->s = at->stride, a->top = at->pads[0], a->left = at->pads[2];
    ok = TF_Dim(w, 1) == a->K && TF_Dim(w, 2) == a->C && TF_Dim(w, 3) == 1 && a->C >= 8 &&
         a->K >= 1 && a->K <= 32;
  }
  if (!ok) {
    TF_SetStatus(s, TF_INVALID_ARGUMENT,
                 "CxrDepthwiseConv: x must be [B, H, W, C] with C >= 8 and w [K, K, C, 1] with "
                 "K <= 32");
    return 0;
  }
  const int64_t rows = a->H + at->pads[0] + at->pads[1], cols = a->W + at->pads[2] + at->pads[3];
  if (rows < a->K || cols < a->K) {
    TF_SetStatus(s, TF_INVALID_ARGUMENT,
                 "CxrDepthwiseConv: the kernel is larger than the padded input");
    return 0;
  }
  a->OH = (rows - a->K) / a->s + 1;
  a->OW = (cols - a->K) / a->s + 1;
  const int64_t cache = at->cache_bytes > 0 ? at->cache_bytes : last_level_cache();
  a->by_position = a->B * a->H * a->W * a->C * (int64_t)sizeof(float) > cache;
  return 1;
}

/*
 * The affine of a BatchNorm whose output a depthwise op makes itself: scale then offset (2·C
 * floats, malloc'd) from its gamma, beta, mean and 1/std (in[first] to in[first + 3]); NULL with
 * the status set, naming `op`, when one of them does not have C values.
 */
static float* batch_norm_affine(TF_Tensor** in, int first, int64_t C, const char* op,
                                TF_Status* s) {
  for (int i = first; i < first + 4; i++) {
    if (TF_TensorElementCount(in[i]) != C) {
      char message[200];
      snprintf(message, sizeof message,
               "%s: gamma, beta, mean and inverse std need one value per channel (the last "
               "dimension of x)",
               op);
      TF_SetStatus(s, TF_INVALID_ARGUMENT, message);
      return NULL;
    }
  }
  float* affine = malloc(2 * C * sizeof(float));
  affine_from_stats(TF_TensorData(in[first]), TF_TensorData(in[first + 1]),
                    TF_TensorData(in[first + 2]), TF_TensorData(in[first + 3]), C, affine,
                    affine + C);
  return affine;
}

/*
 * CxrDepthwiseConv; CxrDepthwiseConvBiasAct (a third input, the bias, and an activation); and
 *   CxrDepthwiseConvOfBatchNorm(x, filter, gamma, beta, batch_mean, batch_inv_std) -> y
 * the convolution of CxrBatchNormAct's output for x (attribute activation: the BatchNorm's), what
 * CxrBatchNormActApply then CxrDepthwiseConv give, bit for bit, without writing that input out
 * and reading it back: each thread makes the input rows it needs (K at a time, in its cache).
 * Why: the expand layers' BatchNorm outputs, the step's largest tensors, are read by their
 * depthwise convolution alone (the backward pass makes them again where it needs them).
 */
static void depthwise_conv(void* kernel, TF_OpKernelContext* ctx) {
  const ConvAttrs* at = kernel;
  TF_Status* s = TF_NewStatus();
  TF_Tensor* in[6] = {0};
  TF_Tensor* out[1] = {0};
  ConvArgs a = {0};
  float* affine = NULL;
  const int n_in = TF_NumInputs(ctx);
  int64_t x_dims[4];
  if (!get_inputs(ctx, in, n_in, s) || !dims4(in[0], x_dims, s) ||
      !conv_geometry(x_dims, in[1], at, &a, s)) {
    goto done;
  }
  if (n_in == 3 && TF_TensorElementCount(in[2]) != a.C) {
    TF_SetStatus(s, TF_INVALID_ARGUMENT,
                 "CxrDepthwiseConvBiasAct: the bias needs one value per channel");
    goto done;
  }
  if (n_in == 6) {
    affine = batch_norm_affine(in, 2, a.C, "CxrDepthwiseConvOfBatchNorm", s);
    if (!affine) goto done;
    a.scale = affine, a.offset = affine + a.C;
  }
  a.bias = n_in == 3 ? TF_TensorData(in[2]) : NULL;
  a.act = at->activation;
  int64_t dims[4] = {a.B, a.OH, a.OW, a.C};
  int64_t n = a.B * a.OH * a.OW * a.C;
  out[0] = TF_AllocateOutput(ctx, 0, TF_FLOAT, dims, 4, n * sizeof(float), s);
  if (TF_GetCode(s) != TF_OK || n == 0) goto done;
  a.x = TF_TensorData(in[0]), a.w = TF_TensorData(in[1]), a.y = TF_TensorData(out[0]);
  const int64_t least = n_in == 3 ? MIN_ELEMENTS_PER_PART_PREDICTING : MIN_ELEMENTS_PER_PART;
  parallel_rows(dw_forward_pass, &a, a.B * a.OH, conv_parts(&a, a.B * a.OH * a.OW, least));
done:
  if (TF_GetCode(s) != TF_OK) TF_OpKernelContext_Failure(ctx, s);
  free(affine);
  delete_all(in, 6);
  delete_all(out, 1);
  TF_DeleteStatus(s);
}

/* dy's shape must be the convolution's output shape; else 0 with the status set. */
static int check_dy(const TF_Tensor* dy, const ConvArgs* a, TF_Status* s) {
  if (TF_NumDims(dy) != 4 || TF_Dim(dy, 0) != a->B || TF_Dim(dy, 1) != a->OH ||
      TF_Dim(dy, 2) != a->OW || TF_Dim(dy, 3) != a->C) {
    TF_SetStatus(s, TF_INVALID_ARGUMENT,
                 "CxrDepthwiseConv's gradient: dy's shape is not the convolution's output shape");
    return 0;
  }
  return 1;
}

/*
 * The two gradients are two ops so that TensorFlow can run them apart: the input's is on the
 * backward pass's chain (the next gradient waits for it) and needs only dy and the filter (the
 * input's size is an attribute, not the input: that is recomputed, and waiting for it would hold
 * the chain up); the filter's can run beside the chain, on the other core. Measured against one op
 * for both (whole training steps at 446 px, nine runs of ten steps each way, alternating
 * processes): batch 4 98.1 → 90.8 ms per image (medians), batch 1 109.8 → 105.0.
 *
 *   CxrDepthwiseConvInputGrad(dy, filter) -> dx [B, input_size[0], input_size[1], C]
 */
static void depthwise_conv_input_grad(void* kernel, TF_OpKernelContext* ctx) {
  const ConvAttrs* at = kernel;
  TF_Status* s = TF_NewStatus();
  TF_Tensor* in[2] = {0};
  TF_Tensor* out[1] = {0};
  ConvArgs a = {0};
  if (!get_inputs(ctx, in, 2, s)) goto done;
  if (TF_NumDims(in[0]) != 4) {
    TF_SetStatus(s, TF_INVALID_ARGUMENT, "CxrDepthwiseConvInputGrad: dy must be [B, OH, OW, C]");
    goto done;
  }
  int64_t x_dims[4] = {TF_Dim(in[0], 0), at->input_size[0], at->input_size[1], TF_Dim(in[0], 3)};
  if (!conv_geometry(x_dims, in[1], at, &a, s) || !check_dy(in[0], &a, s)) goto done;
  const int64_t n = a.B * a.H * a.W * a.C;
  out[0] = TF_AllocateOutput(ctx, 0, TF_FLOAT, x_dims, 4, n * sizeof(float), s);
  if (TF_GetCode(s) != TF_OK || n == 0) goto done;
  a.dy = TF_TensorData(in[0]), a.w = TF_TensorData(in[1]), a.dx = TF_TensorData(out[0]);
  parallel_rows(dw_input_grad_pass, &a, a.B * a.H,
                conv_parts(&a, a.B * a.H * a.W, MIN_ELEMENTS_PER_PART));
done:
  if (TF_GetCode(s) != TF_OK) TF_OpKernelContext_Failure(ctx, s);
  delete_all(in, 2);
  delete_all(out, 1);
  TF_DeleteStatus(s);
}

/*
 *   CxrDepthwiseConvFilterGrad(dy, x, filter) -> dfilter [K, K, C, 1] (the filter for its shape)
 *   CxrDepthwiseConvFilterGradOfBatchNorm(dy, x, filter, gamma, beta, batch_mean, batch_inv_std)
 *     -> dfilter, where the convolution's input was CxrBatchNormAct's output for x (attribute
 *     activation): what CxrBatchNormActApply and then CxrDepthwiseConvFilterGrad give, bit for
 *     bit, without writing that input out and reading it back. Each thread makes the input rows
 *     it needs as it goes (K rows at a time, in its cache). Why: the backward pass recomputed the
 *     expand layers' BatchNorm outputs (the step's largest tensors) for this gradient alone.
 */
static void depthwise_conv_filter_grad(void* kernel, TF_OpKernelContext* ctx) {
  const ConvAttrs* at = kernel;
  TF_Status* s = TF_NewStatus();
  TF_Tensor* in[7] = {0};
  TF_Tensor* out[1] = {0};
  ConvArgs a = {0};
  float* affine = NULL;
  const int n_in = TF_NumInputs(ctx);
  int64_t x_dims[4];
  if (!get_inputs(ctx, in, n_in, s) || !dims4(in[1], x_dims, s) ||
      !conv_geometry(x_dims, in[2], kernel, &a, s) || !check_dy(in[0], &a, s)) {
    goto done;
  }
  if (n_in == 7) {
    affine = batch_norm_affine(in, 3, a.C, "CxrDepthwiseConvFilterGradOfBatchNorm", s);
    if (!affine) goto done;
    a.scale = affine, a.offset = affine + a.C, a.act = at->activation;
  }
  out[0] = allocate_like(ctx, 0, in[2], s);
  if (TF_GetCode(s) != TF_OK) goto done;
  a.dy = TF_TensorData(in[0]), a.x = TF_TensorData(in[1]);
  float* dw = TF_TensorData(out[0]);
  const int64_t taps = a.K * a.K * a.C;
  const int parts = conv_parts(&a, a.B * a.OH * a.OW, MIN_ELEMENTS_PER_PART);
  a.dw_parts = calloc((size_t)parts * taps, sizeof(double));
  if (a.B * a.OH > 0) parallel_rows(dw_filter_grad_pass, &a, a.B * a.OH, parts);
  for (int64_t i = 0; i < taps; i++) {
    double sum = 0;
    for (int p = 0; p < parts; p++) sum += a.dw_parts[(size_t)p * taps + i];
    dw[i] = (float)sum;
  }
  free(a.dw_parts);
done:
  if (TF_GetCode(s) != TF_OK) TF_OpKernelContext_Failure(ctx, s);
  free(affine);
  delete_all(in, 7);
  delete_all(out, 1);
  TF_DeleteStatus(s);
}

/* Output 0 as [B, m, m, C] from input 0's [B, H, W, C], m a size or -1 (unknown). */
static void batch_channel_shapes(TF_ShapeInferenceContext* ctx, TF_Status* s, int64_t m) {
  TF_ShapeHandle *x = TF_NewShapeHandle(), *part = TF_NewShapeHandle();
  TF_ShapeHandle* out = TF_NewShapeHandle();
  TF_ShapeInferenceContextGetInput(ctx, 0, x, s);
  if (TF_GetCode(s) == TF_OK) TF_ShapeInferenceContextWithRank(ctx, x, 4, x, s);
  if (TF_GetCode(s) == TF_OK) {
    TF_ShapeHandle* one = TF_ShapeInferenceContextVectorFromSize(ctx, m);
    TF_ShapeHandle* two = TF_NewShapeHandle();
    TF_ShapeInferenceContextConcatenateShapes(ctx, one, one, two, s);
    TF_ShapeInferenceContextSubshape(ctx, x, 0, 1, part, s);
    if (TF_GetCode(s) == TF_OK) TF_ShapeInferenceContextConcatenateShapes(ctx, part, two, out, s);
    if (TF_GetCode(s) == TF_OK) TF_ShapeInferenceContextSubshape(ctx, x, 3, 4, part, s);
    if (TF_GetCode(s) == TF_OK) TF_ShapeInferenceContextConcatenateShapes(ctx, out, part, out, s);
    if (TF_GetCode(s) == TF_OK) TF_ShapeInferenceContextSetOutput(ctx, 0, out, s);
    TF_DeleteShapeHandle(one);
    TF_DeleteShapeHandle(two);
  }
  TF_DeleteShapeHandle(x);
  TF_DeleteShapeHandle(part);
  TF_DeleteShapeHandle(out);
}

/* [B, ?, ?, C]: the spatial size depends on attributes, which the C API's shape functions cannot
 * read; the kernel checks the rest. */
static void conv_shapes(TF_ShapeInferenceContext* ctx, TF_Status* s) {
  batch_channel_shapes(ctx, s, -1);
}

static void filter_grad_shapes(TF_ShapeInferenceContext* ctx, TF_Status* s) {
  static const int pairs[] = {0, 2};
  copy_shapes(ctx, s, pairs, 1);
}

static void forward_shapes(TF_ShapeInferenceContext* ctx, TF_Status* s) {
  static const int pairs[] = {0, 0, 1, 1, 2, 1, 3, 1, 4, 1};
  copy_shapes(ctx, s, pairs, 5);
}

static void moments_shapes(TF_ShapeInferenceContext* ctx, TF_Status* s) {
  static const int pairs[] = {0, 1, 1, 1, 2, 1, 3, 1};
  copy_shapes(ctx, s, pairs, 4);
}

static void apply_shapes(TF_ShapeInferenceContext* ctx, TF_Status* s) {
  static const int pairs[] = {0, 0};
  copy_shapes(ctx, s, pairs, 1);
}

static void grad_shapes(TF_ShapeInferenceContext* ctx, TF_Status* s) {
  static const int pairs[] = {0, 1, 1, 2, 2, 2};
  copy_shapes(ctx, s, pairs, 3);
}

/*
 * The sums over H and W of a · b per image and channel, squeeze-excite's gate gradient (a the
 * gradient of y = x · gate [B, 1, 1, C], b its input x). TensorFlow's gradient of the Mul was a
 * Mul (dy · x, a tensor as large as x written) then a Sum over H and W: here one pass, reading both.
 *   CxrChannelDot(a [B, H, W, C], b [B, H, W, C]) -> [B, 1, 1, C]
 * The products in float, as the Mul made them; their sums in double.
 */
typedef struct {
  const float *left, *right; /* a and b */
  double* sums; /* B · C per part */
  int64_t positions, C, B;
} ChannelArgs;

VECTOR_VERSIONS
static void channel_dot_rows(const ChannelArgs* a, int64_t r0, int64_t r1, double* sums) {
  const int64_t C = a->C;
  for (int64_t r = r0; r < r1; r++) {
    const float* restrict x = a->left + r * C;
    const float* restrict b = a->right + r * C;
    double* restrict s = sums + (r / a->positions) * C;
    for (int64_t c = 0; c < C; c++) {
      float product = x[c] * b[c];
      s[c] += product;
    }
  }
}

static void channel_dot_pass(const void* v, int64_t r0, int64_t r1, int p) {
  const ChannelArgs* a = v;
  channel_dot_rows(a, r0, r1, a->sums + (size_t)p * a->B * a->C);
}

/* a and b both [B, H, W, C]; else 0 with the status set. */
static int channel_shapes(const TF_Tensor* x, const TF_Tensor* other, ChannelArgs* a,
                          TF_Status* s) {
  int ok = TF_NumDims(x) == 4 && TF_NumDims(other) == 4;
  for (int i = 0; ok && i < 4; i++) ok = TF_Dim(other, i) == TF_Dim(x, i);
  if (!ok) {
    TF_SetStatus(s, TF_INVALID_ARGUMENT, "CxrChannelDot: a and b must be [B, H, W, C] both");
    return 0;
  }
  a->B = TF_Dim(x, 0), a->positions = TF_Dim(x, 1) * TF_Dim(x, 2), a->C = TF_Dim(x, 3);
  return 1;
}

static void channel_dot(void* kernel, TF_OpKernelContext* ctx) {
  (void)kernel;
  TF_Status* s = TF_NewStatus();
  TF_Tensor* in[2] = {0};
  TF_Tensor* out[1] = {0};
  ChannelArgs a = {0};
  if (!get_inputs(ctx, in, 2, s) || !channel_shapes(in[0], in[1], &a, s)) goto done;
  int64_t dims[4] = {a.B, 1, 1, a.C};
  out[0] = TF_AllocateOutput(ctx, 0, TF_FLOAT, dims, 4, a.B * a.C * sizeof(float), s);
  if (TF_GetCode(s) != TF_OK) goto done;
  const int64_t total = TF_TensorElementCount(in[0]), n = a.B * a.C;
  const int parts = parts_for(total, MIN_ELEMENTS_PER_PART);
  a.sums = calloc((size_t)parts * n + 1, sizeof(double));
  if (!a.sums) {
    TF_SetStatus(s, TF_RESOURCE_EXHAUSTED, "CxrChannelDot: out of memory");
    goto done;
  }
  a.left = TF_TensorData(in[0]), a.right = TF_TensorData(in[1]);
  if (total > 0) parallel_rows(channel_dot_pass, &a, a.B * a.positions, parts);
  float* y = TF_TensorData(out[0]);
  for (int64_t i = 0; i < n; i++) {
    double sum = 0;
    for (int p = 0; p < parts; p++) sum += a.sums[(size_t)p * n + i];
    y[i] = (float)sum;
  }
done:
  if (TF_GetCode(s) != TF_OK) TF_OpKernelContext_Failure(ctx, s);
  free(a.sums);
  delete_all(in, 2);
  delete_all(out, 1);
  TF_DeleteStatus(s);
}

/* [B, 1, 1, C] from a's [B, H, W, C]. */
static void channel_dot_shapes(TF_ShapeInferenceContext* ctx, TF_Status* s) {
  batch_channel_shapes(ctx, s, 1);
}

/*
 * The training augmentation (lib/data/augment.ts) for a batch: random horizontal flip, then the
 * colour-jitter steps in the order drawn. Why here: in JavaScript it takes ~10 ms an image at 446 px,
 * run before each step on the thread that then waits for the step (about a tenth of an epoch).
 *
 *   cxr_augment(pixels: uint8 [B, H, W, 3], params: double [B, 9], out: float [B, H, W, 3], B, H, W)
 *   params per image: flip (0 or 1), then four (step, factor) pairs, step 0 brightness, 1 contrast,
 *   2 saturation, 3 hue, -1 none (the pairs after the first -1 are not read).
 *
 * The same arithmetic as augment.ts, operation for operation: each value in double, rounded to
 * float when stored, as a Float32Array does; the same order of every sum. So the results are the
 * same bits (the tests compare them), and a run does not depend on which of the two ran.
 */
#define AUGMENT_PARAMS 9

static inline double clamp255(double v) { return v < 0 ? 0 : v > 255 ? 255 : v; }

/* ITU-R 601 luma, as augment.ts's `gray`. */
static inline double luma(double r, double g, double b) { return 0.299 * r + 0.587 * g + 0.114 * b; }

/* One hue-rotated channel: as augment.ts's `f(n)` (HSV back to RGB). */
static inline double hue_channel(double n, double h, double s, double v) {
  double k = fmod(n + h * 6, 6);
  double m = fmin(fmin(k, 4 - k), 1);
  return v - v * s * (m > 0 ? m : 0);
}

VECTOR_VERSIONS static void augment_image(const uint8_t* src, float* x, int64_t H, int64_t W,
                                           const double* p) {
  const int64_t n = H * W * 3;
  if (p[0] != 0) {
    for (int64_t y = 0; y < H; y++) {
      const uint8_t* row = src + y * W * 3;
      float* out = x + y * W * 3;
      for (int64_t c = 0; c < W; c++) {
        const int64_t d = (W - 1 - c) * 3;
        out[d] = row[c * 3];
        out[d + 1] = row[c * 3 + 1];
        out[d + 2] = row[c * 3 + 2];
      }
    }
  } else {
    for (int64_t i = 0; i < n; i++) x[i] = src[i];
  }
  for (int k = 0; k < 4; k++) {
    const int step = (int)p[1 + 2 * k];
    const double f = p[2 + 2 * k];
    if (step < 0) break;
    if (step == 0) {
      for (int64_t i = 0; i < n; i++) x[i] = (float)clamp255(x[i] * f);
    } else if (step == 1) {
      double sum = 0;
      for (int64_t i = 0; i < n; i += 3) sum += luma(x[i], x[i + 1], x[i + 2]);
      const double mean = sum / (double)(n / 3);
      for (int64_t i = 0; i < n; i++) x[i] = (float)clamp255(f * x[i] + (1 - f) * mean);
    } else if (step == 2) {
      for (int64_t i = 0; i < n; i += 3) {
        const double l = luma(x[i], x[i + 1], x[i + 2]);
        x[i] = (float)clamp255(f * x[i] + (1 - f) * l);
        x[i + 1] = (float)clamp255(f * x[i + 1] + (1 - f) * l);
        x[i + 2] = (float)clamp255(f * x[i + 2] + (1 - f) * l);
      }
    } else {
      for (int64_t i = 0; i < n; i += 3) {
        const double r = x[i], g = x[i + 1], b = x[i + 2];
        const double max = r >= g && r >= b ? r : g >= b ? g : b;
        const double min = r <= g && r <= b ? r : g <= b ? g : b;
        const double delta = max - min;
        if (delta == 0) continue;
        double h = max == r   ? fmod((g - b) / delta, 6)
                   : max == g ? (b - r) / delta + 2
                              : (r - g) / delta + 4;
        h = h / 6 + f;
        h -= floor(h);
        const double s = delta / max;
        x[i] = (float)hue_channel(5, h, s, max);
        x[i + 1] = (float)hue_channel(3, h, s, max);
        x[i + 2] = (float)hue_channel(1, h, s, max);
      }
    }
  }
}

typedef struct {
  const uint8_t* src;
  float* out;
  const double* params;
  int64_t H, W;
} AugmentArgs;

static void augment_pass(const void* v, int64_t r0, int64_t r1, int p) {
  (void)p;
  const AugmentArgs* a = v;
  const int64_t n = a->H * a->W * 3;
  for (int64_t b = r0; b < r1; b++) {
    augment_image(a->src + b * n, a->out + b * n, a->H, a->W, a->params + b * AUGMENT_PARAMS);
  }
}

/*
 * Not a TensorFlow op: called directly through Deno's FFI (lib/engine/augmenter.ts) on the JavaScript
 * arrays, so nothing is copied in or out and no session runs (a one-op session cost more than the
 * augmentation: ~1–2 ms an image of copies and allocations). B images of H x W.
 */
void cxr_augment(const uint8_t* pixels, const double* params, float* out, int64_t B, int64_t H,
                 int64_t W) {
  if (B <= 0 || H <= 0 || W <= 0) return;
  /* The worker threads take this thread's floating-point mode: JavaScript's (denormals kept). */
  AugmentArgs args = {pixels, out, params, H, W};
  parallel_rows(augment_pass, &args, B, parts_for(B, 1));
}

static const char* const batch_norm_attrs[] = {
    "epsilon: float = 0.001", "exponential_avg_factor: float = 1.0",
    "activation: {'identity', 'relu', 'hard_swish'} = 'identity'", NULL};
static const char* const conv_attrs[] = {"stride: int = 1", "paddings: list(int)",
                                         "cache_bytes: int = 0", NULL};
static const char* const conv_act_attrs[] = {
    "stride: int = 1", "paddings: list(int)", "cache_bytes: int = 0",
    "activation: {'identity', 'relu', 'hard_swish'} = 'identity'", NULL};

static void register_op(const char* name, const char* const* inputs, int n_in,
                        const char* const* outputs, int n_out, const char* const* attrs,
                        void (*shapes)(TF_ShapeInferenceContext*, TF_Status*),
                        void* (*create)(TF_OpKernelConstruction*),
                        void (*compute)(void*, TF_OpKernelContext*), TF_Status* s) {
  TF_OpDefinitionBuilder* b = TF_NewOpDefinitionBuilder(name);
  for (int i = 0; i < n_in; i++) TF_OpDefinitionBuilderAddInput(b, inputs[i]);
  for (int i = 0; i < n_out; i++) TF_OpDefinitionBuilderAddOutput(b, outputs[i]);
  for (int i = 0; attrs[i]; i++) TF_OpDefinitionBuilderAddAttr(b, attrs[i]);
  TF_OpDefinitionBuilderSetShapeInferenceFunction(b, shapes);
  TF_RegisterOpDefinition(b, s);
  if (TF_GetCode(s) != TF_OK) return;
  TF_KernelBuilder* k = TF_NewKernelBuilder(name, "CPU", create, compute, delete_kernel);
  TF_RegisterKernelBuilder(name, k, s);
}

/* Runs when TF_LoadLibrary opens this file: TensorFlow collects what is registered here. */
__attribute__((constructor)) static void register_kernels(void) {
  static const char* const fwd_in[] = {"x: float", "gamma: float", "beta: float",
                                       "moving_mean: float", "moving_variance: float"};
  static const char* const fwd_out[] = {"y: float", "new_moving_mean: float",
                                        "new_moving_variance: float", "batch_mean: float",
                                        "batch_inv_std: float"};
  static const char* const grad_in[] = {"dy: float", "x: float", "gamma: float", "beta: float",
                                        "batch_mean: float", "batch_inv_std: float"};
  static const char* const grad_out[] = {"dx: float", "dgamma: float", "dbeta: float"};
  static const char* const apply_in[] = {"x: float", "gamma: float", "beta: float",
                                         "batch_mean: float", "batch_inv_std: float"};
  static const char* const apply_out[] = {"y: float"};
  TF_Status* s = TF_NewStatus();
  register_op("CxrBatchNormAct", fwd_in, 5, fwd_out, 5, batch_norm_attrs, forward_shapes,
              create_kernel, batch_norm_act, s);
  if (TF_GetCode(s) == TF_OK) {
    static const char* const moments_in[] = {"x: float", "moving_mean: float",
                                             "moving_variance: float"};
    register_op("CxrBatchNormMoments", moments_in, 3, fwd_out + 1, 4, batch_norm_attrs,
                moments_shapes, create_kernel, batch_norm_act, s);
  }
  if (TF_GetCode(s) == TF_OK) {
    register_op("CxrBatchNormActGrad", grad_in, 6, grad_out, 3, batch_norm_attrs, grad_shapes,
                create_kernel, batch_norm_act_grad, s);
  }
  if (TF_GetCode(s) == TF_OK) {
    static const char* const scaled_in[] = {
        "dy: float",         "x: float",           "gamma: float", "beta: float",
        "batch_mean: float", "batch_inv_std: float", "gate: float", "pooled_grad: float"};
    register_op("CxrBatchNormActGradScaled", scaled_in, 8, grad_out, 3, batch_norm_attrs,
                grad_shapes, create_kernel, batch_norm_act_grad, s);
  }
  if (TF_GetCode(s) == TF_OK) {
    static const char* const hs_in[] = {"x: float"};
    static const char* const hs_out[] = {"y: float"};
    static const char* const no_attrs[] = {NULL};
    register_op("CxrHardSwish", hs_in, 1, hs_out, 1, no_attrs, apply_shapes, NULL, hard_swish, s);
  }
  if (TF_GetCode(s) == TF_OK) {
    static const char* const ss_in[] = {"x: float", "scale: float", "shift: float"};
    static const char* const ss_out[] = {"y: float"};
    static const char* const no_attrs[] = {NULL};
    register_op("CxrScaleShift", ss_in, 3, ss_out, 1, no_attrs, apply_shapes, NULL, scale_shift,
                s);
  }
  if (TF_GetCode(s) == TF_OK) {
    register_op("CxrBatchNormActApply", apply_in, 5, apply_out, 1, batch_norm_attrs,
                apply_shapes, create_kernel, batch_norm_act_apply, s);
  }
  if (TF_GetCode(s) == TF_OK) {
    static const char* const dw_in[] = {"x: float", "filter: float"};
    static const char* const dw_out[] = {"y: float"};
    register_op("CxrDepthwiseConv", dw_in, 2, dw_out, 1, conv_attrs, conv_shapes,
                create_conv_kernel, depthwise_conv, s);
  }
  if (TF_GetCode(s) == TF_OK) {
    static const char* const dwb_in[] = {"x: float",          "filter: float",
                                         "gamma: float",      "beta: float",
                                         "batch_mean: float", "batch_inv_std: float"};
    static const char* const dwb_out[] = {"y: float"};
    register_op("CxrDepthwiseConvOfBatchNorm", dwb_in, 6, dwb_out, 1, conv_act_attrs,
                conv_shapes, create_conv_act_kernel, depthwise_conv, s);
  }
  if (TF_GetCode(s) == TF_OK) {
    static const char* const dwa_in[] = {"x: float", "filter: float", "bias: float"};
    static const char* const dwa_out[] = {"y: float"};
    register_op("CxrDepthwiseConvBiasAct", dwa_in, 3, dwa_out, 1, conv_act_attrs, conv_shapes,
                create_conv_act_kernel, depthwise_conv, s);
  }
  if (TF_GetCode(s) == TF_OK) {
    static const char* const dwi_in[] = {"dy: float", "filter: float"};
    static const char* const dwi_out[] = {"dx: float"};
    static const char* const input_grad_attrs[] = {"stride: int = 1", "paddings: list(int)",
                                                   "cache_bytes: int = 0",
                                                   "input_size: list(int)", NULL};
    register_op("CxrDepthwiseConvInputGrad", dwi_in, 2, dwi_out, 1, input_grad_attrs,
                conv_shapes, create_conv_input_grad_kernel, depthwise_conv_input_grad, s);
  }
  if (TF_GetCode(s) == TF_OK) {
    static const char* const dwf_in[] = {"dy: float", "x: float", "filter: float"};
    static const char* const dwf_out[] = {"dfilter: float"};
    register_op("CxrDepthwiseConvFilterGrad", dwf_in, 3, dwf_out, 1, conv_attrs,
                filter_grad_shapes, create_conv_kernel, depthwise_conv_filter_grad, s);
  }
  if (TF_GetCode(s) == TF_OK) {
    static const char* const dwfb_in[] = {"dy: float",    "x: float",
                                          "filter: float", "gamma: float",
                                          "beta: float",  "batch_mean: float",
                                          "batch_inv_std: float"};
    static const char* const dwfb_out[] = {"dfilter: float"};
    register_op("CxrDepthwiseConvFilterGradOfBatchNorm", dwfb_in, 7, dwfb_out, 1,
                conv_act_attrs, filter_grad_shapes, create_conv_act_kernel,
                depthwise_conv_filter_grad, s);
  }
  if (TF_GetCode(s) == TF_OK) {
    static const char* const cd_in[] = {"a: float", "b: float"};
    static const char* const cd_out[] = {"sums: float"};
    static const char* const no_attrs[] = {NULL};
    register_op("CxrChannelDot", cd_in, 2, cd_out, 1, no_attrs, channel_dot_shapes, NULL,
                channel_dot, s);
  }
  TF_DeleteStatus(s);
}
