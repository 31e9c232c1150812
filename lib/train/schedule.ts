/** The paper's learning-rate schedule: pure. */
import type { RunConfig } from "../config.ts";

/**
 * The learning rate of a 1-based epoch: `learningRate · lrGamma^k`, k = milestones already passed.
 * With milestones [4, 6]: epochs 1–4 at the base rate, 5–6 at a tenth, 7–8 at a hundredth.
 */
export function learningRateAt(
  epoch: number,
  schedule: Pick<RunConfig, "learningRate" | "lrMilestones" | "lrGamma">,
): number {
  const passed = schedule.lrMilestones.filter((m) => epoch > m).length;
  // toPrecision: 0.001 · 0.1² is 1.0000000000000002e-5 in binary floating point.
  return Number((schedule.learningRate * schedule.lrGamma ** passed).toPrecision(12));
}
