/** Small numeric helpers on plain arrays (no tensors). */

/** Index of the largest of `length` values starting at `offset` (the first one on ties). */
export function argmax(
  values: ArrayLike<number>,
  offset = 0,
  length = values.length - offset,
): number {
  let best = 0;
  for (let j = 1; j < length; j++) {
    if (values[offset + j] > values[offset + best]) best = j;
  }
  return best;
}

/** The argmax of each row of a row-major [rows, columns] array. */
export function argmaxRows(values: ArrayLike<number>, columns: number): number[] {
  return Array.from(
    { length: values.length / columns },
    (_, r) => argmax(values, r * columns, columns),
  );
}

/** Softmax of one row of logits, in float64, stable for large logits. */
export function softmax(logits: ArrayLike<number>): number[] {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) max = Math.max(max, logits[i]);
  const exps = Array.from(logits, (v) => Math.exp(v - max));
  const sum = exps.reduce((s, v) => s + v, 0);
  return exps.map((v) => v / sum);
}
