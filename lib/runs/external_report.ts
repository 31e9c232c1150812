/**
 * A run's "Outside the data set" results: the kept checkpoint on an external set, side by side
 * with the paper's test set, as files in `external/` and as a report section.
 */
import * as path from "node:path";
import { writeFileAtomic, writeJsonAtomic } from "../files.ts";
import { percent } from "../format.ts";
import { csvText, type Table, table } from "../tables.ts";
import {
  type BreakdownRow,
  type ClassReading,
  describeExternalSet,
  type DiagnosticSummary,
  diagnosticSummary,
  type ExternalDescription,
  type ExternalResult,
  type GroupDifference,
  type GroupRate,
  type Metrics,
  MIN_GROUP,
  MOSTLY,
  readExternalSet,
  type ShortcutRate,
} from "../evaluate/mod.ts";
import { plotBreakdown, plotShortcutProbe } from "../figures/mod.ts";
import { diagnosticsNotes, diagnosticsTable, writeEvaluation } from "./results.ts";

/** What summary.json keeps of an external evaluation. */
export interface ExternalSummary {
  folder: string;
  manifest?: string;
  /** The manifest columns the breakdowns are by. */
  columns: string[];
  counts: { className: string; images: number }[];
  skipped: number;
  /** What its manifest and its images disagree on without being an error. */
  manifestWarnings?: string[];
  /** The set described from itself: classes, manifest columns, ages, its README (newer runs). */
  description?: ExternalDescription;
  passes: {
    preprocessing: string;
    /** File prefix of this pass's files in external/ ("" or "gray_"). */
    prefix: string;
    metrics: Metrics;
    probe: ShortcutRate[];
    breakdowns: BreakdownRow[];
    /** ROC/AUC, sensitivity, specificity, PPV, NPV per class (newer runs). */
    diagnostics?: DiagnosticSummary;
    /** Why other classes are called the target, as far as the set can tell (newer runs). */
    readings?: ClassReading[];
  }[];
}

/** The test set's side of the comparison. */
export interface TestSide {
  metrics: Metrics;
  probe: ShortcutRate[];
  diagnostics?: DiagnosticSummary;
}

const PREFIXES = ["", "gray_"];

/**
 * The summary of an external evaluation (no per-image predictions: those go to CSV files): the
 * set's description, and per pass the metrics, the probe, the breakdowns, the diagnostic
 * measures (given, or computed here) and the readings against the test set's probe.
 */
export function summarizeExternal(
  r: ExternalResult,
  opts: {
    testProbe?: readonly ShortcutRate[];
    prevalence?: number;
    diagnostics?: readonly DiagnosticSummary[];
  } = {},
): ExternalSummary {
  const classNames = r.classNames;
  return {
    folder: r.folder,
    ...(r.manifest ? { manifest: r.manifest.file } : {}),
    columns: r.columns,
    counts: r.counts,
    skipped: r.skipped.length,
    ...(r.manifestWarnings.length ? { manifestWarnings: r.manifestWarnings } : {}),
    description: describeExternalSet(r.passes[0].evaluation.predictions, classNames, {
      manifest: r.manifest,
      folder: r.folder,
    }),
    passes: r.passes.map((p, i) => ({
      preprocessing: p.preprocessing,
      prefix: PREFIXES[i],
      metrics: p.evaluation.metrics,
      probe: p.probe,
      breakdowns: p.breakdowns,
      diagnostics: opts.diagnostics?.[i] ??
        diagnosticSummary(p.evaluation.predictions, p.evaluation.metrics.confusion, classNames, {
          prevalence: opts.prevalence,
        }).summary,
      readings: readExternalSet(p.evaluation.predictions, classNames, {
        manifest: r.manifest,
        testProbe: opts.testProbe,
      }),
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
  test?: TestSide,
  target = "Covid",
): Table {
  const columns = [
    ...(test
      ? [{
        name: "test set",
        metrics: test.metrics,
        probe: test.probe,
        diagnostics: test.diagnostics,
      }]
      : []),
    ...ext.passes.map((p) => ({
      name: `external, ${p.preprocessing}`,
      metrics: p.metrics,
      probe: p.probe,
      diagnostics: p.diagnostics,
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
    ...(columns.some((c) => c.diagnostics)
      ? [{
        "": "macro AUC (95 % DeLong)",
        ...Object.fromEntries(columns.map((c) => {
          const a = c.diagnostics?.macroAuc;
          return [
            c.name,
            a ? `${a.auc.toFixed(3)} (${a.lower.toFixed(3)} – ${a.upper.toFixed(3)})` : "—",
          ];
        })),
      }]
      : []),
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

/** "12 of 100 (12.0 %; 6.4 – 20.0 %)". */
function groupText(g: GroupRate): string {
  return `${g.called} of ${g.total} (${pct(g.rate)}; ${pct(g.interval.lower)} – ${
    pct(g.interval.upper)
  })`;
}

function pText(p: number): string {
  return p < 0.001 ? "p < 0.001" : `p = ${p.toFixed(3)}`;
}

function differenceText(d: GroupDifference, what: string): string {
  return `${what} ${d.high.group}: ${groupText(d.high)}; ${d.low.group}: ${groupText(d.low)} ` +
    `(Fisher's exact test, Bonferroni-adjusted, ${pText(d.p)})`;
}

function groupsText(groups: readonly GroupRate[]): string {
  return groups.map((g) => `${g.group} ${g.called}/${g.total}`).join(", ");
}

/**
 * The reading of one class, in words chosen by its verdict (lib/evaluate/external_reading.ts):
 * only what this set's numbers support, and where they cannot separate causes, that.
 */
export function readingText(r: ClassReading): string {
  const lead = `${r.className}: ${groupText(r.overall)} called ${r.target}${
    r.test ? ` (on the test set ${r.test.called} of ${r.test.total}, ${pct(r.test.rate)})` : ""
  }.`;
  const sources = r.bySource.length;
  const ages = r.byAge.length;
  switch (r.verdict) {
    case "age":
      return `${lead} ${
        differenceText(r.ageDifference!, `Within ${r.ageDifference!.within ?? "this set"},`)
      }: the age group goes with being called ${r.target}, with the source held fixed.`;
    case "source":
      return `${lead} ${
        differenceText(
          r.sourceDifference!,
          r.sourceDifference!.within ? `Among ${r.sourceDifference!.within},` : "By source,",
        )
      }: the source goes with being called ${r.target}${
        r.sourceDifference!.within ? ", at the same age" : " (the manifest gives no ages)"
      }.`;
    case "age-or-source": {
      const d = [r.ageDifference, r.sourceDifference].find(Boolean) ??
        undefined;
      const groups = d
        ? `${d.high.group} ${groupText(d.high)}, ${d.low.group} ${groupText(d.low)}`
        : `by age ${groupsText(r.byAge)}; by source ${groupsText(r.bySource)}`;
      return `${lead} The groups differ (${groups}), but in this set every source holds a single ` +
        `age group: it cannot tell whether age or source makes the difference.`;
    }
    case "not-carried-over":
      return `${lead} Told apart on the test set, called ${r.target} here${
        ages > 1 ? ` in every age group (${groupsText(r.byAge)})` : ""
      }${sources > 1 ? ` and from every source (${groupsText(r.bySource)})` : ""}. What differs ` +
        `between the two sets (the patients' age, the source, the equipment) this set cannot ` +
        `separate: its ${r.className} images come from ${
          sources > 1 ? `${sources} sources` : sources === 1 ? "one source" : "unnamed sources"
        }${
          ages > 1
            ? ` and ${ages} age groups, none of which differs from another`
            : ages === 1
            ? " and one age group"
            : (r.withAge ?? 0) > 0
            ? `, and its ${r.withAge} ages fall in groups too small to compare (under ${MIN_GROUP} ` +
              "images each)"
            : " with no ages given"
        }.`;
    case "not-learnt":
      return `${lead} Called ${r.target} in every ${
        ages > 1 && sources > 1 ? "age group and source" : ages > 1 ? "age group" : "source"
      } this set has (${
        [ages > 1 ? groupsText(r.byAge) : "", sources > 1 ? groupsText(r.bySource) : ""]
          .filter(Boolean).join("; ")
      })${r.test ? " and on the test set too" : ""}: the model has not learnt ${r.className} as ` +
        `these images show it, whatever their ${
          ages > 1 && sources > 1 ? "age or source" : ages > 1 ? "age" : "source"
        }.`;
    case "told-apart":
      return `${lead} Mostly not called ${r.target} (at most ${
        pct(MOSTLY, 0)
      }): on this set the model tells ${r.className} from ${r.target}.`;
    case "cannot-tell":
      return `${lead} ${
        r.overall.total < MIN_GROUP
          ? `Fewer than ${MIN_GROUP} images: too few to read.`
          : "One age group and one source (or none named), and nothing to compare with: " +
            "this set cannot say why."
      }`;
  }
}

/** The set described from itself, in two or three sentences and a line per column. */
export function descriptionLines(ext: ExternalSummary): string[] {
  const d = ext.description;
  if (!d) return [];
  const lines = [
    `Images per class: ${d.counts.map((c) => `${c.className} ${c.images}`).join(", ")}.`,
  ];
  if (d.ages) {
    lines.push(
      `Ages (${d.ages.n} images with one): ${d.ages.min}–${d.ages.max}, median ${d.ages.median}; ` +
        `${d.ages.under18} under 18.`,
    );
  } else {
    lines.push("The manifest gives no ages.");
  }
  for (const c of d.columns) {
    if (c.column === "age band") continue;
    const shown = c.values.slice(0, 6).map((v) => `${v.value} ${v.images}`);
    lines.push(
      `By ${c.column}: ${shown.join(", ")}${
        c.values.length > 6 ? `, and ${c.values.length - 6} more` : ""
      }.`,
    );
  }
  if (d.readme) lines.push(`Its README begins: “${d.readme}”`);
  return lines;
}

/**
 * The report section. `files` is the path from the report to the external/ folder ("external/"
 * in report.md, "" in external/report.md); `columns` limits the breakdown tables shown.
 */
export function externalSection(
  ext: ExternalSummary,
  classNames: readonly string[],
  opts: {
    test?: TestSide;
    files?: string;
    columns?: readonly string[];
  } = {},
): string[] {
  const files = opts.files ?? "external/";
  const [stored, gray] = ext.passes;
  const target = classNames[0];
  const shown = ext.columns.filter((c) => !opts.columns || opts.columns.includes(c));
  const readings = stored.readings ?? [];
  return [
    "## Outside the data set",
    "",
    `The kept checkpoint on ${stored.metrics.total} X-rays from elsewhere (${ext.folder}${
      ext.skipped ? `; ${ext.skipped} unreadable files left out` : ""
    }), scored as the test set is. It was run twice: with the images as stored, and with ` +
    `every image first made 1-channel gray at ${gray.preprocessing.replace("gray ", "")} ` +
    "pixels, so that how a source stores its files (colour, alpha, bit depth, size) cannot tell " +
    "the classes apart.",
    "",
    ...descriptionLines(ext).map((l) => `- ${l}`),
    ...(ext.manifestWarnings ?? []).map((w) => `- ${w}`),
    "",
    sideBySideTable(ext, opts.test, target).toMarkdown(),
    "",
    ...(readings.length
      ? [
        `### Why images of other classes are called ${target}`,
        "",
        "Each class's share called " + target + " compared across the manifest's age groups " +
        "(inside one source) and sources (inside one age group), with Fisher's exact test; " +
        `groups of fewer than ${MIN_GROUP} images are not compared.`,
        "",
        ...readings.map((r) => `- ${readingText(r)}`),
        "",
      ]
      : []),
    `![Called ${target}](${files}shortcut_probe.svg)`,
    "",
    `![Confusion matrix, as stored](${files}confusion_matrix.svg) ` +
    `![Confusion matrix, gray](${files}gray_confusion_matrix.svg)`,
    "",
    ...(stored.diagnostics
      ? [
        "### One class against the rest (as stored)",
        "",
        diagnosticsTable(stored.diagnostics).toMarkdown(),
        "",
        ...diagnosticsNotes(stored.diagnostics).map((n) => `- ${n}`),
        "",
        `![ROC curves, external](${files}roc.svg)`,
        "",
      ]
      : []),
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
  opts: { test?: TestSide; prevalence?: number } = {},
): Promise<ExternalSummary> {
  const diagnostics: DiagnosticSummary[] = [];
  for (const [i, pass] of result.passes.entries()) {
    diagnostics.push(
      await writeEvaluation(dir, pass.evaluation, classNames, {
        prefix: PREFIXES[i],
        title: `Confusion matrix (external set, ${pass.preprocessing})`,
        prevalence: opts.prevalence,
      }),
    );
  }
  const ext = summarizeExternal(result, {
    testProbe: opts.test?.probe,
    prevalence: opts.prevalence,
    diagnostics,
  });
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
    ...(opts.test ? [{ name: "test set", probe: opts.test.probe }] : []),
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
    [
      "# External evaluation",
      "",
      ...externalSection(ext, classNames, { test: opts.test, files: "" }),
    ]
      .join("\n"),
  );
  return ext;
}
