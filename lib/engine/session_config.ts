/**
 * How TensorFlow runs the graph engines' sessions: precision (oneDNN's bfloat16 auto mixed
 * precision on CPUs with AVX-512 BF16 / AMX), XLA's CPU JIT, thread pools — written as the
 * ConfigProto a session takes (TF_SetConfig). Field numbers are those of TensorFlow 2.21's
 * config.proto and rewriter_config.proto.
 */
import { envChoice, envFlag, envValue, hostEnv } from "../env.ts";
import { UserError } from "../errors.ts";
import { bytesField, concat, intField } from "./protobuf.ts";

export type Precision = "fp32" | "bf16";

export interface SessionSettings {
  /** bf16: oneDNN's auto mixed precision rewrite (weights and the update stay float32). */
  precision: Precision;
  /** XLA's CPU JIT over the graph (clusters of element-wise ops fused). */
  jit: boolean;
  /** Threads inside one op (0: TensorFlow's default, the cores). */
  intraOpThreads: number;
  /** Ops run at once (0: TensorFlow's default). */
  interOpThreads: number;
}

/** The settings `COVID_CXR_PRECISION`, `COVID_CXR_XLA` and `COVID_CXR_THREADS` ask for. */
export function sessionSettings(overrides: Partial<SessionSettings> = {}): SessionSettings {
  const precision = envChoice("COVID_CXR_PRECISION") as "fp32" | "bf16";
  const threads = envValue("COVID_CXR_THREADS");
  const [intra, inter] = (threads ?? "0,0").split(",").map(Number);
  if (![intra, inter ?? 0].every((n) => Number.isInteger(n) && n >= 0)) {
    throw new UserError(`COVID_CXR_THREADS must be "intra" or "intra,inter", got "${threads}"`);
  }
  return {
    precision,
    jit: envFlag("COVID_CXR_XLA"),
    intraOpThreads: intra,
    interOpThreads: inter ?? 0,
    ...overrides,
  };
}

/**
 * Whether TensorFlow runs oneDNN's kernels in this process: its x86 Linux builds do unless
 * TF_ENABLE_ONEDNN_OPTS turns them off ("0" or "false", as TensorFlow reads it).
 */
export function onednnEnabled(): boolean {
  const v = hostEnv("TF_ENABLE_ONEDNN_OPTS")?.toLowerCase(); // trimmed by hostEnv
  return v !== "0" && v !== "false" && Deno.build.arch === "x86_64";
}

/**
 * The thread pools this process's sessions get with settings `s`: the session's own setting, else
 * the one TensorFlow reads from its environment (TF_NUM_INTRAOP_THREADS, TF_NUM_INTEROP_THREADS),
 * else 0, TensorFlow's default (one thread per core for each pool). The bench records them.
 */
export function threadPools(s: SessionSettings): { intraOp: number; interOp: number } {
  const fromEnv = (name: "TF_NUM_INTRAOP_THREADS" | "TF_NUM_INTEROP_THREADS") => {
    const n = Number(hostEnv(name));
    return Number.isInteger(n) && n > 0 ? n : 0;
  };
  return {
    intraOp: s.intraOpThreads || fromEnv("TF_NUM_INTRAOP_THREADS"),
    interOp: s.interOpThreads || fromEnv("TF_NUM_INTEROP_THREADS"),
  };
}

/**
 * The settings that differ from the defaults, in words (empty for float32, no XLA, TensorFlow's
 * thread pools). bfloat16 changes results, so runs say so.
 */
export function describeSessionSettings(s: SessionSettings): string[] {
  return [
    s.precision === "bf16"
      ? "bfloat16 mixed precision (COVID_CXR_PRECISION=bf16; results differ from float32)"
      : "",
    s.jit ? "XLA JIT (COVID_CXR_XLA=1)" : "",
    s.intraOpThreads || s.interOpThreads
      ? `TensorFlow thread pools ${s.intraOpThreads || "default"} intra-op, ${
        s.interOpThreads || "default"
      } inter-op (COVID_CXR_THREADS)`
      : "",
  ].filter(Boolean);
}

// ConfigProto
const INTRA_OP_PARALLELISM_THREADS = 2;
const INTER_OP_PARALLELISM_THREADS = 5;
const GRAPH_OPTIONS = 10;
// GraphOptions
const OPTIMIZER_OPTIONS = 3;
const REWRITE_OPTIONS = 10;
// OptimizerOptions
const GLOBAL_JIT_LEVEL = 5; // enum: ON_1 = 1
const CPU_GLOBAL_JIT = 7;
// RewriterConfig
const AUTO_MIXED_PRECISION_ONEDNN_BFLOAT16 = 31; // Toggle: ON = 1
const TOGGLE_ON = 1;

/** The serialised ConfigProto for `s` (empty when everything is TensorFlow's default). */
export function configProto(s: SessionSettings): Uint8Array {
  const graphOptions = [
    ...(s.jit
      ? [
        bytesField(OPTIMIZER_OPTIONS, [
          intField(GLOBAL_JIT_LEVEL, 1),
          intField(CPU_GLOBAL_JIT, true),
        ]),
      ]
      : []),
    ...(s.precision === "bf16"
      ? [bytesField(REWRITE_OPTIONS, [intField(AUTO_MIXED_PRECISION_ONEDNN_BFLOAT16, TOGGLE_ON)])]
      : []),
  ];
  return concat([
    ...(s.intraOpThreads ? [intField(INTRA_OP_PARALLELISM_THREADS, s.intraOpThreads)] : []),
    ...(s.interOpThreads ? [intField(INTER_OP_PARALLELISM_THREADS, s.interOpThreads)] : []),
    ...(graphOptions.length ? [bytesField(GRAPH_OPTIONS, graphOptions)] : []),
  ]);
}

// RunOptions
const TRACE_LEVEL = 1;
const FULL_TRACE = 3;

/** A serialised RunOptions asking for full tracing (per-op step stats in the RunMetadata). */
export function tracingRunOptions(): Uint8Array {
  return intField(TRACE_LEVEL, FULL_TRACE);
}
