/**
 * Gradients of a scalar with respect to variables, with memory released as the backward pass
 * goes.
 *
 * Why: TF.js's `variableGrads` keeps every tensor the forward pass saved, and the gradient of
 * every intermediate tensor, until the whole backward pass is over, so its peak holds both at
 * once. Measured on MobileNetV3-Large at 446 px, batch 4: 5.6 GB resident. Here each tape
 * node's saved tensors are released as soon as that node's gradient is computed, and each
 * intermediate gradient as soon as the node that produced the tensor has consumed it, so the
 * peak is about the forward pass's saved tensors alone.
 *
 * How: the forward pass is recorded on TF.js's own tape (engine internals of tfjs-core 4.22,
 * which deno.json pins); the backward walk over it is ours. Gradient functions are TF.js's own,
 * so the numbers are the same as `tf.variableGrads` gives (a test checks this).
 */
import { tf } from "../backend.ts";

/** The parts of a TF.js tape node the backward walk uses. */
interface TapeNode {
  id: number;
  kernelName: string;
  inputs: Record<string, tf.Tensor>;
  outputs: tf.Tensor[];
  saved: tf.Tensor[];
  gradient?: (dys: (tf.Tensor | null)[]) => Record<string, () => tf.Tensor>;
}

/** The engine internals used (tfjs-core 4.22 `Engine`). */
interface EngineInternals {
  state: { activeTape: TapeNode[] | null; gradientDepth: number };
  startTape(): void;
  endTape(): void;
  scopedRun<T>(start: () => void, end: () => void, f: () => T): T;
  tidy<T extends tf.TensorContainer>(nameOrFn: string | (() => T), fn?: () => T): T;
}

function engine(): EngineInternals {
  const e = tf.engine() as unknown as EngineInternals;
  if (typeof e.startTape !== "function" || typeof e.scopedRun !== "function" || !("state" in e)) {
    throw new Error(
      "leanGradients: this TF.js version's engine has no tape internals (written for tfjs-core 4.22)",
    );
  }
  return e;
}

/**
 * The nodes on a path from `xs` to `y`, in tape order, each with only the inputs that depend on
 * `xs` and lead to `y` (gradients of the others are never computed).
 */
function pathNodes(tape: TapeNode[], xs: readonly tf.Tensor[], y: tf.Tensor): TapeNode[] {
  const fromX = new Set(xs.map((x) => x.id));
  const reachable = tape.map((node) => {
    const hit = Object.values(node.inputs).some((t) => fromX.has(t.id));
    if (hit) { for (const o of node.outputs) fromX.add(o.id); }
    return hit;
  });
  const toY = new Set([y.id]);
  const keep: TapeNode[] = [];
  for (let i = tape.length - 1; i >= 0; i--) {
    const node = tape[i];
    if (!reachable[i] || !node.outputs.some((o) => toY.has(o.id))) continue;
    const inputs: Record<string, tf.Tensor> = {};
    for (const [name, t] of Object.entries(node.inputs)) {
      if (fromX.has(t.id)) {
        inputs[name] = t;
        toY.add(t.id);
      }
    }
    keep.push({ ...node, inputs });
  }
  return keep.reverse();
}

/**
 * `tf.variableGrads`, releasing memory during the backward pass.
 *
 * @param f the loss; runs once, its operations are recorded.
 * @param xs the variables to differentiate with respect to.
 * @returns the loss value and one gradient per variable (caller disposes all).
 */
export function leanGradients(
  f: () => tf.Scalar,
  xs: readonly tf.Variable[],
): { value: tf.Scalar; grads: tf.Tensor[] } {
  const e = engine();
  if (e.state.gradientDepth !== 0) {
    throw new Error("leanGradients cannot be nested in another gradient");
  }
  const y = e.scopedRun(() => e.startTape(), () => e.endTape(), () => e.tidy("forward", f));
  const tape = e.state.activeTape!;
  try {
    const nodes = pathNodes(tape, xs, y);
    const grads = e.tidy("backward", () => {
      // Gradient of each tensor id, and how many ids share each gradient object (some gradient
      // functions hand the same tensor to several inputs).
      const grad = new Map<number, tf.Tensor>();
      const users = new Map<tf.Tensor, number>();
      const set = (id: number, t: tf.Tensor) => {
        grad.set(id, t);
        users.set(t, (users.get(t) ?? 0) + 1);
      };
      const release = (id: number) => {
        const t = grad.get(id);
        if (!t) return;
        grad.delete(id);
        const n = (users.get(t) ?? 1) - 1;
        if (n > 0) users.set(t, n);
        else {
          users.delete(t);
          t.dispose();
        }
      };
      set(y.id, tf.onesLike(y));
      const keepIds = new Set(xs.map((x) => x.id));
      for (let i = nodes.length - 1; i >= 0; i--) {
        const node = nodes[i];
        if (!node.gradient) {
          throw new Error(`Cannot compute gradient: no gradient function for ${node.kernelName}`);
        }
        const dys = node.outputs.map((o) => grad.get(o.id) ?? null);
        const inputGrads = node.gradient(dys);
        for (const [name, x] of Object.entries(node.inputs)) {
          const dx = e.tidy(() => inputGrads[name]());
          const previous = grad.get(x.id);
          if (previous === undefined) {
            set(x.id, dx);
          } else {
            const sum = tf.add(previous, dx);
            release(x.id);
            if (!users.has(dx) && !dys.includes(dx)) dx.dispose();
            set(x.id, sum);
          }
        }
        // This node is done: what it saved, and the gradients of what it produced, are not
        // needed again (every consumer of its outputs came later in the forward pass).
        for (const t of node.saved) t.dispose();
        for (const o of node.outputs) if (!keepIds.has(o.id)) release(o.id);
      }
      return xs.map((x) => grad.get(x.id) ?? tf.zerosLike(x));
    });
    return { value: y, grads };
  } finally {
    for (const node of tape) for (const t of node.saved) t.dispose();
    e.state.activeTape = null;
  }
}

/**
 * One optimisation step: gradients by {@link leanGradients}, applied by `optimizer`.
 * @returns the loss (caller disposes).
 */
export function minimizeLean(
  optimizer: tf.Optimizer,
  f: () => tf.Scalar,
  variables: readonly tf.Variable[],
): tf.Scalar {
  const { value, grads } = leanGradients(f, variables);
  optimizer.applyGradients(variables.map((v, i) => ({ name: v.name, tensor: grads[i] })));
  tf.dispose(grads);
  return value;
}
