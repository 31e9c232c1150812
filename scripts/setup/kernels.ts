/**
 * The fused kernels (native/cxr_kernels.c): compiled with the system's C compiler against the
 * TensorFlow C API headers and library the native backend uses, into the user cache
 * (lib/engine/kernel_library.ts says where). They are optional: when they cannot be built, setup
 * says why in one line, records the reason, and runs use TensorFlow's standard kernels and say so.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { KERNEL_CFLAGS, KERNEL_SOURCE, kernelLibrary } from "../../lib/engine/kernel_library.ts";
import { exists, log, run, seconds, type StepReport, tail } from "./common.ts";
import { ensureLibrary, ensureWheel, offlineCachePaths, tfjsNodeDir } from "./native_backend.ts";

const hasKernelApi = (include: string) =>
  exists(path.join(include, "tensorflow", "c", "kernels.h"));

/**
 * Header folders to compile against, best first: tfjs-node's own (deps/include), the offline
 * route's extraction in the cache, and last the one extracted from the `tensorflow-cpu` wheel
 * (a download where it is not cached; only when the others did not compile).
 */
async function* includeDirs(pkg: string): AsyncGenerator<string> {
  const tried = new Set<string>();
  for (
    const dir of [
      path.join(pkg, "deps", "include"),
      path.join(offlineCachePaths().library, "include"),
    ]
  ) {
    if (hasKernelApi(dir) && !tried.has(fs.realpathSync(dir))) {
      tried.add(fs.realpathSync(dir));
      yield dir;
    }
  }
  const wheel = await ensureWheel();
  const extracted = path.join((await ensureLibrary(wheel.file)).dir, "include");
  if (!tried.has(fs.realpathSync(extracted))) yield extracted;
}

/**
 * Build the library for the current source unless it exists; a recorded failure stands unless
 * `retry` (a plain `deno task setup` retries; `--if-needed` does not). `compiler` defaults to cc.
 */
export async function ensureKernels(
  opts: { retry: boolean; compiler?: string },
): Promise<StepReport> {
  const t0 = performance.now();
  const { file, failed } = kernelLibrary();
  const report = (action: StepReport["action"], detail: string): StepReport => ({
    step: "fused kernels",
    action,
    detail,
    seconds: seconds(t0),
  });
  if (exists(file)) return report("present", path.basename(file));
  if (exists(failed) && !opts.retry) {
    return report("unavailable", `not built: ${fs.readFileSync(failed, "utf8").trim()}`);
  }
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const fail = (why: string): StepReport => {
    fs.writeFileSync(failed, why + "\n");
    log(`• Fused kernels not built (${why}); runs use TensorFlow's standard kernels.`);
    return report("unavailable", `not built: ${why}`);
  };
  const cc = opts.compiler ?? "cc";
  // The compiler first: without one, no header is worth fetching.
  try {
    if ((await run(cc, ["--version"])).code !== 0) return fail(`${cc} --version failed`);
  } catch {
    return fail(`no C compiler (${cc}) on PATH; install one (apt-get install gcc), then run setup`);
  }
  const pkg = tfjsNodeDir();
  const lib = path.join(pkg, "deps", "lib");
  if (!exists(path.join(lib, "libtensorflow_framework.so.2"))) {
    return fail(`no libtensorflow_framework.so.2 in ${lib}`);
  }
  const partial = `${file}.partial-${Deno.pid}`;
  let output = "no TensorFlow C API headers with tensorflow/c/kernels.h";
  try {
    for await (const include of includeDirs(pkg)) {
      const result = await run(cc, [
        ...KERNEL_CFLAGS,
        `-I${include}`,
        "-o",
        partial,
        KERNEL_SOURCE,
        `-L${lib}`,
        "-l:libtensorflow_framework.so.2",
        `-Wl,-rpath,${fs.realpathSync(lib)}`,
      ], { label: "compiling the fused kernels" });
      if (result.code === 0) {
        fs.renameSync(partial, file);
        fs.rmSync(failed, { force: true });
        return report("built", path.basename(file));
      }
      output = result.output;
    }
  } catch (error) {
    output = (error as Error).message;
  } finally {
    fs.rmSync(partial, { force: true });
  }
  log(tail(output, 8));
  return fail(`${cc} could not compile ${path.basename(KERNEL_SOURCE)} (its messages are above)`);
}
