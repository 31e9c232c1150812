/** Command-line parsing shared by the task scripts (node:util's parseArgs; jsr's std/cli is unreachable). */
import * as path from "node:path";
import { parseArgs } from "node:util";
import { envFlag, hostEnv } from "./env.ts";
import { UserError } from "./errors.ts";

/** COVID_CXR_DEBUG, read without letting a bad value hide the error being reported. */
function debugging(): boolean {
  try {
    return envFlag("COVID_CXR_DEBUG");
  } catch {
    return true;
  }
}

/** A wrong flag or argument: printed with the usage, exit code 2. */
export class UsageError extends UserError {
  override name = "UsageError";
}

type OptionSpec = { type: "string" | "boolean"; short?: string };

/** Parse `args` against `options`; unknown flags are an error that lists the valid ones. */
export function parseFlags<T extends Record<string, OptionSpec>>(
  args: string[],
  options: T,
): {
  values: { [K in keyof T]?: T[K]["type"] extends "boolean" ? boolean : string };
  positionals: string[];
} {
  try {
    const { values, positionals } = parseArgs({
      args,
      options,
      allowPositionals: true,
      strict: true,
    });
    return { values: values as never, positionals };
  } catch (error) {
    const valid = Object.keys(options).map((k) => `--${k}`).join(" ");
    throw new UsageError(`${(error as Error).message}. Valid options: ${valid}`);
  }
}

/** A number flag: undefined when absent, an error naming the flag when not a number in range. */
export function numberFlag(
  name: string,
  value: string | undefined,
  opts: { integer?: boolean; min?: number; max?: number; above?: number; below?: number } = {},
): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  const bad = !Number.isFinite(n) || (opts.integer && !Number.isInteger(n)) ||
    (opts.min !== undefined && n < opts.min) || (opts.max !== undefined && n > opts.max) ||
    (opts.above !== undefined && n <= opts.above) || (opts.below !== undefined && n >= opts.below);
  if (bad) {
    const range = [
      opts.integer ? "an integer" : "a number",
      opts.min !== undefined ? `≥ ${opts.min}` : "",
      opts.above !== undefined ? `> ${opts.above}` : "",
      opts.max !== undefined ? `≤ ${opts.max}` : "",
      opts.below !== undefined ? `< ${opts.below}` : "",
    ]
      .filter(Boolean).join(" ");
    throw new UsageError(`--${name} must be ${range}, got "${value}"`);
  }
  return n;
}

/** Run a script's main, turning known errors into one clear message and exit code 1 (2 for usage). */
export async function runMain(
  main: () => Promise<void>,
  usage: string,
  opts: { writeAdvice?: string } = {},
): Promise<void> {
  try {
    await main();
  } catch (error) {
    if (error instanceof UsageError) {
      console.error(`${error.message}\n\n${usage}`);
      Deno.exit(2);
    }
    const message = error instanceof UserError
      ? error.message
      : systemErrorMessage(error, opts.writeAdvice);
    if (message === undefined) throw error; // a bug: the stack trace is the report
    console.error(`\n${message}`);
    if (debugging()) console.error((error as Error).stack);
    Deno.exit((error as { exitCode?: number }).exitCode ?? 1);
  }
}

/** Operating-system errors by their errno, and what a user can do about each. */
const SYSTEM_ERRORS: Record<string, { errno: number; advice: string }> = {
  ENOSPC: {
    errno: 28,
    advice: "No space left on the disk. Free some space, or write elsewhere with WHERE. " +
      "Files already written are complete (each is written whole or not at all); an " +
      "interrupted run continues with --resume.",
  },
  EROFS: { errno: 30, advice: "The file system is read-only. Write elsewhere with WHERE." },
  EACCES: { errno: 13, advice: "Permission denied. Write elsewhere with WHERE." },
  ENOENT: { errno: 2, advice: "A file or folder is missing; check the path." },
  EISDIR: { errno: 21, advice: "A folder was given where a file is needed." },
  ENOTDIR: { errno: 20, advice: "A file was given where a folder is needed." },
  EEXIST: {
    errno: 17,
    advice: "A file stands where a folder is needed (a folder in the path is a file). Check the " +
      "path, or write elsewhere with WHERE.",
  },
};

/**
 * One line for an operating-system error (disk full, read-only, permissions, missing paths): what
 * happened and what to do. Undefined for anything else.
 */
export function systemErrorMessage(
  error: unknown,
  writeAdvice = "--out DIR",
): string | undefined {
  if (!(error instanceof Error)) return undefined;
  const code = (error as { code?: string }).code;
  const errno = Number(/\(os error (\d+)\)/.exec(error.message)?.[1]);
  const byName: Record<string, string> = {
    NotFound: "ENOENT",
    PermissionDenied: "EACCES",
    IsADirectory: "EISDIR",
    NotADirectory: "ENOTDIR",
    AlreadyExists: "EEXIST",
  };
  const key = (code && SYSTEM_ERRORS[code] ? code : undefined) ??
    Object.keys(SYSTEM_ERRORS).find((k) => SYSTEM_ERRORS[k].errno === errno) ??
    byName[error.name];
  if (!key) return undefined;
  return `${error.message.split("\n")[0]}\n${
    SYSTEM_ERRORS[key].advice.replace("WHERE", writeAdvice)
  } ` +
    "(COVID_CXR_DEBUG=1 shows where it happened.)";
}

/**
 * A path a user typed, resolved against the folder they ran the task from: `deno task` runs
 * scripts in the project folder and tells them the caller's folder in INIT_CWD.
 */
export function userPath(p: string): string {
  return path.resolve(hostEnv("INIT_CWD") ?? Deno.cwd(), p);
}

/** The path flags among `values`, resolved against the caller's folder ({@link userPath}). */
export function userPaths<T extends Record<string, unknown>>(values: T, keys: (keyof T)[]): T {
  const out = { ...values };
  for (const k of keys) {
    if (typeof out[k] === "string") out[k] = userPath(out[k] as string) as T[keyof T];
  }
  return out;
}
