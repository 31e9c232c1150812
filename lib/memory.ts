/**
 * How much memory this process has held at most. Sampling `Deno.memoryUsage().rss` between
 * training steps, as runs used to, misses whatever comes after the last sample: on a 446 px run
 * with the external set the epochs' samples said 2.6 GB, while evaluating the test and external sets
 * took the process to 2.9 GB (what `/usr/bin/time -v` reports). Linux keeps the true high-water mark
 * for every process (`VmHWM` in /proc/self/status), the figure `time -v` and PyTorch's `ru_maxrss`
 * give too, so runs and the bench read that.
 */

/** Where the figure came from: the kernel's high-water mark, or (without /proc) the current RSS. */
export type PeakSource = "high-water mark" | "current";

/** The process's peak resident memory in bytes so far, and where the figure came from. */
export function peakResident(): { bytes: number; source: PeakSource } {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(Deno.readTextFileSync("/proc/self/status"));
    if (m) return { bytes: Number(m[1]) * 1024, source: "high-water mark" };
  } catch {
    // No /proc (macOS, Windows): only the current figure exists, a lower bound of the peak.
  }
  return { bytes: Deno.memoryUsage().rss, source: "current" };
}

/** `peakResident()` in whole MB (2^20 bytes). */
export function peakResidentMB(): number {
  return Math.round(peakResident().bytes / 2 ** 20);
}
