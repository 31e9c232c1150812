/**
 * Outside the data set: a model evaluated on X-rays from elsewhere, broken down by what a manifest
 * says about each image (source, view, age, sex, patient), and the shortcut probe — how often the
 * images of each other class are called the target class ("Covid"), on the test set and on the
 * external set (external_reading.ts reads why, as far as the set's manifest allows).
 *
 * The manifest is any TSV or CSV with a column naming each image's path inside the evaluated
 * folder (`file`, `path` or `filename`); `note` columns written as `key=value; key=value` add their
 * keys as columns; an `age` column adds `age band`.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { parse } from "csv-parse/sync";
import { DatasetError } from "../data/mod.ts";
import { clopperPearson, type Interval } from "./metrics.ts";
import type { Prediction } from "./evaluate.ts";

/** Per-image facts, keyed by the image's path inside the evaluated folder. */
export interface Manifest {
  file: string;
  /** Column names, the derived ones (note keys, age band) included. */
  columns: string[];
  rows: Map<string, Record<string, string>>;
  /** The column that identifies patients, when there is one. */
  patientColumn?: string;
}

const FILE_COLUMNS = ["file", "path", "filename", "relpath"];
const PATIENT_COLUMNS = ["patient_id", "patient", "patientid", "subject"];

/** MANIFEST.tsv (or manifest.tsv / .csv) in `dir`, if there is one. */
export function findManifest(dir: string): string | undefined {
  return ["MANIFEST.tsv", "manifest.tsv", "MANIFEST.csv", "manifest.csv"]
    .map((f) => path.join(dir, f))
    .find((f) => fs.existsSync(f));
}

/** The age bands of the external set's README: 18–29, 30–44, 45–59, 60–74, 75+. */
export function ageBand(age: string): string {
  const a = Number(age);
  if (age.trim() === "" || !Number.isFinite(a)) return "unknown";
  if (a < 18) return "under 18";
  return a < 30 ? "18–29" : a < 45 ? "30–44" : a < 60 ? "45–59" : a < 75 ? "60–74" : "75+";
}

/** Read a manifest (tab-separated when the file ends .tsv, else comma-separated CSV). */
export function readManifest(file: string): Manifest {
  const tsv = file.toLowerCase().endsWith(".tsv");
  let records: Record<string, string>[];
  try {
    records = parse(fs.readFileSync(file, "utf8"), {
      columns: true,
      delimiter: tsv ? "\t" : ",",
      // The external set's TSV has no quoting (its notes hold quotes); CSV follows RFC 4180.
      quote: tsv ? false : '"',
      skip_empty_lines: true,
      relax_column_count: false,
    });
  } catch (error) {
    throw new DatasetError(`Cannot read manifest ${file}: ${(error as Error).message}`);
  }
  if (records.length === 0) {
    const first = fs.readFileSync(file, "utf8").split(/\r?\n/)[0].trim();
    throw new DatasetError(
      first
        ? `Cannot use manifest ${file}: it has a header (${
          first.split(tsv ? "\t" : ",").join(", ")
        }) but no rows; add one row per image, or remove the file`
        : `Cannot use manifest ${file}: it is empty; add a header and one row per image, or ` +
          "remove the file",
    );
  }
  const header = Object.keys(records[0]);
  const fileColumn = header.find((c) => FILE_COLUMNS.includes(c.toLowerCase()));
  if (!fileColumn) {
    throw new DatasetError(
      `Cannot use manifest ${file}: no column naming the images (${FILE_COLUMNS.join(", ")}); ` +
        `it has ${header.join(", ")}`,
    );
  }
  const derived = new Set<string>();
  const rows = new Map<string, Record<string, string>>();
  for (const r of records) {
    const row: Record<string, string> = { ...r };
    for (const [k, v] of Object.entries(r)) {
      if (k.toLowerCase() !== "note") continue;
      for (const part of v.split(";")) {
        const m = /^\s*([A-Za-z_][\w ]*)=(.*)$/.exec(part);
        if (m && !(m[1].trim() in row)) {
          row[m[1].trim()] = m[2].trim();
          derived.add(m[1].trim());
        }
      }
    }
    const age = Object.keys(r).find((k) => k.toLowerCase() === "age");
    if (age) {
      row["age band"] = ageBand(r[age]);
      derived.add("age band");
    }
    // "owner/repo (how it was obtained)" → "owner/repo": the source, without the provenance note.
    if (r.source_repo !== undefined && r.source === undefined) {
      row.source = r.source_repo.split(" (")[0].trim();
      derived.add("source");
    }
    rows.set(path.normalize(r[fileColumn]), row);
  }
  return {
    file,
    columns: [...header, ...derived],
    rows,
    patientColumn: header.find((c) => PATIENT_COLUMNS.includes(c.toLowerCase())),
  };
}

/** The manifest row of a prediction (by its path inside the evaluated folder). */
function rowOf(manifest: Manifest, folderRel: string): Record<string, string> | undefined {
  return manifest.rows.get(path.normalize(folderRel));
}

/**
 * A prediction's path as the manifest names it (relative to the folder holding the manifest,
 * which is the evaluated folder's root).
 */
export type RelPath = (p: Prediction) => string;
const byRelPath: RelPath = (p) => p.item.relPath;

/** One group of a breakdown: images of one true class with one value of the column. */
export interface BreakdownRow {
  column: string;
  value: string;
  className: string;
  images: number;
  correct: number;
  /** How many were predicted as each class, in class order. */
  predicted: number[];
}

/**
 * Predictions grouped by a manifest column and the true class: for each group, the images, how
 * many were right and what they were predicted as. Images the manifest does not list go under
 * "(not in manifest)", listed images without a value for the column under "(not given)".
 */
export function breakdown(
  predictions: readonly Prediction[],
  manifest: Manifest,
  column: string,
  classNames: readonly string[],
  rel: RelPath = byRelPath,
): BreakdownRow[] {
  const groups = new Map<string, BreakdownRow>();
  for (const p of predictions) {
    const row = rowOf(manifest, rel(p));
    // A row without this column (a note without its key) is "not given", not "not in manifest".
    const value = row ? row[column] ?? "(not given)" : "(not in manifest)";
    const key = `${value}\u0000${p.item.label}`;
    const g = groups.get(key) ?? {
      column,
      value: value === "" ? "(empty)" : value,
      className: classNames[p.item.label],
      images: 0,
      correct: 0,
      predicted: classNames.map(() => 0),
    };
    g.images++;
    if (p.correct) g.correct++;
    g.predicted[p.predicted]++;
    groups.set(key, g);
  }
  return [...groups.values()].sort((a, b) =>
    a.value.localeCompare(b.value) || classNames.indexOf(a.className) -
      classNames.indexOf(b.className)
  );
}

/**
 * One prediction per patient: the image the manifest marks `primary_image_of_patient=yes`, else
 * the patient's first image by path. Images without a patient count as their own patient.
 */
export function perPatient(
  predictions: readonly Prediction[],
  manifest: Manifest,
  rel: RelPath = byRelPath,
): Prediction[] {
  if (!manifest.patientColumn) return [...predictions];
  const byPatient = new Map<string, Prediction[]>();
  for (const p of predictions) {
    const row = rowOf(manifest, rel(p));
    const patient = row?.[manifest.patientColumn] || `image:${rel(p)}`;
    byPatient.set(patient, [...(byPatient.get(patient) ?? []), p]);
  }
  return [...byPatient.values()].map((images) => {
    const sorted = [...images].sort((a, b) => rel(a).localeCompare(rel(b)));
    return sorted.find((p) => rowOf(manifest, rel(p))?.primary_image_of_patient === "yes") ??
      sorted[0];
  });
}

/** One line of the shortcut probe: images of a class called `target`, with an exact interval. */
export interface ShortcutRate {
  className: string;
  /** "image" (every image) or "patient" (one image per patient). */
  level: "image" | "patient";
  called: number;
  total: number;
  rate: number;
  /** 95 % Clopper–Pearson interval of the rate. */
  interval: Interval;
}

/**
 * For every class but `target` (default the first class, Covid): the share of its images the
 * model called `target`, with a 95 % Clopper–Pearson interval; per patient too when the manifest
 * identifies patients.
 */
export function shortcutProbe(
  predictions: readonly Prediction[],
  classNames: readonly string[],
  opts: { target?: string; manifest?: Manifest; rel?: RelPath } = {},
): ShortcutRate[] {
  const target = classNames.indexOf(opts.target ?? classNames[0]);
  const rates: ShortcutRate[] = [];
  const levels: [ShortcutRate["level"], readonly Prediction[]][] = [["image", predictions]];
  if (opts.manifest?.patientColumn) {
    levels.push(["patient", perPatient(predictions, opts.manifest, opts.rel ?? byRelPath)]);
  }
  for (const [level, preds] of levels) {
    classNames.forEach((className, k) => {
      if (k === target) return;
      const ofClass = preds.filter((p) => p.item.label === k);
      if (ofClass.length === 0) return;
      const called = ofClass.filter((p) => p.predicted === target).length;
      rates.push({
        className,
        level,
        called,
        total: ofClass.length,
        rate: called / ofClass.length,
        interval: clopperPearson(called, ofClass.length),
      });
    });
  }
  return rates;
}

/** An external set described from itself: what a reader needs before reading its results. */
export interface ExternalDescription {
  /** Images per class. */
  counts: { className: string; images: number }[];
  /** For each described manifest column: images per value, most first. */
  columns: { column: string; values: { value: string; images: number }[] }[];
  /** Ages when the manifest gives them (images with a numeric age). */
  ages?: { n: number; min: number; median: number; max: number; under18: number };
  /** The first paragraph of the set's README, when it has one. */
  readme?: string;
}

/** The columns an external set is described by, when its manifest has them. */
export const DESCRIBED_COLUMNS = ["source", "age band", "sex", "view"];

/** The first prose paragraph of a README (headings, tables and lists skipped). */
export function readmeParagraph(text: string): string | undefined {
  const paragraphs = text.replace(/\r\n/g, "\n").split(/\n\s*\n/);
  for (const p of paragraphs) {
    const lines = p.split("\n").map((l) => l.trim()).filter((l) => l !== "");
    if (lines.length === 0) continue;
    if (lines.every((l) => /^(#|\||[-*+] |\d+\. |```)/.test(l))) continue;
    const prose = lines.filter((l) => !l.startsWith("#")).join(" ");
    if (prose) return prose.length > 800 ? `${prose.slice(0, 797)}…` : prose;
  }
  return undefined;
}

/**
 * Describe the images that were evaluated (not every row of the manifest): counts per class, per
 * value of the described columns, the ages, and the README's first paragraph (`README.md` in the
 * folder or the folder holding the manifest).
 */
export function describeExternalSet(
  predictions: readonly Prediction[],
  classNames: readonly string[],
  opts: { manifest?: Manifest; folder?: string; rel?: RelPath } = {},
): ExternalDescription {
  const rel = opts.rel ?? byRelPath;
  const counts = classNames.map((className, k) => ({
    className,
    images: predictions.filter((p) => p.item.label === k).length,
  })).filter((c) => c.images > 0);
  const manifest = opts.manifest;
  const rows = predictions.map((p) => (manifest ? rowOf(manifest, rel(p)) : undefined));
  const columns = manifest
    ? DESCRIBED_COLUMNS.filter((c) => manifest.columns.includes(c)).map((column) => {
      const by = new Map<string, number>();
      for (const r of rows) {
        const v = r?.[column] || "(not given)";
        by.set(v, (by.get(v) ?? 0) + 1);
      }
      return {
        column,
        values: [...by].map(([value, images]) => ({ value, images }))
          .sort((a, b) => b.images - a.images || a.value.localeCompare(b.value)),
      };
    })
    : [];
  const ageColumn = manifest?.columns.find((c) => c.toLowerCase() === "age");
  const ages = ageColumn
    ? rows.map((r) => r?.[ageColumn]).filter((a): a is string => !!a && a.trim() !== "")
      .map(Number).filter(Number.isFinite).sort((a, b) => a - b)
    : [];
  let readme: string | undefined;
  for (const dir of [opts.folder, manifest ? path.dirname(manifest.file) : undefined]) {
    if (!dir || readme) continue;
    const file = ["README.md", "README.txt", "README"].map((f) => path.join(dir, f))
      .find((f) => fs.existsSync(f));
    if (file) readme = readmeParagraph(fs.readFileSync(file, "utf8"));
  }
  return {
    counts,
    columns,
    ...(ages.length
      ? {
        ages: {
          n: ages.length,
          min: ages[0],
          median: ages.length % 2
            ? ages[(ages.length - 1) / 2]
            : (ages[ages.length / 2 - 1] + ages[ages.length / 2]) / 2,
          max: ages.at(-1)!,
          under18: ages.filter((a) => a < 18).length,
        },
      }
      : {}),
    ...(readme ? { readme } : {}),
  };
}

/**
 * How a manifest and the images it describes agree: rows naming files that are not there (a
 * warning: the manifest may cover a larger set), and rows whose class column names another class
 * than the image's folder (an error: one of the two is wrong, and results by class would mix).
 */
export function manifestAgreement(
  manifest: Manifest,
  items: readonly { relPath: string; className: string }[],
  rel: (item: { relPath: string }) => string = (i) => i.relPath,
): { absent: string[]; classConflicts: { file: string; manifest: string; folder: string }[] } {
  const byPath = new Map(items.map((i) => [path.normalize(rel(i)), i]));
  const classColumn = manifest.columns.find((c) =>
    ["class", "label", "class_name"].includes(
      c.toLowerCase(),
    )
  );
  const absent: string[] = [];
  const classConflicts: { file: string; manifest: string; folder: string }[] = [];
  for (const [file, row] of manifest.rows) {
    const item = byPath.get(file);
    if (!item) {
      absent.push(file);
      continue;
    }
    const said = classColumn ? row[classColumn]?.trim() : undefined;
    if (said && said !== item.className) {
      classConflicts.push({ file, manifest: said, folder: item.className });
    }
  }
  return { absent, classConflicts };
}

/** The agreement as one warning line (absent rows) or an error (class conflicts). */
export function checkManifestAgreement(
  manifest: Manifest,
  items: readonly { relPath: string; className: string }[],
): string[] {
  const { absent, classConflicts } = manifestAgreement(manifest, items);
  if (classConflicts.length > 0) {
    throw new DatasetError(
      `Manifest ${manifest.file} and the class folders disagree on ${classConflicts.length} ` +
        `image(s):\n${
          classConflicts.slice(0, 5).map((c) =>
            `  ${c.file}: the manifest says ${c.manifest}, its folder ${c.folder}`
          ).join("\n")
        }${classConflicts.length > 5 ? `\n  … and ${classConflicts.length - 5} more` : ""}\n` +
        "Move the images to their class folders or correct the manifest's class column.",
    );
  }
  return absent.length
    ? [
      `${absent.length} row(s) of manifest ${path.basename(manifest.file)} name files that are ` +
      `not among the images (${absent.slice(0, 3).join(", ")}${
        absent.length > 3 ? ", …" : ""
      }): they are left out of every breakdown.`,
    ]
    : [];
}
