/**
 * Every environment variable the project reads, declared once: its name, kind, default and
 * meaning, and the only code that reads `Deno.env` (the architecture test checks it). A value
 * that is not one of the valid ones is one clear line naming the variable and the choices, at the
 * first read — never ignored. Only `node:` built-ins here: `scripts/setup.ts` imports it before
 * any npm package is installed.
 *
 * An empty variable counts as unset (`VAR=` in a shell means "not set", never "here").
 */
import { UserError } from "./errors.ts";

type Kind =
  | { type: "path" }
  | { type: "text" }
  | { type: "flag" }
  | { type: "choice"; values: readonly string[] };

export interface Variable {
  kind: Kind;
  /** What it means when unset. */
  default: string;
  meaning: string;
  /** Read by the tests and CI only (listed in the README's test section). */
  forTests?: boolean;
}

const path = { type: "path" } as const;
const flag = { type: "flag" } as const;
const text = { type: "text" } as const;
const choice = (...values: string[]) => ({ type: "choice", values }) as const;

/** The variables, in the order the README lists them. */
export const VARIABLES = {
  COVID_CXR_DATA: {
    kind: path,
    default: "data/Covid19-dataset",
    meaning: "the data set folder (a `--data` flag wins)",
  },
  COVID_CXR_EXTERNAL: {
    kind: path,
    default: "none",
    meaning: "an external set for `reproduce` and notebooks 05–06 (`--external` wins)",
  },
  COVID_CXR_OUTPUTS: {
    kind: path,
    default: "outputs/",
    meaning: "where runs are written (`--out` wins)",
  },
  COVID_CXR_RUN: {
    kind: text,
    default: "the newest run",
    meaning: "a finished run (or `latest`) for notebooks 04–06 to read instead of training",
  },
  COVID_CXR_QUICK: {
    kind: flag,
    default: "0",
    meaning: "quick mode (128 px, 3 epochs) for notebooks and `reproduce`",
  },
  COVID_CXR_PARITY: {
    kind: path,
    default: "none",
    meaning: "the Keras parity fixture (tests and notebook 03)",
  },
  COVID_CXR_TORCH_PARITY: {
    kind: path,
    default: "none",
    meaning: "the torchvision parity fixture (tests and notebook 03)",
  },
  COVID_CXR_CACHE: {
    kind: path,
    default: "~/.cache/covid-cxr",
    meaning: "the user cache (TensorFlow wheel, built binding, ImageNet weights)",
  },
  COVID_CXR_PROJECT_CACHE: {
    kind: path,
    default: ".cache/",
    meaning: "the project cache (decoded images, the near-duplicate finder's calibration)",
  },
  COVID_CXR_BACKEND: {
    kind: choice("auto", "native", "gpu", "cpu"),
    default: "auto",
    meaning: "TF.js's backend: `auto` (the GPU package where it works, else the native one), " +
      "`native`, `gpu` (fail unless the GPU package runs) or `cpu` (pure JavaScript, debugging)",
  },
  COVID_CXR_TRAIN_ENGINE: {
    kind: choice("graph", "eager"),
    default: "graph",
    meaning: "`eager`: train op by op through TF.js instead of one TensorFlow graph a step",
  },
  COVID_CXR_INFER_ENGINE: {
    kind: choice("graph", "eager"),
    default: "graph",
    meaning: "`eager`: predict op by op instead of as one TensorFlow graph",
  },
  COVID_CXR_KERNELS: {
    kind: choice("auto", "fused", "standard"),
    default: "auto",
    meaning: "the graph engines' BatchNorm + activation and depthwise convolutions: `standard` " +
      "(TensorFlow's own kernels), `fused` (fail unless the project's fused kernels load); `auto` " +
      "uses them when built",
  },
  COVID_CXR_PRECISION: {
    kind: choice("fp32", "bf16"),
    default: "fp32",
    meaning: "`bf16`: oneDNN's bfloat16 mixed precision in the graph engines (slower on CPUs " +
      "without bfloat16 hardware; results change)",
  },
  COVID_CXR_XLA: {
    kind: flag,
    default: "0",
    meaning: "XLA JIT on the graph engines (slower here)",
  },
  COVID_CXR_THREADS: {
    kind: text,
    default: "TensorFlow's choice",
    meaning: "TensorFlow's thread pools for the graph engines: `intra[,inter]`",
  },
  COVID_CXR_GRADIENTS: {
    kind: choice("layerwise", "tfjs"),
    default: "layerwise",
    meaning: "`tfjs`: the eager engine uses TF.js's own `optimizer.minimize` (to compare memory)",
  },
  COVID_CXR_DEBUG: {
    kind: flag,
    default: "0",
    meaning: "print the stack trace behind an error message",
  },
  COVID_CXR_REQUIRE_BROWSER: {
    kind: flag,
    default: "0",
    meaning: "a missing Chromium fails the browser tests instead of skipping them (CI sets it)",
    forTests: true,
  },
  COVID_CXR_CHROMIUM: {
    kind: path,
    default: "/usr/bin/chromium",
    meaning: "the Chromium the browser tests drive",
    forTests: true,
  },
  COVID_CXR_FAULT: {
    kind: text,
    default: "none",
    meaning: "fault injection: `point:n` kills the process the n-th time it passes `point`",
    forTests: true,
  },
} as const satisfies Record<string, Variable>;

export type VariableName = keyof typeof VARIABLES;

const ON = ["1", "true", "yes", "on"];
const OFF = ["0", "false", "no", "off"];

/** The variables {@link hostEnv} reads: not the project's own. */
export type HostVariable =
  | "INIT_CWD"
  | "XDG_CACHE_HOME"
  | "HOME"
  | "TF_ENABLE_ONEDNN_OPTS"
  | "TF_NUM_INTRAOP_THREADS"
  | "TF_NUM_INTEROP_THREADS";

/** Values that {@link withEnv} puts in front of the process environment, in this module only. */
const overrides = new Map<string, string | undefined>();

/** The value as given (an override first), before trimming. */
function given(name: string): string | undefined {
  return overrides.has(name) ? overrides.get(name) : Deno.env.get(name);
}

/** The raw value, undefined when unset or empty. */
function raw(name: string): string | undefined {
  const value = given(name);
  return value === undefined || value.trim() === "" ? undefined : value.trim();
}

/**
 * Run `fn` seeing `vars` (undefined: unset) in place of the environment, until it returns (or, when
 * it returns a promise, until that settles), without changing the environment itself: the
 * process's environment is shared by every test file that runs beside this one (`deno test
 * --parallel`) and by every child process, so tests that try other values use this instead of
 * `Deno.env.set`.
 */
export function withEnv<T>(
  vars: Partial<Record<VariableName | HostVariable, string | undefined>>,
  fn: () => T,
): T {
  const saved = Object.keys(vars).map((k) => [k, overrides.has(k), overrides.get(k)] as const);
  for (const [k, v] of Object.entries(vars)) overrides.set(k, v);
  const restore = () => {
    for (const [k, had, v] of saved) had ? overrides.set(k, v) : overrides.delete(k);
  };
  let result: T;
  try {
    result = fn();
  } catch (e) {
    restore();
    throw e;
  }
  if (result instanceof Promise) return result.finally(restore) as T;
  restore();
  return result;
}

/** A path or text setting; undefined when unset. */
export function envValue(name: VariableName): string | undefined {
  return raw(name);
}

/** An on/off setting: 1/true/yes/on or 0/false/no/off (case-insensitive); anything else is refused. */
export function envFlag(name: VariableName): boolean {
  const value = raw(name)?.toLowerCase();
  if (value === undefined) return false;
  if (ON.includes(value)) return true;
  if (OFF.includes(value)) return false;
  throw new UserError(
    `${name} must be 1 (on) or 0 (off) (also true/false, yes/no), got "${given(name)}"`,
  );
}

/** A setting with a fixed set of values; the first is the default. Anything else is refused. */
export function envChoice(name: VariableName): string {
  const kind = VARIABLES[name].kind as Kind;
  return envChoiceGiven(name) ?? (kind.type === "choice" ? kind.values[0] : "");
}

/** The same, but undefined when unset (where "unset" and "the default, asked for" differ). */
export function envChoiceGiven(name: VariableName): string | undefined {
  const kind = VARIABLES[name].kind as Kind;
  if (kind.type !== "choice") throw new Error(`envChoice: ${name} is a ${kind.type}`);
  const value = raw(name)?.toLowerCase();
  if (value === undefined) return undefined;
  if (!kind.values.includes(value)) {
    throw new UserError(
      `${name} must be one of ${kind.values.join(", ")}, got "${given(name)}"`,
    );
  }
  return value;
}

/**
 * Environment variables that are not the project's but that it reads: the folder `deno task` was
 * run from (INIT_CWD), the platform's cache folder (XDG_CACHE_HOME), and whether TensorFlow runs
 * oneDNN's kernels (TF_ENABLE_ONEDNN_OPTS: the inference graph fuses hard-swish only where it does).
 */
export function hostEnv(name: HostVariable): string | undefined {
  return raw(name);
}

/**
 * Set a TensorFlow variable unless the user did (TensorFlow reads its own environment when the
 * native library loads).
 */
export function defaultTensorflowEnv(
  name: "TF_CPP_MIN_LOG_LEVEL" | "TF_ENABLE_ONEDNN_OPTS",
  value: string,
): void {
  if (Deno.env.get(name) === undefined) Deno.env.set(name, value);
}

/** Set a project variable for the rest of this process (tasks that switch modes). */
export function setEnv(name: VariableName, value: string): void {
  Deno.env.set(name, value);
}
