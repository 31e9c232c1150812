/** Step 1: the npm packages of deno.json (`deno install`, which lets tfjs-node try its download). */
import * as fs from "node:fs";
import { projectPath } from "../../lib/paths.ts";
import { exists, log, run, seconds, SetupError, type StepReport, tail } from "./common.ts";
import { backendInPlace } from "./native_backend.ts";

/** The npm package names deno.json maps (without subpath entries). */
export function declaredNpmPackages(): string[] {
  const config = JSON.parse(fs.readFileSync(projectPath("deno.json"), "utf8"));
  const names = new Set<string>();
  for (const target of Object.values<string>(config.imports ?? {})) {
    const m = /^npm:((?:@[^/]+\/)?[^@/]+)@/.exec(target);
    if (m) names.add(m[1]);
  }
  return [...names];
}

export function missingNpmPackages(): string[] {
  return declaredNpmPackages().filter((name) =>
    !exists(projectPath("node_modules", name, "package.json"))
  );
}

/** Result of the npm step: what tfjs-node's own download said when it failed. */
export interface NpmResult {
  report: StepReport;
  prebuiltFailure?: string;
}

export async function ensureNpmPackages(): Promise<NpmResult> {
  const t0 = performance.now();
  // `deno run` already installs missing packages (nodeModulesDir "auto") but skips their install
  // scripts; while the native backend is not in place, run `deno install` so tfjs-node's own
  // script gets its chance to download the prebuilt library (it runs at most once).
  if (missingNpmPackages().length === 0 && backendInPlace()) {
    return {
      report: { step: "npm packages", action: "present", detail: "node_modules/", seconds: 0 },
    };
  }
  log("• Installing npm packages (deno install); tfjs-node tries its prebuilt download …");
  const result = await run(Deno.execPath(), [
    "install",
    "--allow-scripts=npm:@tensorflow/tfjs-node,npm:sharp",
  ], { cwd: projectPath(), label: "deno install" });
  let prebuiltFailure: string | undefined;
  if (result.code !== 0) {
    if (/script 'install' in '@tensorflow\/tfjs-node/.test(result.output)) {
      // Expected offline: the download of libtensorflow from Google storage failed.
      // deno-lint-ignore no-control-regex
      const reason = /Error: ([^\n]+)/.exec(result.output.replace(/\x1b\[[0-9;]*m/g, ""));
      prebuiltFailure = reason ? reason[1].trim() : "tfjs-node's install script failed";
    } else {
      throw new SetupError(
        `Cannot install the npm packages of deno.json ("deno install" failed):\n${
          tail(result.output)
        }\nCheck that the npm registry is reachable (npm config get registry) and run ` +
          "`deno task setup` again.",
      );
    }
  }
  const still = missingNpmPackages();
  if (still.length > 0) {
    throw new SetupError(
      `"deno install" finished but these packages are missing from node_modules/: ${
        still.join(", ")
      }.\n${tail(result.output)}`,
    );
  }
  return {
    report: {
      step: "npm packages",
      action: "installed",
      detail: prebuiltFailure
        ? `tfjs-node's prebuilt download failed: ${prebuiltFailure}`
        : "deno install",
      seconds: seconds(t0),
    },
    prebuiltFailure,
  };
}
