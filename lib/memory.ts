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

let trim: ((pad: bigint) => number) | null | undefined;

/**
 * Give the C heap's free memory back to the system (glibc's `malloc_trim`). After training, the
 * step's freed tensors stay in the heaps of the threads that freed them, and the evaluation's
 * graph and tensors, allocated on other threads, came on top: a run's peak was 20–180 MB above its
 * training's. Returns whether it ran (not on a C library without it: nothing to give back there
 * that this would find).
 */
export function releaseFreedMemory(): boolean {
  if (trim === undefined) {
    try {
      const libc = Deno.dlopen("libc.so.6", {
        malloc_trim: { parameters: ["usize"], result: "i32" },
      });
      trim = (pad) => libc.symbols.malloc_trim(pad);
    } catch {
      trim = null;
    }
  }
  if (!trim) return false;
  trim(0n);
  return true;
}
