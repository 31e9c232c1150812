/**
 * A checkpoint trained here, written as a PyTorch state_dict that torchvision's
 * `mobilenet_v3_large()` with `classifier[3] = nn.Linear(1280, N)` loads with
 * `load_state_dict(strict=True)`, with a JSON beside it that says what the outputs are and how to
 * feed the model (class names, input size, normalisation).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { faultPoint, hashFile, writeJsonAtomic } from "../files.ts";
import { CheckpointError, loadCheckpoint } from "./checkpoint.ts";
import { readTorchFile } from "./torch_file.ts";
import { torchvisionStateDict } from "./torchvision.ts";
import { writeTorchStateDict } from "./torch_file.ts";

/** The Python that loads an exported file (also printed by `deno task export`). */
export function pytorchLoadingSnippet(file: string, classes: number): string {
  return [
    "import torch, torch.nn as nn, torchvision",
    "model = torchvision.models.mobilenet_v3_large()",
    `model.classifier[3] = nn.Linear(1280, ${classes})`,
    `model.load_state_dict(torch.load(${JSON.stringify(path.basename(file))}), strict=True)`,
    "model.eval()",
  ].join("\n");
}

export interface ExportResult {
  file: string;
  /** The JSON beside it (class names, input size, normalisation). */
  description: string;
  tensors: number;
  classNames: string[];
}

/**
 * Export the checkpoint in `dir` to `file` (PyTorch's zip format), then read the file back and
 * check that every tensor is what was written. A checkpoint with Keras's conventions is refused:
 * PyTorch's MobileNetV3 would compute a different function with its weights.
 */
export async function exportToPytorch(dir: string, file: string): Promise<ExportResult> {
  const { model, meta } = await loadCheckpoint(dir);
  try {
    if (meta.convention !== "torchvision") {
      throw new CheckpointError(
        `Cannot export "${dir}" to PyTorch: it was trained with Keras's conventions (stride-2 ` +
          "layers padded asymmetrically, inputs scaled to [-1, 1]); torchvision's " +
          "mobilenet_v3_large pads symmetrically and expects ImageNet mean/std, so the same " +
          "weights would compute a different function there. Train with --weights torchvision " +
          "(or none, or a .pth file) to export.",
      );
    }
    const tensors = torchvisionStateDict(model);
    // The weights and their description are one unit: the old description goes first, the new
    // weights replace the old ones whole, and the new description (naming the weights' SHA-256)
    // comes last. A kill anywhere leaves weights without a description, never beside another's.
    const description = `${file}.json`;
    fs.rmSync(description, { force: true });
    faultPoint("export-described-removed");
    const tmp = `${file}.tmp-${Deno.pid}`;
    writeTorchStateDict(tmp, tensors);
    fs.renameSync(tmp, file);
    faultPoint("export-weights-written");
    // Read back: the file must hold exactly what was written.
    const back = readTorchFile(file).tensors;
    for (const [name, t] of tensors) {
      const b = back.get(name);
      const same = b && b.dtype === t.dtype && b.shape.join() === t.shape.join() &&
        b.values.length === t.values.length && b.values.every((v, i) => v === t.values[i]);
      if (!same) throw new Error(`export: ${name} did not read back as written (${file})`);
    }
    if (back.size !== tensors.length) throw new Error(`export: ${file} holds extra tensors`);
    await writeJsonAtomic(description, {
      weightsFile: path.basename(file),
      weightsSha256: await hashFile(file),
      architecture: "torchvision.models.mobilenet_v3_large",
      head: `classifier[3] = nn.Linear(1280, ${meta.classNames.length})`,
      classNames: meta.classNames,
      imageSize: meta.imageSize,
      input: "RGB, resized to imageSize × imageSize, x / 255, then (x − mean) / std",
      normalization: meta.normalization,
      inputMask: (meta.training as { inputMask?: string } | undefined)?.inputMask ?? "none",
      source: path.resolve(dir),
      epoch: meta.epoch,
      codeVersion: meta.codeVersion,
      load: pytorchLoadingSnippet(file, meta.classNames.length),
    });
    return { file, description, tensors: tensors.length, classNames: meta.classNames };
  } finally {
    model.dispose();
  }
}
