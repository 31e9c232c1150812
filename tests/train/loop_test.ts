import assert from "node:assert/strict";
import * as path from "node:path";
import {
  buildModel,
  ImageCache,
  initBackend,
  loadDataset,
  runConfig,
  splitTrainValidation,
  tf,
  trainModel,
} from "../../lib/mod.ts";
import { syntheticData } from "../_fixtures.ts";
import { freshDir } from "../_temp.ts";

await initBackend();

Deno.test("loop: trainModel() keeps tf.memory().numTensors flat from epoch to epoch, and the loss falls", async () => {
  const WORK = freshDir("loop");
  const ds = await loadDataset(await syntheticData());
  const config = runConfig({
    imageSize: 32,
    epochs: 3,
    batchSize: 8,
    weights: "none",
    learningRate: 0.01,
  });
  const { train, validation } = splitTrainValidation(ds.train, {
    validationFraction: 0.14,
    seed: 1,
  });
  const cache = new ImageCache({ imageSize: 32, dir: path.join(WORK, "cache") });
  const before = tf.memory().numTensors;
  const { model, weights } = await buildModel({
    weights: "none",
    numClasses: 3,
    imageSize: 32,
    seed: 1,
  });
  const counts: number[] = [];
  const losses: number[] = [];
  await trainModel(model, {
    config,
    classNames: ds.classNames,
    train,
    validation,
    cache,
    runDir: path.join(WORK, "leak-run"),
    weights,
    quiet: true,
    log: () => {},
    onEpoch: (r) => {
      counts.push(tf.memory().numTensors);
      losses.push(r.trainLoss);
    },
  });
  assert.equal(new Set(counts).size, 1, `tensor count changed between epochs: ${counts}`);
  model.dispose();
  assert.equal(tf.memory().numTensors, before, "everything disposed after training");
  // And it learns: the bright band's position is easy to find.
  assert.ok(losses[2] < losses[0], `training loss did not fall: ${losses}`);
});
