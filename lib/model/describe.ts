/** The model described for readers: the architecture block by block, the head and its origin. */
import { tf } from "../backend.ts";
import { type Table, table } from "../tables.ts";
import { HardSwish } from "./layers.ts";
import { LARGE_BLOCKS, LAYER } from "./mobilenet_v3.ts";

/** One row of the architecture table (computed from a built model, not typed in). */
export interface ArchitectureRow {
  stage: string;
  kernel: string;
  expansion: string;
  squeezeExcite: string;
  activation: string;
  stride: number;
  outputShape: string;
  parameters: number;
}

/**
 * The model block by block: the stem, the 15 inverted-residual blocks, the last conv and the top.
 * Everything is read off the layers (kernel sizes, strides, channels, parameter counts).
 */
export function describeArchitecture(model: tf.LayersModel): ArchitectureRow[] {
  const layers = model.layers;
  const params = (ls: tf.layers.Layer[]) => ls.reduce((s, l) => s + l.countParams(), 0);
  const shape = (l: tf.layers.Layer) => JSON.stringify((l.outputShape as number[]).slice(1));
  const activationOf = (ls: tf.layers.Layer[]) =>
    ls.some((l) => l instanceof HardSwish)
      ? "hard-swish"
      : ls.some((l) => l.getClassName() === "ReLU")
      ? "ReLU"
      : "—";
  const rows: ArchitectureRow[] = [];
  const stem = layers.filter((l) => /^conv(_bn|_hard_swish)?$/.test(l.name));
  const stemConv = model.getLayer("conv") as unknown as { kernelSize: number[]; strides: number[] };
  rows.push({
    stage: "stem conv",
    kernel: `${stemConv.kernelSize.join("×")}`,
    expansion: "—",
    squeezeExcite: "—",
    activation: activationOf(stem),
    stride: stemConv.strides[0],
    outputShape: shape(stem.at(-1)!),
    parameters: params(stem),
  });
  for (let id = 0; id < LARGE_BLOCKS.length; id++) {
    const prefix = id === 0 ? "expanded_conv_" : `expanded_conv_${id}_`;
    // Block 0's prefix is a prefix of every other block's: require a letter after it.
    const block = layers.filter((l) => new RegExp(`^${prefix}[a-z]`).test(l.name));
    const depthwise = model.getLayer(`${prefix}depthwise`) as unknown as {
      kernelSize: number[];
      strides: number[];
      input: tf.SymbolicTensor;
    };
    const inChannels = (block[0].input as tf.SymbolicTensor).shape[3] as number;
    const expandedChannels = depthwise.input.shape[3] as number;
    rows.push({
      stage: `block ${id + 1}`,
      kernel: `${depthwise.kernelSize.join("×")} dw`,
      expansion: `×${+(expandedChannels / inChannels).toFixed(
        1,
      )} (${inChannels} → ${expandedChannels})`,
      squeezeExcite: block.some((l) => l.name.includes("squeeze_excite")) ? "yes" : "—",
      activation: activationOf(block),
      stride: depthwise.strides[0],
      outputShape: shape(block.at(-1)!),
      parameters: params(block),
    });
  }
  const last = layers.filter((l) => l.name.startsWith("conv_1"));
  rows.push({
    stage: "last conv",
    kernel: "1×1",
    expansion: "—",
    squeezeExcite: "—",
    activation: activationOf(last),
    stride: 1,
    outputShape: shape(last.at(-1)!),
    parameters: params(last),
  });
  const top = layers.slice(layers.indexOf(last.at(-1)!) + 1);
  rows.push({
    stage: "top (pool, 1280, classifier)",
    kernel: "—",
    expansion: "—",
    squeezeExcite: "—",
    activation: activationOf(top),
    stride: 1,
    outputShape: shape(top.at(-1)!),
    parameters: params(top),
  });
  return rows;
}

/** The top of the model, layer by layer, and where each layer's weights come from. */
export function describeHead(
  model: tf.LayersModel,
  opts: { pretrained: boolean; classifierLoaded: boolean },
): Table {
  const layers = model.layers;
  const start = layers.findIndex((l) => l.name === "avg_pool");
  return table(
    layers.slice(start).map((l) => ({
      layer: l.name,
      type: l.getClassName(),
      output: JSON.stringify((l.outputShape as number[]).slice(1)),
      parameters: l.countParams(),
      weights: l.countParams() === 0
        ? "—"
        : l.name === LAYER.logits && !opts.classifierLoaded
        ? "new (random, PyTorch nn.Linear init)"
        : opts.pretrained
        ? "pretrained"
        : "random",
    })),
  );
}

/** {@link describeArchitecture} as a table with readable column names. */
export function architectureTable(model: tf.LayersModel): Table {
  return table(
    describeArchitecture(model).map((r) => ({
      stage: r.stage,
      kernel: r.kernel,
      expansion: r.expansion,
      "squeeze-excite": r.squeezeExcite,
      activation: r.activation,
      stride: r.stride,
      "output shape": r.outputShape,
      parameters: r.parameters,
    })),
  );
}
