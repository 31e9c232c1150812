/**
 * Inference as one TensorFlow graph: an inference plan (lib/inference.ts) written out as a
 * minimal SavedModel (a frozen GraphDef, weights as constants, one `serving_default` signature)
 * and run by TensorFlow's session through tfjs-node's `loadSavedModel` machinery.
 *
 * Why: TF.js executes a model one kernel at a time from JavaScript. At batch 1 that dispatch
 * dominates (~250 kernels per image), and each kernel runs on its own. A session runs the whole
 * graph in C++, and TensorFlow's graph optimiser (grappler, with oneDNN) fuses convolution + bias
 * + activation chains that the eager API cannot express. Measured at 446 px: see the README's
 * speed table.
 *
 * Only the native backend can do this; `graphPredictor` throws otherwise and callers fall back to
 * the eager plan.
 */
import * as path from "node:path";
import { tf } from "./backend.ts";
import { type InferencePlan, planInference, type Predictor } from "./inference.ts";
import { DT_FLOAT, emitStep, GraphWriter, shapeProto } from "./graph_def.ts";
import { bytesField, concat, intField, mapEntry, stringField } from "./protobuf.ts";

export const INPUT_NAME = "input";
export const OUTPUT_NAME = "logits";

/**
 * The bytes of `saved_model.pb` for `plan`: input `input` [-1, H, W, C] float 0..255, output
 * `logits`, tag "serve", signature "serving_default".
 */
export function savedModelBytes(plan: InferencePlan): Uint8Array {
  const g = new GraphWriter();
  const inputShape = [-1, ...plan.inputShape];
  const nodeOf = new Map<string, string>([[plan.input, INPUT_NAME]]);
  g.node(INPUT_NAME, "Placeholder", [], {
    dtype: { type: DT_FLOAT },
    shape: { shape: inputShape },
  });
  for (const step of plan.steps) {
    // Node names must not collide with the input/output names or the "step/part" scheme.
    const inputs = step.inputs.map((n) => {
      const node = nodeOf.get(n);
      if (!node) throw new Error(`savedModelBytes: step ${step.name} reads unknown ${n}`);
      return node;
    });
    nodeOf.set(step.name, emitStep(g, `model/${step.name}`, step.op, inputs));
  }
  g.op(OUTPUT_NAME, "Identity", [nodeOf.get(plan.output)!]);

  const last = plan.steps.at(-1)?.op;
  const classes = last?.kind === "dense" ? last.kernel.shape[1] : -1;
  const tensorInfo = (name: string, shape: number[]) => [
    stringField(1, `${name}:0`),
    intField(2, DT_FLOAT),
    bytesField(3, shapeProto(shape)),
  ];
  const signature = [
    mapEntry(1, INPUT_NAME, tensorInfo(INPUT_NAME, inputShape)),
    mapEntry(2, OUTPUT_NAME, tensorInfo(OUTPUT_NAME, [-1, classes])),
    stringField(3, "tensorflow/serving/predict"),
  ];
  const metaGraph = [
    bytesField(1, [stringField(4, "serve")]), // meta_info_graph.tags
    bytesField(2, g.graphDef()),
    mapEntry(5, "serving_default", signature),
  ];
  return concat([intField(1, 1), bytesField(2, metaGraph)]);
}

/** The slice of tfjs-node's backend that loads and runs a SavedModel. */
interface SavedModelBackend {
  loadSavedModelMetaGraph(dir: string, tags: string): number;
  runSavedModel(
    id: number,
    inputs: tf.Tensor[],
    inputInfos: { name: string; tfDtype: string }[],
    outputNames: string[],
  ): tf.Tensor[];
  deleteSavedModel(id: number): void;
}

/**
 * A predictor that runs `model` as one TensorFlow graph. The model's current weights are copied
 * into the graph: later training does not change this predictor. Throws without the native
 * backend or for a layer the plan does not know.
 */
export function graphPredictor(model: tf.LayersModel): Predictor {
  if (tf.getBackend() !== "tensorflow") {
    throw new Error("graphPredictor needs the native TensorFlow backend (tfjs-node)");
  }
  const backend = tf.backend() as unknown as SavedModelBackend;
  const plan = planInference(model);
  let bytes: Uint8Array;
  try {
    bytes = savedModelBytes(plan);
  } finally {
    plan.dispose();
  }
  // TensorFlow reads a SavedModel from a directory; it is not needed once loaded.
  const dir = Deno.makeTempDirSync({ prefix: "covid-cxr-graph-" });
  let id: number;
  try {
    Deno.writeFileSync(path.join(dir, "saved_model.pb"), bytes);
    id = backend.loadSavedModelMetaGraph(dir, "serve");
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
  let disposed = false;
  return {
    engine: "graph",
    predict: (x) => {
      if (disposed) throw new Error("graphPredictor: predict after dispose");
      const input = x.dtype === "float32" ? x : tf.cast(x, "float32");
      try {
        const [logits] = backend.runSavedModel(
          id,
          [input],
          [{ name: INPUT_NAME, tfDtype: "DT_FLOAT" }],
          [OUTPUT_NAME],
        );
        return logits as tf.Tensor2D;
      } finally {
        if (input !== x) input.dispose();
      }
    },
    dispose: () => {
      if (disposed) return;
      disposed = true;
      backend.deleteSavedModel(id);
    },
  };
}
