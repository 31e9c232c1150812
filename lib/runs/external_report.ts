/**
 * A run's "Outside the data set" results: the kept checkpoint on an external set, side by side
 * with the paper's test set, as files in `external/` and as a report section.
 */
import * as path from "node:path";
import { writeFileAtomic, writeJsonAtomic } from "../files.ts";
import { percent } from "../format.ts";
import { csvText, type Table, table } from "../tables.ts";
import type { BreakdownRow, ExternalResult, Metrics, ShortcutRate } from "../evaluate/mod.ts";
import { plotBreakdown, plotShortcutProbe } from "../figures/mod.ts";
import { writeEvaluation } from "./results.ts";

/** What summary.json keeps of an external evaluation. */
export interface ExternalSummary {
  folder: string;
  manifest?: string;
  /** The manifest columns the breakdowns are by. */
  columns: string[];
  counts: { className: string; images: number }[];
  skipped: number;
  passes: {
    preprocessing: string;
    /** File prefix of this pass's files in external/ ("" or "gray_"). */
    prefix: string;
    metrics: Metrics;
    probe: ShortcutRate[];
    breakdowns: BreakdownRow[];
  }[];
}

const PREFIXES = ["", "gray_"];

/** The summary of an external evaluation (no per-image predictions: those go to CSV files). */
export function summarizeExternal(r: ExternalResult): ExternalSummary {
  return {
    folder: r.folder,
    ...(r.manifest ? { manifest: r.manifest.file } : {}),
    columns: r.columns,
    counts: r.counts,
    skipped: r.skipped.length,
    passes: r.passes.map((p, i) => ({
      preprocessing: p.preprocessing,
      prefix: PREFIXES[i],
      metrics: p.evaluation.metrics,
      probe: p.probe,
      breakdowns: p.breakdowns,
    })),
  };
}

const pct = (v: number, digits = 1) => percent(v, digits);

/** "95 of 100 (95.0 %; 88.7 – 98.4 %)": a probe rate with its exact interval. */
export function rateText(r: ShortcutRate): string {
  return `${r.called} of ${r.total} (${pct(r.rate)}; ${pct(r.interval.lower)} – ${
    pct(r.interval.upper)
  })`;
}

/** "49.3 % (108 of 219; 42.5 – 56.1 %)". */
function accuracyText(m: Metrics): string {
  return `${pct(m.accuracy)} (${m.correct} of ${m.total}; ${pct(m.accuracyInterval.lower)} – ${
    pct(m.accuracyInterval.upper)
  })`;
}

/**
 * The test set and each external pass side by side: accuracy, then for each non-target class
 * the share called the target class (per image, and per patient where the manifest says).
 */
export function sideBySideTable(
  ext: ExternalSummary,
  test?: { metrics: Metrics; probe: ShortcutRate[] },
  target = "Covid",
): Table {
  const columns = [
    ...(test ? [{ name: "paper's test set", metrics: test.metrics, probe: test.probe }] : []),
    ...ext.passes.map((p) => ({
      name: `external, ${p.preprocessing}`,
      metrics: p.metrics,
      probe: p.probe,
    })),
  ];
  const probeLines = [
    ...new Set(
      columns.flatMap((c) => c.probe.map((r) => `${r.className}|${r.level}`)),
    ),
  ];
  const rows: Record<string, string>[] = [
    {
      "": "accuracy",
      ...Object.fromEntries(columns.map((c) => [c.name, accuracyText(c.metrics)])),
    },
    ...probeLines.map((line) => {
      const [className, level] = line.split("|");
      return {
        "": `${className} called ${target}${level === "patient" ? ", per patient" : ""}`,
        ...Object.fromEntries(columns.map((c) => {
          const r = c.probe.find((x) => x.className === className && x.level === level);
          return [c.name, r ? rateText(r) : "—"];
        })),
      };
    }),
  ];
  return table(rows);
}

/** One breakdown as a table: group, true class, images, right, and counts per predicted class. */
export function breakdownTable(
  rows: readonly BreakdownRow[],
  classNames: readonly string[],
): Table {
  return table(rows.map((r) => ({
    [r.column]: r.value,
    "true class": r.className,
    images: r.images,
    right: `${r.correct} (${pct(r.correct / r.images, 0)})`,
    ...Object.fromEntries(classNames.map((c, k) => [`→ ${c}`, r.predicted[k]])),
  })));
}

/**
 * What the largest external "called Covid" rate means, read against the same class on the paper's
 * test set: a model that calls the test set's (children's) images right but the adults' images
 * Covid has learnt age; one that calls both Covid has not learnt the classes at all.
 */
export function probeReading(
  worst: ShortcutRate,
  testProbe: readonly ShortcutRate[] | undefined,
  classNames: readonly string[],
): string {
  const target = classNames[0];
  const lead =
    `Of the external ${worst.className} images, ${worst.called} of ${worst.total} were ` +
    `called ${target} (${pct(worst.rate)}, 95 % interval ${pct(worst.interval.lower)} – ${
      pct(worst.interval.upper)
    }).`;
  const test = testProbe?.find((r) => r.className === worst.className && r.level === "image");
  if (!test) {
    return `${lead} In the paper's data set ${target} is the adults' class: a model that learned ` +
      `"adult" rather than the disease calls adults' X-rays ${target}.`;
  }
  const onTest = `On the paper's test set it calls ${test.called} of ${test.total} ` +
    `${worst.className} images (children's X-rays) ${target}`;
  if (test.rate >= 0.5) {
    return `${lead} ${onTest} too: it calls almost everything ${target}, so this line cannot ` +
      "tell an age shortcut from a model that has not learnt the classes.";
  }
  return `${lead} ${onTest}: the same class, told apart in children and called ${target} in ` +
    `adults — age, not the disease, decides. In the paper's data set ${target} is the adults' ` +
    `class and ${classNames.slice(1).join(" and ")} are children's images from one hospital.`;
}

/**
 * The report section. `files` is the path from the report to the external/ folder ("external/"
 * in report.md, "" in external/report.md); `columns` limits the breakdown tables shown.
 */
export function externalSection(
  ext: ExternalSummary,
  classNames: readonly string[],
  opts: {
    test?: { metrics: Metrics; probe: ShortcutRate[] };
    files?: string;
    columns?: readonly string[];
  } = {},
): string[] {
  const files = opts.files ?? "external/";
  const [stored, gray] = ext.passes;
  const target = classNames[0];
  const worst = stored.probe.filter((r) => r.level === "image").sort((a, b) => b.rate - a.rate)[0];
  const shown = ext.columns.filter((c) => !opts.columns || opts.columns.includes(c));
  return [
    "## Outside the data set",
    "",
    `The kept checkpoint on ${stored.metrics.total} X-rays from elsewhere (${ext.folder}: ${
      ext.counts.map((c) => `${c.className} ${c.images}`).join(", ")
    }${ext.skipped ? `; ${ext.skipped} unreadable files left out` : ""}), scored as the test ` +
    `set is. It was run twice: with the images as stored, and with every image first made ` +
    `1-channel gray at ${gray.preprocessing.replace("gray ", "")} pixels, so that how a source ` +
    "stores its files (colour, alpha, bit depth, size) cannot tell the classes apart.",
    "",
    sideBySideTable(ext, opts.test, target).toMarkdown(),
    "",
    ...(worst ? [probeReading(worst, opts.test?.probe, classNames), ""] : []),
    `![Called ${target}](${files}shortcut_probe.svg)`,
    "",
    `![Confusion matrix, as stored](${files}confusion_matrix.svg) ` +
    `![Confusion matrix, gray](${files}gray_confusion_matrix.svg)`,
    "",
    ...shown.flatMap((column) => {
      const rows = stored.breakdowns.filter((r) => r.column === column);
      return [
        `### By ${column} (as stored)`,
        "",
        breakdownTable(rows, classNames).toMarkdown(),
        "",
        ...(column === "source" ? [`![By source](${files}by_source.svg)`, ""] : []),
      ];
    }),
    "- An external set is only as fair as its sources: where each class comes from its own " +
    "sources, a model can score by source. The gray pass removes storage format and size, not " +
    "what the sources' X-rays look like.",
    "- A class with few images (or few patients) moves in large steps: read its rate with the " +
    "interval, and per patient where the manifest names patients.",
    "",
    `Files: \`${files}metrics.json\`, \`classification_report.txt\`, \`predictions.csv\` (and ` +
    "the same with `gray_`), `breakdowns.csv`, `shortcut_probe.csv`.",
    "",
  ];
}

/**
 * Write `dir` (a run's external/, or `deno task evaluate --out`): for each pass the evaluation
 * files, then breakdowns.csv, shortcut_probe.csv, the figures and report.md.
 */
export async function writeExternal(
  dir: string,
  result: ExternalResult,
  classNames: readonly string[],
  opts: { test?: { metrics: Metrics; probe: ShortcutRate[] } } = {},
): Promise<ExternalSummary> {
  const ext = summarizeExternal(result);
  for (const [i, pass] of result.passes.entries()) {
    await writeEvaluation(dir, pass.evaluation, classNames, {
      prefix: PREFIXES[i],
      title: `Confusion matrix (external set, ${pass.preprocessing})`,
    });
  }
  await writeFileAtomic(
    path.join(dir, "breakdowns.csv"),
    csvText([
      [
        "preprocessing",
        "column",
        "value",
        "true",
        "images",
        "correct",
        ...classNames.map((c) => `predicted ${c}`),
      ],
      ...ext.passes.flatMap((p) =>
        p.breakdowns.map((r) => [
          p.preprocessing,
          r.column,
          r.value,
          r.className,
          r.images,
          r.correct,
          ...r.predicted,
        ])
      ),
    ]),
  );
  const probeSets = [
    ...(opts.test ? [{ name: "paper's test set", probe: opts.test.probe }] : []),
    ...ext.passes.map((p) => ({ name: `external, ${p.preprocessing}`, probe: p.probe })),
  ];
  await writeFileAtomic(
    path.join(dir, "shortcut_probe.csv"),
    csvText([
      ["set", "class", "level", `called ${classNames[0]}`, "total", "rate", "lower", "upper"],
      ...probeSets.flatMap((s) =>
        s.probe.map((r) => [
          s.name,
          r.className,
          r.level,
          r.called,
          r.total,
          r.rate.toFixed(4),
          r.interval.lower.toFixed(4),
          r.interval.upper.toFixed(4),
        ])
      ),
    ]),
  );
  await plotShortcutProbe(probeSets, { target: classNames[0] }).save(
    path.join(dir, "shortcut_probe"),
  );
  const bySource = ext.passes[0].breakdowns.filter((r) => r.column === "source");
  if (bySource.length > 0) {
    await plotBreakdown(bySource, classNames, {
      title: "External set: predictions by source (as stored)",
    }).save(path.join(dir, "by_source"));
  }
  await writeJsonAtomic(path.join(dir, "summary.json"), ext);
  await writeFileAtomic(
    path.join(dir, "report.md"),
    ["# External evaluation", "", ...externalSection(ext, classNames, { ...opts, files: "" })]
      .join("\n"),
  );
  return ext;
}
