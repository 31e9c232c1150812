/**
 * What goes in a run folder besides the checkpoint: the evaluation files, the curves, and a
 * `report.md` that reads like the paper's results section with this run's numbers.
 */
import * as path from "node:path";
import type { RunConfig } from "../config.ts";
import { percent } from "../format.ts";
import type { PeakSource } from "../memory.ts";
import { type Table, table } from "../tables.ts";
import type { WeightsInfo } from "../model/mod.ts";
import {
  describeSessionSettings,
  type EngineKind,
  type KernelChoice,
  type Predictor,
  type SessionSettings,
} from "../engine/mod.ts";
import type { EpochRecord } from "../train/mod.ts";
import {
  classificationReport,
  type DiagnosticSummary,
  type Metrics,
  type ShortcutRate,
} from "../evaluate/mod.ts";
import { plotTrainingCurves } from "../figures/mod.ts";
import { accuracySentence, diagnosticsNotes, diagnosticsTable } from "./results.ts";
import {
  calibrationSentence,
  leakageAccuracyTable,
  leakagePairsTable,
  type LeakageSummary,
} from "./leakage.ts";
import { externalSection, type ExternalSummary, rateText } from "./external_report.ts";
import { type CalibrationRecord, calibrationSection } from "./calibration_report.ts";

/** Everything report.md is written from. */
export interface RunSummary {
  runId: string;
  config: RunConfig;
  weights: WeightsInfo;
  classNames: string[];
  dataRoot: string;
  counts: { train: number; validation: number; test: number };
  history: EpochRecord[];
  bestEpoch: number;
  test: Metrics;
  /** ROC/AUC, sensitivity, specificity, PPV and NPV per class on the test set. */
  testDiagnostics?: DiagnosticSummary;
  /**
   * Test metrics without the test images training saw: byte-identical copies and (runs since the
   * near-duplicate finder) near-identical ones.
   */
  unseenTest?: { metrics: Metrics; excluded: string[] };
  /** Which test images training saw, how they were found, and the accuracy without them. */
  leakage?: LeakageSummary;
  /** On the test set: the share of each non-Covid class called Covid (the shortcut probe). */
  testProbe?: ShortcutRate[];
  /** The kept checkpoint on an external set (`--external`), when one was given. */
  external?: ExternalSummary;
  /** Temperature scaling fitted on validation, and calibration before/after on every set. */
  calibration?: CalibrationRecord;
  skippedFiles: { path: string; reason: string }[];
  /** Which TF.js backend ran, from which package (the GPU build's name says a GPU ran). */
  backend: { backend: string; package?: string; versions: Record<string, string> };
  /** How the training steps ran: one TensorFlow graph per step, or TF.js op by op. */
  trainingEngine?: EngineKind;
  /** Which kernels the training steps' BatchNorms ran: the project's fused ones or TensorFlow's. */
  kernels?: KernelChoice;
  /** How validation and test predictions ran: one TensorFlow graph, or TF.js op by op. */
  inferenceEngine?: Predictor["engine"];
  /** The test predictions' hard-swish: the project's fused kernel or TensorFlow's ops. */
  inferenceKernels?: KernelChoice;
  /** How TensorFlow ran the graph engines' sessions (precision, XLA, thread pools). */
  sessionSettings?: SessionSettings;
  codeVersion: string;
  totalSeconds: number;
  /**
   * The run's peak resident memory, training and evaluation included (lib/memory.ts); a resumed
   * run's is the highest of its processes. Runs before it was recorded have only the epochs'.
   */
  peakMemory?: { mb: number; source: PeakSource };
  /** The notebooks executed against this run (`deno task notebooks`, `reproduce --notebooks`). */
  notebooks?: { index: string; names: string[]; executedAt: string };
}

const pct = (v: number, digits = 2) => percent(v, digits);

/** How the run's steps and predictions ran, as a clause for the setup table. */
function engineText(s: RunSummary): string {
  const how = (kind: string | undefined, graph: string, eager: string) =>
    kind === "graph" ? graph : kind === "eager" ? eager : undefined;
  return [
    how(
      s.trainingEngine,
      "each training step run as one TensorFlow graph",
      "training steps run op by op (eager)",
    ),
    how(
      s.inferenceEngine,
      `predictions run as one TensorFlow graph${
        s.inferenceKernels?.kind === "fused"
          ? " (hard-swish and the depthwise convolutions as the fused kernels; the other " +
            "convolutions with their bias and ReLU, or hard-swish where oneDNN runs, as one op)"
          : ""
      }`,
      "predictions run op by op (eager)",
    ),
    kernelsText(s),
    ...(s.sessionSettings ? describeSessionSettings(s.sessionSettings) : []),
  ].filter(Boolean).map((t) => `; ${t}`).join("");
}

/**
 * Which kernels trained the model (the fused ones or TensorFlow's), as a clause; epochs of a resumed
 * run that ran other kernels are named (a run never differs silently).
 */
function kernelsText(s: RunSummary): string | undefined {
  if (!s.kernels) return undefined;
  const now = s.kernels.kind === "fused"
    ? `BatchNorm and its activation, and the depthwise convolutions, as the project's fused kernels (${s.kernels.detail})`
    : `BatchNorm as TensorFlow's own kernels (${s.kernels.detail})`;
  const other = s.history.filter((h) => h.kernels && h.kernels !== s.kernels!.kind);
  if (other.length === 0) return now;
  const epochs = `${other.length === 1 ? "epoch" : "epochs"} ${
    other.map((h) => h.epoch).join(", ")
  }`;
  return `${now}; ${epochs} ran the ${other[0].kernels} kernels (resumed with other settings)`;
}

/** The run's peak memory as the setup table says it, with where the figure came from. */
function peakMemoryText(s: RunSummary): string {
  if (!s.peakMemory) return `peak memory ${Math.max(...s.history.map((h) => h.peakRssMB))} MB`;
  const { mb, source } = s.peakMemory;
  return source === "high-water mark"
    ? `peak memory ${mb} MB (the process's high-water mark)`
    : `memory ${mb} MB at the end (this system gives no peak figure, so the peak may be higher)`;
}

/** `report.md`: the paper's results section, with this run's numbers. */
export function renderReport(s: RunSummary): string {
  return [
    `# Results of run ${s.runId}`,
    "",
    ...reportNotes(s),
    ...headline(s),
    ...(s.notebooks
      ? [
        `The notebooks (${s.notebooks.names.join(", ")}), executed against this run on ` +
        `${s.notebooks.executedAt}, with every figure: [${s.notebooks.index}](${s.notebooks.index}).`,
        "",
      ]
      : []),
    "## Setup",
    "",
    setupTable(s).toMarkdown(),
    "",
    ...historySection(s),
    ...testSection(s),
    ...(s.leakage ? leakageSection(s.test, s.leakage) : []),
    ...(s.external
      ? externalSection(s.external, s.classNames, {
        test: s.testProbe
          ? { metrics: s.test, probe: s.testProbe, diagnostics: s.testDiagnostics }
          : undefined,
        columns: ["source", "view"],
      })
      : []),
    ...(s.calibration ? calibrationSection(s.calibration) : []),
    ...readingSection(s),
  ].join("\n");
}

/** What makes this run differ from the paper's method, said before any number. */
function reportNotes(s: RunSummary): string[] {
  const c = s.config;
  const notes: string[] = [];
  if (s.weights.kind === "none") {
    notes.push(
      "**Not pretrained.** This model was trained from random initialisation (`--weights none`), " +
        "not from ImageNet weights as in the paper. Its numbers are **not comparable** to the " +
        "paper's 96.97 %; they show what the pipeline does without transfer learning.",
    );
  } else if (s.weights.kind === "file") {
    notes.push(
      `Weights from ${s.weights.file} (SHA-256 ${s.weights.sha256 ?? "?"}), not the paper's ` +
        "torchvision ImageNet file.",
    );
  } else if (s.weights.kind === "keras" || s.weights.kind === "imagenet") {
    notes.push(
      "Pretrained with **Keras's** ImageNet weights, not torchvision's as in the paper: another " +
        "training run, with Keras's padding and normalisation.",
    );
  }
  if (c.inputMask && c.inputMask !== "none") {
    notes.push(
      `**Review experiment, not the paper's method:** the model saw only ${
        c.inputMask === "border-only"
          ? "the image border (the lung field blanked)"
          : "the lung field (the border blanked)"
      }.`,
    );
  }
  if (c.imageSize !== 446 || c.epochs !== 8) {
    notes.push(
      `Settings differ from the paper's (446 px, 8 epochs): ${c.imageSize} px, ${c.epochs} epochs.`,
    );
  }
  return notes.flatMap((n) => [`> ${n}`, ""]);
}

/** The test accuracy, and on the test images never seen in training. */
function headline(s: RunSummary): string[] {
  const lines = [
    `**Test accuracy: ${accuracySentence(s.test)}** The paper reports 96.97 % (64 of 66).`,
    "",
  ];
  if (s.leakage && s.unseenTest) {
    lines.push(
      `On the ${s.unseenTest.metrics.total} test images that are not the same X-ray as a ` +
        `training image (${s.leakage.byteIdentical.length} are byte-identical copies and ` +
        `${s.leakage.nearIdentical.length} near-identical ones, seen with their label in ` +
        `training; see _Leakage_): ${accuracySentence(s.unseenTest.metrics)}`,
      "",
    );
  } else if (s.unseenTest) {
    lines.push(
      `On the ${s.unseenTest.metrics.total} test images that are not copies of training images ` +
        `(${s.unseenTest.excluded.length} are byte-identical to training images and were seen, ` +
        `with their label, in training): ${accuracySentence(s.unseenTest.metrics)}`,
      "",
    );
  } else if (s.leakage) {
    lines.push(
      "No test image is the same X-ray as a training image (byte for byte or near-identical).",
      "",
    );
  }
  return lines;
}

/** Which test images training saw, found by content, and the accuracy without them. */
function leakageSection(test: Metrics, leakage: LeakageSummary): string[] {
  const pairs = leakage.crossSplit.length + leakage.withinTest.length;
  return [
    "## Leakage",
    "",
    `Test images that are the same X-ray as a training image: ${leakage.byteIdentical.length} ` +
    `byte-identical and ${leakage.nearIdentical.length} near-identical (the same image saved at ` +
    "another size, crop, contrast or encoding). Inside the test folder, " +
    `${leakage.withinTest.length} pair(s) are one X-ray counted twice.`,
    "",
    leakageAccuracyTable(test, leakage).toMarkdown(),
    "",
    ...(pairs > 0
      ? [
        leakagePairsTable(leakage).toMarkdown(),
        "",
        "![Pairs side by side](near_duplicates.png)",
        "",
      ]
      : []),
    calibrationSentence(leakage.calibration),
    "",
  ];
}

/** Where the weights came from, in words. */
function weightsText(w: WeightsInfo): string {
  switch (w.kind) {
    case "torchvision":
      return "torchvision's ImageNet weights (IMAGENET1K_V1, as the paper)";
    case "keras":
    case "imagenet": // checkpoints from before torchvision's weights were here
      return "Keras's ImageNet weights";
    case "none":
      return "random initialisation";
    case "file":
      return `weights from ${w.format === "pytorch" ? "a PyTorch file" : "a Keras file"}`;
  }
}

/** The run's settings, one row each. */
function setupTable(s: RunSummary): Table {
  const c = s.config;
  const a = c.augmentation;
  const v = s.backend.versions;
  return table([
    {
      setting: "model",
      value: `MobileNetV3-Large, ${
        weightsText(s.weights)
      }, new ${s.classNames.length}-way classifier`,
    },
    {
      setting: "input",
      value: `${c.imageSize}×${c.imageSize} RGB, normalised as the weights expect (mean [${
        s.weights.normalization.mean.join(", ")
      }], std [${s.weights.normalization.std.join(", ")}])`,
    },
    {
      setting: "augmentation",
      value: `horizontal flip p=${a.flipProbability}; colour jitter brightness ${a.brightness}, ` +
        `contrast ${a.contrast}, saturation ${a.saturation}, hue ${a.hue}`,
    },
    {
      setting: "data",
      value: `${s.counts.train} training, ${s.counts.validation} validation (random ` +
        `${c.validationFraction} of the training folder${c.stratify ? ", stratified" : ""}), ` +
        `${s.counts.test} test images`,
    },
    {
      setting: "optimiser",
      value: `SGD, learning rate ${c.learningRate}, momentum ${c.momentum}, ×${c.lrGamma} after ` +
        `epochs ${c.lrMilestones.join(" and ")}`,
    },
    {
      setting: "training",
      value:
        `${c.epochs} epochs, batch size ${c.batchSize}, cross-entropy; weights kept from the ` +
        "epoch with the lowest validation loss",
    },
    { setting: "seed", value: String(c.seed) },
    {
      setting: "backend",
      value: `TF.js ${v["tfjs-core"]} on ${s.backend.backend}${
        s.backend.package ? `, ${s.backend.package}` : ""
      }${s.backend.package?.endsWith("-gpu") ? " (NVIDIA GPU)" : ""}${
        v.libtensorflow ? ` (libtensorflow ${v.libtensorflow})` : ""
      }${engineText(s)}`,
    },
    { setting: "code", value: s.codeVersion },
    {
      setting: "wall time",
      value: `${(s.totalSeconds / 60).toFixed(1)} min; ${peakMemoryText(s)}`,
    },
  ]);
}

/** Per-epoch history and which checkpoint was kept. */
function historySection(s: RunSummary): string[] {
  const best = s.history.find((h) => h.epoch === s.bestEpoch);
  return [
    "## Training and validation",
    "",
    table(s.history.map((h) => ({
      epoch: h.epoch,
      "learning rate": String(h.learningRate), // not rounded: 1e-5 is not 0
      "train loss": h.trainLoss,
      "train acc": pct(h.trainAccuracy, 1),
      "valid loss": h.validLoss,
      "valid acc": pct(h.validAccuracy, 1),
      saved: h.improved ? "✓" : "",
      "time (s)": Math.round(h.seconds),
    }))).toMarkdown(),
    "",
    `The validation loss was lowest after epoch ${s.bestEpoch} (${best?.validLoss.toFixed(4)}); ` +
    "those weights are the ones evaluated below. The validation set has " +
    `${s.counts.validation} images, so its accuracy moves in steps of ${
      (100 / s.counts.validation).toFixed(1)
    } points.`,
    "",
    "![Training curves](training_curves.svg)",
    "",
  ];
}

/** The classification report and the confusion matrix in words. */
function testSection(s: RunSummary): string[] {
  const perClass = s.classNames.map((name, k) => {
    const row = s.test.confusion[k];
    const wrong = row.reduce((t, v, j) => (j === k ? t : t + v), 0);
    return `${name}: ${row[k]} of ${s.test.perClass[k].support} right${
      wrong ? `, ${wrong} wrong` : ""
    }`;
  });
  return [
    "## Test set",
    "",
    "```",
    classificationReport(s.test, s.classNames).trimEnd(),
    "```",
    "",
    "![Confusion matrix](confusion_matrix.svg)",
    "",
    `Rows are the true classes, columns the predicted ones. ${perClass.join("; ")}.`,
    "",
    ...(s.testDiagnostics
      ? [
        "### One class against the rest",
        "",
        diagnosticsTable(s.testDiagnostics).toMarkdown(),
        "",
        ...diagnosticsNotes(s.testDiagnostics).map((n) => `- ${n}`),
        "",
        "![ROC curves](roc.svg)",
        "",
      ]
      : []),
    ...(s.testProbe?.length
      ? [
        `Called ${s.classNames[0]} though not ${s.classNames[0]}: ${
          s.testProbe.map((r) => `${r.className} ${rateText(r)}`).join("; ")
        } (95 % Clopper–Pearson intervals).`,
        "",
      ]
      : []),
  ];
}

/** What the numbers can and cannot say, and the files of the run. */
function readingSection(s: RunSummary): string[] {
  return [
    "## Reading these numbers",
    "",
    `- The test set has ${s.test.total} images; the interval above is what that allows. Two ` +
    "runs that differ by one or two images are not different results.",
    "- Where the classes come from different sources (hospitals, age groups, machines), a model " +
    "can separate them by source as well as by disease signs; notebook 06 measures how far such " +
    "cues go on this data.",
    ...(s.skippedFiles.length > 0
      ? [
        `- ${s.skippedFiles.length} file(s) were skipped as unreadable (--skip-bad): see ` +
        "data_report.json.",
      ]
      : []),
    "",
    "## Files",
    "",
    "`config.json` (settings and environment), `history.json` / `history.csv` (per epoch), " +
    "`metrics.json`, `classification_report.txt`, `predictions.csv`, `confusion_matrix.svg|png`, " +
    "`training_curves.svg|png`, `data_report.json`, `best/` (the checkpoint evaluated, " +
    "self-describing, with its calibration), `state/` (to resume)" +
    (s.calibration ? ", `calibration.json`, `calibration_diagram.svg|png`" : "") +
    (s.external ? ", `external/` (the external evaluation, with its own report.md)" : "") + ".",
    "",
  ];
}

/** Write the training curves of a run. */
export async function writeCurves(dir: string, history: readonly EpochRecord[]): Promise<void> {
  await plotTrainingCurves(history).save(path.join(dir, "training_curves"));
}
