/**
 * The training augmentation (flip and colour jitter, lib/data/augment.ts) in C: `cxr_augment` in
 * the fused kernels' library (native/cxr_kernels.c), called through Deno's FFI on the JavaScript
 * arrays themselves, a batch per call, its images split between the cores.
 *
 * Why: in JavaScript it takes ~10 ms an image at 446 px, on the thread that then runs the training
 * step, so about a tenth of every epoch. The C version does the same arithmetic in the same order
 * (each value in double, rounded to float32 when stored), so it gives the same bits; the tests
 * compare the two on random images and parameters.
 */
import type { AugmentationParams, BatchAugmenter, JitterStep } from "../data/mod.ts";
import { kernelLibrary } from "./kernel_library.ts";
import { chooseKernels } from "./kernels.ts";

/** cxr_augment's step codes (native/cxr_kernels.c). */
const STEP_CODES: Record<JitterStep, number> = {
  brightness: 0,
  contrast: 1,
  saturation: 2,
  hue: 3,
};
/** Per image: flip, then four (step code, factor) pairs; -1 ends the steps. */
const PARAMS_PER_IMAGE = 9;

/** One image's drawn augmentation as cxr_augment reads it. */
export function augmentationRow(p: AugmentationParams): number[] {
  const row = [p.flip ? 1 : 0];
  for (const step of p.order) row.push(STEP_CODES[step], p.factors[step]!);
  while (row.length < PARAMS_PER_IMAGE) row.push(-1, 0);
  return row;
}

/** A batch augmenter and the library handle behind it; `dispose()` lets go of the handle. */
export interface NativeAugmenter {
  apply: BatchAugmenter;
  dispose(): void;
}

/**
 * The fused kernels' augmenter, or undefined when they are not loaded here (then the JavaScript
 * one runs, with the same results).
 */
export function nativeAugmenter(): NativeAugmenter | undefined {
  // Loads the library into TensorFlow first (it registers TensorFlow's ops as it opens).
  if (chooseKernels().kind !== "fused") return undefined;
  const lib = Deno.dlopen(kernelLibrary().file, {
    cxr_augment: {
      parameters: ["buffer", "buffer", "buffer", "i64", "i64", "i64"],
      result: "void",
    },
  });
  return {
    apply: (pixels, size, params) => {
      const n = size * size * 3;
      if (params.length !== pixels.length || pixels.some((p) => p.length !== n)) {
        throw new Error(`augmenter: ${pixels.length} images of ${size}² pixels expected`);
      }
      const batch = new Uint8Array(pixels.length * n);
      pixels.forEach((p, k) => batch.set(p, k * n));
      const out = new Float32Array(pixels.length * n);
      lib.symbols.cxr_augment(
        batch,
        Float64Array.from(params.flatMap(augmentationRow)),
        out,
        BigInt(pixels.length),
        BigInt(size),
        BigInt(size),
      );
      return out;
    },
    dispose: () => lib.close(),
  };
}
