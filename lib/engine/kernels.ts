/**
 * The project's fused kernels (native/cxr_kernels.c) in this process: loaded into TensorFlow once,
 * when the graph training step first asks, or the reason they are not (not built, the build failed,
 * standard kernels asked for, no native backend). Runs record which kernels ran (summary.json's
 * `kernels`, a line in report.md): a run never differs silently.
 */
import * as fs from "node:fs";
import { envChoice } from "../env.ts";
import { UserError } from "../errors.ts";
import { kernelLibrary } from "./kernel_library.ts";
import { graphEnginesUnavailable, openTensorFlow } from "./tf_c.ts";

/** Which kernels a graph training step uses, and why. */
export interface KernelChoice {
  kind: "fused" | "standard";
  /** The fused library's file name, or why TensorFlow's own kernels run. */
  detail: string;
}

let loaded: KernelChoice | undefined;

/** Why the fused kernels cannot load here, or undefined when the library is there to load. */
function unavailable(): string | undefined {
  const why = graphEnginesUnavailable();
  if (why) return why;
  const { file, failed } = kernelLibrary();
  if (fs.existsSync(file)) return undefined;
  if (fs.existsSync(failed)) {
    return `setup could not build them (${fs.readFileSync(failed, "utf8").trim()})`;
  }
  return "they are not built for this version of native/cxr_kernels.c (run `deno task setup`)";
}

/**
 * The kernels for the graph training step: `requested` (else COVID_CXR_KERNELS), where `auto`
 * takes the fused ones when they can load. Asking for `fused` where they cannot is an error; a
 * library that exists but does not load is a bug and throws.
 */
export function chooseKernels(requested?: "auto" | "fused" | "standard"): KernelChoice {
  const wanted = requested ?? envChoice("COVID_CXR_KERNELS");
  if (wanted === "standard") {
    return { kind: "standard", detail: "asked for" };
  }
  if (loaded) return loaded;
  const why = unavailable();
  if (why) {
    if (wanted === "fused") {
      throw new UserError(`The fused kernels were asked for (COVID_CXR_KERNELS=fused), but ${why}`);
    }
    return { kind: "standard", detail: `the fused ones cannot run: ${why}` };
  }
  const { file } = kernelLibrary();
  openTensorFlow().loadLibrary(file);
  loaded = { kind: "fused", detail: file.split("/").at(-1)! };
  return loaded;
}
