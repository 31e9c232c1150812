/**
 * Where a model's starting weights come from, and the facts that travel with them (the
 * convention the model must be built in and the input normalisation the weights expect):
 *
 * - "torchvision" (also "imagenet"): torchvision's ImageNet weights, `IMAGENET1K_V1`, what the
 *   paper's `mobilenet_v3_large(pretrained=True)` loaded. The default.
 * - "keras": Keras's ImageNet weights (a different training run, Keras's conventions).
 * - a file: a torchvision state_dict (.pth/.pt, zip or legacy format) or a Keras .h5.
 * - "none": random initialisation in the paper's (torchvision's) conventions.
 *
 * Official files are downloaded once into the user cache and checked as their publishers check
 * them; offline, the error says where to put the file and what else to use.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { tf } from "../backend.ts";
import { hashFile } from "../files.ts";
import { userCacheDir } from "../paths.ts";
import { describeCheck, downloadOnce, type HashCheck, hashMatches } from "./download.ts";
import { WeightsError } from "./errors.ts";
import { HDF5_SIGNATURE, loadKerasWeights } from "./keras_weights.ts";
import type { Convention } from "./mobilenet_v3.ts";
import {
  KERAS_NORMALIZATION,
  type NormalizationSpec,
  TORCHVISION_IMAGENET_NORMALIZATION,
} from "./normalization.ts";
import { loadTorchvisionWeights } from "./torchvision.ts";

export { WeightsError } from "./errors.ts";

/** An official pretrained file: where it is published and how it is checked. */
export interface PretrainedFile {
  url: string;
  fileName: string;
  check: HashCheck;
  classes: number;
  convention: Convention;
  normalization: NormalizationSpec;
  /** In words, for messages and reports. */
  title: string;
}

/**
 * torchvision 0.29's `MobileNet_V3_Large_Weights.IMAGENET1K_V1` (ImageNet top-1 74.042 %): what
 * `pretrained=True` loaded. torchvision accepts the download when its SHA-256 starts with the 8
 * hex digits in the file name.
 */
export const TORCHVISION_IMAGENET: Readonly<PretrainedFile> = Object.freeze<PretrainedFile>({
  url: "https://download.pytorch.org/models/mobilenet_v3_large-8738ca79.pth",
  fileName: "mobilenet_v3_large-8738ca79.pth",
  check: { algorithm: "sha256", expected: "8738ca79", prefix: true },
  classes: 1000,
  convention: "torchvision",
  normalization: TORCHVISION_IMAGENET_NORMALIZATION,
  title: "torchvision's ImageNet weights (IMAGENET1K_V1, the paper's)",
});

/**
 * Keras's official MobileNetV3-Large ImageNet weights (float, with top), as Keras 3.15.1's
 * `keras/src/applications/mobilenet_v3.py` names them, checked with the MD5 Keras publishes.
 */
export const KERAS_IMAGENET: Readonly<PretrainedFile> = Object.freeze<PretrainedFile>({
  url: "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v3/" +
    "weights_mobilenet_v3_large_224_1.0_float.h5",
  fileName: "weights_mobilenet_v3_large_224_1.0_float.h5",
  check: { algorithm: "md5", expected: "59e551e166be033d707958cf9e29a6a7" },
  classes: 1000,
  convention: "keras",
  normalization: KERAS_NORMALIZATION,
  title: "Keras's ImageNet weights",
});

/** "torchvision" (= "imagenet"), "keras", "none" or the path of a .pth/.pt/.h5 file. */
export type WeightsSource = string;

/** The named sources, for messages. */
export const WEIGHT_SOURCES = ["torchvision", "imagenet", "keras", "none"] as const;

/** What a model's weights are, recorded in checkpoints. */
export interface WeightsInfo {
  /**
   * "torchvision" or "keras" (the official ImageNet file), "file", or "none". (Checkpoints from
   * before torchvision's weights existed here say "imagenet" for Keras's.)
   */
  kind: "torchvision" | "keras" | "imagenet" | "none" | "file";
  /** The model convention these weights need (older checkpoints: absent, i.e. "keras"). */
  convention?: Convention;
  /** The file's format, for files. */
  format?: "pytorch" | "keras-h5";
  /** The file loaded (absent for "none"). */
  file?: string;
  /** The file's URL of origin, when downloaded. */
  url?: string;
  /** SHA-256 of the file. */
  sha256?: string;
  /** MD5 of the file (Keras's hash convention). */
  md5?: string;
  /** The input normalisation these weights expect. */
  normalization: NormalizationSpec;
}

/** Where an official file is cached (like torch's `~/.cache/torch/hub`, Keras's `~/.keras`). */
export function pretrainedCachePath(file: PretrainedFile, cacheDir = userCacheDir()): string {
  return path.join(cacheDir, "weights", file.fileName);
}

/** What to do when an official file cannot be downloaded. */
function offlineHelp(file: PretrainedFile, cached: string, source: string): string {
  const others = [
    source !== "torchvision" &&
    "  --weights torchvision  torchvision's ImageNet weights (the paper's starting point)",
    source !== "keras" &&
    "  --weights keras        Keras's ImageNet weights (another training run; Keras's padding and\n" +
      "                         normalisation)",
    "  --weights FILE         a torchvision MobileNetV3-Large state_dict (.pth/.pt) or a Keras .h5",
    "  --weights none         random initialisation (not comparable to the paper)",
  ].filter(Boolean);
  return `To use ${file.title}, download ${file.url} elsewhere and put it at\n  ${cached}\n` +
    `(it must have ${describeCheck(file.check)}). Or choose other weights:\n${others.join("\n")}`;
}

/** The official file behind a named source, if the source is one. */
function pretrainedFor(source: string): PretrainedFile | undefined {
  if (source === "torchvision" || source === "imagenet") return TORCHVISION_IMAGENET;
  if (source === "keras") return KERAS_IMAGENET;
  return undefined;
}

/** The format of a weights file, from its first bytes. */
function fileFormat(file: string): "pytorch" | "keras-h5" | undefined {
  const head = new Uint8Array(8);
  const fd = fs.openSync(file, "r");
  try {
    fs.readSync(fd, head, 0, 8, 0);
  } finally {
    fs.closeSync(fd);
  }
  if (HDF5_SIGNATURE.every((b, i) => head[i] === b)) return "keras-h5";
  const zip = head[0] === 0x50 && head[1] === 0x4b && head[2] === 0x03 && head[3] === 0x04;
  const pickle = head[0] === 0x80 && head[1] === 0x02; // torch.save's legacy format
  return zip || pickle ? "pytorch" : undefined;
}

/**
 * Turn a weights source into a file to load (downloading an official file once) and its
 * description. Fails before any training when the weights cannot be had, saying what to do.
 * `url` and `check` replace the official ones (tests with a local server).
 */
export async function resolveWeights(
  source: WeightsSource,
  opts: { cacheDir?: string; url?: string; check?: HashCheck; quiet?: boolean } = {},
): Promise<WeightsInfo> {
  if (source === "none") {
    return {
      kind: "none",
      convention: "torchvision",
      normalization: TORCHVISION_IMAGENET_NORMALIZATION,
    };
  }
  const official = pretrainedFor(source);
  if (official) {
    const url = opts.url ?? official.url;
    const check = opts.check ?? official.check;
    const file = pretrainedCachePath(official, opts.cacheDir);
    const kind = official === TORCHVISION_IMAGENET ? "torchvision" : "keras";
    const help = offlineHelp(official, file, kind);
    await downloadOnce(url, file, check, { what: official.title, help, quiet: opts.quiet });
    const { ok, actual } = await hashMatches(file, check);
    if (!ok) {
      throw new WeightsError(
        `Cannot use ${official.title} at "${file}": its ${check.algorithm.toUpperCase()} is ` +
          `${actual}, the published file has ${describeCheck(check)}. The file is damaged or a ` +
          `different one: delete it and run again to download ${url}.`,
      );
    }
    return {
      kind,
      convention: official.convention,
      format: kind === "torchvision" ? "pytorch" : "keras-h5",
      file,
      url,
      ...(check.algorithm === "sha256" ? { sha256: actual } : { md5: actual }),
      normalization: official.normalization,
    };
  }
  return await weightsFile(source);
}

/** A weights file given by path: its format decides the convention and normalisation. */
async function weightsFile(source: string): Promise<WeightsInfo> {
  const valid = `valid: ${WEIGHT_SOURCES.map((s) => `"${s}"`).join(", ")}, or the path of a ` +
    "torchvision .pth/.pt state_dict or a Keras .h5 weights file";
  if (!fs.existsSync(source)) {
    throw new WeightsError(`Cannot build model: unknown weights "${source}", ${valid}`);
  }
  if (fs.statSync(source).isDirectory()) {
    throw new WeightsError(`Cannot use weights "${source}": it is a folder; ${valid}`);
  }
  const format = fileFormat(source);
  if (!format) {
    throw new WeightsError(
      `Cannot use weights "${source}": neither a PyTorch file (torch.save) nor a Keras HDF5 ` +
        `file; ${valid}`,
    );
  }
  const torch = format === "pytorch";
  return {
    kind: "file",
    format,
    convention: torch ? "torchvision" : "keras",
    file: path.resolve(source),
    sha256: await hashFile(source, "sha256"),
    ...(torch ? {} : { md5: await hashFile(source, "md5") }),
    normalization: torch ? TORCHVISION_IMAGENET_NORMALIZATION : KERAS_NORMALIZATION,
  };
}

/**
 * Load resolved weights into a model built for them (same convention), with the paper's head swap
 * when the file's classifier has a different number of classes than the model.
 */
export async function loadWeights(
  model: tf.LayersModel,
  weights: WeightsInfo,
  opts: { classifier?: "auto" | "load" } = {},
): Promise<{ classifierLoaded: boolean }> {
  if (!weights.file) return { classifierLoaded: false };
  if (weights.format === "pytorch") {
    return loadTorchvisionWeights(model, weights.file, opts);
  }
  return await loadKerasWeights(model, weights.file, opts);
}

/**
 * Which weights a notebook can use here: the preferred source when it can be had, otherwise
 * "none", with the reason. For demonstrations only; training never falls back silently.
 */
export async function weightsAvailability(
  preferred: WeightsSource,
): Promise<{ use: WeightsSource; note: string }> {
  try {
    const info = await resolveWeights(preferred, { quiet: true });
    return {
      use: preferred,
      note: `using ${info.kind} weights${info.file ? ` from ${info.file}` : ""}`,
    };
  } catch (error) {
    if (!(error instanceof WeightsError)) throw error;
    return {
      use: "none",
      note: `"${preferred}" weights are not available here (${error.message.split("\n")[0]}); ` +
        "this notebook continues with random initialisation, which shows the structure but not " +
        "the pretrained behaviour",
    };
  }
}
