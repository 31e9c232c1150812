/**
 * MobileNetV3-Large as a TF.js layers model, layer for layer the structure of Keras's
 * `keras.applications.MobileNetV3Large(alpha=1.0, minimalistic=False)` (Keras 3.15,
 * `keras/src/applications/mobilenet_v3.py`), so Keras's weight files load by order and shape;
 * torchvision's `mobilenet_v3_large` has the same tensors (lib/model/torchvision.ts maps them).
 *
 * The two reference implementations compute slightly different functions with the same weights,
 * so the model is built in one of two conventions, chosen by where its weights come from:
 * - "torchvision" (the paper's): every convolution pads (k − 1) / 2 on all four sides, also with
 *   stride 2; random initialisation as torchvision's (Kaiming normal, fan out; N(0, 0.01) for the
 *   1280-unit layer); inputs normalised with ImageNet mean/std.
 * - "keras": stride-2 layers pad asymmetrically (TensorFlow's "same": one pixel more at the
 *   bottom and right), so on an even-sized input the two sample the image one pixel apart; Glorot
 *   uniform initialisation; inputs scaled to [−1, 1].
 *
 * Built when called, never at import.
 */
import { tf } from "../backend.ts";
import { MODEL_DEFAULTS } from "../config.ts";
import { BatchNorm, HardSigmoid, HardSwish, Normalize, SeededDropout } from "./layers.ts";
import type { NormalizationSpec } from "./normalization.ts";

/** One inverted-residual block of MobileNetV3-Large (Howard et al. 2019, Table 1). */
export interface BlockSpec {
  expansion: number;
  filters: number;
  kernel: 3 | 5;
  stride: 1 | 2;
  squeezeExcite: boolean;
  activation: "relu" | "hard_swish";
}

/**
 * The 15 blocks, as in Keras's `MobileNetV3Large.stack_fn` (block ids 0..14) and torchvision's
 * `_mobilenet_v3_conf` ("mobilenet_v3_large"): Howard et al. 2019, Table 1.
 */
export const LARGE_BLOCKS: readonly BlockSpec[] = Object.freeze(
  // expansion, filters, kernel, stride, squeeze-excite, activation
  ([
    [1, 16, 3, 1, false, "relu"],
    [4, 24, 3, 2, false, "relu"],
    [3, 24, 3, 1, false, "relu"],
    [3, 40, 5, 2, true, "relu"],
    [3, 40, 5, 1, true, "relu"],
    [3, 40, 5, 1, true, "relu"],
    [6, 80, 3, 2, false, "hard_swish"],
    [2.5, 80, 3, 1, false, "hard_swish"],
    [2.3, 80, 3, 1, false, "hard_swish"],
    [2.3, 80, 3, 1, false, "hard_swish"],
    [6, 112, 3, 1, true, "hard_swish"],
    [6, 112, 3, 1, true, "hard_swish"],
    [6, 160, 5, 2, true, "hard_swish"],
    [6, 160, 5, 1, true, "hard_swish"],
    [6, 160, 5, 1, true, "hard_swish"],
  ] as const).map(([expansion, filters, kernel, stride, squeezeExcite, activation]) => ({
    expansion,
    filters,
    kernel,
    stride,
    squeezeExcite,
    activation,
  })),
);

/** Keras's `_depth`: round channels to a multiple of 8, never more than 10 % down. */
export function makeDivisible(v: number, divisor = 8): number {
  let rounded = Math.max(divisor, Math.floor((v + divisor / 2) / divisor) * divisor);
  if (rounded < 0.9 * v) rounded += divisor;
  return rounded;
}

/** Keras's BatchNormalization settings for MobileNetV3. */
const BN_EPSILON = 1e-3;
const LAST_POINT_CHANNELS = 1280;
const SE_RATIO = 0.25;

/** Which reference implementation the model follows (see the header). */
export type Convention = "keras" | "torchvision";
export const CONVENTIONS: readonly Convention[] = ["torchvision", "keras"];

export interface BuildModelOptions {
  /** Square input size in pixels (224 for ImageNet, 446 in the paper). */
  imageSize: number;
  /** Output classes (1000 for ImageNet, 3 in the paper). */
  numClasses: number;
  /** Input normalisation the weights expect (see weights.ts). */
  normalization: NormalizationSpec;
  /** Dropout before the classifier (default {@link MODEL_DEFAULTS}: 0.2). */
  dropout?: number;
  /**
   * BatchNormalization momentum of the moving statistics, in Keras's terms (default
   * {@link MODEL_DEFAULTS}: 0.99, torchvision's 0.01; Keras's own MobileNetV3 uses 0.999).
   */
  batchNormMomentum?: number;
  /** Seed for every random initialiser (a model built twice with one seed is identical). */
  seed?: number;
  /**
   * Padding and initialisation of Keras's implementation or torchvision's: no default, since it
   * goes with the weights and their normalisation (lib/model/build.ts chooses it from them).
   */
  convention: Convention;
}

/** Layer names of the parts the rest of the code refers to. */
export const LAYER = Object.freeze({
  input: "input",
  normalize: "normalize",
  lastConv: "conv_1", // 960 channels: the last convolutional stage, used by Grad-CAM
  lastConvActivation: "conv_1_hard_swish",
  features: "conv_2", // the 1280-unit layer (Keras: a 1x1 conv on the pooled features)
  dropout: "dropout",
  logits: "logits",
});

/**
 * Build MobileNetV3-Large. The top follows Keras: global average pooling, a 1280-unit layer
 * (Keras's 1x1 `conv_2`, here a dense layer on the pooled vector: same weights, same maths),
 * hard-swish, dropout, and the classifier `logits` (no softmax: logits out).
 *
 * @returns a `tf.LayersModel` mapping [B, S, S, 3] float32 RGB in 0..255 to [B, numClasses] logits.
 */
export function buildMobileNetV3Large(opts: BuildModelOptions): tf.LayersModel {
  const momentum = opts.batchNormMomentum ?? MODEL_DEFAULTS.batchNormMomentum;
  const torch = opts.convention === "torchvision";
  let seed = opts.seed ?? 0;
  const nextSeed = () => (seed = (seed * 1103515245 + 12345) % 2147483648);
  // torchvision: kaiming_normal_(mode="fan_out"), fan out = output channels × kernel area
  // (for a depthwise kernel [C, 1, k, k]: C·k²). Keras: Glorot uniform.
  const convInit = (fanOut: number) =>
    torch
      ? tf.initializers.randomNormal({ mean: 0, stddev: Math.sqrt(2 / fanOut), seed: nextSeed() })
      : tf.initializers.glorotUniform({ seed: nextSeed() });
  // Zero padding of a stride-2 layer before its "valid" convolution: torchvision's (k − 1) / 2
  // on every side, or Keras's correct_pad for inputs of unknown size (MobileNetV3's default
  // input_shape is (None, None, 3)): (k//2 − 1, k//2), whatever the actual size.
  const stridePad = (x: tf.SymbolicTensor, kernel: number, name: string) => {
    const after = torch ? (kernel - 1) / 2 : Math.floor(kernel / 2);
    const before = torch ? after : after - 1;
    return tf.layers.zeroPadding2d({ padding: [[before, after], [before, after]], name })
      .apply(x) as tf.SymbolicTensor;
  };

  const conv = (x: tf.SymbolicTensor, filters: number, kernel: number, name: string, opt: {
    stride?: number;
    bias?: boolean;
    padding?: "same" | "valid";
  } = {}) =>
    tf.layers.conv2d({
      filters,
      kernelSize: kernel,
      strides: opt.stride ?? 1,
      padding: opt.padding ?? "same",
      useBias: opt.bias ?? false,
      kernelInitializer: convInit(filters * kernel * kernel),
      name,
    }).apply(x) as tf.SymbolicTensor;
  const bn = (x: tf.SymbolicTensor, name: string) =>
    new BatchNorm({ epsilon: BN_EPSILON, momentum, name }).apply(x) as tf.SymbolicTensor;
  const act = (x: tf.SymbolicTensor, kind: BlockSpec["activation"], name: string) =>
    (kind === "relu"
      ? tf.layers.reLU({ name: `${name}_relu` })
      : new HardSwish({ name: `${name}_hard_swish` })).apply(x) as tf.SymbolicTensor;

  const input = tf.input({ shape: [opts.imageSize, opts.imageSize, 3], name: LAYER.input });
  let x = new Normalize({ ...opts.normalization, name: LAYER.normalize }).apply(
    input,
  ) as tf.SymbolicTensor;

  // Stem: 3x3 stride-2 conv, 16 channels ("same" padding in Keras, (k − 1) / 2 in torchvision).
  x = torch
    ? conv(stridePad(x, 3, "conv_pad"), 16, 3, "conv", { stride: 2, padding: "valid" })
    : conv(x, 16, 3, "conv", { stride: 2 });
  x = bn(x, "conv_bn");
  x = act(x, "hard_swish", "conv");

  LARGE_BLOCKS.forEach((block, id) => {
    x = invertedResidual(x, block, id);
  });

  // Last stage: 1x1 conv to 6 x 160 = 960 channels.
  const lastConvChannels = makeDivisible(160 * 6);
  x = conv(x, lastConvChannels, 1, LAYER.lastConv);
  x = bn(x, "conv_1_bn");
  x = act(x, "hard_swish", "conv_1");

  // Top.
  x = tf.layers.globalAveragePooling2d({ name: "avg_pool" }).apply(x) as tf.SymbolicTensor;
  x = tf.layers.dense({
    units: LAST_POINT_CHANNELS,
    useBias: true,
    kernelInitializer: torch
      ? tf.initializers.randomNormal({ mean: 0, stddev: 0.01, seed: nextSeed() })
      : convInit(LAST_POINT_CHANNELS),
    name: LAYER.features,
  }).apply(x) as tf.SymbolicTensor;
  x = act(x, "hard_swish", "conv_2");
  x = new SeededDropout({
    rate: opts.dropout ?? MODEL_DEFAULTS.dropout,
    seed: nextSeed(),
    name: LAYER.dropout,
  })
    .apply(x) as tf.SymbolicTensor;
  // A new classifier starts as PyTorch's nn.Linear does (the paper replaced torchvision's last
  // Linear): U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and bias.
  const bound = 1 / Math.sqrt(LAST_POINT_CHANNELS);
  const logits = tf.layers.dense({
    units: opts.numClasses,
    kernelInitializer: tf.initializers.randomUniform({
      minval: -bound,
      maxval: bound,
      seed: nextSeed(),
    }),
    biasInitializer: tf.initializers.randomUniform({
      minval: -bound,
      maxval: bound,
      seed: nextSeed(),
    }),
    name: LAYER.logits,
  }).apply(x) as tf.SymbolicTensor;

  return tf.model({ inputs: input, outputs: logits, name: "MobileNetV3Large" });

  function invertedResidual(input: tf.SymbolicTensor, b: BlockSpec, id: number): tf.SymbolicTensor {
    const inChannels = input.shape[3] as number;
    const prefix = id === 0 ? "expanded_conv_" : `expanded_conv_${id}_`;
    const expanded = makeDivisible(inChannels * b.expansion);
    let y = input;
    if (id > 0) {
      y = conv(y, expanded, 1, `${prefix}expand`);
      y = bn(y, `${prefix}expand_bn`);
      y = act(y, b.activation, `${prefix}expand`);
    }
    if (b.stride === 2) y = stridePad(y, b.kernel, `${prefix}depthwise_pad`);
    y = tf.layers.depthwiseConv2d({
      kernelSize: b.kernel,
      strides: b.stride,
      padding: b.stride === 1 ? "same" : "valid",
      useBias: false,
      depthwiseInitializer: convInit(expanded * b.kernel * b.kernel),
      name: `${prefix}depthwise`,
    }).apply(y) as tf.SymbolicTensor;
    y = bn(y, `${prefix}depthwise_bn`);
    y = act(y, b.activation, `${prefix}depthwise`);
    if (b.squeezeExcite) y = squeezeExcite(y, expanded, prefix);
    y = conv(y, b.filters, 1, `${prefix}project`);
    y = bn(y, `${prefix}project_bn`);
    if (b.stride === 1 && inChannels === b.filters) {
      y = tf.layers.add({ name: `${prefix}add` }).apply([input, y]) as tf.SymbolicTensor;
    }
    return y;
  }

  function squeezeExcite(input: tf.SymbolicTensor, filters: number, prefix: string) {
    let s = tf.layers.globalAveragePooling2d({ name: `${prefix}squeeze_excite_avg_pool` })
      .apply(input) as tf.SymbolicTensor;
    s = tf.layers.reshape({ targetShape: [1, 1, filters], name: `${prefix}squeeze_excite_reshape` })
      .apply(s) as tf.SymbolicTensor;
    s = conv(s, makeDivisible(filters * SE_RATIO), 1, `${prefix}squeeze_excite_conv`, {
      bias: true,
    });
    s = tf.layers.reLU({ name: `${prefix}squeeze_excite_relu` }).apply(s) as tf.SymbolicTensor;
    s = conv(s, filters, 1, `${prefix}squeeze_excite_conv_1`, { bias: true });
    s = new HardSigmoid({ name: `${prefix}squeeze_excite_hard_sigmoid` }).apply(
      s,
    ) as tf.SymbolicTensor;
    return tf.layers.multiply({ name: `${prefix}squeeze_excite_mul` }).apply([
      input,
      s,
    ]) as tf.SymbolicTensor;
  }
}

/** The convention a model was built in: torchvision's pads its stem (layer "conv_pad"). */
export function conventionOf(model: tf.LayersModel): Convention {
  return model.layers.some((l) => l.name === "conv_pad") ? "torchvision" : "keras";
}

/** The dropout layer, whose `step` the training loop sets (see SeededDropout). */
export function dropoutLayers(model: tf.LayersModel): SeededDropout[] {
  return model.layers.filter((l): l is SeededDropout => l instanceof SeededDropout);
}
