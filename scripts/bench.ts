/**
 * `deno task bench`: TF.js (this project) against the paper's PyTorch pipeline on the same CPU,
 * side by side, in one invocation. Every figure is measured in a fresh process per framework,
 * the two frameworks interleaved, several repetitions; min / median / max and the ratio
 * TF.js / PyTorch are printed and written to outputs/bench/<stamp>/.
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
  projectPath,
  resolveDataDir,
  runMain,
  table,
  updateLatest,
  UsageError,
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
  --no-pipeline        skip the data-pipeline and whole-epoch figures
  --tfjs-only          no PyTorch side (no venv needed)
  --data DIR           data set for the pipeline figures (else $COVID_CXR_DATA)`;

const TORCH = ["torch==2.14.1", "torchvision==0.29.1"];
const VENV = projectPath(".venv-bench");

interface Measurement {
  framework: "tfjs" | "pytorch";
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

async function main() {
  const { values: v } = parseFlags(Deno.args, {
    sizes: { type: "string" },
    batches: { type: "string" },
    modes: { type: "string" },
    reps: { type: "string" },
    steps: { type: "string" },
    threads: { type: "string" },
    skip: { type: "string" },
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
  const reps = numberFlag("reps", v.reps, { integer: true, min: 1 }) ?? 3;
  const steps = numberFlag("steps", v.steps, { integer: true, min: 1 }) ?? 3;
  const threads = numberFlag("threads", v.threads, { integer: true, min: 1 }) ?? 2;
  const skip = new Set((v.skip ?? "").split(",").filter(Boolean));
  const python = v["tfjs-only"] ? undefined : await ensureTorch();
  const env = threadEnv(threads);
  const tfjs = (args: string[]) =>
    run(Deno.execPath(), ["run", "-A", projectPath("bench", "tfjs_worker.ts"), ...args], env);
  const torch = (args: string[]) =>
    run(
      python!,
      [projectPath("bench", "torch_worker.py"), "--threads", String(threads), ...args],
      env,
    );

  const results: Measurement[] = [];
  const started = new Date();
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
          // Interleaved: TF.js, then PyTorch, then TF.js again … so drift hits both alike.
          for (const [framework, runner] of [["tfjs", tfjs], ["pytorch", torch]] as const) {
            if (framework === "pytorch" && !python) continue;
            if (skip.has(`${framework}:${mode}:${size}:${batch}`)) continue;
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
      }
    }
  }

  if (!v["no-pipeline"]) {
    const data = v.data ?? resolveDataDir();
    const size = 446, batch = 4;
    const pipeline = async (
      framework: Measurement["framework"],
      runner: typeof tfjs,
      mode: string,
    ) => {
      const args = ["--mode", mode, "--size", String(size), "--batch", String(batch)];
      const m = await runner([...args, "--data", data]);
      results.push(
        "error" in m ? { framework, mode, size, batch, peakRssMB: 0, failed: m.error } : m,
      );
    };
    for (const mode of ["decode", "batches", "epoch"]) {
      console.error(`  tfjs ${mode} ${size}px`);
      await pipeline("tfjs", tfjs, mode);
    }
    if (python) {
      console.error(`  pytorch epoch ${size}px (the paper's pipeline: decode every epoch)`);
      await pipeline("pytorch", torch, "epoch");
    }
  }

  // Table: one row per figure, TF.js next to PyTorch.
  const rows = [];
  const keyOf = (m: Measurement) => `${m.mode}|${m.size}|${m.batch ?? ""}`;
  for (const key of [...new Set(results.map(keyOf))]) {
    const [t, p] = ["tfjs", "pytorch"].map((f) =>
      results.find((m) => m.framework === f && keyOf(m) === key)
    );
    const [mode, size, batch] = key.split("|");
    const value = (m?: Measurement) =>
      !m
        ? "—"
        : m.failed
        ? `failed: ${m.failed}`
        : m.msPerImage
        ? fmt(m.msPerImage)
        : `${m.seconds!.toFixed(1)} s`;
    const central = (m?: Measurement) =>
      !m || m.failed ? NaN : m.msPerImage ? median(m.msPerImage) : m.seconds!;
    const ratio = central(t) / central(p);
    rows.push({
      figure: mode === "train" || mode === "infer"
        ? `${mode} ms/image, ${size} px, batch ${batch}`
        : mode === "decode"
        ? `cold decode+resize of ${t?.images ?? "all"} images, ${size} px`
        : mode === "batches"
        ? `warm cached epoch of batches (augmented), ${size} px`
        : `one epoch (train + validation), ${size} px, batch ${batch}`,
      "TF.js min / median / max": value(t),
      "PyTorch min / median / max": value(p),
      "ratio TF.js / PyTorch": Number.isFinite(ratio) ? ratio.toFixed(2) : "—",
      "peak RSS MB TF.js": t && !t.failed ? t.peakRssMB : "—",
      "peak RSS MB PyTorch": p && !p.failed ? p.peakRssMB : "—",
    });
  }
  const t = table(rows);
  console.log(`\n${t.toString()}\n`);
  const dir = path.join(
    outputsRoot(),
    "bench",
    started.toISOString().slice(0, 19).replace(/[-:]/g, "").replace("T", "-"),
  );
  await writeJsonAtomic(path.join(dir, "results.json"), { started, threads, reps, steps, results });
  await writeFileAtomic(
    path.join(dir, "results.md"),
    `# Benchmark ${started.toISOString()}\n\n${threads} threads, ${reps} repetitions × ${steps} timed steps; ` +
      "fresh process per measurement, frameworks interleaved.\n\n" + t.toMarkdown() + "\n",
  );
  updateLatest(path.dirname(dir), dir);
  console.log(`Written to ${dir}`);
}

await runMain(main, USAGE);
