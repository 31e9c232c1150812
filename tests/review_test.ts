import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { initBackend, tf } from "../lib/backend.ts";
import { buildModel } from "../lib/model.ts";
import { gradCam, heatShare } from "../lib/gradcam.ts";
import { loadCheckpoint } from "../lib/checkpoint.ts";
import { predictImages } from "../lib/predict.ts";
import { runExperiment } from "../lib/experiment.ts";
import { describeImages, loadDataset } from "../lib/dataset.ts";
import { ImageCache } from "../lib/image_cache.ts";
import { metadataBaseline } from "../lib/review.ts";
import { applyMask } from "../lib/preprocess.ts";
import { runSweep, spread, summarizeSweep } from "../lib/sweep.ts";
import { PAPER_CONFIG, sameSettings } from "../lib/config.ts";
import { projectPath } from "../lib/paths.ts";
import { Rng } from "../lib/rng.ts";
import { classPattern, makeSyntheticDataset, SYNTHETIC_CLASSES, writeImage } from "./_synthetic.ts";

await initBackend();

const WORK = await Deno.makeTempDir({ prefix: "review-test-" });
const DATA = await makeSyntheticDataset(path.join(WORK, "data"), { train: 12, test: 4 });
// Two test images that are copies of training images (planted leakage).
for (const c of ["Covid", "Normal"]) {
  const src = fs.readdirSync(path.join(DATA, "train", c)).sort()[0];
  fs.copyFileSync(path.join(DATA, "train", c, src), path.join(DATA, "test", c, `copy-${src}`));
}
globalThis.addEventListener("unload", () => Deno.removeSync(WORK, { recursive: true }));
const SMALL = { imageSize: 32, epochs: 2, batchSize: 8, weights: "none", learningRate: 0.01 };
const quiet = { quiet: true, log: () => {} };

// One finished tiny run shared by the tests below.
const RUN = await runExperiment({
  config: SMALL,
  data: DATA,
  outputs: path.join(WORK, "out"),
  ...quiet,
});

Deno.test("predict: probabilities for images and folders; unreadable inputs listed with the reason", async () => {
  const { model, meta } = await loadCheckpoint(path.join(RUN.runDir, "best"));
  fs.writeFileSync(path.join(WORK, "notes.png"), "not an image");
  const before = tf.memory().numTensors;
  const result = await predictImages(model, meta, [
    path.join(DATA, "test", "Covid"),
    path.join(WORK, "notes.png"),
    path.join(WORK, "missing.jpg"),
  ]);
  assert.equal(tf.memory().numTensors, before, "no tensor left behind");
  assert.equal(result.predictions.length, fs.readdirSync(path.join(DATA, "test", "Covid")).length);
  for (const p of result.predictions) {
    const sum = Object.values(p.probabilities).reduce((a, b) => a + b, 0);
    assert.ok(Math.abs(sum - 1) < 1e-5);
    assert.ok(SYNTHETIC_CLASSES.includes(p.predicted));
  }
  assert.deepEqual(result.failed.map((f) => path.basename(f.file)).sort(), [
    "missing.jpg",
    "notes.png",
  ]);
  assert.match(
    result.failed.find((f) => f.file.endsWith("notes.png"))!.reason,
    /not a readable image/,
  );
  // The same images through evaluation give the same probabilities (same preprocessing).
  const csv = fs.readFileSync(path.join(RUN.runDir, "predictions.csv"), "utf8").split("\n");
  const first = result.predictions[0];
  const row = csv.find((l) => l.startsWith(JSON.stringify(path.relative(DATA, first.file))))!;
  const fromEval = row.split(",").slice(-3).map(Number);
  SYNTHETIC_CLASSES.forEach((c, k) =>
    assert.ok(Math.abs(first.probabilities[c] - fromEval[k]) < 1e-5)
  );
  model.dispose();
});

Deno.test("predict: deno task predict prints a table, writes CSV and JSON, exits 1 when an input failed", async () => {
  const csv = path.join(WORK, "p.csv"), json = path.join(WORK, "p.json");
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      projectPath("scripts", "predict.ts"),
      path.join(DATA, "test", "Normal"),
      path.join(WORK, "nothing-here.png"),
      "--model",
      path.join(RUN.runDir, "best"),
      "--csv",
      csv,
      "--json",
      json,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  assert.equal(out.code, 1);
  assert.match(text, /predicted +Covid +Normal +Viral Pneumonia/);
  assert.match(text, /Not predicted \(1\):\n.*nothing-here\.png: no such file or folder/);
  assert.equal(fs.readFileSync(csv, "utf8").trim().split("\n").length, 1 + 5);
  assert.equal(JSON.parse(fs.readFileSync(json, "utf8")).failed.length, 1);
});

Deno.test("gradcam: maps have the input's shape, lie in [0, 1], and leak no tensor", async () => {
  const { model } = await loadCheckpoint(path.join(RUN.runDir, "best"));
  const x = tf.randomUniform([2, 32, 32, 3], 0, 255, "float32", 3) as tf.Tensor4D;
  const before = tf.memory().numTensors;
  const { heatmaps, predicted } = await gradCam(model, x);
  assert.equal(tf.memory().numTensors, before);
  assert.equal(heatmaps.length, 2);
  assert.equal(predicted.length, 2);
  for (const h of heatmaps) {
    assert.equal(h.length, 32 * 32);
    assert.ok(h.every((v) => v >= 0 && v <= 1));
  }
  x.dispose();
  model.dispose();
});

Deno.test("gradcam: when only the top-left quadrant carries the label, the heat concentrates there", async () => {
  // Class 1: a bright square somewhere in the top-left quadrant; class 0: no square. Noise elsewhere.
  const S = 128, N = 96, w = S / 6;
  const rng = Rng.stream(1, "gradcam-task");
  const image = (label: number) => {
    const px = new Float32Array(S * S * 3);
    for (let i = 0; i < S * S; i++) px.fill(60 + rng.next() * 40, i * 3, i * 3 + 3);
    if (label) {
      const x0 = Math.floor(rng.uniform(0.05, 0.45 - 1 / 6) * S),
        y0 = Math.floor(rng.uniform(0.05, 0.45 - 1 / 6) * S);
      for (let y = y0; y < y0 + w; y++) {
        for (let x = x0; x < x0 + w; x++) px.fill(230, (y * S + x) * 3, (y * S + x) * 3 + 3);
      }
    }
    return px;
  };
  const labels = Array.from({ length: N }, (_, i) => i % 2);
  const data = new Float32Array(N * S * S * 3);
  labels.forEach((l, i) => data.set(image(l), i * S * S * 3));
  const xs = tf.tensor4d(data, [N, S, S, 3]);
  const ys = tf.tidy(() => tf.oneHot(tf.tensor1d(labels, "int32"), 2));
  // BatchNorm momentum 0.5: moving statistics keep up with 36 steps of training.
  const { model } = await buildModel({
    weights: "none",
    numClasses: 2,
    imageSize: S,
    seed: 3,
    batchNormMomentum: 0.5,
  });
  const optimizer = tf.train.momentum(0.01, 0.9);
  for (let epoch = 0; epoch < 6; epoch++) {
    for (let b = 0; b < N; b += 16) {
      const [xb, yb] = [xs.slice([b], [16]), ys.slice([b], [16])];
      optimizer.minimize(
        () =>
          tf.losses.softmaxCrossEntropy(
            yb,
            model.apply(xb, { training: true }) as tf.Tensor,
          ) as tf.Scalar,
      );
      tf.dispose([xb, yb]);
    }
  }
  const accuracy = tf.tidy(() =>
    tf.mean(
      tf.cast(
        tf.equal(tf.argMax(model.predict(xs) as tf.Tensor, 1), tf.tensor1d(labels, "int32")),
        "float32",
      ),
    )
      .dataSync()[0]
  );
  assert.ok(accuracy > 0.9, `the model did not learn the task (accuracy ${accuracy})`);
  const positives = tf.tensor4d(
    labels.flatMap((l, i) => (l === 1 ? [i] : [])).slice(0, 8).flatMap((
      i,
    ) => [...data.subarray(i * S * S * 3, (i + 1) * S * S * 3)]),
    [8, S, S, 3],
  );
  const { heatmaps } = await gradCam(model, positives, { target: Array(8).fill(1) });
  const quadrant = { left: 0, right: 0.5, top: 0, bottom: 0.5 };
  const shares = heatmaps.map((h) => heatShare(h, S, quadrant));
  const mean = shares.reduce((a, b) => a + b, 0) / shares.length;
  assert.ok(
    mean > 0.33,
    `top-left share ${mean.toFixed(2)} (uniform would be 0.25): ${shares.map((s) => s.toFixed(2))}`,
  );
  const hottestInQuadrant = heatmaps.filter((h) => {
    const i = h.indexOf(Math.max(...h));
    return i % S < S / 2 && Math.floor(i / S) < S / 2;
  }).length;
  assert.ok(
    hottestInQuadrant >= 6,
    `hottest pixel in the top-left quadrant for ${hottestInQuadrant} of 8`,
  );
  tf.dispose([xs, ys, positives]);
  optimizer.dispose();
  model.dispose();
});

Deno.test("review: test metrics are reported on all test images and on those not copied from training", () => {
  const unseen = RUN.summary.unseenTest!;
  assert.ok(unseen, "planted copies were found");
  assert.equal(unseen.excluded.length, 2);
  assert.ok(unseen.excluded.every((p) => path.basename(p).startsWith("copy-")));
  assert.equal(unseen.metrics.total, RUN.summary.test.total - 2);
  const report = fs.readFileSync(path.join(RUN.runDir, "report.md"), "utf8");
  assert.match(
    report,
    /On the 12 test images that are not copies of training images \(2 are byte-identical/,
  );
});

Deno.test("review: a classifier on image metadata finds a planted size shortcut", async () => {
  // Classes differ only in image width (and the content is pure noise): metadata suffices.
  const root = path.join(WORK, "shortcut");
  const rng = Rng.stream(2, "shortcut");
  for (const [split, n] of [["train", 10], ["test", 5]] as const) {
    for (const [label, c] of SYNTHETIC_CLASSES.entries()) {
      for (let i = 0; i < n; i++) {
        const w = 40 + 30 * label + rng.int(8), h = 48;
        const noise = classPattern(rng.int(3), w, h, rng); // pattern unrelated to the class
        await writeImage(path.join(root, split, c, `${i}.png`), noise, w, h, "png-rgb");
      }
    }
  }
  const ds = await loadDataset(root);
  const cache = new ImageCache({ imageSize: 32, dir: path.join(WORK, "shortcut-cache") });
  const stats = await describeImages([...ds.train, ...ds.test], cache);
  const baseline = await metadataBaseline(ds.train, ds.test, stats, 3);
  assert.equal(baseline.all.accuracy, 1, `metadata classifier: ${baseline.all.accuracy}`);
  const best = baseline.single.reduce((a, b) => (b.metrics.accuracy > a.metrics.accuracy ? b : a));
  assert.ok(["width", "aspect ratio"].includes(best.feature), best.feature);
});

Deno.test("review: the border-only and lung-only masks blank the right parts", () => {
  const size = 20;
  const ones = () => new Float32Array(size * size * 3).fill(1);
  const at = (px: Float32Array, x: number, y: number) => px[(y * size + x) * 3];
  const border = applyMask(ones(), size, "border-only");
  const lung = applyMask(ones(), size, "lung-only");
  assert.equal(at(border, 10, 10), 0, "centre blanked when only the border is shown");
  assert.equal(at(border, 1, 1), 1);
  assert.equal(at(lung, 10, 10), 1);
  assert.equal(at(lung, 1, 1), 0, "corner blanked when only the lung field is shown");
  assert.equal(at(lung, 19, 10), 0);
  assert.deepEqual(applyMask(ones(), size, "none"), ones());
});

Deno.test("review: a seed sweep reports mean, sd and range, and re-running it reuses finished seeds", async () => {
  const s = spread([0.9, 0.95, 1]);
  assert.ok(Math.abs(s.mean - 0.95) < 1e-12 && Math.abs(s.sd - 0.05) < 1e-12, JSON.stringify(s));
  assert.deepEqual([s.min, s.max], [0.9, 1]);
  assert.equal(spread([0.5]).sd, 0);
  const lines: string[] = [];
  const opts = {
    config: SMALL,
    data: DATA,
    outputs: path.join(WORK, "sweeps"),
    quiet: true,
    log: (l: string) => lines.push(l),
  };
  const sweep = await runSweep([1, 2], opts);
  assert.equal(sweep.runs.length, 2);
  assert.deepEqual(sweep.runs.map((r) => r.config.seed), [1, 2]);
  const acc = sweep.runs.map((r) => r.test.accuracy);
  assert.deepEqual(sweep.summary.accuracy, spread(acc));
  assert.deepEqual(summarizeSweep(sweep.runs), sweep.summary);
  for (
    const f of [
      "sweep.json",
      "report.md",
      "seed_spread.svg",
      "seed_spread.png",
      "seed1/report.md",
      "seed2/best/model.json",
    ]
  ) {
    assert.ok(fs.existsSync(path.join(sweep.sweepDir, f)), f);
  }
  assert.match(
    fs.readFileSync(path.join(sweep.sweepDir, "report.md"), "utf8"),
    /\| accuracy \| .* points \|/,
  );
  lines.length = 0;
  await runSweep([1, 2], opts);
  assert.deepEqual(lines.filter((l) => l.startsWith("Seed")), [
    `Seed 1: finished before, reusing ${path.join(sweep.sweepDir, "seed1")}`,
    `Seed 2: finished before, reusing ${path.join(sweep.sweepDir, "seed2")}`,
  ]);
  assert.ok(sameSettings(sweep.runs[0].config, { ...sweep.runs[1].config }, ["seed"]));
  assert.ok(!sameSettings(sweep.runs[0].config, { ...PAPER_CONFIG }));
});
