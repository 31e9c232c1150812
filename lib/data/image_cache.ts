/**
 * Decode and resize each image once per size, then keep the pixels: in memory for this process
 * and on disk (git-ignored `.cache/images/`) for later epochs, notebooks and runs. Keyed by the
 * file's content hash, so a renamed file still hits and a changed file never does. Each file on
 * disk ends with the SHA-256 of its pixels: a damaged entry (even one of the right size) is
 * decoded again, never used.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { createHash } from "node:crypto";
import { writeFileAtomic } from "../files.ts";
import { projectCacheDir } from "../paths.ts";
import { decodeRecipe, decodeResized, ImageError } from "./decode.ts";

/** What the cache needs to know about an image. */
export interface CacheKey {
  path: string;
  sha256: string;
}

export interface CacheStats {
  decoded: number;
  fromDisk: number;
  fromMemory: number;
  /** Entries on disk that failed their checksum (decoded again). */
  damaged: number;
}

export class ImageCache {
  readonly imageSize: number;
  readonly dir: string;
  readonly maxPixels?: number;
  readonly stats: CacheStats = { decoded: 0, fromDisk: 0, fromMemory: 0, damaged: 0 };
  #memory = new Map<string, Uint8Array>();
  #writable = true;
  #memoryBytes = 0;
  readonly #memoryLimit: number;

  /** Decode every image as 1-channel gray at this size first (see decodeResized). */
  readonly grayAt?: number;
  /** Apply EXIF orientation tags (see decodeResized; the paper's pipeline does not). */
  readonly exifRotate: boolean;

  constructor(
    opts: {
      imageSize: number;
      dir?: string;
      maxPixels?: number;
      memoryLimitBytes?: number;
      grayAt?: number;
      exifRotate?: boolean;
    },
  ) {
    this.imageSize = opts.imageSize;
    this.grayAt = opts.grayAt;
    this.exifRotate = opts.exifRotate ?? false;
    this.dir = path.join(
      opts.dir ?? path.join(projectCacheDir(), "images"),
      `${decodeRecipe(opts.grayAt, opts.exifRotate)}+sha256`,
      String(opts.imageSize),
    );
    this.maxPixels = opts.maxPixels;
    this.#memoryLimit = opts.memoryLimitBytes ?? 2 * 1024 ** 3;
  }

  #file(sha256: string): string {
    return path.join(this.dir, sha256.slice(0, 2), `${sha256}.rgb`);
  }

  /**
   * The image's pixels at the cache's size.
   * @returns Uint8Array [imageSize, imageSize, 3] RGB; shared, do not modify.
   */
  async get(item: CacheKey): Promise<Uint8Array> {
    const hit = this.#memory.get(item.sha256);
    if (hit) {
      this.stats.fromMemory++;
      return hit;
    }
    const expected = this.imageSize * this.imageSize * 3;
    const file = this.#file(item.sha256);
    let pixels: Uint8Array | undefined;
    try {
      const data = await Deno.readFile(file);
      const body = data.subarray(0, expected);
      // Wrong size or wrong checksum (a damaged file): decoded again.
      if (data.length === expected + 32 && sameBytes(digest(body), data.subarray(expected))) {
        pixels = body;
      } else {
        this.stats.damaged++;
      }
    } catch { /* not cached yet */ }
    if (pixels) {
      this.stats.fromDisk++;
    } else {
      pixels = await decodeResized(item.path, this.imageSize, {
        maxPixels: this.maxPixels,
        grayAt: this.grayAt,
        exifRotate: this.exifRotate,
      });
      this.stats.decoded++;
      if (this.#writable) {
        const entry = new Uint8Array(expected + 32);
        entry.set(pixels);
        entry.set(digest(pixels), expected);
        try {
          await writeFileAtomic(file, entry);
        } catch (error) {
          if (!unwritable(error)) throw error;
          // A read-only or full cache costs speed, never the run: this process keeps pixels in
          // memory and says once (decodes run two at a time) where else a cache could go.
          if (this.#writable) {
            this.#writable = false;
            console.error(
              `Cannot write decoded images to ${this.dir} (${
                (error as Error).message.split("\n")[0]
              }): they are kept in memory for this run only. Set ` +
                "COVID_CXR_PROJECT_CACHE=DIR to cache them in a writable folder.",
            );
          }
        }
      }
    }
    if (this.#memoryBytes + pixels.length <= this.#memoryLimit) {
      this.#memory.set(item.sha256, pixels);
      this.#memoryBytes += pixels.length;
    }
    return pixels;
  }

  /**
   * Bring every item into the cache, `concurrency` decodes at a time (libvips threads do the work).
   * Returns the items that failed to decode with the reason, instead of stopping at the first.
   */
  async warm(
    items: readonly CacheKey[],
    opts: { concurrency?: number; onProgress?: (done: number, total: number) => void } = {},
  ): Promise<{ item: CacheKey; reason: string }[]> {
    const failures: { item: CacheKey; reason: string }[] = [];
    let next = 0, done = 0;
    const worker = async () => {
      while (next < items.length) {
        const item = items[next++];
        try {
          await this.get(item);
        } catch (error) {
          if (!(error instanceof ImageError)) throw error;
          failures.push({ item, reason: error.message });
        }
        opts.onProgress?.(++done, items.length);
      }
    };
    await Promise.all(Array.from({ length: opts.concurrency ?? 2 }, worker));
    return failures;
  }

  /** Bytes on disk for this size. */
  diskBytes(): number {
    if (!fs.existsSync(this.dir)) return 0;
    let total = 0;
    for (const sub of fs.readdirSync(this.dir)) {
      for (const f of fs.readdirSync(path.join(this.dir, sub))) {
        total += fs.statSync(path.join(this.dir, sub, f)).size;
      }
    }
    return total;
  }
}

function digest(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(createHash("sha256").update(bytes).digest());
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/** A write that failed because of where it went (read-only, permissions, disk full). */
function unwritable(error: unknown): boolean {
  const text = String((error as Error)?.message ?? error);
  return error instanceof Deno.errors.PermissionDenied || error instanceof Deno.errors.NotFound ||
    /EROFS|EACCES|EPERM|ENOSPC|ENOTDIR|read-only|Not a directory|os error (13|28|30|20|1)\)/i.test(
      text,
    );
}
