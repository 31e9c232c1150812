/**
 * `deno task evaluate --model DIR --data DIR`: a saved checkpoint on any ImageFolder directory
 * (a folder of class folders, or a data set root, whose test/ is then used).
 */
import * as path from "node:path";
import {
  accuracySentence,
  classificationReport,
  evaluateModel,
  ImageCache,
  initBackend,
  loadCheckpoint,
  loadEvaluationImages,
  numberFlag,
  outputsRoot,
  parseFlags,
  resolveDataDir,
  runMain,
  validateDataset,
  writeEvaluation,
} from "../lib/mod.ts";

const USAGE =
  `Usage: deno task evaluate [--model DIR] [--data DIR] [--out DIR] [--batch-size N] [--skip-bad]

  --model DIR      a checkpoint folder (default: outputs/latest/best)
  --data DIR       an ImageFolder (one sub-folder per class) or a data set root with test/
                   (default: $COVID_CXR_DATA or data/Covid19-dataset, its test/)
  --out DIR        also write metrics.json, classification_report.txt, predictions.csv and the
                   confusion matrix there
  --batch-size N   default 8
  --skip-bad       leave unreadable images out instead of stopping`;

async function main() {
  const { values: v } = parseFlags(Deno.args, {
    model: { type: "string" },
    data: { type: "string" },
    out: { type: "string" },
    "batch-size": { type: "string" },
    "skip-bad": { type: "boolean" },
    help: { type: "boolean" },
  });
  if (v.help) return console.log(USAGE);
  await initBackend();
  const modelDir = v.model ?? path.join(outputsRoot(), "latest", "best");
  const { model, meta } = await loadCheckpoint(modelDir);
  const dataDir = v.data ?? resolveDataDir();
  const items = await loadEvaluationImages(dataDir, meta.classNames);
  const cache = new ImageCache({ imageSize: meta.imageSize });
  const { dataset, report } = await validateDataset(
    { root: dataDir, classNames: meta.classNames, train: [], test: items },
    cache,
    { skipBad: v["skip-bad"] },
  );
  const evaluation = await evaluateModel(model, dataset.test, {
    cache,
    numClasses: meta.classNames.length,
    batchSize: numberFlag("batch-size", v["batch-size"], { integer: true, min: 1 }),
  });
  model.dispose();
  console.log(
    `Checkpoint: ${modelDir} (epoch ${
      meta.epoch ?? "?"
    }, ${meta.imageSize} px, weights ${meta.weights.kind})`,
  );
  console.log(
    `Images: ${dataset.test.length} from ${dataDir}${
      report.skipped.length ? ` (${report.skipped.length} skipped)` : ""
    }`,
  );
  console.log(`Accuracy: ${accuracySentence(evaluation.metrics)}\n`);
  console.log(classificationReport(evaluation.metrics, meta.classNames));
  console.log("Confusion matrix (rows: true, columns: predicted)");
  evaluation.metrics.confusion.forEach((row, k) =>
    console.log(
      `  ${meta.classNames[k].padEnd(16)} ${row.map((n) => String(n).padStart(4)).join("")}`,
    )
  );
  if (v.out) {
    await writeEvaluation(path.resolve(v.out), evaluation, meta.classNames);
    console.log(`\nWritten to ${path.resolve(v.out)}`);
  }
}

await runMain(main, USAGE);
