/**
 * `deno task evaluate [--model DIR|FILE.pt] [--data DIR]`: a saved model on any ImageFolder
 * directory (a folder of class folders, or a data set root, whose test/ is then used). With a
 * manifest (MANIFEST.tsv beside the class folders, or --manifest), the external set's treatment:
 * breakdowns by its columns, the shortcut probe per patient, and a second, gray pass.
 */
import * as path from "node:path";
import {
  accuracySentence,
  breakdownTable,
  classificationReport,
  diagnosticsNotes,
  diagnosticsTable,
  diagnosticSummary,
  evaluateExternal,
  evaluateFolder,
  type Evaluation,
  type ExternalResult,
  findManifest,
  type FolderEvaluation,
  GRAY_SIZE,
  imageFolderClasses,
  initBackend,
  loadModel,
  numberFlag,
  outputsRoot,
  parseFlags,
  probabilityNote,
  rateText,
  readingText,
  resolveDataDir,
  runMain,
  shortcutProbe,
  sideBySideTable,
  summarizeExternal,
  userPaths,
  writeEvaluation,
  writeExternal,
} from "../lib/mod.ts";

const USAGE = `Usage: deno task evaluate [--model DIR|FILE] [--data DIR] [--out DIR] [options]

  --model DIR|FILE   a checkpoint folder (default: outputs/latest/best), or a PyTorch state_dict
                     of torchvision's mobilenet_v3_large with a fine-tuned classifier (.pt/.pth)
  --data DIR         an ImageFolder (one sub-folder per class) or a data set root with test/
                     (default: $COVID_CXR_DATA or data/Covid19-dataset, its test/)
  --classes a,b,c    class names in output order, for a PyTorch file (default: the sorted class
                     folders of --data)
  --image-size N     input size for a PyTorch file (default 446, the paper's)
  --manifest FILE    a TSV/CSV with a column naming each image (file/path) and facts about it
                     (source, view, age, sex, patient_id): results are broken down by them, and the
                     set is also scored as 1-channel gray at 1024² (default: MANIFEST.tsv in --data)
  --out DIR          also write metrics.json, classification_report.txt, predictions.csv and the
                     confusion matrix there (with a manifest: also the gray pass's, breakdowns.csv,
                     shortcut_probe.csv, figures and report.md)
  --prevalence P     also give PPV and NPV at this prevalence (0–1, e.g. 0.05), besides the
                     set's own class shares
  --batch-size N     default 8
  --max-pixels N     refuse images larger than this (decompression-bomb guard)
  --skip-bad         leave unreadable images out instead of stopping`;

async function main() {
  const { values: given } = parseFlags(Deno.args, {
    model: { type: "string" },
    data: { type: "string" },
    classes: { type: "string" },
    "image-size": { type: "string" },
    out: { type: "string" },
    "batch-size": { type: "string" },
    "max-pixels": { type: "string" },
    "skip-bad": { type: "boolean" },
    manifest: { type: "string" },
    prevalence: { type: "string" },
    help: { type: "boolean" },
  });
  const v = userPaths(given, ["model", "data", "out", "manifest"]);
  const prevalence = numberFlag("prevalence", v.prevalence, { above: 0, below: 1 });
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
  const options = {
    skipBad: v["skip-bad"],
    batchSize: numberFlag("batch-size", v["batch-size"], { integer: true, min: 1 }),
    maxPixels: numberFlag("max-pixels", v["max-pixels"], { integer: true, min: 1 }),
  };
  const manifest = v.manifest ?? findManifest(dataDir);
  let plain: FolderEvaluation | undefined;
  let external: ExternalResult | undefined;
  try {
    if (manifest) {
      external = await evaluateExternal(model, meta, dataDir, { ...options, manifest });
    } else {
      plain = await evaluateFolder(model, meta, dataDir, options);
    }
  } finally {
    model.dispose();
  }
  const evaluation = plain?.evaluation ?? external!.passes[0].evaluation;
  const folder = plain?.images.folder ?? external!.folder;
  const counts = plain?.images.counts ?? external!.counts;
  const skipped = plain?.report.skipped ?? external!.skipped;
  console.log(
    `Model: ${modelSpec} (${
      meta.epoch ? `epoch ${meta.epoch}, ` : ""
    }${meta.imageSize} px, weights ${meta.weights.kind}, ${meta.convention} conventions${
      meta.classesFrom ? `; classes from ${meta.classesFrom}` : ""
    })`,
  );
  console.log(
    `Images: ${evaluation.predictions.length} from ${folder} (${
      counts.map((c) => `${c.className} ${c.images}`).join(", ")
    })${skipped.length ? `; ${skipped.length} skipped as unreadable` : ""}`,
  );
  for (const s of skipped) console.log(`  skipped ${s.path}: ${s.reason}`);
  for (const w of external?.manifestWarnings ?? []) console.log(w);
  console.log(probabilityNote(meta.calibration));
  console.log(`Accuracy: ${accuracySentence(evaluation.metrics)}\n`);
  console.log(classificationReport(evaluation.metrics, meta.classNames));
  console.log("Confusion matrix (rows: true, columns: predicted)");
  evaluation.metrics.confusion.forEach((row, k) =>
    console.log(
      `  ${meta.classNames[k].padEnd(16)} ${row.map((n) => String(n).padStart(4)).join("")}`,
    )
  );
  printDiagnostics(evaluation, meta.classNames, prevalence);
  if (external) printExternal(external, meta.classNames, { prevalence, manifest: manifest! });
  else printProbe(evaluation, meta.classNames);
  if (v.out) {
    const out = v.out;
    if (external) await writeExternal(out, external, meta.classNames, { prevalence });
    else await writeEvaluation(out, evaluation, meta.classNames, { prevalence });
    console.log(`\nWritten to ${out}`);
  }
}

/** One class against the rest: AUC, sensitivity, specificity, PPV and NPV. */
function printDiagnostics(evaluation: Evaluation, classNames: string[], prevalence?: number) {
  const diagnostics = diagnosticSummary(
    evaluation.predictions,
    evaluation.metrics.confusion,
    classNames,
    { prevalence },
  ).summary;
  console.log("\nOne class against the rest:");
  console.log(diagnosticsTable(diagnostics).toString());
  for (const note of diagnosticsNotes(diagnostics)) console.log(`  ${note}`);
}

/** An external set: both passes side by side, the reading, the breakdowns. */
function printExternal(
  external: ExternalResult,
  classNames: string[],
  opts: { prevalence?: number; manifest: string },
) {
  const target = classNames[0];
  const ext = summarizeExternal(external, { prevalence: opts.prevalence });
  console.log(`\nAs stored and as 1-channel gray ${GRAY_SIZE}² (manifest ${opts.manifest}):`);
  console.log(sideBySideTable(ext, undefined, target).toString());
  const readings = ext.passes[0].readings ?? [];
  if (readings.length) {
    console.log(`\nWhy images of other classes are called ${target} (as stored):`);
    for (const r of readings) console.log(`  - ${readingText(r)}`);
  }
  for (const column of ext.columns) {
    console.log(`\nBy ${column} (as stored):`);
    console.log(
      breakdownTable(ext.passes[0].breakdowns.filter((r) => r.column === column), classNames)
        .toString(),
    );
  }
}

/** Without a manifest: the other classes called the first one. */
function printProbe(evaluation: Evaluation, classNames: string[]) {
  const target = classNames[0];
  const probe = shortcutProbe(evaluation.predictions, classNames);
  if (probe.length) {
    console.log(`\nCalled ${target} though not ${target}:`);
    for (const r of probe) console.log(`  ${r.className}: ${rateText(r)}`);
  }
}

await runMain(main, USAGE);
