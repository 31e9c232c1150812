import assert from "node:assert/strict";
import {
  applyAugmentation,
  type AugmentationParams,
  graphEnginesUnavailable,
  initBackend,
  nativeAugmenter,
  Rng,
  sampleAugmentation,
} from "../../lib/mod.ts";

await initBackend();
// The fused kernels need the native backend, which CI runs and where setup builds them.
const native = graphEnginesUnavailable() === undefined;

/** Seeded pixels: gray (R = G = B), coloured, or gray with a few pure and tied colours. */
function image(rng: Rng, size: number, kind: "gray" | "colour" | "mixed"): Uint8Array {
  const px = new Uint8Array(size * size * 3);
  for (let i = 0; i < px.length; i += 3) {
    const v = Math.floor(rng.uniform(0, 256));
    const colour = kind === "colour" || (kind === "mixed" && rng.next() < 0.2);
    px[i] = v;
    px[i + 1] = colour ? Math.floor(rng.uniform(0, 256)) : v;
    px[i + 2] = colour ? Math.floor(rng.uniform(0, 256)) : v;
  }
  if (kind === "mixed" && size >= 3) {
    // Hue's branches: red, green or blue the largest, ties between two, black and white.
    px.set([255, 0, 0, 0, 255, 0, 0, 0, 255, 200, 200, 10, 10, 200, 200, 0, 0, 0, 255, 255, 255]);
  }
  return px;
}

/** Bit patterns, so that equal means the same float32 bits, not values within a tolerance. */
const bits = (x: Float32Array) => new Uint32Array(x.buffer, x.byteOffset, x.length);

Deno.test({
  name:
    "augmenter: the fused kernels' batch augmentation gives the bits JavaScript's does (every jitter order, flips, gray and colour images, odd sizes, batch 1 to 5)",
  ignore: !native,
  fn: () => {
    // With TensorFlow's kernels asked for, training keeps JavaScript's augmentation.
    const asked = Deno.env.get("COVID_CXR_KERNELS");
    Deno.env.set("COVID_CXR_KERNELS", "standard");
    try {
      assert.equal(nativeAugmenter(), undefined);
    } finally {
      if (asked === undefined) Deno.env.delete("COVID_CXR_KERNELS");
      else Deno.env.set("COVID_CXR_KERNELS", asked);
    }
    const augmenter = nativeAugmenter();
    assert.ok(augmenter, "setup builds the fused kernels, which carry the augmenter");
    try {
      const rng = Rng.stream(3, "augmenter-test");
      // Stronger than the paper's jitter, so clamping at 0 and 255 and large hue turns happen.
      const strong = {
        flipProbability: 0.5,
        brightness: 0.9,
        contrast: 0.9,
        saturation: 0.9,
        hue: 0.5,
      };
      const none = { flipProbability: 1, brightness: 0, contrast: 0, saturation: 0, hue: 0 };
      let compared = 0;
      const orders = new Set<string>();
      for (const size of [1, 5, 17, 64]) {
        for (const batch of [1, 3, 5]) {
          const kinds = ["gray", "colour", "mixed"] as const;
          const pixels = Array.from({ length: batch }, (_, k) => image(rng, size, kinds[k % 3]));
          const params: AugmentationParams[] = pixels.map((_, k) =>
            sampleAugmentation(rng, k === 1 ? none : strong)
          );
          params.forEach((p) => orders.add(p.order.join(",")));
          const out = augmenter.apply(pixels, size, params);
          assert.equal(out.length, batch * size * size * 3);
          const n = size * size * 3;
          pixels.forEach((p, k) => {
            const expected = applyAugmentation(p, size, params[k]);
            const got = out.subarray(k * n, (k + 1) * n);
            const a = bits(expected), b = bits(got);
            const first = a.findIndex((v, i) => v !== b[i]);
            assert.equal(
              first,
              -1,
              `size ${size}, image ${k} (${JSON.stringify(params[k])}): value ${first} is ${
                got[first]
              }, JavaScript's ${expected[first]}`,
            );
            compared++;
          });
        }
      }
      assert.equal(compared, 4 * (1 + 3 + 5));
      assert.ok(orders.size >= 10, `${orders.size} jitter orders drawn`);
    } finally {
      augmenter.dispose();
    }
  },
});
