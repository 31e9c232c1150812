/**
 * Writing files so that a reader (or an interrupted run) never sees half of one: write beside the
 * target, then rename, which is atomic on one file system.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { createHash } from "node:crypto";

let counter = 0;
function tempName(target: string): string {
  return `${target}.tmp-${Deno.pid}-${counter++}`;
}

/** Write bytes or text atomically, creating parent folders. */
export async function writeFileAtomic(file: string, data: string | Uint8Array): Promise<void> {
  await Deno.mkdir(path.dirname(file), { recursive: true });
  const tmp = tempName(file);
  try {
    if (typeof data === "string") await Deno.writeTextFile(tmp, data);
    else await Deno.writeFile(tmp, data);
    await Deno.rename(tmp, file);
  } catch (error) {
    await Deno.remove(tmp).catch(() => {});
    throw error;
  }
}

/** Write pretty JSON atomically. */
export function writeJsonAtomic(file: string, value: unknown): Promise<void> {
  return writeFileAtomic(file, JSON.stringify(value, null, 2) + "\n");
}

/**
 * Fill a new folder and put it in place of `dir` in one step: `fill` writes into a temporary
 * sibling; only when it succeeds does that replace `dir` (the old one is removed afterwards).
 */
export async function replaceDirAtomic(
  dir: string,
  fill: (tmpDir: string) => Promise<void>,
): Promise<void> {
  const tmp = tempName(dir);
  await Deno.mkdir(tmp, { recursive: true });
  try {
    await fill(tmp);
  } catch (error) {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    throw error;
  }
  const old = fs.existsSync(dir) ? tempName(`${dir}.old`) : undefined;
  if (old) await Deno.rename(dir, old);
  await Deno.rename(tmp, dir);
  if (old) await Deno.remove(old, { recursive: true });
}

/** Hex digest of a file's bytes, streamed ("sha256" for data and weights, "md5" for Keras's files). */
export async function hashFile(
  file: string,
  algorithm: "sha256" | "md5" = "sha256",
): Promise<string> {
  const hash = createHash(algorithm);
  for await (const chunk of fs.createReadStream(file)) hash.update(chunk as Uint8Array);
  return hash.digest("hex");
}
