/** Command-line parsing shared by the task scripts (node:util's parseArgs; jsr's std/cli is unreachable). */
import { parseArgs } from "node:util";
import { UserError } from "./errors.ts";

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
  opts: { integer?: boolean; min?: number; max?: number } = {},
): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  const bad = !Number.isFinite(n) || (opts.integer && !Number.isInteger(n)) ||
    (opts.min !== undefined && n < opts.min) || (opts.max !== undefined && n > opts.max);
  if (bad) {
    const range = [
      opts.integer ? "an integer" : "a number",
      opts.min !== undefined ? `≥ ${opts.min}` : "",
      opts.max !== undefined ? `≤ ${opts.max}` : "",
    ]
      .filter(Boolean).join(" ");
    throw new UsageError(`--${name} must be ${range}, got "${value}"`);
  }
  return n;
}

/** Run a script's main, turning known errors into one clear message and exit code 1 (2 for usage). */
export async function runMain(main: () => Promise<void>, usage: string): Promise<void> {
  try {
    await main();
  } catch (error) {
    if (error instanceof UsageError) {
      console.error(`${error.message}\n\n${usage}`);
      Deno.exit(2);
    }
    if (error instanceof UserError) {
      console.error(`\n${error.message}`);
      if (Deno.env.get("COVID_CXR_DEBUG")) console.error(error.stack);
      Deno.exit(1);
    }
    throw error;
  }
}
