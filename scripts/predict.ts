/**
 * `deno task predict <image or folder ...> [--model DIR|FILE.pt] [--csv FILE] [--json FILE]`:
 * class probabilities for any images, from a checkpoint (default: the newest run's) or a PyTorch
 * state_dict of the paper's model.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import {
  DEFAULT_DATA_DIR,
  envValue,
  imageFolderClasses,
  initBackend,
  loadModel,
  numberFlag,
  outputsRoot,
  parseFlags,
  predictImages,
  predictionsTable,
  probabilityNote,
  projectPath,
  runMain,
  UsageError,
  UserError,
  userPath,
  userPaths,
  writePredictionsCsv,
  writePredictionsJson,
} from "../lib/mod.ts";

const USAGE =
  `Usage: deno task predict <image or folder ...> [--model DIR|FILE] [--csv FILE] [--json FILE]

  --model DIR|FILE   checkpoint folder (default: outputs/latest/best), or a PyTorch state_dict of
                     torchvision's mobilenet_v3_large with a fine-tuned classifier (.pt/.pth)
  --classes a,b,c    class names in output order, for a PyTorch file (default: the sorted class
                     folders of the data set: --data, $COVID_CXR_DATA or data/Covid19-dataset)
  --data DIR         the data set whose class folders name a PyTorch file's outputs
  --image-size N     input size for a PyTorch file (default 446, the paper's)
  --max-pixels N     refuse images larger than this (decompression-bomb guard)
  --csv FILE         also write the table as CSV
  --json FILE        also write predictions and failures as JSON

Folders are searched recursively for images. Files that cannot be read are listed with the reason;
the others are still predicted. Exit code 1 if any input failed or nothing could be predicted.`;

async function main() {
  const { values: given, positionals: inputs } = parseFlags(Deno.args, {
    model: { type: "string" },
    classes: { type: "string" },
    data: { type: "string" },
    "image-size": { type: "string" },
    "max-pixels": { type: "string" },
    csv: { type: "string" },
    json: { type: "string" },
    help: { type: "boolean" },
  });
  // Paths as the user typed them, from the folder the task was run in (not the project's).
  const v = userPaths(given, ["model", "data", "csv", "json"]);
  const positionals = inputs.map(userPath);
  if (v.help) return console.log(USAGE);
  if (positionals.length === 0) throw new UsageError("no image or folder given");
  await initBackend();
  const modelSpec = v.model ?? path.join(outputsRoot(), "latest", "best");
  const dataDir = v.data ?? envValue("COVID_CXR_DATA") ?? projectPath(DEFAULT_DATA_DIR);
  const { model, meta } = await loadModel(modelSpec, {
    classes: v.classes?.split(",").map((c) => c.trim()),
    imageSize: numberFlag("image-size", v["image-size"], { integer: true, min: 32, max: 1024 }),
    fallbackClasses: () => {
      const names = fs.existsSync(dataDir) ? imageFolderClasses(dataDir) : [];
      return names.length ? { names, from: `the class folders of ${dataDir}` } : undefined;
    },
  });
  let result;
  try {
    result = await predictImages(model, meta, positionals, {
      maxPixels: numberFlag("max-pixels", v["max-pixels"], { integer: true, min: 1 }),
    });
  } finally {
    model.dispose();
  }
  console.log(`Model: ${modelSpec} (${meta.classNames.join(", ")}; ${meta.imageSize} px)`);
  console.log(`${probabilityNote(meta.calibration)}\n`);
  if (result.predictions.length > 0) {
    console.log(predictionsTable(result, meta.classNames).toString());
  }
  if (result.failed.length > 0) {
    console.log(`\nNot predicted (${result.failed.length}):`);
    for (const f of result.failed) console.log(`  ${f.file}: ${f.reason}`);
  }
  if (v.csv) await writePredictionsCsv(v.csv, result, meta.classNames);
  if (v.json) await writePredictionsJson(v.json, result);
  if (result.predictions.length === 0 && result.failed.length === 0) {
    throw new UserError(`No images found in ${positionals.join(", ")}: nothing to predict.`);
  }
  if (result.failed.length > 0 || result.predictions.length === 0) Deno.exitCode = 1;
}

await runMain(main, USAGE, { writeAdvice: "another path for --csv or --json" });
