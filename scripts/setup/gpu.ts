/** Step 2b: tfjs-node's GPU build, where an NVIDIA GPU answers `nvidia-smi`. */
import * as fs from "node:fs";
import * as path from "node:path";
import { projectPath } from "../../lib/paths.ts";
import { exists, log, run, seconds, type StepReport, tail } from "./common.ts";
import { tfjsNodeDir, tfjsNodeVersion } from "./native_backend.ts";

export const GPU_PACKAGE = "@tensorflow/tfjs-node-gpu";

/** The first GPU `nvidia-smi -L` lists ("GPU 0: …"), or undefined when it does not answer. */
export function detectNvidiaGpu(searchPath?: string): string | undefined {
  try {
    const out = new Deno.Command("nvidia-smi", {
      args: ["-L"],
      stdout: "piped",
      stderr: "null",
      ...(searchPath === undefined ? {} : { env: { PATH: searchPath } }),
    }).outputSync();
    const line = new TextDecoder().decode(out.stdout).split("\n").find((l) => /^GPU \d+:/.test(l));
    return out.success ? line?.trim() : undefined;
  } catch {
    return undefined; // no nvidia-smi on PATH
  }
}

function gpuPackageInPlace(): boolean {
  return exists(
    projectPath("node_modules", ...GPU_PACKAGE.split("/"), "lib", "napi-v8", "tfjs_binding.node"),
  );
}

/**
 * Where `nvidia-smi` answers, install tfjs-node's GPU build (its install script downloads the GPU
 * libtensorflow from Google storage; the version matches tfjs-node's). Without a GPU, nothing.
 * A failed install does not fail setup: the CPU backend still works, and the step says why.
 */
export async function ensureGpuBackend(): Promise<StepReport> {
  const t0 = performance.now();
  const gpu = detectNvidiaGpu();
  if (!gpu) {
    return {
      step: "GPU backend",
      action: "present",
      detail: "no NVIDIA GPU (nvidia-smi does not answer): runs use the CPU backend",
      seconds: 0,
    };
  }
  if (gpuPackageInPlace()) {
    return {
      step: "GPU backend",
      action: "present",
      detail: `${GPU_PACKAGE} for ${gpu}`,
      seconds: 0,
    };
  }
  log(
    `• ${gpu} answers: installing ${GPU_PACKAGE} (its install script downloads libtensorflow for GPUs) …`,
  );
  const version = tfjsNodeVersion(tfjsNodeDir());
  const entry = projectPath(".cache", "gpu-backend.ts");
  fs.mkdirSync(path.dirname(entry), { recursive: true });
  fs.writeFileSync(entry, `import "npm:${GPU_PACKAGE}@${version}";\n`);
  const result = await run(Deno.execPath(), [
    "install",
    `--allow-scripts=npm:${GPU_PACKAGE}`,
    "--entrypoint",
    entry,
  ], { cwd: projectPath(), label: `deno install ${GPU_PACKAGE}` });
  if (result.code !== 0 || !gpuPackageInPlace()) {
    return {
      step: "GPU backend",
      action: "present",
      detail: `${gpu} found, but ${GPU_PACKAGE} could not be installed (${
        tail(result.output, 1).trim() || `exit ${result.code}`
      }): runs use the CPU backend`,
      seconds: seconds(t0),
    };
  }
  return {
    step: "GPU backend",
    action: "installed",
    detail: `${GPU_PACKAGE} ${version} for ${gpu} (COVID_CXR_BACKEND=native keeps the CPU)`,
    seconds: seconds(t0),
  };
}
