import assert from "node:assert/strict";
import {
  applyAugmentation,
  type AugmentationParams,
  initBackend,
  PAPER_CONFIG,
  Rng,
  sampleAugmentation,
} from "../../lib/mod.ts";
import { halves, pixelAt } from "../_synthetic.ts";

await initBackend();

Deno.test("augment: augmentation is reproducible from the seed and differs between seeds", () => {
  const px = halves(16, 16, [200, 120, 90], [20, 60, 40]);
  const draw = (seed: number) => {
    const rng = Rng.stream(seed, "augment", 1);
    return [0, 1, 2].map(() =>
      applyAugmentation(px, 16, sampleAugmentation(rng, PAPER_CONFIG.augmentation))
    );
  };
  assert.deepEqual(draw(7), draw(7));
  assert.notDeepEqual(draw(7), draw(8));
  const rng = Rng.stream(1, "x");
  const flips = Array.from(
    { length: 2000 },
    () => sampleAugmentation(rng, PAPER_CONFIG.augmentation).flip,
  );
  const rate = flips.filter(Boolean).length / flips.length;
  assert.ok(Math.abs(rate - 0.5) < 0.05, `flip rate ${rate}`);
});

Deno.test("augment: flip mirrors; brightness, contrast, saturation, hue follow torchvision's formulas", () => {
  const only = (
    step: AugmentationParams["order"][0],
    f: number,
    flip = false,
  ): AugmentationParams => ({
    flip,
    order: [step],
    factors: { [step]: f },
  });
  // 2×1 image: pixel A (100,100,100), pixel B (200,200,200).
  const grays = new Uint8Array([100, 100, 100, 200, 200, 200]);
  assert.deepEqual([...applyAugmentation(grays, 1, { flip: false, order: [], factors: {} })], [
    100,
    100,
    100,
    200,
    200,
    200,
  ]);
  const flipped = applyAugmentation(halves(4, 4, [255, 0, 0], [0, 0, 255]), 4, {
    flip: true,
    order: [],
    factors: {},
  });
  assert.deepEqual(pixelAt(flipped, 4, 0, 0), [0, 0, 255]);
  assert.deepEqual(pixelAt(flipped, 4, 3, 3), [255, 0, 0]);
  // Brightness 1.5: multiply, clamp at 255.
  const sq = new Uint8Array([100, 100, 100, 200, 200, 200, 100, 100, 100, 200, 200, 200]); // 2×2
  assert.deepEqual([...applyAugmentation(sq, 2, only("brightness", 1.5))].slice(0, 6), [
    150,
    150,
    150,
    255,
    255,
    255,
  ]);
  // Contrast 0.5: blend with the image's mean gray (150).
  assert.deepEqual([...applyAugmentation(sq, 2, only("contrast", 0.5))].slice(0, 6), [
    125,
    125,
    125,
    175,
    175,
    175,
  ]);
  // Saturation 0 on pure red: its gray level 0.299 · 255 in every channel.
  const red = new Uint8Array([255, 0, 0]);
  const desat = applyAugmentation(red, 1, only("saturation", 0));
  for (const v of desat) assert.ok(Math.abs(v - 0.299 * 255) < 1e-3);
  // Hue +1/3 turns red into green; +1/2 into cyan.
  assert.deepEqual([...applyAugmentation(red, 1, only("hue", 1 / 3))].map(Math.round), [0, 255, 0]);
  assert.deepEqual([...applyAugmentation(red, 1, only("hue", 0.5))].map(Math.round), [0, 255, 255]);
  // A gray image does not change under saturation or hue: they do nothing to a gray X-ray.
  assert.deepEqual([...applyAugmentation(sq, 2, only("saturation", 1.7))], [...sq]);
  assert.deepEqual([...applyAugmentation(sq, 2, only("hue", 0.2))], [...sq]);
});
