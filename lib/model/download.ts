/**
 * Downloading an official weight file once into the user cache: streamed to a temporary file
 * with a progress bar, accepted only when its hash is the one published, then renamed into place
 * (a half-downloaded or wrong file is never cached).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { hashFile } from "../files.ts";
import { createProgress } from "../progress.ts";
import { WeightsError } from "./errors.ts";

/** How a downloaded file is checked: its hex digest equals, or starts with, `expected`. */
export interface HashCheck {
  algorithm: "sha256" | "md5";
  expected: string;
  /** torchvision checks only the first 8 hex digits of the SHA-256 (they are in the file name). */
  prefix?: boolean;
}

/** Whether `file` passes `check`; the actual digest either way. */
export async function hashMatches(
  file: string,
  check: HashCheck,
): Promise<{ ok: boolean; actual: string }> {
  const actual = await hashFile(file, check.algorithm);
  return {
    ok: check.prefix ? actual.startsWith(check.expected) : actual === check.expected,
    actual,
  };
}

/** "the SHA-256 starting with 8738ca79" / "the MD5 59e5…": for messages. */
export function describeCheck(check: HashCheck): string {
  const name = check.algorithm === "sha256" ? "SHA-256" : "MD5";
  return check.prefix
    ? `a ${name} starting with ${check.expected}`
    : `the ${name} ${check.expected}`;
}

/**
 * Download `url` to `file` unless it is there. `help` says what else the user can do (put the
 * file there by hand, other weights); it ends every failure message.
 */
export async function downloadOnce(
  url: string,
  file: string,
  check: HashCheck,
  opts: { what: string; help: string; quiet?: boolean },
): Promise<void> {
  if (fs.existsSync(file)) return;
  const partial = `${file}.partial-${Deno.pid}`;
  let response: Response;
  try {
    response = await fetch(url);
  } catch (error) {
    throw new WeightsError(
      `Cannot get ${opts.what}: downloading ${url} failed (${(error as Error).message}).\n` +
        opts.help,
    );
  }
  if (!response.ok || !response.body) {
    await response.body?.cancel();
    throw new WeightsError(
      `Cannot get ${opts.what}: ${url} answered HTTP ${response.status}.\n${opts.help}`,
    );
  }
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const total = Number(response.headers.get("content-length") ?? 0);
  const megabytes = (n: number) => Math.round(n / 1e6);
  const progress = createProgress(`Downloading ${path.basename(file)}`, megabytes(total) || 1, {
    quiet: opts.quiet,
  });
  const out = await Deno.open(partial, { write: true, create: true, truncate: true });
  let received = 0;
  try {
    for await (const chunk of response.body) {
      await out.write(chunk);
      received += chunk.length;
      progress.update(Math.min(megabytes(received), megabytes(total) || 1), "MB");
    }
  } catch (error) {
    fs.rmSync(partial, { force: true });
    throw new WeightsError(
      `Cannot get ${opts.what}: the download of ${url} broke off after ${megabytes(received)} MB ` +
        `(${(error as Error).message}). Nothing was cached; try again.\n${opts.help}`,
    );
  } finally {
    out.close();
  }
  await progress.end();
  const { ok, actual } = await hashMatches(partial, check);
  if (!ok) {
    fs.rmSync(partial, { force: true });
    throw new WeightsError(
      `Cannot use the download of ${url}: its ${check.algorithm.toUpperCase()} is ${actual}, ` +
        `expected ${describeCheck(check)}. Nothing was cached; try again.\n${opts.help}`,
    );
  }
  fs.renameSync(partial, file);
}
