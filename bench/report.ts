/**
 * The bench's results as tables: one row per figure with every configuration and TF.js's ratio to
 * the fastest PyTorch configuration; and profile.md, where a training step's time goes and the
 * floors this CPU sets (its peak arithmetic rate, the measured memory bandwidth).
 */
import { type ProfileRow, table } from "../lib/mod.ts";

/** One figure's measurement of one configuration. */
export interface Measurement {
  /** "tfjs", "tfjs+<option>" or "pytorch-<peer>". */
  framework: string;
  mode: string;
  size: number;
  batch?: number;
  msPerImage?: number[];
  seconds?: number;
  images?: number;
  peakRssMB: number;
  /** TensorFlow's thread pools in the worker (0: TensorFlow's default, one thread per core). */
  threadPools?: { intraOp: number; interOp: number };
  failed?: string;
}

const median = (v: number[]) => {
  const s = [...v].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const fmt = (v: number[]) =>
  v.length
    ? `${Math.min(...v).toFixed(0)} / ${median(v).toFixed(0)} / ${Math.max(...v).toFixed(0)}`
    : "—";

/** The label of a configuration in tables. */
function label(framework: string): string {
  if (framework === "tfjs") return "TF.js";
  if (framework.startsWith("tfjs+")) return `TF.js ${framework.slice(5)}`;
  return `PyTorch ${framework.replace("pytorch-", "")}`;
}

/** One row per figure, one column per configuration; TF.js against the fastest PyTorch. */
export function resultsTable(results: Measurement[], configurations: string[]) {
  const keyOf = (m: Measurement) => `${m.mode}|${m.size}|${m.batch ?? ""}`;
  const central = (m?: Measurement) =>
    !m || m.failed ? NaN : m.msPerImage ? median(m.msPerImage) : m.seconds!;
  const value = (m?: Measurement) =>
    !m
      ? "—"
      : m.failed
      ? `failed: ${m.failed}`
      : m.msPerImage
      ? fmt(m.msPerImage)
      : `${m.seconds!.toFixed(1)} s`;
  const rows = [];
  for (const key of [...new Set(results.map(keyOf))]) {
    const of = (f: string) => results.find((m) => m.framework === f && keyOf(m) === key);
    const [mode, size, batch] = key.split("|");
    const t = of("tfjs");
    const torch = configurations.filter((c) => c.startsWith("pytorch")).map(of)
      .filter((m) => m && !m.failed) as Measurement[];
    const fastest = torch.sort((a, b) => central(a) - central(b))[0];
    const ratio = central(t) / central(fastest);
    rows.push({
      figure: mode === "train" || mode === "infer"
        ? `${mode} ms/image, ${size} px, batch ${batch}`
        : mode === "decode"
        ? `cold decode+resize of ${t?.images ?? "all"} images, ${size} px`
        : mode === "batches"
        ? `warm cached epoch of batches (augmented), ${size} px`
        : `one epoch (train + validation), ${size} px, batch ${batch}`,
      ...Object.fromEntries(configurations.map((c) => [label(c), value(of(c))])),
      "fastest PyTorch": fastest ? label(fastest.framework) : "—",
      "ratio TF.js / fastest": Number.isFinite(ratio) ? ratio.toFixed(2) : "—",
      "peak RSS MB TF.js / fastest": `${t && !t.failed ? t.peakRssMB : "—"} / ${
        fastest ? fastest.peakRssMB : "—"
      }`,
    });
  }
  return table(rows);
}

/** The CPU's peak float32 rate: cores × clock × FMA lanes × 2 pipes × 2 (multiply and add). */
function cpuPeak(): { gflops: number; text: string } {
  const info = Deno.readTextFileSync("/proc/cpuinfo");
  const model = /model name\s*:\s*(.*)/.exec(info)?.[1] ?? "unknown CPU";
  const mhz = Number(/cpu MHz\s*:\s*([\d.]+)/.exec(info)?.[1] ?? 2000);
  const flags = /flags\s*:\s*(.*)/.exec(info)?.[1].split(" ") ?? [];
  const cores = navigator.hardwareConcurrency;
  const lanes = flags.includes("avx512f") ? 16 : flags.includes("avx2") ? 8 : 4;
  const gflops = cores * (mhz / 1000) * lanes * 2 * 2;
  const notable = ["avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8"]
    .map((f) => `${f} ${flags.includes(f) ? "yes" : "no"}`).join(", ");
  return {
    gflops,
    text: `${model}, ${cores} cores at ${(mhz / 1000).toFixed(2)} GHz; ${notable}. Peak float32: ` +
      `${cores} × ${(mhz / 1000).toFixed(2)} GHz × ${lanes} lanes × 2 FMA pipes × 2 = ` +
      `${gflops.toFixed(0)} GFLOP/s (assuming two FMA pipes per core).`,
  };
}

export interface ProfileMeasurement {
  batch: number;
  size: number;
  msPerStep: number[];
  kinds: ProfileRow[];
  top: { op: string; ms: number; calls: number }[];
  cost: { macs: { pointwise: number; depthwise: number; dense: number }; activations: number };
  bandwidthGBs: number;
  /** Which kernels the profiled step ran (fused or standard) (lib/engine/kernels.ts). */
  kernels?: { kind: string; detail: string };
  threadPools?: { intraOp: number; interOp: number };
}

/**
 * How many ops the profiled step ran at once, and what that means for the op times: with two at
 * once, two ops share the cores and each one's time counts the other's.
 */
function opsAtOnce(pools: ProfileMeasurement["threadPools"]): string {
  if (!pools) return "How many ops ran at once: not recorded.";
  return pools.interOp === 1
    ? "One op at a time (TensorFlow's inter-op pool pinned to one thread), so each op's time is " +
      "its own; runs and the step figures let TensorFlow run up to one op per core at once."
    : `${
      pools.interOp ? `Up to ${pools.interOp} ops` : "Up to one op per core (TensorFlow's default)"
    } at once: ops that overlap share the cores, so each one's time also counts the other's.`;
}

/** profile.md: where the step's time goes, and what this CPU could do at best. */
export function renderProfile(m: ProfileMeasurement, configuration = "tfjs"): string {
  const stepMs = median(m.msPerStep);
  const perImage = stepMs / m.batch;
  const opMs = m.kinds.reduce((s, k) => s + k.ms, 0);
  const cpu = cpuPeak();
  const macs = m.cost.macs.pointwise + m.cost.macs.depthwise + m.cost.macs.dense;
  // A training step: the forward pass, the gradient of the input and of the weights (≈ 3×).
  const flops = 3 * 2 * macs;
  // Each activation at least written and read in the forward pass, and read twice and written
  // once in the backward pass (its value, its gradient in and out): ≥ 5 touches of 4 bytes.
  const bytes = 5 * 4 * m.cost.activations;
  const computeFloor = flops / (cpu.gflops * 1e9) * 1000;
  const memoryFloor = bytes / (m.bandwidthGBs * 1e9) * 1000;
  const memoryBound = ["depthwise convolution", "batch norm", "element-wise"]
    .map((k) => m.kinds.filter((r) => r.kind.startsWith(k)).reduce((s, r) => s + r.ms, 0))
    .reduce((a, b) => a + b, 0);
  return [
    `# Where a training step's time goes: ${configuration} (${m.size} px, batch ${m.batch})`,
    "",
    `Kernels (BatchNorm + activation, depthwise convolutions): ${
      m.kernels ? `${m.kernels.kind} (${m.kernels.detail})` : "not recorded"
    }.`,
    "",
    opsAtOnce(m.threadPools),
    "",
    `Untraced step: ${stepMs.toFixed(0)} ms (${perImage.toFixed(0)} ms/image). TensorFlow's ` +
    `step stats of a traced step (tracing adds time of its own; the ops' times sum to ` +
    `${opMs.toFixed(0)} ms):`,
    "",
    table(m.kinds.map((k) => ({
      "kind of work": k.kind,
      "ms per step": k.ms.toFixed(1),
      share: `${(100 * k.share).toFixed(1)} %`,
      "forward ms": k.forwardMs.toFixed(1),
      "backward ms": k.backwardMs.toFixed(1),
      "ops per step": k.ops,
    }))).toMarkdown(),
    "",
    "The op types that take longest:",
    "",
    table(m.top.map((o) => ({ op: o.op, "ms per step": o.ms.toFixed(1), calls: o.calls })))
      .toMarkdown(),
    "",
    "## Roofline",
    "",
    `- CPU: ${cpu.text}`,
    `- Memory bandwidth measured here (one thread copying 256 MB): ${
      m.bandwidthGBs.toFixed(1)
    } GB/s.`,
    `- Arithmetic per image: ${(macs / 1e6).toFixed(0)} M multiply-adds forward (pointwise and ` +
    `full convolutions ${(m.cost.macs.pointwise / 1e6).toFixed(0)} M, depthwise ${
      (m.cost.macs.depthwise / 1e6).toFixed(0)
    } M); a training step ≈ 3 × 2 × that = ${(flops / 1e9).toFixed(2)} GFLOP per image.`,
    `- Activations per image: ${(m.cost.activations / 1e6).toFixed(1)} M values; a training ` +
    `step moves at least 5 × 4 bytes of each = ${(bytes / 1e9).toFixed(2)} GB per image.`,
    `- Floors per image: compute ${computeFloor.toFixed(0)} ms at peak, memory ${
      memoryFloor.toFixed(0)
    } ms at the measured bandwidth. Measured: ${perImage.toFixed(0)} ms, ${
      (flops / (perImage / 1000) / 1e9).toFixed(0)
    } GFLOP/s (${(100 * flops / (perImage / 1000) / (cpu.gflops * 1e9)).toFixed(0)} % of peak).`,
    `- ${(100 * memoryBound / opMs).toFixed(0)} % of the op time is depthwise convolutions, ` +
    "BatchNorm and element-wise ops: few operations per byte, so they run at memory speed " +
    "whatever the arithmetic units can do; only fusing them (fewer passes over the " +
    "activations) would lower that part.",
    "",
  ].join("\n");
}
