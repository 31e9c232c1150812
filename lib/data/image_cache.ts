/**
 * Decode and resize each image once per size, then keep the pixels: in memory for this process
 * and on disk (git-ignored `.cache/images/`) for later epochs, notebooks and runs. Keyed by the
 * file's content hash, so a renamed file still hits and a changed file never does.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { writeFileAtomic } from "../files.ts";
import { projectCacheDir } from "../paths.ts";
import { DECODE_RECIPE, decodeResized, ImageError } from "./decode.ts";

/** What the cache needs to know about an image. */
export interface CacheKey {
  path: string;
  sha256: string;
}

export interface CacheStats {
  decoded: number;
  fromDisk: number;
  fromMemory: number;
}

export class ImageCache {
  readonly imageSize: number;
  readonly dir: string;
  readonly maxPixels?: number;
  readonly stats: CacheStats = { decoded: 0, fromDisk: 0, fromMemory: 0 };
  #memory = new Map<string, Uint8Array>();
  #memoryBytes = 0;
  readonly #memoryLimit: number;

  constructor(
    opts: { imageSize: number; dir?: string; maxPixels?: number; memoryLimitBytes?: number },
  ) {
    this.imageSize = opts.imageSize;
    this.dir = path.join(
      opts.dir ?? path.join(projectCacheDir(), "images"),
      DECODE_RECIPE,
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
      // A file of the wrong size (an interrupted write from an older version) is decoded again.
      if (data.length === expected) pixels = data;
    } catch { /* not cached yet */ }
    if (pixels) {
      this.stats.fromDisk++;
    } else {
      pixels = await decodeResized(item.path, this.imageSize, { maxPixels: this.maxPixels });
      this.stats.decoded++;
      await writeFileAtomic(file, pixels);
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
