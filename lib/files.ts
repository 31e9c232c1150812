/**
 * Writing files so that a reader (or an interrupted run) never sees half of one: write beside the
 * target, then rename, which is atomic on one file system. Folders are replaced the same way, and
 * a replacement cut short at any point (a kill between two renames included) is finished or undone
 * by the next reader or writer.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { createHash } from "node:crypto";
import process from "node:process";
import { envValue } from "./env.ts";

let counter = 0;
function tempName(target: string, kind = "tmp"): string {
  return `${target}.${kind}-${Deno.pid}-${counter++}`;
}

/** Temporaries these helpers leave behind when killed: `<name>.tmp-<pid>-<n>`, `<name>.old-…`. */
const TEMPORARY = /\.(tmp|old)-\d+-\d+$/;

/**
 * Whether the process that named temporary `name` still runs, so that it may be writing it now
 * (another process listing runs must not take a run's state folder away mid-save). A zombie (killed,
 * not yet reaped) counts as gone.
 */
function writerRunning(name: string): boolean {
  const pid = Number(/-(\d+)-\d+$/.exec(name)?.[1]);
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
  } catch (error) {
    if ((error as { code?: string }).code !== "EPERM") return false;
  }
  try {
    // /proc/<pid>/stat: "pid (name) state …"; the name may hold spaces and parentheses.
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return true; // no /proc (not Linux): the signal said it runs
  }
}

/** Written last into a folder being filled: the folder is complete. */
const COMPLETE = ".complete";

/**
 * Test hook for fault injection: `COVID_CXR_FAULT=<point>:<n>` kills this process (SIGKILL, no
 * clean-up) the n-th time it passes `point`. Points: "dir-filled" (a replacement folder is
 * complete but not yet in place), "dir-swapped" (the old folder moved aside, the new one not yet
 * in place), and the training loop's own.
 */
export function faultPoint(point: string): void {
  const spec = envValue("COVID_CXR_FAULT");
  if (!spec) return;
  const [name, nth] = spec.split(":");
  if (name !== point) return;
  faultCounts.set(point, (faultCounts.get(point) ?? 0) + 1);
  if (faultCounts.get(point) === Number(nth ?? 1)) Deno.kill(Deno.pid, "SIGKILL");
}
const faultCounts = new Map<string, number>();

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
  recoverDir(dir);
  const tmp = tempName(dir);
  await Deno.mkdir(tmp, { recursive: true });
  try {
    await fill(tmp);
    await Deno.writeTextFile(path.join(tmp, COMPLETE), "");
  } catch (error) {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    throw error;
  }
  faultPoint("dir-filled");
  const old = fs.existsSync(dir) ? tempName(dir, "old") : undefined;
  if (old) await Deno.rename(dir, old);
  faultPoint("dir-swapped");
  await Deno.rename(tmp, dir);
  if (old) await Deno.remove(old, { recursive: true });
}

/**
 * Finish or undo a folder replacement that was cut short (see {@link replaceDirAtomic}): when
 * `dir` is missing, a complete replacement takes its place, else the old folder goes back; stale
 * temporaries beside `dir` are removed. Safe to call at any time from any process: temporaries of
 * a process that still runs are left alone (it may be writing them; one writer per folder).
 */
export function recoverDir(dir: string): void {
  const parent = path.dirname(dir), base = path.basename(dir);
  if (!fs.existsSync(parent)) return;
  const siblings = fs.readdirSync(parent)
    .filter((n) => n.startsWith(`${base}.`) && TEMPORARY.test(n) && !writerRunning(n))
    .map((n) => path.join(parent, n));
  if (siblings.length === 0) return;
  if (!fs.existsSync(dir)) {
    const complete = siblings.find((s) =>
      s.includes(".tmp-") && fs.existsSync(path.join(s, COMPLETE))
    );
    const old = siblings.find((s) => s.includes(".old-"));
    const restore = complete ?? old;
    if (restore) fs.renameSync(restore, dir);
  }
  for (const s of siblings) if (fs.existsSync(s)) fs.rmSync(s, { recursive: true, force: true });
}

/**
 * Remove what an interrupted process left in `dir` (temporary files and folders from atomic
 * writes), finishing any folder replacement first. Returns the names removed.
 */
export function cleanTemporaries(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  const removed: string[] = [];
  for (const name of fs.readdirSync(dir)) {
    const m = /^(.*)\.(tmp|old)-\d+-\d+$/.exec(name);
    if (!m || writerRunning(name)) continue;
    const target = path.join(dir, m[1]);
    if (fs.existsSync(path.join(dir, name)) && fs.statSync(path.join(dir, name)).isDirectory()) {
      recoverDir(target);
    } else {
      fs.rmSync(path.join(dir, name), { force: true });
    }
    if (!fs.existsSync(path.join(dir, name))) removed.push(name);
  }
  return removed;
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
