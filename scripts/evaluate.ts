/**
 * `deno task evaluate [--model DIR|FILE.pt] [--data DIR]`: a saved model on any ImageFolder
 * directory (a folder of class folders, or a data set root, whose test/ is then used).
 */
import * as path from "node:path";
import {
  accuracySentence,
  classificationReport,
  evaluateFolder,
  imageFolderClasses,
  initBackend,
  loadModel,
  numberFlag,
  outputsRoot,
  parseFlags,
  resolveDataDir,
  runMain,
  writeEvaluation,
} from "../lib/mod.ts";

const USAGE = `Usage: deno task evaluate [--model DIR|FILE] [--data DIR] [--out DIR] [options]

  --model DIR|FILE   a checkpoint folder (default: outputs/latest/best), or a PyTorch state_dict
                     of torchvision's mobilenet_v3_large with a fine-tuned classifier (.pt/.pth)
  --data DIR         an ImageFolder (one sub-folder per class) or a data set root with test/
                     (default: $COVID_CXR_DATA or data/Covid19-dataset, its test/)
  --classes a,b,c    class names in output order, for a PyTorch file (default: the sorted class
                     folders of --data)
  --image-size N     input size for a PyTorch file (default 446, the paper's)
  --out DIR          also write metrics.json, classification_report.txt, predictions.csv and the
                     confusion matrix there
  --batch-size N     default 8
  --max-pixels N     refuse images larger than this (decompression-bomb guard)
  --skip-bad         leave unreadable images out instead of stopping`;

async function main() {
  const { values: v } = parseFlags(Deno.args, {
    model: { type: "string" },
    data: { type: "string" },
    classes: { type: "string" },
    "image-size": { type: "string" },
    out: { type: "string" },
    "batch-size": { type: "string" },
    "max-pixels": { type: "string" },
    "skip-bad": { type: "boolean" },
    help: { type: "boolean" },
  });
  if (v.help) return console.log(USAGE);
  await initBackend();
  const dataDir = v.data ?? resolveDataDir();
  const modelSpec = v.model ?? path.join(outputsRoot(), "latest", "best");
  const { model, meta } = await loadModel(modelSpec, {
    classes: v.classes?.split(",").map((c) => c.trim()),
    imageSize: numberFlag("image-size", v["image-size"], { integer: true, min: 32, max: 1024 }),
    fallbackClasses: () => {
      const names = imageFolderClasses(dataDir);
      return names.length ? { names, from: `the class folders of ${dataDir}` } : undefined;
    },
  });
  let result;
  try {
    result = await evaluateFolder(model, meta, dataDir, {
      skipBad: v["skip-bad"],
      batchSize: numberFlag("batch-size", v["batch-size"], { integer: true, min: 1 }),
      maxPixels: numberFlag("max-pixels", v["max-pixels"], { integer: true, min: 1 }),
    });
  } finally {
    model.dispose();
  }
  const { evaluation, images, report } = result;
  console.log(
    `Model: ${modelSpec} (${
      meta.epoch ? `epoch ${meta.epoch}, ` : ""
    }${meta.imageSize} px, weights ${meta.weights.kind}, ${meta.convention} conventions${
      meta.classesFrom ? `; classes from ${meta.classesFrom}` : ""
    })`,
  );
  console.log(
    `Images: ${images.items.length} from ${images.folder} (${
      images.counts.map((c) => `${c.className} ${c.images}`).join(", ")
    })${report.skipped.length ? `; ${report.skipped.length} skipped as unreadable` : ""}`,
  );
  for (const s of report.skipped) console.log(`  skipped ${s.path}: ${s.reason}`);
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
