/*
 * Fused CPU kernels for MobileNetV3's training step, registered in TensorFlow through its C API
 * (tensorflow/c/ops.h and kernels.h), loaded with TF_LoadLibrary (lib/engine/kernels.ts).
 * Built by `deno task setup` (scripts/setup/kernels.ts) with the system's C compiler; no C++ and
 * no TensorFlow C++ headers, so nothing here depends on the wheel's C++ ABI.
 *
 * Why: a BatchNorm in training mode followed by its activation is, with TensorFlow's kernels,
 * FusedBatchNormV3 and then 1 (ReLU) or 4 (hard-swish: add, relu6, two muls) element-wise ops,
 * each a full pass over the activation, and as many again in the backward pass. They run at memory
 * speed (engine/profile.ts measured them at ~45 % of a 446 px step). Here the forward is two passes
 * (statistics; normalise and activate) and the backward two (the two channel sums; the input
 * gradient), and the only tensor kept for the backward pass is the BatchNorm's input.
 *
 * Ops (float32, channels last: the last dimension is the channel):
 *   CxrBatchNormAct(x, gamma, beta, moving_mean, moving_variance)
 *     -> y, new_moving_mean, new_moving_variance, batch_mean, batch_inv_std
 *   y = act(gamma * (x - mean) / sqrt(var + epsilon) + beta) with the batch's mean and (biased)
 *   variance; the moving averages blend in the batch's with weight exponential_avg_factor, the
 *   variance Bessel-corrected, as FusedBatchNormV3 does in training mode.
 *   CxrBatchNormActGrad(dy, x, gamma, beta, batch_mean, batch_inv_std) -> dx, dgamma, dbeta
 *   CxrBatchNormActApply(x, gamma, beta, batch_mean, batch_inv_std) -> y (as the forward op's y)
 *   CxrHardSwish(x) -> x * relu6(x + 3) / 6, in one pass (inference only: it has no gradient)
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <pthread.h>
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

/* Over rows [r0, r1): g = dy * act'(y), with y = x * scale + offset exactly as the forward pass
 * computed it (so a value the forward put on one side of a kink stays there); sums of g and of
 * g * xhat. Inlined once per activation (a constant `act`), so each loop vectorises without
 * branching on it. */
static inline __attribute__((always_inline)) void grad_sums_impl(
    const float* restrict dy, const float* restrict x, int64_t r0, int64_t r1, int64_t C,
    const float* restrict mean, const float* restrict inv, const float* restrict scale,
    const float* restrict offset, const int act, double* restrict sum_g,
    double* restrict sum_gx, float* restrict s, float* restrict q) {
  for (int64_t r = r0; r < r1; r += CHUNK) {
    int64_t end = r + CHUNK < r1 ? r + CHUNK : r1;
    memset(s, 0, C * sizeof *s);
    memset(q, 0, C * sizeof *q);
    for (int64_t i = r; i < end; i++) {
      const float* restrict xr = x + i * C;
      const float* restrict dr = dy + i * C;
      for (int64_t c = 0; c < C; c++) {
        float xhat = (xr[c] - mean[c]) * inv[c];
        float g = dr[c] * slope(xr[c] * scale[c] + offset[c], act);
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

VECTOR_VERSIONS static void grad_sums_rows(
    const float* restrict dy, const float* restrict x, int64_t r0, int64_t r1, int64_t C,
    const float* restrict mean, const float* restrict inv, const float* restrict scale,
    const float* restrict offset, int act, double* restrict sum_g, double* restrict sum_gx,
    float* restrict s, float* restrict q) {
  if (act == ACT_RELU) {
    grad_sums_impl(dy, x, r0, r1, C, mean, inv, scale, offset, ACT_RELU, sum_g, sum_gx, s, q);
  } else if (act == ACT_HARD_SWISH) {
    grad_sums_impl(dy, x, r0, r1, C, mean, inv, scale, offset, ACT_HARD_SWISH, sum_g, sum_gx, s,
                   q);
  } else {
    grad_sums_impl(dy, x, r0, r1, C, mean, inv, scale, offset, ACT_IDENTITY, sum_g, sum_gx, s,
                   q);
  }
}

/* dx = gamma * inv * (g - dbeta / M - xhat * dgamma / M) over rows [r0, r1). */
static inline __attribute__((always_inline)) void grad_input_impl(
    const float* restrict dy, const float* restrict x, float* restrict dx, int64_t r0, int64_t r1,
    int64_t C, const float* restrict mean, const float* restrict inv,
    const float* restrict scale, const float* restrict offset, const float* restrict mean_g,
    const float* restrict mean_gx, const int act) {
  for (int64_t i = r0; i < r1; i++) {
    const float* restrict xr = x + i * C;
    const float* restrict dr = dy + i * C;
    float* restrict out = dx + i * C;
    for (int64_t c = 0; c < C; c++) {
      float xhat = (xr[c] - mean[c]) * inv[c];
      float g = dr[c] * slope(xr[c] * scale[c] + offset[c], act);
      out[c] = scale[c] * (g - mean_g[c] - xhat * mean_gx[c]);
    }
  }
}

VECTOR_VERSIONS static void grad_input_rows(
    const float* restrict dy, const float* restrict x, float* restrict dx, int64_t r0, int64_t r1,
    int64_t C, const float* restrict mean, const float* restrict inv,
    const float* restrict scale, const float* restrict offset, const float* restrict mean_g,
    const float* restrict mean_gx, int act) {
  if (act == ACT_RELU) {
    grad_input_impl(dy, x, dx, r0, r1, C, mean, inv, scale, offset, mean_g, mean_gx, ACT_RELU);
  } else if (act == ACT_HARD_SWISH) {
    grad_input_impl(dy, x, dx, r0, r1, C, mean, inv, scale, offset, mean_g, mean_gx,
                    ACT_HARD_SWISH);
  } else {
    grad_input_impl(dy, x, dx, r0, r1, C, mean, inv, scale, offset, mean_g, mean_gx,
                    ACT_IDENTITY);
  }
}

/*
 * Fork-join over row ranges: the calling thread (one of TensorFlow's) takes the first range and a
 * thread started for the call takes each other one, then they are joined. No pool that waits
 * spinning between calls: an OpenMP team did, and took a core from the convolutions that ran next
 * (they were 50 % slower with OpenMP in the library, measured). Starting a thread costs some tens of
 * microseconds, so small tensors run on the calling thread alone.
 */
#define MAX_PARTS 8
#define MIN_ELEMENTS_PER_PART (64 * 1024)

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

/* How many parts to split `elements` values into on this machine. */
static int parts_for(int64_t elements) {
  static int cpus = 0;
  if (cpus == 0) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    cpus = n < 1 ? 1 : n > MAX_PARTS ? MAX_PARTS : (int)n;
  }
  int64_t by_size = elements / MIN_ELEMENTS_PER_PART;
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
                 a->totals + o, a->totals + o + a->C, a->work + o, a->work + o + a->C);
}

static void grad_input_pass(const void* v, int64_t r0, int64_t r1, int p) {
  (void)p;
  const PassArgs* a = v;
  grad_input_rows(a->dy, a->x, a->dx, r0, r1, a->C, a->mean, a->inv, a->scale, a->offset,
                  a->mean_g, a->mean_gx, a->act);
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

/* Output `index` of the context, float32, shaped like `like`; NULL with the status set else. */
static TF_Tensor* allocate_like(TF_OpKernelContext* ctx, int index, const TF_Tensor* like,
                                TF_Status* s) {
  int64_t dims[8];
  int nd = TF_NumDims(like);
  if (nd > 8) {
    TF_SetStatus(s, TF_INVALID_ARGUMENT, "cxr_kernels: tensors of rank above 8 are not supported");
    return NULL;
  }
  for (int i = 0; i < nd; i++) dims[i] = TF_Dim(like, i);
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

static void batch_norm_act(void* kernel, TF_OpKernelContext* ctx) {
  const Attrs* a = kernel;
  TF_Status* s = TF_NewStatus();
  TF_Tensor* in[5] = {0};
  TF_Tensor* out[5] = {0};
  if (!get_inputs(ctx, in, 5, s)) goto done;
  int64_t C = channels(in, 0, 1, 5, s,
                       "CxrBatchNormAct: gamma, beta and the moving averages need one value per "
                       "channel (the last dimension of x)");
  if (!C) goto done;
  int64_t total = TF_TensorElementCount(in[0]), rows = total / C;
  out[0] = allocate_like(ctx, 0, in[0], s);
  for (int i = 1; i < 5 && TF_GetCode(s) == TF_OK; i++) {
    out[i] = TF_AllocateOutput(ctx, i, TF_FLOAT, &C, 1, C * sizeof(float), s);
  }
  if (TF_GetCode(s) != TF_OK || rows == 0) goto done;

  const float* x = TF_TensorData(in[0]);
  const float *gamma = TF_TensorData(in[1]), *beta = TF_TensorData(in[2]);
  const float *mm = TF_TensorData(in[3]), *mv = TF_TensorData(in[4]);
  float* y = TF_TensorData(out[0]);
  float *new_mean = TF_TensorData(out[1]), *new_var = TF_TensorData(out[2]);
  float *mean = TF_TensorData(out[3]), *inv = TF_TensorData(out[4]);

  int threads = parts_for(total);
  double* totals = calloc((size_t)threads * 2 * C, sizeof(double));
  float* work = malloc((size_t)threads * 2 * C * sizeof(float));
  float* scale = malloc(2 * C * sizeof(float));
  float* offset = scale + C;
  /* Shifting by the first row keeps the single-pass variance from cancelling. */
  const float* shift = x;
  PassArgs pass = {.x = x, .y = y, .shift = shift, .scale = scale, .offset = offset,
                   .totals = totals, .work = work, .C = C, .act = a->activation};
  parallel_rows(moments_pass, &pass, rows, threads);
  for (int64_t c = 0; c < C; c++) {
    double sum = 0, sumsq = 0;
    for (int t = 0; t < threads; t++) {
      sum += totals[(size_t)t * 2 * C + c];
      sumsq += totals[(size_t)t * 2 * C + C + c];
    }
    double m = sum / rows, var = sumsq / rows - m * m;
    if (var < 0) var = 0;
    double unbiased = rows > 1 ? var * rows / (rows - 1) : var;
    mean[c] = (float)(shift[c] + m);
    inv[c] = (float)(1.0 / sqrt(var + a->epsilon));
    new_mean[c] = (float)((1.0 - a->avg_factor) * mm[c] + a->avg_factor * (shift[c] + m));
    new_var[c] = (float)((1.0 - a->avg_factor) * mv[c] + a->avg_factor * unbiased);
  }
  affine_from_stats(gamma, beta, mean, inv, C, scale, offset);
  parallel_rows(normalise_pass, &pass, rows, threads);
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
  parallel_rows(normalise_pass, &pass, rows, parts_for(total));
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

/* Hard-swish in one pass where TensorFlow's ops take four (add, relu6, two multiplies). */
static void hard_swish(void* kernel, TF_OpKernelContext* ctx) {
  (void)kernel;
  TF_Status* s = TF_NewStatus();
  TF_Tensor* in[1] = {0};
  TF_Tensor* out[1] = {0};
  if (!get_inputs(ctx, in, 1, s)) goto done;
  int64_t dims[8];
  int nd = TF_NumDims(in[0]);
  if (nd > 8) {
    TF_SetStatus(s, TF_INVALID_ARGUMENT, "cxr_kernels: tensors of rank above 8 are not supported");
    goto done;
  }
  for (int i = 0; i < nd; i++) dims[i] = TF_Dim(in[0], i);
  int64_t total = TF_TensorElementCount(in[0]);
  int candidate = 0, forwarded = -1;
  /* Write over the input when nothing else reads it (saves a buffer the size of the tensor). */
  out[0] = TF_ForwardInputOrAllocateOutput(ctx, &candidate, 1, 0, dims, nd, &forwarded, s);
  if (TF_GetCode(s) != TF_OK || total == 0) goto done;
  PassArgs pass = {.x = TF_TensorData(in[0]), .y = TF_TensorData(out[0])};
  parallel_rows(hard_swish_pass, &pass, total, parts_for(total));
done:
  if (TF_GetCode(s) != TF_OK) TF_OpKernelContext_Failure(ctx, s);
  delete_all(in, 1);
  delete_all(out, 1);
  TF_DeleteStatus(s);
}

static void batch_norm_act_grad(void* kernel, TF_OpKernelContext* ctx) {
  const Attrs* a = kernel;
  TF_Status* s = TF_NewStatus();
  TF_Tensor* in[6] = {0};
  TF_Tensor* out[3] = {0};
  if (!get_inputs(ctx, in, 6, s)) goto done;
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

  int threads = parts_for(total);
  double* totals = calloc((size_t)threads * 2 * C, sizeof(double));
  float* work = malloc((size_t)threads * 2 * C * sizeof(float));
  float* scale = malloc(4 * C * sizeof(float));
  float *offset = scale + C, *mean_g = scale + 2 * C, *mean_gx = scale + 3 * C;
  affine_from_stats(gamma, beta, mean, inv, C, scale, offset);
  PassArgs pass = {.x = x, .dy = dy, .dx = dx, .mean = mean, .inv = inv, .scale = scale,
                   .offset = offset, .mean_g = mean_g, .mean_gx = mean_gx, .totals = totals,
                   .work = work, .C = C, .act = a->activation};
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
  delete_all(in, 6);
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

static void forward_shapes(TF_ShapeInferenceContext* ctx, TF_Status* s) {
  static const int pairs[] = {0, 0, 1, 1, 2, 1, 3, 1, 4, 1};
  copy_shapes(ctx, s, pairs, 5);
}

static void apply_shapes(TF_ShapeInferenceContext* ctx, TF_Status* s) {
  static const int pairs[] = {0, 0};
  copy_shapes(ctx, s, pairs, 1);
}

static void grad_shapes(TF_ShapeInferenceContext* ctx, TF_Status* s) {
  static const int pairs[] = {0, 1, 1, 2, 2, 2};
  copy_shapes(ctx, s, pairs, 3);
}

static void add_attrs(TF_OpDefinitionBuilder* b) {
  TF_OpDefinitionBuilderAddAttr(b, "epsilon: float = 0.001");
  TF_OpDefinitionBuilderAddAttr(b, "exponential_avg_factor: float = 1.0");
  TF_OpDefinitionBuilderAddAttr(b, "activation: {'identity', 'relu', 'hard_swish'} = 'identity'");
}

static void register_op(const char* name, const char* const* inputs, int n_in,
                        const char* const* outputs, int n_out,
                        void (*shapes)(TF_ShapeInferenceContext*, TF_Status*),
                        void (*compute)(void*, TF_OpKernelContext*), TF_Status* s) {
  TF_OpDefinitionBuilder* b = TF_NewOpDefinitionBuilder(name);
  for (int i = 0; i < n_in; i++) TF_OpDefinitionBuilderAddInput(b, inputs[i]);
  for (int i = 0; i < n_out; i++) TF_OpDefinitionBuilderAddOutput(b, outputs[i]);
  add_attrs(b);
  TF_OpDefinitionBuilderSetShapeInferenceFunction(b, shapes);
  TF_RegisterOpDefinition(b, s);
  if (TF_GetCode(s) != TF_OK) return;
  TF_KernelBuilder* k = TF_NewKernelBuilder(name, "CPU", create_kernel, compute, delete_kernel);
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
  register_op("CxrBatchNormAct", fwd_in, 5, fwd_out, 5, forward_shapes, batch_norm_act, s);
  if (TF_GetCode(s) == TF_OK) {
    register_op("CxrBatchNormActGrad", grad_in, 6, grad_out, 3, grad_shapes,
                batch_norm_act_grad, s);
  }
  if (TF_GetCode(s) == TF_OK) {
    static const char* const hs_in[] = {"x: float"};
    static const char* const hs_out[] = {"y: float"};
    register_op("CxrHardSwish", hs_in, 1, hs_out, 1, apply_shapes, hard_swish, s);
  }
  if (TF_GetCode(s) == TF_OK) {
    register_op("CxrBatchNormActApply", apply_in, 5, apply_out, 1, apply_shapes,
                batch_norm_act_apply, s);
  }
  TF_DeleteStatus(s);
}
