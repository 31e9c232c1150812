/**
 * `deno task predict <image or folder ...> [--model DIR] [--csv FILE] [--json FILE]`: class
 * probabilities for any images, from a checkpoint (default: the newest run's).
 */
import * as path from "node:path";
import {
  initBackend,
  loadCheckpoint,
  outputsRoot,
  parseFlags,
  predictImages,
  predictionsTable,
  runMain,
  UsageError,
  writePredictionsCsv,
  writePredictionsJson,
} from "../lib/mod.ts";

const USAGE =
  `Usage: deno task predict <image or folder ...> [--model DIR] [--csv FILE] [--json FILE]

  --model DIR   checkpoint folder (default: outputs/latest/best)
  --csv FILE    also write the table as CSV
  --json FILE   also write predictions and failures as JSON

Folders are searched recursively for images. Files that cannot be read are listed with the reason;
the others are still predicted. Exit code 1 if any input failed.`;

async function main() {
  const { values: v, positionals } = parseFlags(Deno.args, {
    model: { type: "string" },
    csv: { type: "string" },
    json: { type: "string" },
    help: { type: "boolean" },
  });
  if (v.help) return console.log(USAGE);
  if (positionals.length === 0) throw new UsageError("no image or folder given");
  await initBackend();
  const modelDir = v.model ?? path.join(outputsRoot(), "latest", "best");
  const { model, meta } = await loadCheckpoint(modelDir);
  const result = await predictImages(model, meta, positionals);
  model.dispose();
  console.log(`Checkpoint: ${modelDir} (${meta.classNames.join(", ")}; ${meta.imageSize} px)\n`);
  if (result.predictions.length > 0) {
    console.log(predictionsTable(result, meta.classNames).toString());
  }
  if (result.failed.length > 0) {
    console.log(`\nNot predicted (${result.failed.length}):`);
    for (const f of result.failed) console.log(`  ${f.file}: ${f.reason}`);
  }
  if (v.csv) await writePredictionsCsv(v.csv, result, meta.classNames);
  if (v.json) await writePredictionsJson(v.json, result);
  if (result.failed.length > 0) Deno.exitCode = 1;
}

await runMain(main, USAGE);
