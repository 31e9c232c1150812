/**
 * Where the project's fused kernels (native/cxr_kernels.c) are built and how: one file per version
 * of the source and compiler flags, in the user cache, so a changed source is never loaded stale.
 * A build that failed leaves a `.failed` file with the reason instead, which runs report. Only
 * `node:` built-ins here: `deno task setup` builds the library before any npm package is usable.
 */
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { userCacheDir } from "../paths.ts";

/** The C source of the fused kernels. */
export const KERNEL_SOURCE: string = path.resolve(
  import.meta.dirname!,
  "..",
  "..",
  "native",
  "cxr_kernels.c",
);

/**
 * How the library is compiled (besides the include and library paths). No `-march`: the hot loops
 * carry their own AVX-512, AVX2 and generic versions, chosen when the library loads, so one build
 * serves whichever CPU the cache moves to.
 */
export const KERNEL_CFLAGS: readonly string[] = [
  "-O3",
  // Floating-point exceptions are never read; without this GCC keeps the kinks of ReLU and
  // hard-swish as branches and leaves the gradient loops scalar (3x slower, measured).
  "-fno-trapping-math",
  // No fused multiply-adds where the source has a multiply then an add: the augmentation must give
  // JavaScript's bits (GCC's ISO C mode does this already; clang contracts by default).
  "-ffp-contract=off",
  "-std=c11",
  "-pthread",
  "-fPIC",
  "-shared",
  "-Wall",
  "-Wextra",
];

/** The built library for the current source (`file`) and the marker of a failed build. */
export function kernelLibrary(): { file: string; failed: string } {
  const hash = crypto.createHash("sha256");
  hash.update(fs.readFileSync(KERNEL_SOURCE));
  hash.update(KERNEL_CFLAGS.join(" "));
  const key = hash.digest("hex").slice(0, 16);
  const dir = path.join(userCacheDir(), "kernels");
  return {
    file: path.join(dir, `cxr_kernels-${key}.so`),
    failed: path.join(dir, `cxr_kernels-${key}.failed`),
  };
}

/** True when setup has done its part for this source: built it, or recorded why it could not. */
export function kernelLibraryAttempted(): boolean {
  const { file, failed } = kernelLibrary();
  return fs.existsSync(file) || fs.existsSync(failed);
}
