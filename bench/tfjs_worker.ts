/**
 * One TF.js measurement in a fresh process (so its peak memory is its own), printed as JSON:
 *
 *   deno run -A bench/tfjs_worker.ts --mode train|infer --size 446 --batch 4 --steps 3
 *
 * Train: the training step `deno task reproduce` takes (SGD with momentum, cross-entropy, model in
 * training mode) on random pixels; infer: `model.predict`. The first step is a warm-up and is not
 * timed. Peak resident memory is the kernel's high-water mark for this process (lib/memory.ts).
 */
import * as path from "node:path";
import {
  buildMobileNetV3Large,
  buildModel,
  createPredictor,
  createStepEngine,
  graphStepEngine,
  ImageCache,
  initBackend,
  iterateBatches,
  KERAS_NORMALIZATION,
  loadDataset,
  modelCost,
  nativeAugmenter,
  numberFlag,
  type OpTiming,
  parseFlags,
  peakResidentMB,
  prepareData,
  profileByKind,
  readStepStats,
  resolveDataDir,
  Rng,
  runConfig,
  sessionSettings,
  tf,
  threadPools,
  topOps,
  TORCHVISION_IMAGENET_NORMALIZATION,
  trainModel,
} from "../lib/mod.ts";

const { values: v } = parseFlags(Deno.args, {
  mode: { type: "string" },
  size: { type: "string" },
  batch: { type: "string" },
  steps: { type: "string" },
  data: { type: "string" },
  convention: { type: "string" },
});
const convention = v.convention ?? "torchvision";
const mode = v.mode ?? "train";
const size = numberFlag("size", v.size, { integer: true, min: 32 }) ?? 224;
const batch = numberFlag("batch", v.batch, { integer: true, min: 1 }) ?? 1;
const steps = numberFlag("steps", v.steps, { integer: true, min: 1 }) ?? 3;

await initBackend({ quiet: true });

if (mode === "decode" || mode === "batches" || mode === "epoch") {
  await pipelineMeasurement();
  Deno.exit(0);
}

/**
 * decode: every image decoded and resized into an empty cache (cold); batches: one epoch of
 * augmented training batches from the warm cache, no training; epoch: one training epoch and its
 * validation pass, as `deno task reproduce` runs them (cache warm).
 */
/** One measurement as the JSON line the bench reads (the last line of stdout). */
function emit(fields: Record<string, unknown>) {
  console.log(
    JSON.stringify({
      framework: "tfjs",
      mode,
      size,
      batch,
      ...fields,
      threadPools: threadPools(sessionSettings()),
      peakRssMB: peakResidentMB(),
    }),
  );
}

async function pipelineMeasurement() {
  const scratch = await Deno.makeTempDir({ prefix: "bench-" });
  try {
    const config = runConfig({ imageSize: size, batchSize: batch, weights: "none", epochs: 1 });
    if (mode === "decode") {
      const ds = await loadDataset(resolveDataDir(v.data));
      const items = [...ds.train, ...ds.test];
      const cache = new ImageCache({ imageSize: size, dir: path.join(scratch, "cache") });
      const t0 = performance.now();
      await cache.warm(items);
      const seconds = (performance.now() - t0) / 1000;
      emit({ images: items.length, seconds, cacheMB: Math.round(cache.diskBytes() / 2 ** 20) });
      return;
    }
    const data = await prepareData({ data: v.data, config });
    if (mode === "batches") {
      // The augmentation training uses: the fused kernels' where they load, else JavaScript's.
      const augmenter = nativeAugmenter();
      try {
        const t0 = performance.now();
        for await (
          const b of iterateBatches(data.splits.train, {
            batchSize: batch,
            cache: data.cache,
            shuffle: Rng.stream(1, "shuffle", 1),
            augment: {
              rng: Rng.stream(1, "augment", 1),
              options: config.augmentation,
              apply: augmenter?.apply,
            },
          })
        ) tf.dispose([b.x, b.labels]);
        const seconds = (performance.now() - t0) / 1000;
        emit({ images: data.splits.train.length, seconds });
      } finally {
        augmenter?.dispose();
      }
      return;
    }
    const { model, weights } = await buildModel({
      weights: "none",
      numClasses: 3,
      imageSize: size,
      seed: 1,
    });
    const t0 = performance.now();
    await trainModel(model, {
      config,
      classNames: data.dataset.classNames,
      train: data.splits.train,
      validation: data.splits.validation,
      cache: data.cache,
      runDir: path.join(scratch, "run"),
      weights,
      quiet: true,
      log: () => {},
    });
    const seconds = (performance.now() - t0) / 1000;
    emit({ images: data.splits.train.length + data.splits.validation.length, seconds });
  } finally {
    await Deno.remove(scratch, { recursive: true });
  }
}

// The model `deno task reproduce --weights none` trains (torchvision's conventions), or with
// `--convention keras` Keras's (the conventions of --weights keras).
const model = buildMobileNetV3Large({
  imageSize: size,
  numClasses: 3,
  ...(convention === "keras"
    ? { normalization: KERAS_NORMALIZATION, convention: "keras" }
    : { normalization: TORCHVISION_IMAGENET_NORMALIZATION, convention: "torchvision" }),
  seed: 1,
  batchNormMomentum: 0.99,
});
const x = tf.randomUniform([batch, size, size, 3], 0, 255, "float32", 1) as tf.Tensor4D;
const labels = tf.tensor1d(Array.from({ length: batch }, (_, i) => i % 3), "int32");
if (mode === "profile") {
  await profileMeasurement();
  Deno.exit(0);
}

/** Memory bandwidth as one thread copying 256 MB sees it (bytes read + written per second). */
function copyBandwidth(): number {
  const n = 64 * 2 ** 20;
  const from = new Float32Array(n).fill(1), to = new Float32Array(n);
  to.set(from);
  const t0 = performance.now();
  for (let i = 0; i < 5; i++) to.set(from);
  return (5 * 2 * 4 * n) / ((performance.now() - t0) / 1000) / 1e9;
}

/**
 * profile: the graph training step traced by TensorFlow (per-op step stats), after two warm-up
 * steps; untraced steps timed alongside, since tracing adds overhead of its own.
 */
async function profileMeasurement() {
  const engine = graphStepEngine(model, { learningRate: 0.001, momentum: 0.9, numClasses: 3 });
  try {
    for (let i = 0; i < 2; i++) await engine.step(x, labels, i);
    const untraced: number[] = [];
    const traced: OpTiming[][] = [];
    for (let i = 0; i < steps; i++) {
      const t0 = performance.now();
      await engine.step(x, labels, 10 + i);
      untraced.push(performance.now() - t0);
      traced.push(readStepStats((await engine.traceStep(x, labels, 20 + i)).metadata));
    }
    emit({
      msPerStep: untraced,
      bandwidthGBs: copyBandwidth(),
      kinds: profileByKind(traced),
      top: topOps(traced, 20),
      cost: modelCost(model),
      settings: sessionSettings(),
      kernels: engine.kernels,
    });
  } finally {
    engine.dispose();
  }
}
// What training uses: the whole step as one TensorFlow graph with the native backend
// (lib/engine/graph_train.ts), else TF.js's eager step; COVID_CXR_TRAIN_ENGINE=eager compares.
const engine = mode === "train"
  ? await createStepEngine(model, { learningRate: 0.001, momentum: 0.9, numClasses: 3 })
  : undefined;
// What evaluation and prediction use: the whole model as one TensorFlow graph with the native
// backend (lib/engine/graph_predictor.ts), else the eager plan (BatchNorm folded).
const predictor = mode === "infer" ? createPredictor(model) : undefined;
const times: number[] = [];
for (let i = 0; i <= steps; i++) {
  const t0 = performance.now();
  if (engine) {
    await engine.step(x, labels, i);
  } else {
    const y = predictor!.predict(x);
    await y.data();
    y.dispose();
  }
  if (i > 0) times.push((performance.now() - t0) / batch);
}
emit({
  msPerImage: times,
  engine: engine?.kind ?? predictor?.engine,
  ...(engine ? { kernels: engine.kernels.kind } : {}),
});
