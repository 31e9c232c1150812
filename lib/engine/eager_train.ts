/**
 * The eager training engine: TF.js operations on the layers model's own variables, one kernel at a
 * time (with TensorFlow's fused BatchNorm and native ReLU gradients when the backend is native),
 * gradients computed layer by layer with memory released as the backward pass goes (gradients.ts).
 */
import { envChoice } from "../env.ts";
import { tf } from "../backend.ts";
import { registerNativeGradients } from "../native_ops.ts";
import { dropoutLayers } from "../model/mod.ts";
import { minimizeLean } from "./gradients.ts";
import type { StepEngine, StepEngineOptions } from "./step.ts";

/**
 * Which gradient implementation the eager engine uses: ours, which releases memory during the
 * backward pass (default), or TF.js's `optimizer.minimize` (`COVID_CXR_GRADIENTS=tfjs`, to compare).
 */
function useLeanGradients(): boolean {
  return envChoice("COVID_CXR_GRADIENTS") !== "tfjs";
}

/**
 * One training step: forward in training mode, cross-entropy, backward, SGD update.
 * @param x Tensor4D [B, S, S, 3] in 0..255; labels Tensor1D [B] int32 (neither disposed).
 * @returns the batch's mean loss and the predicted classes (caller disposes both).
 */
export function trainStep(
  model: tf.LayersModel,
  optimizer: tf.Optimizer,
  variables: tf.Variable[],
  x: tf.Tensor4D,
  labels: tf.Tensor1D,
  numClasses: number,
): { loss: tf.Scalar; predicted: tf.Tensor1D } {
  let predicted: tf.Tensor1D | undefined;
  const f = () => {
    const logits = model.apply(x, { training: true }) as tf.Tensor2D;
    predicted = tf.keep(tf.argMax(logits, 1));
    return tf.losses.softmaxCrossEntropy(tf.oneHot(labels, numClasses), logits) as tf.Scalar;
  };
  const loss = useLeanGradients()
    ? minimizeLean(optimizer, f, variables)
    : optimizer.minimize(f, true, variables)!;
  return { loss, predicted: predicted! };
}

/** TF.js's momentum optimizer on the layers model's variables, one step at a time. */
export async function eagerStepEngine(
  model: tf.LayersModel,
  opts: StepEngineOptions,
): Promise<StepEngine> {
  registerNativeGradients();
  const optimizer = tf.train.momentum(opts.learningRate, opts.momentum);
  const variables = model.trainableWeights.map((w) => w.read() as tf.Variable);
  const dropouts = dropoutLayers(model);
  if (opts.optimizerWeights) {
    // Momentum buffers are matched to variables by position, as TF.js's optimizer keeps them.
    // setWeights() keeps its own copies.
    await optimizer.setWeights(opts.optimizerWeights.map((w) => ({ ...w })));
  }
  return {
    kind: "eager",
    kernels: { kind: "standard", detail: "the eager engine runs TF.js's kernels op by op" },
    // The step uses a cached scalar -lr; setLearningRate replaces it (assigning the field would not).
    setLearningRate: (lr) => optimizer.setLearningRate(lr),
    step: async (x, labels, globalStep) => {
      for (const d of dropouts) d.step = globalStep;
      const { loss, predicted } = trainStep(
        model,
        optimizer,
        variables,
        x,
        labels,
        opts.numClasses,
      );
      const value = (await loss.data())[0];
      const p = await predicted.data();
      tf.dispose([loss, predicted]);
      return { loss: value, predicted: p };
    },
    optimizerState: async () => {
      const named = await optimizer.getWeights();
      const encoded = await tf.io.encodeWeights(named);
      // getWeights() makes a fresh scalar for the iteration count; the momentum buffers are live.
      tf.dispose(named.filter((w) => w.name === "iter").map((w) => w.tensor));
      return encoded;
    },
    dispose: () => {
      optimizer.dispose();
      // MomentumOptimizer.dispose() forgets SGD's cached -lr scalar.
      (optimizer as unknown as { c?: tf.Tensor }).c?.dispose();
    },
  };
}
