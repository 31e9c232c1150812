/**
 * The only place TF.js is initialised. Everything in lib/ and notebooks/ imports `tf` from here
 * and awaits {@link initBackend} before its first tensor.
 *
 * Order: `tfjs-node-gpu` (when installed and a GPU answers) → `tfjs-node` (native libtensorflow)
 * → the pure-JS `cpu` backend, with a loud warning, because training MobileNet there is ~50x
 * slower. (The `wasm` backend is not an option: it has no conv backprop kernels.)
 */
import * as tf from "@tensorflow/tfjs";
import * as fs from "node:fs";
import util from "node:util";
import { defaultTensorflowEnv, envChoice } from "./env.ts";
import { UserError } from "./errors.ts";
import { projectPath } from "./paths.ts";

export { tf };

export interface BackendInfo {
  /** The live TF.js backend: "tensorflow" (native) or "cpu" (pure JS). */
  backend: string;
  /** Which package provided it. */
  package: "@tensorflow/tfjs-node-gpu" | "@tensorflow/tfjs-node" | "@tensorflow/tfjs";
  /** Versions of the TF.js packages and, when native, of libtensorflow. */
  versions: Record<string, string>;
  /** Why the native backend is not live, when it is not. */
  nativeError?: string;
}

const GPU_PACKAGE = "@tensorflow/tfjs-node-gpu";
const NODE_PACKAGE = "@tensorflow/tfjs-node";

let initialised: Promise<BackendInfo> | undefined;

/**
 * Initialise TF.js once per process and report which backend is live.
 *
 * `COVID_CXR_BACKEND` chooses: `auto` (default: the GPU package where it runs, else the native
 * backend, else TF.js's pure-JS backend with a loud warning), `native` or `gpu` (their absence is
 * an error), `cpu` (pure JS, for debugging). `quiet` suppresses the slow-backend warning (the
 * setup probe uses it).
 *
 * @example
 * ```ts
 * const info = await initBackend();
 * console.log(info.backend); // "tensorflow"
 * ```
 */
export function initBackend(opts: { quiet?: boolean } = {}): Promise<BackendInfo> {
  initialised ??= load(opts.quiet ?? false);
  return initialised;
}

async function load(quiet: boolean): Promise<BackendInfo> {
  // libtensorflow logs CPU-feature notices to stderr at load; keep only warnings and errors.
  defaultTensorflowEnv("TF_CPP_MIN_LOG_LEVEL", "2");
  // oneDNN's CPU kernels: not on by default in this library; measured on MobileNetV3-Large at
  // 446 px, batch 4, they cut a training step from ~290 to ~190 ms per image on 2 cores.
  // Read when libtensorflow loads, so set before the import; `=0` in the environment still wins.
  defaultTensorflowEnv("TF_ENABLE_ONEDNN_OPTS", "1");
  // Deno's node:util dropped this deprecated helper, which tfjs-node's kernel backend calls.
  // deno-lint-ignore no-explicit-any
  (util as any).isNullOrUndefined ??= (x: unknown) => x === null || x === undefined;

  // auto: the GPU package where it runs, else the native one, else pure JS (loudly); native and
  // gpu make their absence an error; cpu is for debugging.
  const forced = envChoice("COVID_CXR_BACKEND");
  let nativeError: string | undefined;
  if (forced === "gpu" && !(gpuInstalled() && gpuUsable())) {
    throw new UserError(
      `COVID_CXR_BACKEND=gpu, but ${
        gpuInstalled()
          ? "nvidia-smi does not answer: no usable NVIDIA GPU"
          : `${GPU_PACKAGE} is not installed (deno task setup installs it where nvidia-smi answers)`
      }. Unset it (auto) to use the CPU.`,
    );
  }
  if (forced !== "cpu") {
    if (forced !== "native" && gpuInstalled() && gpuUsable()) {
      try {
        // A variable specifier: the GPU package is optional and absent from deno.json.
        const spec = `npm:${GPU_PACKAGE}@${tf.version_core}`;
        const mod = await import(spec);
        await tf.setBackend("tensorflow");
        return info(GPU_PACKAGE, mod.version);
      } catch (error) {
        if (forced === "gpu") {
          throw new UserError(
            `COVID_CXR_BACKEND=gpu, but ${GPU_PACKAGE} does not load: ${firstLine(error)}`,
          );
        }
        nativeError = `${GPU_PACKAGE}: ${firstLine(error)}`;
      }
    }
    try {
      const mod = await import(NODE_PACKAGE);
      if (await tf.setBackend("tensorflow")) {
        return info(NODE_PACKAGE, mod.version, nativeError);
      }
      nativeError = `${NODE_PACKAGE} loaded but the "tensorflow" backend did not initialise`;
    } catch (error) {
      nativeError = `${NODE_PACKAGE}: ${firstLine(error)}`;
    }
  } else {
    nativeError = "COVID_CXR_BACKEND=cpu";
  }
  if (forced === "native") {
    throw new UserError(
      `COVID_CXR_BACKEND=native, but the native TensorFlow backend does not load (${nativeError}). ` +
        "Run `deno task setup`, or unset the variable to fall back to TF.js's pure-JS backend.",
    );
  }
  await tf.setBackend("cpu");
  if (!quiet && forced !== "cpu") {
    console.error(
      [
        "",
        "!!! WARNING: the native TensorFlow backend is not available; using TF.js's pure-JS cpu backend.",
        `!!! Reason: ${nativeError}`,
        "!!! Training MobileNetV3 will be about 50x slower (hours instead of minutes).",
        "!!! Fix: run `deno task setup` (or `deno task setup --rebuild` to rebuild the binding offline).",
        "",
      ].join("\n"),
    );
  }
  return info("@tensorflow/tfjs", tf.version, nativeError);
}

function info(
  pkg: BackendInfo["package"],
  packageVersions: Record<string, string>,
  nativeError?: string,
): BackendInfo {
  const versions: Record<string, string> = { ...packageVersions };
  const backend = tf.getBackend();
  if (backend === "tensorflow") {
    // deno-lint-ignore no-explicit-any
    const binding = (tf.backend() as any).binding;
    if (binding?.TF_Version) versions.libtensorflow = String(binding.TF_Version);
  }
  return { backend, package: pkg, versions, ...(nativeError ? { nativeError } : {}) };
}

function gpuInstalled(): boolean {
  return fs.existsSync(
    projectPath("node_modules", ...GPU_PACKAGE.split("/"), "lib", "napi-v8", "tfjs_binding.node"),
  );
}

function gpuUsable(): boolean {
  try {
    return new Deno.Command("nvidia-smi", { args: ["-L"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

function firstLine(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  return text.split("\n")[0];
}
