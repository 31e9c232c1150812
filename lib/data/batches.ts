/**
 * Batches as TF.js tensors from an async iterator. While the caller trains on one batch, the next
 * one's pixels are being read and augmented (reads from disk overlap; the augmentation itself runs
 * on the same thread: JavaScript, ~10 ms an image at 446 px, or a batch augmenter the caller gives,
 * such as the fused kernels' one, lib/engine/augmenter.ts, with the same results).
 */
import { tf } from "../backend.ts";
import type { AugmentationOptions, InputMask } from "../config.ts";
import type { Rng } from "../rng.ts";
import { type Table, table } from "../tables.ts";
import type { ImageItem } from "./image_folder.ts";
import type { ImageCache } from "./image_cache.ts";
import {
  applyAugmentation,
  type AugmentationParams,
  sampleAugmentation,
  toFloat,
} from "./augment.ts";
import { applyMask } from "./masks.ts";

export interface Batch {
  /** Tensor4D [B, S, S, 3] float32 RGB in 0..255 (the model normalises); caller disposes. */
  x: tf.Tensor4D;
  /** Tensor1D [B] int32 class indices; caller disposes. */
  labels: tf.Tensor1D;
  items: ImageItem[];
}

/**
 * Augments a batch at once: each image's pixels ([size, size, 3] RGB) with its drawn parameters,
 * returned as one Float32Array [B, size, size, 3]. It must give what applyAugmentation gives.
 */
export type BatchAugmenter = (
  pixels: readonly Uint8Array[],
  size: number,
  params: readonly AugmentationParams[],
) => Float32Array;

export interface BatchOptions {
  batchSize: number;
  cache: ImageCache;
  /** Shuffle the order with this stream (training); absent: the items' order. */
  shuffle?: Rng;
  /**
   * Augment every image with this stream and these options (training only); `apply` computes the
   * drawn augmentation of a whole batch (else applyAugmentation, image by image).
   */
  augment?: { rng: Rng; options: AugmentationOptions; apply?: BatchAugmenter };
  /** Blank part of every image (the review's shortcut experiments); default none. */
  mask?: InputMask;
  /**
   * Leave out the first `skip` batches (an epoch resumed part-way), drawing their augmentation
   * all the same, so the batches that follow are exactly those of the uninterrupted epoch.
   */
  skip?: number;
}

/** The batch count for `n` items (the last batch may be smaller, as PyTorch's default). */
export function batchCount(n: number, batchSize: number): number {
  return Math.ceil(n / batchSize);
}

/**
 * Iterate over `items` in batches. Tensors are created at yield time only, so a consumer that stops
 * early leaves nothing undisposed behind; each yielded batch is the consumer's to dispose.
 */
export async function* iterateBatches(
  items: readonly ImageItem[],
  opts: BatchOptions,
): AsyncGenerator<Batch> {
  const order = opts.shuffle ? opts.shuffle.permutation(items.length) : items.map((_, i) => i);
  const chunks: ImageItem[][] = [];
  for (let i = 0; i < order.length; i += opts.batchSize) {
    chunks.push(order.slice(i, i + opts.batchSize).map((j) => items[j]));
  }
  const size = opts.cache.imageSize;
  const prepare = async (chunk: ImageItem[]) => {
    const pixels = await Promise.all(chunk.map((item) => opts.cache.get(item)));
    const n = size * size * 3;
    // Drawn in item order so the random stream is consumed deterministically.
    const params = opts.augment
      ? pixels.map(() => sampleAugmentation(opts.augment!.rng, opts.augment!.options))
      : undefined;
    const mask = opts.mask ?? "none";
    if (params && opts.augment?.apply) {
      const data = opts.augment.apply(pixels, size, params);
      // The mask in place, image by image (applyMask writes into the array it is given).
      pixels.forEach((_, k) => applyMask(data.subarray(k * n, (k + 1) * n), size, mask));
      return { chunk, data };
    }
    const data = new Float32Array(chunk.length * n);
    pixels.forEach((p, k) => {
      const image = params ? applyAugmentation(p, size, params[k]) : toFloat(p);
      data.set(applyMask(image, size, mask), k * n);
    });
    return { chunk, data };
  };
  const first = Math.min(opts.skip ?? 0, chunks.length);
  if (opts.augment) {
    for (const chunk of chunks.slice(0, first)) {
      for (const _ of chunk) sampleAugmentation(opts.augment.rng, opts.augment.options);
    }
  }
  let pending = first < chunks.length ? prepare(chunks[first]) : undefined;
  try {
    for (let i = first; i < chunks.length; i++) {
      const ready = await pending!;
      pending = i + 1 < chunks.length ? prepare(chunks[i + 1]) : undefined;
      yield {
        x: tf.tensor4d(ready.data, [ready.chunk.length, size, size, 3]),
        labels: tf.tensor1d(ready.chunk.map((it) => it.label), "int32"),
        items: ready.chunk,
      };
    }
  } finally {
    // A consumer that stopped early: the prefetch's outcome no longer matters.
    pending?.catch(() => {});
  }
}

/** What a batch holds, for display: shapes, dtypes, value range and labels. */
export async function batchSummary(batch: Batch, classNames: readonly string[]): Promise<Table> {
  const [min, max] = tf.tidy(() => [batch.x.min(), batch.x.max()]);
  const [lo, hi] = [(await min.data())[0], (await max.data())[0]];
  tf.dispose([min, max]);
  return table([
    {
      tensor: "x",
      shape: `[${batch.x.shape}]`,
      dtype: batch.x.dtype,
      values: `${lo.toFixed(1)} … ${hi.toFixed(1)}`,
    },
    {
      tensor: "labels",
      shape: `[${batch.labels.shape}]`,
      dtype: batch.labels.dtype,
      values: batch.items.map((i) => classNames[i.label]).join(", "),
    },
  ]);
}
