/**
 * `deno task bench`: TF.js (this project) against PyTorch on the same CPU, side by side, in one
 * invocation: the paper's PyTorch pipeline (NCHW) and PyTorch's faster CPU configurations
 * (channels_last, bfloat16 autocast). Every figure is measured in a fresh process per
 * configuration, configurations interleaved, several repetitions; min / median / max, and the ratio
 * of TF.js to the *fastest* PyTorch configuration, are printed and written to
 * outputs/bench/<stamp>/ with a profile of the training step (profile.md). The harness lives in
 * bench/ (harness.ts, report.ts and the two workers); this file turns the flags into its plan.
 *
 * The PyTorch side runs in a git-ignored venv (.venv-bench/) the bench creates:
 * torch 2.14.1 + torchvision 0.29.1 from PyPI (a large download where they are not on disk).
 */
import {
  numberFlag,
  parseFlags,
  resolveDataDir,
  runMain,
  UsageError,
  UserError,
} from "../lib/mod.ts";
import { type BenchPlan, PEERS, runBench, TFJS_OPTIONS } from "../bench/harness.ts";

const USAGE = `Usage: deno task bench [options]

  --sizes 224,446      input sizes (default 224,446)
  --batches 1,4,16     batch sizes (default 1,4,16)
  --modes train,infer  what to time (default both)
  --reps N             repetitions per figure, frameworks interleaved (default 3)
  --steps N            timed steps per repetition after one warm-up (default 3)
  --threads N          threads an op splits its work over, both frameworks (PyTorch's pool,
                       TensorFlow's intra-op pool; TensorFlow runs up to one op per core at
                       once, as runs do; default 2)
  --skip RULES         configurations to leave out, e.g. tfjs:train:446:16 (comma-separated)
  --peers LIST         PyTorch configurations (default nchw,channels_last,bf16)
  --tfjs-options LIST  also time TF.js with options on, each alone: standard-kernels (TensorFlow's
                       own BatchNorm kernels instead of the fused ones), bf16 (oneDNN auto mixed
                       precision), xla (XLA CPU JIT), xla-fusible (XLA on element-wise ops only),
                       threads-2-1 / threads-1-2 (intra,inter-op threads); default
                       standard-kernels ("none" for none)
  --profile-size N     input size of the profiled training step (default 446)
  --profile-batch N    its batch size (default 4)
  --no-profile         skip the per-op profile of the training step
  --no-pipeline        skip the data-pipeline and whole-epoch figures
  --tfjs-only          no PyTorch side (no venv needed)
  --data DIR           data set for the pipeline figures (else $COVID_CXR_DATA)`;

/** The flags as a plan; bad values are refused before anything is measured. */
function planFromFlags(args: string[]): BenchPlan | undefined {
  const { values: v } = parseFlags(args, {
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
  if (v.help) return undefined;
  const list = (name: string, s: string | undefined, def: number[]) =>
    s ? s.split(",").map((x) => numberFlag(name, x.trim(), { integer: true, min: 1 })!) : def;
  const modes = v.modes ? v.modes.split(",") : ["train", "infer"];
  if (modes.some((m) => !["train", "infer"].includes(m))) {
    throw new UsageError("--modes takes train and/or infer");
  }
  const peers = v["tfjs-only"] ? [] : (v.peers?.split(",") ?? PEERS);
  const unknownPeer = peers.find((p) => !PEERS.includes(p));
  if (unknownPeer) throw new UsageError(`--peers: unknown "${unknownPeer}" (${PEERS.join(", ")})`);
  const options = (v["tfjs-options"]?.split(",").filter(Boolean) ?? ["standard-kernels"])
    .filter((o) => o !== "none");
  const unknownOption = options.find((o) => !(o in TFJS_OPTIONS));
  if (unknownOption) {
    throw new UsageError(
      `--tfjs-options: unknown "${unknownOption}" (${Object.keys(TFJS_OPTIONS).join(", ")})`,
    );
  }
  return {
    sizes: list("sizes", v.sizes, [224, 446]),
    batches: list("batches", v.batches, [1, 4, 16]),
    modes,
    reps: numberFlag("reps", v.reps, { integer: true, min: 1 }) ?? 3,
    steps: numberFlag("steps", v.steps, { integer: true, min: 1 }) ?? 3,
    threads: numberFlag("threads", v.threads, { integer: true, min: 1 }) ?? 2,
    skip: new Set((v.skip ?? "").split(",").filter(Boolean)),
    peers,
    options,
    data: v["no-pipeline"] ? undefined : pipelineData(v.data),
    profile: v["no-profile"] ? undefined : {
      size: numberFlag("profile-size", v["profile-size"], { integer: true, min: 32 }) ?? 446,
      batch: numberFlag("profile-batch", v["profile-batch"], { integer: true, min: 1 }) ?? 4,
    },
  };
}

/** The pipeline figures need the data set: found now, not after half an hour of measuring. */
function pipelineData(flag?: string): string {
  try {
    return resolveDataDir(flag);
  } catch (error) {
    if (!(error instanceof UserError)) throw error;
    throw new UserError(
      `${error.message}\n(The bench's pipeline figures read the data set; --no-pipeline skips them.)`,
    );
  }
}

async function main() {
  const plan = planFromFlags(Deno.args);
  if (!plan) return console.log(USAGE);
  const { dir, table } = await runBench(plan);
  console.log(`\n${table}\n`);
  console.log(`Written to ${dir}`);
}

await runMain(main, USAGE);
