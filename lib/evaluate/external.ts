/**
 * A model on an external set of X-rays, as `deno task reproduce --external` and `deno task
 * evaluate` run it: the evaluation, the breakdowns by what the set's manifest says, the shortcut
 * probe — and all of it once more with every image made 1-channel gray at one fixed size first, so
 * that how a source stores its files (colour, alpha, bit depth, size) cannot tell the classes apart.
 */
import type { tf } from "../backend.ts";
import { createPredictor, type Predictor } from "../engine/mod.ts";
import type { ImageCache } from "../data/mod.ts";
import type { CheckpointMetadata } from "../model/mod.ts";
import type { Evaluation } from "./evaluate.ts";
import {
  breakdown,
  type BreakdownRow,
  checkManifestAgreement,
  findManifest,
  type Manifest,
  readManifest,
  shortcutProbe,
  type ShortcutRate,
} from "./manifest.ts";
import {
  evaluateFolder,
  type FolderEvaluation,
  type ImageSettings,
  readFolderImages,
} from "./folder.ts";
import { loadEvaluationImages } from "./evaluate.ts";
import { DatasetError } from "../data/mod.ts";

/** The columns results are broken down by, when the manifest has them. */
export const BREAKDOWN_COLUMNS = ["source", "group", "view", "sex", "age band"];

/** The fixed size of the gray, harmonised preprocessing (the NIH images' own size). */
export const GRAY_SIZE = 1024;

/** One preprocessing path through the external set. */
export interface ExternalPass {
  /** "as stored" or "gray 1024²". */
  preprocessing: string;
  evaluation: Evaluation;
  breakdowns: BreakdownRow[];
  probe: ShortcutRate[];
  /** The images as this pass gave them to the model. */
  cache: ImageCache;
}

export interface ExternalResult {
  folder: string;
  /** What the manifest and the images disagree on without being an error (absent rows). */
  manifestWarnings: string[];
  /** The model's classes, in its order. */
  classNames: string[];
  manifest?: Manifest;
  /** Columns the breakdowns are by. */
  columns: string[];
  counts: FolderEvaluation["images"]["counts"];
  skipped: FolderEvaluation["report"]["skipped"];
  /** The model's own preprocessing, then the gray fixed-size one. */
  passes: [ExternalPass, ExternalPass];
}

/**
 * Evaluate `model` on the external folder `dir` (an ImageFolder, or a root with test/), with its
 * manifest (`manifest`, else a MANIFEST.tsv/.csv beside the images) when there is one.
 */
export async function evaluateExternal(
  model: tf.LayersModel,
  meta: CheckpointMetadata,
  dir: string,
  opts: {
    manifest?: string;
    columns?: string[];
    skipBad?: boolean;
    batchSize?: number;
    maxPixels?: number;
    quiet?: boolean;
    /** A predictor of `model` to use (the caller disposes it); absent: one for both passes. */
    predictor?: Predictor;
  } = {},
): Promise<ExternalResult> {
  const passes: ExternalPass[] = [];
  let manifest: Manifest | undefined;
  let manifestWarnings: string[] = [];
  let columns: string[] = [];
  let first: FolderEvaluation | undefined;
  const predictor = opts.predictor ?? createPredictor(model);
  try {
    for (const grayAt of [undefined, GRAY_SIZE]) {
      const result = await evaluateFolder(model, meta, dir, { ...opts, grayAt, predictor });
      first ??= result;
      if (!manifest) {
        const file = opts.manifest ?? findManifest(result.images.root);
        manifest = file ? readManifest(file) : undefined;
        if (manifest) manifestWarnings = checkManifestAgreement(manifest, result.images.items);
        columns = manifest
          ? (opts.columns ?? BREAKDOWN_COLUMNS).filter((c) => manifest!.columns.includes(c))
          : [];
      }
      const { predictions } = result.evaluation;
      passes.push({
        preprocessing: grayAt ? `gray ${grayAt}²` : "as stored",
        evaluation: result.evaluation,
        breakdowns: manifest
          ? columns.flatMap((c) => breakdown(predictions, manifest!, c, meta.classNames))
          : [],
        probe: shortcutProbe(predictions, meta.classNames, { manifest }),
        cache: result.cache,
      });
    }
  } finally {
    if (!opts.predictor) predictor.dispose();
  }
  return {
    folder: first!.images.folder,
    classNames: [...meta.classNames],
    manifestWarnings,
    manifest,
    columns,
    counts: first!.images.counts,
    skipped: first!.report.skipped,
    passes: passes as [ExternalPass, ExternalPass],
  };
}

/**
 * Check an external set before a run trains: its folder scans with the run's classes, its manifest
 * (when it has one) reads and agrees with its class folders, and — given `decode`, the run's image
 * settings — every image decodes for both passes (as stored and gray), which also puts them in
 * the disk cache the evaluation after training reads. Errors are the ones the evaluation would
 * stop on after training (a bad image: unless `decode.skipBad`); warnings are returned to be said.
 */
export async function checkExternalSet(
  dir: string,
  classNames: readonly string[],
  opts: {
    manifest?: string;
    decode?: Omit<ImageSettings, "classNames"> & {
      maxPixels?: number;
      skipBad?: boolean;
      /** Images decoded so far of `total`, both passes counted. */
      onProgress?: (done: number, total: number) => void;
    };
  } = {},
): Promise<string[]> {
  const images = await loadEvaluationImages(dir, classNames);
  if (images.items.length === 0) {
    throw new DatasetError(`The external set ${images.folder} has no images in its class folders.`);
  }
  const file = opts.manifest ?? findManifest(images.root);
  const warnings = file ? checkManifestAgreement(readManifest(file), images.items) : [];
  const decode = opts.decode;
  if (decode) {
    const passes = [undefined, GRAY_SIZE];
    for (const [k, grayAt] of passes.entries()) {
      await readFolderImages(dir, { ...decode, classNames: [...classNames] }, {
        skipBad: decode.skipBad,
        maxPixels: decode.maxPixels,
        grayAt,
        images,
        onProgress: (done, total) => decode.onProgress?.(k * total + done, passes.length * total),
      });
    }
  }
  return warnings;
}
