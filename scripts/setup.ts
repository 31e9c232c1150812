/**
 * `deno task setup`: everything the project needs, installed by the project itself.
 *
 * 1. npm packages from deno.json (`deno install`). tfjs-node's own install script runs and tries to
 *    download libtensorflow and a prebuilt binding from Google storage — what a connected user gets.
 * 2. When that native backend does not load, build it offline: libtensorflow from PyPI's
 *    `tensorflow-cpu` wheel (it ships the TF_/TFE_ C API) and the tfjs-node binding with node-gyp.
 *    The wheel, the extracted library and the built binding are cached in the user cache dir, so a
 *    second clone or a repeat setup only links files.
 *    Where `nvidia-smi` answers, tfjs-node's GPU build is installed too (`@tensorflow/tfjs-node-gpu`,
 *    its own download); the backend then uses it (lib/backend.ts) and every run records which ran.
 * 3. The project's fused kernels (native/cxr_kernels.c), compiled with the system's C compiler
 *    against that backend's TensorFlow C API; when they cannot be built, one line says why and
 *    runs use TensorFlow's standard kernels (and say so).
 * 4. JupyterLab in a project-local venv (`.venv/`) with the Deno kernel registered inside it, so
 *    the user's global Jupyter is never touched.
 *
 * Flags: `--if-needed` (only file checks when everything is in place; used by other tasks),
 * `--skip-lab` (no JupyterLab), `--rebuild` (ignore the native backend in place and build it
 * offline again), `--json` (print the step report as JSON on the last line).
 *
 * Only `node:` built-ins and lib/paths.ts, lib/files.ts, lib/env.ts and lib/engine/kernel_library.ts
 * (through them) are imported: nothing else is installed yet.
 */
import { userCacheDir } from "../lib/paths.ts";
import { log, seconds, SetupError, type StepReport } from "./setup/common.ts";
import { ensureGpuBackend } from "./setup/gpu.ts";
import { ensureLab, labInPlace } from "./setup/jupyterlab.ts";
import { ensureKernels } from "./setup/kernels.ts";
import { kernelLibraryAttempted } from "../lib/engine/kernel_library.ts";
import { backendInPlace, ensureNativeBackend } from "./setup/native_backend.ts";
import { ensureNpmPackages, missingNpmPackages } from "./setup/npm.ts";

export {
  type Action,
  LAB_PACKAGES,
  OFFLINE_BUILD,
  SetupError,
  type StepReport,
} from "./setup/common.ts";
export { declaredNpmPackages } from "./setup/npm.ts";
export {
  ensureBinding,
  ensureLibrary,
  ensureWheel,
  offlineCachePaths,
  probeBackend,
  type ProbeResult,
  tfjsNodeDir,
} from "./setup/native_backend.ts";
export { detectNvidiaGpu, GPU_PACKAGE } from "./setup/gpu.ts";

/** True when every part is in place, by file checks alone (no process spawned). */
export function everythingInPlace(opts: { skipLab: boolean }): boolean {
  return missingNpmPackages().length === 0 && backendInPlace() && kernelLibraryAttempted() &&
    (opts.skipLab || labInPlace());
}

export async function setup(
  opts: { ifNeeded?: boolean; skipLab?: boolean; rebuild?: boolean } = {},
): Promise<StepReport[]> {
  const skipLab = opts.skipLab ?? false;
  if (opts.ifNeeded && !opts.rebuild && everythingInPlace({ skipLab })) return [];
  const steps: StepReport[] = [];
  const npm = await ensureNpmPackages();
  steps.push(npm.report);
  steps.push(
    await ensureNativeBackend({
      rebuild: opts.rebuild ?? false,
      prebuiltFailure: npm.prebuiltFailure,
    }),
  );
  steps.push(await ensureKernels({ retry: !opts.ifNeeded }));
  steps.push(await ensureGpuBackend());
  if (!skipLab) steps.push(await ensureLab());
  return steps;
}

if (import.meta.main) {
  const args = new Set(Deno.args);
  const known = ["--if-needed", "--skip-lab", "--rebuild", "--json"];
  const unknown = [...args].filter((a) => !known.includes(a));
  if (unknown.length > 0) {
    console.error(`setup: unknown option ${unknown.join(" ")}; valid: ${known.join(" ")}`);
    Deno.exit(2);
  }
  const t0 = performance.now();
  try {
    const steps = await setup({
      ifNeeded: args.has("--if-needed"),
      skipLab: args.has("--skip-lab"),
      rebuild: args.has("--rebuild"),
    });
    if (steps.length > 0 || !args.has("--if-needed")) {
      for (const s of steps) {
        log(`  ${s.step.padEnd(15)} ${s.action.padEnd(10)} ${s.detail} (${s.seconds} s)`);
      }
      log(`setup done in ${seconds(t0)} s (cache: ${userCacheDir()})`);
    }
    if (args.has("--json")) console.log(JSON.stringify({ steps, seconds: seconds(t0) }));
  } catch (error) {
    if (error instanceof SetupError) {
      console.error(`\nsetup failed: ${error.message}`);
      Deno.exit(1);
    }
    throw error;
  }
}
