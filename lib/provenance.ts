/** Where a result came from: code version and runtime, recorded in checkpoints and reports. */
import { PROJECT_ROOT } from "./paths.ts";

let cached: string | undefined;

/** `git describe`-like version of this checkout ("a1b2c3d", "+dirty" when modified), or "unknown". */
export function codeVersion(): string {
  if (cached !== undefined) return cached;
  try {
    const run = (...args: string[]) => {
      const out = new Deno.Command("git", {
        args,
        cwd: PROJECT_ROOT,
        stdout: "piped",
        stderr: "null",
      })
        .outputSync();
      return out.success ? new TextDecoder().decode(out.stdout).trim() : undefined;
    };
    const head = run("rev-parse", "--short", "HEAD");
    // The code a run's numbers depend on: the library, the tasks and the fused kernels' C source.
    const dirty = run(
      "status",
      "--porcelain",
      "--untracked-files=no",
      "--",
      "lib",
      "scripts",
      "native",
    );
    cached = head ? `${head}${dirty ? "+dirty" : ""}` : "unknown";
  } catch {
    cached = "unknown";
  }
  return cached;
}

/** Deno, V8 and TypeScript versions plus the platform. */
export function runtimeInfo(): Record<string, string> {
  return {
    deno: Deno.version.deno,
    v8: Deno.version.v8,
    typescript: Deno.version.typescript,
    platform: `${Deno.build.os}-${Deno.build.arch}`,
  };
}
