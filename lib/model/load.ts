/**
 * A model to evaluate or predict with, from what a user has: a checkpoint folder written here, or a
 * PyTorch file (the paper's fine-tuned torchvision model, `classifier[3] = Linear(1280, N)`, saved
 * with `torch.save(model.state_dict(), path)`).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { initBackend, type tf } from "../backend.ts";
import { hashFile } from "../files.ts";
import { codeVersion } from "../provenance.ts";
import {
  CHECKPOINT_FORMAT,
  CheckpointError,
  type CheckpointMetadata,
  loadCheckpoint,
} from "./checkpoint.ts";
import { buildMobileNetV3Large } from "./mobilenet_v3.ts";
import { TORCHVISION_IMAGENET_NORMALIZATION } from "./normalization.ts";
import { readTorchFile } from "./torch_file.ts";
import { checkStateDict, loadTorchvisionWeights } from "./torchvision.ts";

export interface LoadModelOptions {
  /** Class names in output order (PyTorch files carry none). */
  classes?: readonly string[];
  /** Where class names come from otherwise (e.g. the data set's sorted class folders), and why. */
  fallbackClasses?: () => { names: string[]; from: string } | undefined;
  /** Input size for a PyTorch file (the paper's 446 px by default). */
  imageSize?: number;
}

/** The paper's input size, for PyTorch files that do not record theirs. */
export const PAPER_IMAGE_SIZE = 446;

/**
 * Load `spec`: a checkpoint folder (its metadata says everything), or a .pth/.pt state_dict of
 * torchvision's MobileNetV3-Large with a fine-tuned classifier, whose class names come from
 * `classes` or else `fallbackClasses`. @returns the model (caller disposes) and its metadata.
 */
export async function loadModel(
  spec: string,
  opts: LoadModelOptions = {},
): Promise<{ model: tf.LayersModel; meta: CheckpointMetadata }> {
  await initBackend();
  if (!fs.existsSync(spec)) {
    throw new CheckpointError(
      `Cannot load model "${spec}": no such file or folder (a checkpoint folder from ` +
        "`deno task reproduce`, e.g. outputs/latest/best, or a PyTorch .pt/.pth file)",
    );
  }
  if (fs.statSync(spec).isDirectory()) return await loadCheckpoint(spec);
  return await loadPytorchModel(spec, opts);
}

async function loadPytorchModel(
  file: string,
  opts: LoadModelOptions,
): Promise<{ model: tf.LayersModel; meta: CheckpointMetadata }> {
  const stateDict = readTorchFile(file);
  const check = checkStateDict(stateDict);
  const n = check.classes;
  if (n === 1000) {
    throw new CheckpointError(
      `Cannot evaluate with "${file}": it is an ImageNet classifier (1000 classes), not a model ` +
        "for this data set. Fine-tune it first: `deno task reproduce --weights " + file + "`",
    );
  }
  const given = opts.classes ? { names: [...opts.classes], from: "--classes" } : undefined;
  const described = await exportDescription(file);
  const fallback = () => {
    const f = opts.fallbackClasses?.();
    return f && described.ignored ? { ...f, from: `${f.from}; ${described.ignored}` } : f;
  };
  const classes = given ?? described.classes ?? fallback();
  if (!classes) {
    throw new CheckpointError(
      `Cannot use "${file}": a PyTorch state_dict carries no class names. Give them in output ` +
        "order with --classes a,b,c (or point --data at the data set whose sorted class folders " +
        "the model was trained on).",
    );
  }
  if (n !== undefined && classes.names.length !== n) {
    throw new CheckpointError(
      `Cannot use "${file}": its classifier has ${n} outputs, but ${classes.names.length} class ` +
        `names came from ${classes.from} (${classes.names.join(", ")})`,
    );
  }
  const imageSize = opts.imageSize ?? described.imageSize ?? PAPER_IMAGE_SIZE;
  const model = buildMobileNetV3Large({
    imageSize,
    numClasses: classes.names.length,
    normalization: TORCHVISION_IMAGENET_NORMALIZATION,
    convention: "torchvision",
  });
  try {
    loadTorchvisionWeights(model, file, { classifier: "load", stateDict });
  } catch (error) {
    model.dispose();
    throw error;
  }
  const meta: CheckpointMetadata = {
    format: CHECKPOINT_FORMAT,
    architecture: "MobileNetV3-Large",
    classNames: classes.names,
    imageSize,
    normalization: TORCHVISION_IMAGENET_NORMALIZATION,
    convention: "torchvision",
    weights: {
      kind: "file",
      format: "pytorch",
      convention: "torchvision",
      file: path.resolve(file),
      sha256: await hashFile(file),
      normalization: TORCHVISION_IMAGENET_NORMALIZATION,
    },
    classesFrom: classes.from,
    codeVersion: codeVersion(),
    createdAt: new Date().toISOString(),
  };
  return { model, meta };
}

/**
 * The description `deno task export` writes beside a PyTorch file (`FILE.json`): its class names
 * and input size — used only when it names this very file's SHA-256 (a description left beside
 * other weights, by a re-export killed half-way or a copied file, is ignored, and said so).
 */
async function exportDescription(file: string): Promise<{
  classes?: { names: string[]; from: string };
  imageSize?: number;
  ignored?: string;
}> {
  const description = `${file}.json`;
  if (!fs.existsSync(description)) return {};
  let json: { weightsSha256?: string; classNames?: string[]; imageSize?: number };
  try {
    json = JSON.parse(fs.readFileSync(description, "utf8"));
  } catch {
    return { ignored: `${path.basename(description)} ignored: not JSON` };
  }
  if (!json.weightsSha256 || json.weightsSha256 !== await hashFile(file)) {
    return {
      ignored: `${path.basename(description)} ignored: it describes other weights (its SHA-256 ` +
        "is not this file's)",
    };
  }
  return {
    ...(json.classNames
      ? { classes: { names: json.classNames, from: path.basename(description) } }
      : {}),
    ...(json.imageSize ? { imageSize: json.imageSize } : {}),
  };
}
