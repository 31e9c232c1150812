/** Number formatting shared by reports, tables, logs and notebooks. */

/** A share as a percentage with a space before the sign: `percent(0.9697, 2)` is "96.97 %". */
export function percent(share: number, digits = 1): string {
  return `${(100 * share).toFixed(digits)} %`;
}

/** A loss for a log line: 4 decimals, or "inf", "-inf", "nan" (PyTorch's spelling). */
export function lossText(value: number): string {
  if (Number.isFinite(value)) return value.toFixed(4);
  return Number.isNaN(value) ? "nan" : value > 0 ? "inf" : "-inf";
}
