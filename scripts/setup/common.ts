/**
 * What every setup step shares: the versions it installs, its report and error types, and small
 * helpers (running a command with a heartbeat, reading a stamp). Only `node:` built-ins and the
 * dependency-free core files: nothing else is installed yet.
 */
import * as fs from "node:fs";

/** What the offline route builds from; the versions the binding was proven with. */
export const OFFLINE_BUILD = Object.freeze({
  tensorflowWheel: "tensorflow-cpu",
  tensorflowVersion: "2.21.0",
  wheelPythonVersion: "3.11",
  wheelPlatform: "manylinux_2_27_x86_64",
  napiVersion: 8,
  libraries: ["libtensorflow_cc.so.2", "libtensorflow_framework.so.2"],
  // Headers the binding's two .cc files and the fused kernels (native/cxr_kernels.c) include
  // (found with the compiler's -MD output).
  headerDirs: [
    "tensorflow/c/",
    "tensorflow/core/platform/",
    "tsl/platform/",
    "xla/tsl/c/",
    "tensorflow/core/common_runtime/next_pluggable_device/c/",
  ],
});

/** JupyterLab and nbconvert versions installed into `.venv/`. */
export const LAB_PACKAGES = Object.freeze(["jupyterlab==4.6.6", "nbconvert==7.17.2"]);

export type Action = "present" | "installed" | "downloaded" | "built" | "linked" | "unavailable";
export interface StepReport {
  step: string;
  action: Action;
  detail: string;
  seconds: number;
}

/** A setup failure with what was tried and what to do, for the user. */
export class SetupError extends Error {
  override name = "SetupError";
}

export function exists(p: string): boolean {
  return fs.existsSync(p);
}

export function log(message: string): void {
  console.error(message);
}

export interface RunResult {
  code: number;
  output: string;
}

/**
 * Run a command. With `inherit` the user sees its own progress output; otherwise output is
 * captured and a heartbeat line is printed every `heartbeatSeconds` so long steps show progress.
 */
export async function run(
  cmd: string,
  args: string[],
  opts: { cwd?: string; env?: Record<string, string>; inherit?: boolean; label?: string } = {},
): Promise<RunResult> {
  const command = new Deno.Command(cmd, {
    args,
    cwd: opts.cwd,
    env: opts.env,
    stdin: "null",
    stdout: opts.inherit ? "inherit" : "piped",
    stderr: opts.inherit ? "inherit" : "piped",
  });
  let child: Deno.ChildProcess;
  try {
    child = command.spawn();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new SetupError(`Cannot run "${cmd}": not found on PATH`);
    }
    throw error;
  }
  const started = performance.now();
  const timer = opts.label && !opts.inherit
    ? setInterval(() => {
      log(`    … ${opts.label} (${Math.round((performance.now() - started) / 1000)} s)`);
    }, 10_000)
    : undefined;
  try {
    const out = await child.output();
    const text = opts.inherit
      ? ""
      : new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    return { code: out.code, output: text };
  } finally {
    if (timer !== undefined) clearInterval(timer);
  }
}

export function tail(text: string, lines = 15): string {
  return text.trim().split("\n").slice(-lines).map((l) => `    ${l}`).join("\n");
}

export function readJson<T>(file: string): T | undefined {
  try {
    return JSON.parse(fs.readFileSync(file, "utf8")) as T;
  } catch {
    return undefined;
  }
}

export function seconds(since: number): number {
  return Math.round((performance.now() - since) / 100) / 10;
}
