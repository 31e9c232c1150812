/**
 * Batches as TF.js tensors from an async iterator. While the caller trains on one batch, the next
 * one's pixels are being read and augmented (reads from disk overlap; the augmentation itself is
 * JavaScript on the same thread, a few ms per image against ~0.5 s of training).
 */
import { tf } from "../backend.ts";
import type { AugmentationOptions, InputMask } from "../config.ts";
import type { Rng } from "../rng.ts";
import { type Table, table } from "../tables.ts";
import type { ImageItem } from "./image_folder.ts";
import type { ImageCache } from "./image_cache.ts";
import { applyAugmentation, sampleAugmentation, toFloat } from "./augment.ts";
import { applyMask } from "./masks.ts";

export interface Batch {
  /** Tensor4D [B, S, S, 3] float32 RGB in 0..255 (the model normalises); caller disposes. */
  x: tf.Tensor4D;
  /** Tensor1D [B] int32 class indices; caller disposes. */
  labels: tf.Tensor1D;
  items: ImageItem[];
}

export interface BatchOptions {
  batchSize: number;
  cache: ImageCache;
  /** Shuffle the order with this stream (training); absent: the items' order. */
  shuffle?: Rng;
  /** Augment every image with this stream and these options (training only). */
  augment?: { rng: Rng; options: AugmentationOptions };
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
    const data = new Float32Array(chunk.length * size * size * 3);
    // Augment in item order so the random stream is consumed deterministically.
    pixels.forEach((p, k) => {
      const image = opts.augment
        ? applyAugmentation(p, size, sampleAugmentation(opts.augment.rng, opts.augment.options))
        : toFloat(p);
      data.set(applyMask(image, size, opts.mask ?? "none"), k * size * size * 3);
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
