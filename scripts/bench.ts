/**
 * `deno task bench`: TF.js (this project) against PyTorch on the same CPU, side by side, in one
 * invocation: the paper's PyTorch pipeline (NCHW) and PyTorch's faster CPU configurations
 * (channels_last, bfloat16 autocast). Every figure is measured in a fresh process per
 * configuration, configurations interleaved, several repetitions; min / median / max, and the ratio
 * of TF.js to the *fastest* PyTorch configuration, are printed and written to
 * outputs/bench/<stamp>/ with a profile of the training step (profile.md).
 *
 * The PyTorch side runs in a git-ignored venv (.venv-bench/) the bench creates:
 * torch 2.14.1 + torchvision 0.29.1 from PyPI (a large download where they are not on disk).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import {
  numberFlag,
  outputsRoot,
  parseFlags,
  type ProfileRow,
  projectPath,
  resolveDataDir,
  runMain,
  table,
  updateLatest,
  UsageError,
  UserError,
  writeFileAtomic,
  writeJsonAtomic,
} from "../lib/mod.ts";

const USAGE = `Usage: deno task bench [options]

  --sizes 224,446      input sizes (default 224,446)
  --batches 1,4,16     batch sizes (default 1,4,16)
  --modes train,infer  what to time (default both)
  --reps N             repetitions per figure, frameworks interleaved (default 3)
  --steps N            timed steps per repetition after one warm-up (default 3)
  --threads N          CPU threads for both frameworks (default 2)
  --skip RULES         configurations to leave out, e.g. tfjs:train:446:16 (comma-separated)
  --peers LIST         PyTorch configurations (default nchw,channels_last,bf16)
  --tfjs-options LIST  also time TF.js with options on, each alone: bf16 (oneDNN auto mixed
                       precision), xla (XLA CPU JIT), xla-fusible (XLA on element-wise ops only),
                       threads-2-1 / threads-1-2 (intra,inter-op threads); default none
  --profile-size N     input size of the profiled training step (default 446)
  --profile-batch N    its batch size (default 4)
  --no-profile         skip the per-op profile of the training step
  --no-pipeline        skip the data-pipeline and whole-epoch figures
  --tfjs-only          no PyTorch side (no venv needed)
  --data DIR           data set for the pipeline figures (else $COVID_CXR_DATA)`;

const TORCH = ["torch==2.14.1", "torchvision==0.29.1"];
const VENV = projectPath(".venv-bench");

/** TF.js options the bench can switch on, each as the environment of a fresh process. */
const TFJS_OPTIONS: Record<string, Record<string, string>> = {
  bf16: { COVID_CXR_PRECISION: "bf16" },
  xla: { COVID_CXR_XLA: "1" },
  "xla-fusible": {
    TF_XLA_FLAGS: "--tf_xla_auto_jit=2 --tf_xla_cpu_global_jit --tf_xla_ops_to_cluster=FUSIBLE",
  },
  "threads-2-1": { COVID_CXR_THREADS: "2,1" },
  "threads-1-2": { COVID_CXR_THREADS: "1,2" },
};
const PEERS = ["nchw", "channels_last", "bf16"];

interface Measurement {
  /** "tfjs", "tfjs+<option>" or "pytorch-<peer>". */
  framework: string;
  mode: string;
  size: number;
  batch?: number;
  msPerImage?: number[];
  seconds?: number;
  images?: number;
  peakRssMB: number;
  failed?: string;
}

async function run(
  cmd: string,
  args: string[],
  env: Record<string, string>,
): Promise<Measurement | { error: string }> {
  const out = await new Deno.Command(cmd, { args, env, stdout: "piped", stderr: "piped" }).output();
  const stdout = new TextDecoder().decode(out.stdout).trim().split("\n").at(-1) ?? "";
  if (out.code !== 0 || !stdout.startsWith("{")) {
    const reason = out.signal === "SIGKILL" || out.code === 137
      ? "killed (out of memory)"
      : new TextDecoder().decode(out.stderr).trim().split("\n").slice(-3).join(" | ");
    return { error: reason || `exit ${out.code}` };
  }
  return JSON.parse(stdout);
}

function threadEnv(threads: number): Record<string, string> {
  // Both TF and PyTorch read these; TF also takes its inter/intra-op pools from them.
  return {
    OMP_NUM_THREADS: String(threads),
    MKL_NUM_THREADS: String(threads),
    TF_NUM_INTRAOP_THREADS: String(threads),
    TF_NUM_INTEROP_THREADS: "1",
    TF_CPP_MIN_LOG_LEVEL: "2",
  };
}

async function ensureTorch(): Promise<string> {
  const python = path.join(VENV, "bin", "python");
  const stamp = path.join(VENV, ".bench-stamp.json");
  if (fs.existsSync(stamp) && fs.readFileSync(stamp, "utf8").includes(TORCH.join(" "))) {
    return python;
  }
  fs.rmSync(VENV, { recursive: true, force: true });
  console.error(
    `• Creating ${VENV} with ${TORCH.join(", ")} (large; from PyPI or the local wheel store) …`,
  );
  const venv = await new Deno.Command("python3", { args: ["-m", "venv", VENV] }).output();
  if (!venv.success) {
    throw new Error(`python3 -m venv ${VENV} failed: ${new TextDecoder().decode(venv.stderr)}`);
  }
  const pip = await new Deno.Command(python, {
    args: ["-m", "pip", "install", "--disable-pip-version-check", "-q", ...TORCH],
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  if (!pip.success) {
    throw new Error(
      `Cannot install ${TORCH.join(" ")} into ${VENV}; use --tfjs-only to bench TF.js alone`,
    );
  }
  fs.writeFileSync(stamp, JSON.stringify({ packages: TORCH.join(" ") }));
  return python;
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

async function main() {
  const { values: v } = parseFlags(Deno.args, {
    sizes: { type: "string" },
    batches: { type: "string" },
    modes: { type: "string" },
    reps: { type: "string" },
    steps: { type: "string" },
    threads: { type: "string" },
    skip: { type: "string" },
    peers: { type: "string" },
    "tfjs-options": { type: "string" },
    "no-profile": { type: "boolean" },
    "profile-size": { type: "string" },
    "profile-batch": { type: "string" },
    "no-pipeline": { type: "boolean" },
    "tfjs-only": { type: "boolean" },
    data: { type: "string" },
    help: { type: "boolean" },
  });
  if (v.help) return console.log(USAGE);
  const list = (name: string, s: string | undefined, def: number[]) =>
    s ? s.split(",").map((x) => numberFlag(name, x.trim(), { integer: true, min: 1 })!) : def;
  const sizes = list("sizes", v.sizes, [224, 446]);
  const batches = list("batches", v.batches, [1, 4, 16]);
  const modes = v.modes ? v.modes.split(",") : ["train", "infer"];
  if (modes.some((m) => !["train", "infer"].includes(m))) {
    throw new UsageError("--modes takes train and/or infer");
  }
  const peers = v["tfjs-only"] ? [] : (v.peers?.split(",") ?? PEERS);
  const unknownPeer = peers.find((p) => !PEERS.includes(p));
  if (unknownPeer) throw new UsageError(`--peers: unknown "${unknownPeer}" (${PEERS.join(", ")})`);
  const options = v["tfjs-options"]?.split(",").filter(Boolean) ?? [];
  const unknownOption = options.find((o) => !(o in TFJS_OPTIONS));
  if (unknownOption) {
    throw new UsageError(
      `--tfjs-options: unknown "${unknownOption}" (${Object.keys(TFJS_OPTIONS).join(", ")})`,
    );
  }
  const reps = numberFlag("reps", v.reps, { integer: true, min: 1 }) ?? 3;
  const steps = numberFlag("steps", v.steps, { integer: true, min: 1 }) ?? 3;
  const threads = numberFlag("threads", v.threads, { integer: true, min: 1 }) ?? 2;
  const skip = new Set((v.skip ?? "").split(",").filter(Boolean));
  // The pipeline figures need the data set: find it now, not after half an hour of measuring.
  let data: string | undefined;
  if (!v["no-pipeline"]) {
    try {
      data = resolveDataDir(v.data);
    } catch (error) {
      if (!(error instanceof UserError)) throw error;
      throw new UserError(
        `${error.message}\n(The bench's pipeline figures read the data set; --no-pipeline skips them.)`,
      );
    }
  }
  const python = peers.length ? await ensureTorch() : undefined;
  const env = threadEnv(threads);
  const tfjs = (args: string[], extra: Record<string, string> = {}) =>
    run(Deno.execPath(), ["run", "-A", projectPath("bench", "tfjs_worker.ts"), ...args], {
      ...env,
      ...extra,
    });
  const torch = (args: string[], variant = "nchw") =>
    run(
      python!,
      [
        projectPath("bench", "torch_worker.py"),
        "--threads",
        String(threads),
        "--variant",
        variant,
        ...args,
      ],
      env,
    );
  // Every configuration timed, in the order they are interleaved.
  const runners: [string, (args: string[]) => ReturnType<typeof run>][] = [
    ["tfjs", (a) => tfjs(a)],
    ...options.map((o): [string, (a: string[]) => ReturnType<typeof run>] => [
      `tfjs+${o}`,
      (a) => tfjs(a, TFJS_OPTIONS[o]),
    ]),
    ...peers.map((p): [string, (a: string[]) => ReturnType<typeof run>] => [
      `pytorch-${p}`,
      (a) => torch(a, p),
    ]),
  ];

  const results: Measurement[] = [];
  const started = new Date();
  // Written after each figure, so a failure later (or Ctrl-C) keeps what was measured.
  const dir = path.join(
    outputsRoot(),
    "bench",
    started.toISOString().slice(0, 19).replace(/[-:]/g, "").replace("T", "-"),
  );
  let profile: string | undefined;
  const save = async () => {
    const t = resultsTable(results, runners.map(([name]) => name));
    await writeJsonAtomic(path.join(dir, "results.json"), {
      started,
      threads,
      reps,
      steps,
      configurations: runners.map(([name]) => name),
      results,
    });
    await writeFileAtomic(
      path.join(dir, "results.md"),
      `# Benchmark ${started.toISOString()}\n\n${threads} threads, ${reps} repetitions × ${steps} timed steps; ` +
        "fresh process per measurement, configurations interleaved. Cells: min / median / max ms " +
        "per image (or seconds); the ratio is TF.js's median over the fastest PyTorch " +
        "configuration's median.\n\n" + t.toMarkdown() + "\n" +
        (profile ? "\nProfile of the training step: profile.md\n" : ""),
    );
    updateLatest(path.dirname(dir), dir);
    return t;
  };
  for (const mode of modes) {
    for (const size of sizes) {
      for (const batch of batches) {
        const args = [
          "--mode",
          mode,
          "--size",
          String(size),
          "--batch",
          String(batch),
          "--steps",
          String(steps),
        ];
        const merged: Record<string, Measurement> = {};
        for (let r = 0; r < reps; r++) {
          // Interleaved: each configuration once, then again … so drift hits all alike.
          for (const [framework, runner] of runners) {
            const family = framework.startsWith("tfjs") ? "tfjs" : "pytorch";
            if (
              skip.has(`${framework}:${mode}:${size}:${batch}`) ||
              skip.has(`${family}:${mode}:${size}:${batch}`)
            ) continue;
            console.error(`  ${framework} ${mode} ${size}px batch ${batch} (rep ${r + 1}/${reps})`);
            const m = await runner(args);
            const into = merged[framework] ??= {
              framework,
              mode,
              size,
              batch,
              msPerImage: [],
              peakRssMB: 0,
            };
            if ("error" in m) into.failed = m.error;
            else {
              into.msPerImage!.push(...m.msPerImage!);
              into.peakRssMB = Math.max(into.peakRssMB, m.peakRssMB);
            }
          }
        }
        results.push(...Object.values(merged));
        await save();
      }
    }
  }

  if (data) {
    const size = 446, batch = 4;
    const pipeline = async (framework: string, runner: typeof tfjs, mode: string) => {
      const args = ["--mode", mode, "--size", String(size), "--batch", String(batch)];
      const m = await runner([...args, "--data", data]);
      results.push(
        "error" in m ? { framework, mode, size, batch, peakRssMB: 0, failed: m.error } : {
          ...m,
          framework,
        },
      );
    };
    for (const mode of ["decode", "batches", "epoch"]) {
      console.error(`  tfjs ${mode} ${size}px`);
      await pipeline("tfjs", tfjs, mode);
    }
    if (python) {
      console.error(`  pytorch epoch ${size}px (the paper's pipeline: decode every epoch)`);
      await pipeline("pytorch-nchw", (a) => torch(a, "nchw"), "epoch");
    }
  }

  await save();
  if (!v["no-profile"]) {
    const size = numberFlag("profile-size", v["profile-size"], { integer: true, min: 32 }) ?? 446;
    const batch = numberFlag("profile-batch", v["profile-batch"], { integer: true, min: 1 }) ?? 4;
    console.error(`  tfjs profile of the training step, ${size}px batch ${batch}`);
    const m = await tfjs([
      "--mode",
      "profile",
      "--size",
      String(size),
      "--batch",
      String(batch),
      "--steps",
      "3",
    ]);
    profile = "error" in m ? `Profiling failed: ${m.error}\n` : renderProfile(m as never);
    await writeFileAtomic(path.join(dir, "profile.md"), profile);
    if ("error" in m) console.error(profile);
  }
  const t = await save();
  console.log(`\n${t.toString()}\n`);
  console.log(`Written to ${dir}`);
}

/** One row per figure, one column per configuration; TF.js against the fastest PyTorch. */
function resultsTable(results: Measurement[], configurations: string[]) {
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

interface ProfileMeasurement {
  batch: number;
  size: number;
  msPerStep: number[];
  kinds: ProfileRow[];
  top: { op: string; ms: number; calls: number }[];
  cost: { macs: { pointwise: number; depthwise: number; dense: number }; activations: number };
  bandwidthGBs: number;
}

/** profile.md: where the step's time goes, and what this CPU could do at best. */
function renderProfile(m: ProfileMeasurement): string {
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
    `# Where a training step's time goes (${m.size} px, batch ${m.batch})`,
    "",
    `Untraced step: ${stepMs.toFixed(0)} ms (${perImage.toFixed(0)} ms/image). TensorFlow's ` +
    `step stats (a traced step; ops on the two threads can overlap, so their sum, ` +
    `${opMs.toFixed(0)} ms, can exceed the step):`,
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

await runMain(main, USAGE);
