/** Write small Keras-legacy-layout HDF5 weight files for tests (h5wasm). */
import h5wasm from "h5wasm/node";
import type { tf } from "../lib/backend.ts";

export interface LayerToWrite {
  layer: string;
  weights: { name: string; shape: number[]; values: Float32Array }[];
}

/** Write `layers` as Keras's legacy `save_weights` does: root `layer_names`, per-layer `weight_names`. */
export async function writeLegacyH5(file: string, layers: LayerToWrite[]): Promise<void> {
  await h5wasm.ready;
  const f = new h5wasm.File(file, "w");
  try {
    f.create_attribute("layer_names", layers.map((l) => l.layer));
    f.create_attribute("backend", "tensorflow");
    f.create_attribute("keras_version", "2.15.0");
    const groups = new Set<string>();
    // h5py creates intermediate groups for "a/b/c" paths; h5wasm does not, so make them.
    const ensureGroup = (p: string) => {
      const parts = p.split("/");
      for (let i = 1; i <= parts.length; i++) {
        const g = parts.slice(0, i).join("/");
        if (!groups.has(g)) {
          f.create_group(g);
          groups.add(g);
        }
      }
    };
    for (const l of layers) {
      ensureGroup(l.layer);
      const group = f.get(l.layer) as unknown as { create_attribute(n: string, v: unknown): void };
      group.create_attribute("weight_names", l.weights.map((w) => w.name));
      for (const w of l.weights) {
        const dir = `${l.layer}/${w.name}`.split("/").slice(0, -1).join("/");
        ensureGroup(dir);
        f.create_dataset({
          name: `${l.layer}/${w.name}`,
          data: w.values,
          shape: w.shape,
          dtype: "<f4",
        });
      }
    }
  } finally {
    f.close();
  }
}

/**
 * A model's weights in the legacy layout, named the Keras 2 way (`Conv`, `Conv/BatchNorm`, ...
 * does not matter: loading goes by order and shape). Dense kernels are written as the 1x1-conv
 * kernels Keras uses (`[1, 1, in, out]`).
 */
export function layersOf(model: tf.LayersModel, rename = (n: string) => n): LayerToWrite[] {
  return model.layers.filter((l) => l.weights.length > 0).map((l) => ({
    layer: rename(l.name),
    weights: l.getWeights().map((t, j) => {
      const shape = l.getClassName() === "Dense" && t.shape.length === 2
        ? [1, 1, ...t.shape]
        : t.shape;
      // TF.js uniquifies variable names ("kernel_5"); Keras files say "kernel:0".
      const base = l.weights[j].name.split("/").at(-1)!.replace(/_\d+$/, "");
      return { name: `${rename(l.name)}/${base}:0`, shape, values: t.dataSync() as Float32Array };
    }),
  }));
}
