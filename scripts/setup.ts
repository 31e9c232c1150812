/**
 * `deno task setup`: everything the project needs, installed by the project itself.
 *
 * 1. npm packages from deno.json (`deno install`). tfjs-node's own install script runs and tries to
 *    download libtensorflow and a prebuilt binding from Google storage — what a connected user gets.
 * 2. When that native backend does not load, build it offline: libtensorflow from PyPI's
 *    `tensorflow-cpu` wheel (it ships the TF_/TFE_ C API) and the tfjs-node binding with node-gyp.
 *    The wheel, the extracted library and the built binding are cached in the user cache dir, so a
 *    second clone or a repeat setup only links files.
 *    Where `nvidia-smi` answers, tfjs-node's GPU build is installed too (`@tensorflow/tfjs-node-gpu`,
 *    its own download); the backend then uses it (lib/backend.ts) and every run records which ran.
 * 3. JupyterLab in a project-local venv (`.venv/`) with the Deno kernel registered inside it, so
 *    the user's global Jupyter is never touched.
 *
 * Flags: `--if-needed` (only file checks when everything is in place; used by other tasks),
 * `--skip-lab` (no JupyterLab), `--rebuild` (ignore the native backend in place and build it
 * offline again), `--json` (print the step report as JSON on the last line).
 *
 * Only `node:` built-ins and lib/paths.ts, lib/files.ts and lib/env.ts (through them) are imported:
 * nothing else is installed yet.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { pathToFileURL } from "node:url";
import { projectPath, userCacheDir, venvBin } from "../lib/paths.ts";
import { hashFile, writeJsonAtomic } from "../lib/files.ts";

/** What the offline route builds from; the versions the binding was proven with. */
export const OFFLINE_BUILD = Object.freeze({
  tensorflowWheel: "tensorflow-cpu",
  tensorflowVersion: "2.21.0",
  wheelPythonVersion: "3.11",
  wheelPlatform: "manylinux_2_27_x86_64",
  napiVersion: 8,
  libraries: ["libtensorflow_cc.so.2", "libtensorflow_framework.so.2"],
  // Headers the binding's two .cc files include (found with the compiler's -MD output).
  headerDirs: ["tensorflow/c/", "tensorflow/core/platform/", "tsl/platform/", "xla/tsl/c/"],
});

/** JupyterLab and nbconvert versions installed into `.venv/`. */
export const LAB_PACKAGES = Object.freeze(["jupyterlab==4.6.6", "nbconvert==7.17.2"]);

export type Action = "present" | "installed" | "downloaded" | "built" | "linked";
export interface StepReport {
  step: string;
  action: Action;
  detail: string;
  seconds: number;
}

/** A setup failure with what was tried and what to do, for the user. */
export class SetupError extends Error {
  override name = "SetupError";
}

// ---------------------------------------------------------------------------------------------
// small helpers

function exists(p: string): boolean {
  return fs.existsSync(p);
}

function log(message: string): void {
  console.error(message);
}

interface RunResult {
  code: number;
  output: string;
}

/**
 * Run a command. With `inherit` the user sees its own progress output; otherwise output is
 * captured and a heartbeat line is printed every `heartbeatSeconds` so long steps show progress.
 */
async function run(
  cmd: string,
  args: string[],
  opts: { cwd?: string; env?: Record<string, string>; inherit?: boolean; label?: string } = {},
): Promise<RunResult> {
  const command = new Deno.Command(cmd, {
    args,
    cwd: opts.cwd,
    env: opts.env,
    stdin: "null",
    stdout: opts.inherit ? "inherit" : "piped",
    stderr: opts.inherit ? "inherit" : "piped",
  });
  let child: Deno.ChildProcess;
  try {
    child = command.spawn();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new SetupError(`Cannot run "${cmd}": not found on PATH`);
    }
    throw error;
  }
  const started = performance.now();
  const timer = opts.label && !opts.inherit
    ? setInterval(() => {
      log(`    … ${opts.label} (${Math.round((performance.now() - started) / 1000)} s)`);
    }, 10_000)
    : undefined;
  try {
    const out = await child.output();
    const text = opts.inherit
      ? ""
      : new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    return { code: out.code, output: text };
  } finally {
    if (timer !== undefined) clearInterval(timer);
  }
}

function tail(text: string, lines = 15): string {
  return text.trim().split("\n").slice(-lines).map((l) => `    ${l}`).join("\n");
}

function readJson<T>(file: string): T | undefined {
  try {
    return JSON.parse(fs.readFileSync(file, "utf8")) as T;
  } catch {
    return undefined;
  }
}

function seconds(since: number): number {
  return Math.round((performance.now() - since) / 100) / 10;
}

// ---------------------------------------------------------------------------------------------
// 1. npm packages

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

function missingNpmPackages(): string[] {
  return declaredNpmPackages().filter((name) =>
    !exists(projectPath("node_modules", name, "package.json"))
  );
}

/** Result of the npm step: what tfjs-node's own download said when it failed. */
interface NpmResult {
  report: StepReport;
  prebuiltFailure?: string;
}

async function ensureNpmPackages(): Promise<NpmResult> {
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

// ---------------------------------------------------------------------------------------------
// 2. native backend

/** The real directory of the installed tfjs-node package. */
export function tfjsNodeDir(): string {
  return fs.realpathSync(projectPath("node_modules", "@tensorflow", "tfjs-node"));
}

function tfjsNodeVersion(pkgDir: string): string {
  return JSON.parse(fs.readFileSync(path.join(pkgDir, "package.json"), "utf8")).version;
}

function bindingPath(pkgDir: string): string {
  return path.join(pkgDir, "lib", `napi-v${OFFLINE_BUILD.napiVersion}`, "tfjs_binding.node");
}

const BACKEND_STAMP = () => projectPath("node_modules", ".covid-cxr", "backend.json");

interface BackendStamp {
  route: "prebuilt" | "offline-build";
  tfjsNode: string;
  binding: string;
  bindingSha256: string;
}

export interface ProbeResult {
  backend: string;
  native: boolean;
  error?: string;
  versions?: Record<string, string>;
}

/** Load TF.js through lib/backend.ts in a fresh process and report the live backend. */
export async function probeBackend(): Promise<ProbeResult> {
  const code = `
    import { initBackend } from ${
    JSON.stringify(pathToFileURL(projectPath("lib", "backend.ts")).href)
  };
    const info = await initBackend({ quiet: true });
    console.log("PROBE " + JSON.stringify(info));`;
  const result = await run(Deno.execPath(), ["eval", "--ext=ts", code], { cwd: projectPath() });
  const line = result.output.split("\n").find((l) => l.startsWith("PROBE "));
  if (!line) return { backend: "none", native: false, error: tail(result.output) };
  const info = JSON.parse(line.slice(6));
  return {
    backend: info.backend,
    native: info.backend === "tensorflow",
    error: info.nativeError,
    versions: info.versions,
  };
}

/** Where the offline-build artefacts live, per version. */
export function offlineCachePaths(cacheDir = userCacheDir()) {
  const tf = OFFLINE_BUILD.tensorflowVersion;
  return {
    wheels: path.join(cacheDir, "wheels"),
    library: path.join(cacheDir, `libtensorflow-${tf}-${Deno.build.os}-${Deno.build.arch}`),
    binding: (tfjsNode: string) =>
      path.join(
        cacheDir,
        `tfjs-binding-${tfjsNode}-tf${tf}-napi${OFFLINE_BUILD.napiVersion}-${Deno.build.os}-${Deno.build.arch}`,
      ),
  };
}

interface WheelStamp {
  file: string;
  sha256: string;
  size: number;
}

/**
 * The `tensorflow-cpu` wheel from PyPI, downloaded once into the cache. A file whose size or hash
 * does not match its stamp (an interrupted download) is deleted and downloaded again.
 */
export async function ensureWheel(
  cacheDir = userCacheDir(),
  env?: Record<string, string>,
): Promise<{ file: string; action: Action }> {
  const { wheels } = offlineCachePaths(cacheDir);
  const stampFile = path.join(
    wheels,
    `${OFFLINE_BUILD.tensorflowWheel}-${OFFLINE_BUILD.tensorflowVersion}.json`,
  );
  const stamp = readJson<WheelStamp>(stampFile);
  if (stamp && exists(stamp.file) && fs.statSync(stamp.file).size === stamp.size) {
    if (await hashFile(stamp.file) === stamp.sha256) {
      return { file: stamp.file, action: "present" };
    }
  }
  if (stamp) log(`  cached wheel ${stamp.file} is incomplete or changed; downloading it again`);
  if (stamp && exists(stamp.file)) fs.rmSync(stamp.file);
  fs.rmSync(stampFile, { force: true });

  // Download into a private folder, then move: an interrupted download never looks complete.
  const partial = path.join(wheels, `.partial-${Deno.pid}`);
  fs.rmSync(partial, { recursive: true, force: true });
  fs.mkdirSync(partial, { recursive: true });
  const spec = `${OFFLINE_BUILD.tensorflowWheel}==${OFFLINE_BUILD.tensorflowVersion}`;
  log(`• Downloading ${spec} from PyPI (about 270 MB; it carries libtensorflow) …`);
  const python = findPython();
  const result = await run(python, [
    "-m",
    "pip",
    "download",
    "--no-deps",
    "--only-binary=:all:",
    `--python-version=${OFFLINE_BUILD.wheelPythonVersion}`,
    `--platform=${OFFLINE_BUILD.wheelPlatform}`,
    "--dest",
    partial,
    spec,
  ], { env, label: "pip download" });
  const files = fs.readdirSync(partial).filter((f) => f.endsWith(".whl"));
  if (result.code !== 0 || files.length !== 1) {
    fs.rmSync(partial, { recursive: true, force: true });
    throw new SetupError(
      `Cannot get the native TensorFlow backend.\n` +
        `  Tried: tfjs-node's prebuilt download from Google storage, then ` +
        `"pip download ${spec}" from PyPI for the offline build; both failed.\n` +
        `  pip said:\n${tail(result.output, 6)}\n` +
        `  Fix: connect to the internet (either storage.googleapis.com or PyPI is enough), or ` +
        `put the wheel in ${wheels}/ and run \`deno task setup\` again.`,
    );
  }
  const file = path.join(wheels, files[0]);
  fs.renameSync(path.join(partial, files[0]), file);
  fs.rmSync(partial, { recursive: true, force: true });
  await writeJsonAtomic(stampFile, {
    file,
    sha256: await hashFile(file),
    size: fs.statSync(file).size,
  });
  return { file, action: "downloaded" };
}

function findPython(): string {
  for (const candidate of ["python3", "python"]) {
    const r = new Deno.Command(candidate, { args: ["--version"], stdout: "null", stderr: "null" });
    try {
      if (r.outputSync().success) return candidate;
    } catch { /* not on PATH */ }
  }
  throw new SetupError(
    "The offline build of the native backend needs Python 3 (for pip and the wheel), and none " +
      "was found on PATH. Install Python 3, or use a connected machine where tfjs-node downloads " +
      "its prebuilt library.",
  );
}

interface LibraryStamp {
  sizes: Record<string, number>;
  headers: number;
}

/**
 * libtensorflow (the two shared objects and the C API headers) extracted from the wheel into the
 * cache. Extraction goes to a `.partial` folder renamed when complete; a stamp records the sizes.
 */
export async function ensureLibrary(
  wheel: string,
  cacheDir = userCacheDir(),
): Promise<{ dir: string; action: Action }> {
  const { library } = offlineCachePaths(cacheDir);
  if (libraryComplete(library)) return { dir: library, action: "present" };
  fs.rmSync(library, { recursive: true, force: true });
  const partial = `${library}.partial-${Deno.pid}`;
  fs.rmSync(partial, { recursive: true, force: true });
  log("• Extracting libtensorflow and its C API headers from the wheel …");
  const script = `
import json, os, sys, zipfile
wheel, out, libs, dirs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
sizes, headers = {}, 0
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        name = info.filename
        if name.startswith("tensorflow/") and name[len("tensorflow/"):] in libs:
            target = os.path.join(out, "lib", os.path.basename(name))
        elif name.startswith("tensorflow/include/") and any(name[len("tensorflow/include/"):].startswith(d) for d in dirs):
            target = os.path.join(out, "include", name[len("tensorflow/include/"):])
            headers += 1
        else:
            continue
        if name.endswith("/"):
            continue
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with z.open(info) as src, open(target, "wb") as dst:
            while True:
                chunk = src.read(1 << 20)
                if not chunk:
                    break
                dst.write(chunk)
        if target.endswith(".so.2"):
            sizes[os.path.basename(target)] = os.path.getsize(target)
missing = [l for l in libs if l not in sizes]
if missing:
    sys.exit("wheel lacks " + ", ".join(missing))
json.dump({"sizes": sizes, "headers": headers}, open(os.path.join(out, "stamp.json"), "w"))
`;
  const result = await run(findPython(), [
    "-c",
    script,
    wheel,
    partial,
    JSON.stringify(OFFLINE_BUILD.libraries),
    JSON.stringify(OFFLINE_BUILD.headerDirs),
  ], { label: "extracting" });
  if (result.code !== 0) {
    fs.rmSync(partial, { recursive: true, force: true });
    throw new SetupError(
      `Cannot extract libtensorflow from ${wheel}:\n${tail(result.output)}\n` +
        `Delete ${wheel} and run \`deno task setup\` again to download it afresh.`,
    );
  }
  fs.renameSync(partial, library);
  return { dir: library, action: "built" };
}

function libraryComplete(dir: string): boolean {
  const stamp = readJson<LibraryStamp>(path.join(dir, "stamp.json"));
  if (!stamp) return false;
  return OFFLINE_BUILD.libraries.every((name) => {
    const file = path.join(dir, "lib", name);
    return exists(file) && fs.statSync(file).size === stamp.sizes[name];
  }) && exists(path.join(dir, "include", "tensorflow", "c", "c_api.h"));
}

/** Put libtensorflow where the binding's rpath (`$ORIGIN/../../deps/lib`) looks for it. */
function linkLibrary(pkgDir: string, libraryDir: string): void {
  const depsLib = path.join(pkgDir, "deps", "lib");
  const depsInclude = path.join(pkgDir, "deps", "include");
  fs.rmSync(path.join(pkgDir, "deps"), { recursive: true, force: true });
  fs.mkdirSync(depsLib, { recursive: true });
  for (const name of OFFLINE_BUILD.libraries) {
    fs.symlinkSync(path.join(libraryDir, "lib", name), path.join(depsLib, name));
  }
  // The names the linker (-ltensorflow, -ltensorflow_framework) and tfjs-node look for.
  fs.symlinkSync("libtensorflow_cc.so.2", path.join(depsLib, "libtensorflow.so"));
  fs.symlinkSync("libtensorflow_cc.so.2", path.join(depsLib, "libtensorflow.so.2"));
  fs.symlinkSync("libtensorflow_framework.so.2", path.join(depsLib, "libtensorflow_framework.so"));
  fs.cpSync(path.join(libraryDir, "include"), depsInclude, { recursive: true });
}

interface BindingStamp {
  sha256: string;
  size: number;
}

/** node-gyp and the Node.js headers it compiles against. */
function findNodeGyp(): { node: string; script: string; nodedir: string } {
  const which = new Deno.Command("sh", { args: ["-c", "command -v node"], stdout: "piped" })
    .outputSync();
  const nodeBin = new TextDecoder().decode(which.stdout).trim();
  if (!which.success || !nodeBin) {
    throw new SetupError(
      "The offline build of the native backend needs Node.js (node-gyp and its headers); " +
        "`node` was not found on PATH. Install Node.js 18+ and run `deno task setup` again.",
    );
  }
  const prefix = path.dirname(path.dirname(fs.realpathSync(nodeBin)));
  if (!exists(path.join(prefix, "include", "node", "node_api.h"))) {
    throw new SetupError(
      `Node.js headers not found at ${prefix}/include/node (node_api.h); install the Node.js ` +
        "development headers (Debian: they come with the nodejs package) and run setup again.",
    );
  }
  const candidates = [
    path.join(
      prefix,
      "lib",
      "node_modules",
      "npm",
      "node_modules",
      "node-gyp",
      "bin",
      "node-gyp.js",
    ),
    path.join(prefix, "lib", "node_modules", "node-gyp", "bin", "node-gyp.js"),
  ];
  const script = candidates.find(exists);
  if (!script) {
    throw new SetupError(
      `node-gyp not found (looked in ${candidates.join(", ")}); ` +
        "install it with `npm install -g node-gyp` and run setup again.",
    );
  }
  return { node: nodeBin, script, nodedir: prefix };
}

/**
 * The tfjs-node binding compiled against the cached libtensorflow, kept in the cache with its
 * hash; a cached binding whose hash does not match (half-written) is rebuilt.
 */
export async function ensureBinding(
  pkgDir: string,
  libraryDir: string,
  cacheDir = userCacheDir(),
): Promise<{ file: string; action: Action }> {
  const dir = offlineCachePaths(cacheDir).binding(tfjsNodeVersion(pkgDir));
  const file = path.join(dir, "tfjs_binding.node");
  const stamp = readJson<BindingStamp>(path.join(dir, "stamp.json"));
  if (stamp && exists(file) && await hashFile(file) === stamp.sha256) {
    return { file, action: "present" };
  }
  if (stamp || exists(file)) log(`  cached binding in ${dir} is incomplete; building it again`);
  fs.rmSync(dir, { recursive: true, force: true });

  const gyp = findNodeGyp();
  // Build straight into a private folder of the cache (never into the live package), then
  // rename: a half-built binding never looks complete.
  const partial = `${dir}.partial-${Deno.pid}`;
  fs.rmSync(partial, { recursive: true, force: true });
  log("• Compiling the tfjs-node binding with node-gyp (about a minute) …");
  // A copy of the package's sources with its own deps/, so the build never touches the package.
  const src = path.join(partial, "src");
  fs.mkdirSync(src, { recursive: true });
  fs.copyFileSync(path.join(pkgDir, "binding.gyp"), path.join(src, "binding.gyp"));
  fs.cpSync(path.join(pkgDir, "binding"), path.join(src, "binding"), { recursive: true });
  linkLibrary(src, libraryDir);
  const result = await run(gyp.node, [
    gyp.script,
    "rebuild",
    `--nodedir=${gyp.nodedir}`,
    "--module_name=tfjs_binding",
    `--module_path=${partial}`,
    `--napi_build_version=${OFFLINE_BUILD.napiVersion}`,
  ], { cwd: src, label: "compiling" });
  const built = path.join(partial, "tfjs_binding.node");
  fs.rmSync(src, { recursive: true, force: true });
  if (result.code !== 0 || !exists(built)) {
    fs.rmSync(partial, { recursive: true, force: true });
    throw new SetupError(
      `Cannot compile the tfjs-node binding of ${pkgDir} with node-gyp:\n${tail(result.output)}\n` +
        "It needs a C++ compiler (g++), make and Python 3.",
    );
  }
  await writeJsonAtomic(
    path.join(partial, "stamp.json"),
    {
      sha256: await hashFile(built),
      size: fs.statSync(built).size,
    } satisfies BindingStamp,
  );
  fs.renameSync(partial, dir);
  return { file, action: "built" };
}

function backendInPlace(): boolean {
  const stamp = readJson<BackendStamp>(BACKEND_STAMP());
  if (!stamp) return false;
  try {
    const pkg = tfjsNodeDir();
    return stamp.tfjsNode === tfjsNodeVersion(pkg) && exists(bindingPath(pkg)) &&
      exists(path.join(pkg, "deps", "lib", "libtensorflow.so.2"));
  } catch {
    return false;
  }
}

async function writeBackendStamp(route: BackendStamp["route"]): Promise<void> {
  const pkg = tfjsNodeDir();
  await writeJsonAtomic(
    BACKEND_STAMP(),
    {
      route,
      tfjsNode: tfjsNodeVersion(pkg),
      binding: bindingPath(pkg),
      bindingSha256: await hashFile(bindingPath(pkg)),
    } satisfies BackendStamp,
  );
}

async function ensureNativeBackend(
  opts: { rebuild: boolean; prebuiltFailure?: string },
): Promise<StepReport> {
  const t0 = performance.now();
  if (!opts.rebuild) {
    const probe = await probeBackend();
    if (probe.native) {
      const stamp = readJson<BackendStamp>(BACKEND_STAMP());
      await writeBackendStamp(stamp?.route ?? "prebuilt");
      return {
        step: "native backend",
        action: "present",
        detail: `tfjs-node ${probe.versions?.["tfjs-node"]} (${stamp?.route ?? "prebuilt"})`,
        seconds: seconds(t0),
      };
    }
    log(
      `• The native backend does not load (${
        opts.prebuiltFailure ?? probe.error?.split("\n")[0] ?? "no binding"
      }); building it offline from PyPI's ${OFFLINE_BUILD.tensorflowWheel} wheel.`,
    );
  }
  if (Deno.build.os !== "linux" || Deno.build.arch !== "x86_64") {
    throw new SetupError(
      `The offline build of the native backend supports Linux x86_64 only (this is ` +
        `${Deno.build.os} ${Deno.build.arch}). Connect to the internet and run \`deno task setup\`` +
        " so tfjs-node can download its prebuilt library.",
    );
  }
  const pkg = tfjsNodeDir();
  const wheel = await ensureWheel();
  const library = await ensureLibrary(wheel.file);
  const binding = await ensureBinding(pkg, library.dir);
  linkLibrary(pkg, library.dir);
  fs.mkdirSync(path.dirname(bindingPath(pkg)), { recursive: true });
  fs.copyFileSync(binding.file, bindingPath(pkg));
  const probe = await probeBackend();
  if (!probe.native) {
    throw new SetupError(
      `Built the tfjs-node binding offline but it does not load:\n${
        probe.error ?? "(no message)"
      }\n` +
        `Run \`deno task setup --rebuild\` to build it again; if that fails too, remove ` +
        `${userCacheDir()} and retry.`,
    );
  }
  await writeBackendStamp("offline-build");
  const did = [wheel, library, binding].map((s) => s.action);
  return {
    step: "native backend",
    action: did.includes("built") ? "built" : did.includes("downloaded") ? "downloaded" : "linked",
    detail:
      `tfjs-node ${
        probe.versions?.["tfjs-node"]
      } on libtensorflow ${OFFLINE_BUILD.tensorflowVersion} ` +
      `(wheel ${wheel.action}, library ${library.action}, binding ${binding.action})`,
    seconds: seconds(t0),
  };
}

// ---------------------------------------------------------------------------------------------
// 2b. the GPU backend, where an NVIDIA GPU answers

export const GPU_PACKAGE = "@tensorflow/tfjs-node-gpu";

/** The first GPU `nvidia-smi -L` lists ("GPU 0: …"), or undefined when it does not answer. */
export function detectNvidiaGpu(): string | undefined {
  try {
    const out = new Deno.Command("nvidia-smi", { args: ["-L"], stdout: "piped", stderr: "null" })
      .outputSync();
    const line = new TextDecoder().decode(out.stdout).split("\n").find((l) => /^GPU \d+:/.test(l));
    return out.success ? line?.trim() : undefined;
  } catch {
    return undefined; // no nvidia-smi on PATH
  }
}

function gpuPackageInPlace(): boolean {
  return exists(
    projectPath("node_modules", ...GPU_PACKAGE.split("/"), "lib", "napi-v8", "tfjs_binding.node"),
  );
}

/**
 * Where `nvidia-smi` answers, install tfjs-node's GPU build (its install script downloads the GPU
 * libtensorflow from Google storage; the version matches tfjs-node's). Without a GPU, nothing.
 * A failed install does not fail setup: the CPU backend still works, and the step says why.
 */
async function ensureGpuBackend(): Promise<StepReport> {
  const t0 = performance.now();
  const gpu = detectNvidiaGpu();
  if (!gpu) {
    return {
      step: "GPU backend",
      action: "present",
      detail: "no NVIDIA GPU (nvidia-smi does not answer): runs use the CPU backend",
      seconds: 0,
    };
  }
  if (gpuPackageInPlace()) {
    return {
      step: "GPU backend",
      action: "present",
      detail: `${GPU_PACKAGE} for ${gpu}`,
      seconds: 0,
    };
  }
  log(
    `• ${gpu} answers: installing ${GPU_PACKAGE} (its install script downloads libtensorflow for GPUs) …`,
  );
  const version = tfjsNodeVersion(tfjsNodeDir());
  const entry = projectPath(".cache", "gpu-backend.ts");
  fs.mkdirSync(path.dirname(entry), { recursive: true });
  fs.writeFileSync(entry, `import "npm:${GPU_PACKAGE}@${version}";\n`);
  const result = await run(Deno.execPath(), [
    "install",
    `--allow-scripts=npm:${GPU_PACKAGE}`,
    "--entrypoint",
    entry,
  ], { cwd: projectPath(), label: `deno install ${GPU_PACKAGE}` });
  if (result.code !== 0 || !gpuPackageInPlace()) {
    return {
      step: "GPU backend",
      action: "present",
      detail: `${gpu} found, but ${GPU_PACKAGE} could not be installed (${
        tail(result.output, 1).trim() || `exit ${result.code}`
      }): runs use the CPU backend`,
      seconds: seconds(t0),
    };
  }
  return {
    step: "GPU backend",
    action: "installed",
    detail: `${GPU_PACKAGE} ${version} for ${gpu} (COVID_CXR_BACKEND=native keeps the CPU)`,
    seconds: seconds(t0),
  };
}

// ---------------------------------------------------------------------------------------------
// 3. JupyterLab with the Deno kernel, in .venv/

const VENV = () => projectPath(".venv");
const LAB_STAMP = () => path.join(VENV(), ".covid-cxr-lab.json");
const KERNEL_DIR = () => path.join(VENV(), "share", "jupyter", "kernels", "deno");

interface LabStamp {
  packages: string[];
}

function labInPlace(): boolean {
  const stamp = readJson<LabStamp>(LAB_STAMP());
  return stamp !== undefined && stamp.packages.join() === LAB_PACKAGES.join() &&
    exists(venvBin("jupyter-lab")) && kernelSpecCurrent();
}

function kernelSpecCurrent(): boolean {
  const spec = readJson<{ argv: string[] }>(path.join(KERNEL_DIR(), "kernel.json"));
  return spec?.argv?.[0] === Deno.execPath();
}

/** Register the Deno kernel inside the venv only (never in the user's Jupyter dirs). */
async function writeKernelSpec(): Promise<void> {
  // `deno jupyter --install` writes to $HOME's Jupyter dir: point HOME at a scratch folder and
  // move the result (kernel.json and logos) into the venv.
  const scratch = await Deno.makeTempDir({ prefix: "deno-kernel-" });
  try {
    const result = await run(Deno.execPath(), ["jupyter", "--install", "--force"], {
      env: { HOME: scratch, JUPYTER_DATA_DIR: path.join(scratch, "jupyter") },
    });
    const made = [
      path.join(scratch, "jupyter", "kernels", "deno"),
      path.join(scratch, ".local", "share", "jupyter", "kernels", "deno"),
    ].find((d) => exists(path.join(d, "kernel.json")));
    fs.rmSync(KERNEL_DIR(), { recursive: true, force: true });
    fs.mkdirSync(KERNEL_DIR(), { recursive: true });
    if (made) fs.cpSync(made, KERNEL_DIR(), { recursive: true });
    else log(`  (deno jupyter --install wrote nothing usable: ${result.output.trim()})`);
    // Always our own kernel.json: this deno, this project's TF log level.
    await writeJsonAtomic(path.join(KERNEL_DIR(), "kernel.json"), {
      argv: [Deno.execPath(), "jupyter", "--kernel", "--conn", "{connection_file}"],
      display_name: "Deno",
      language: "typescript",
      env: { TF_CPP_MIN_LOG_LEVEL: "2" },
    });
  } finally {
    await Deno.remove(scratch, { recursive: true });
  }
}

async function ensureLab(): Promise<StepReport> {
  const t0 = performance.now();
  if (labInPlace()) {
    return { step: "JupyterLab", action: "present", detail: ".venv/", seconds: 0 };
  }
  const stamp = readJson<LabStamp>(LAB_STAMP());
  if (stamp && stamp.packages.join() === LAB_PACKAGES.join() && exists(venvBin("jupyter-lab"))) {
    await writeKernelSpec(); // only the deno path changed
    return {
      step: "JupyterLab",
      action: "linked",
      detail: "kernel re-registered",
      seconds: seconds(t0),
    };
  }
  // No stamp: absent or interrupted; a venv is not relocatable, so start it over in place.
  fs.rmSync(VENV(), { recursive: true, force: true });
  log(`• Installing ${LAB_PACKAGES.join(", ")} into .venv/ (from PyPI) …`);
  const python = findPython();
  const venv = await run(python, ["-m", "venv", VENV()]);
  if (venv.code !== 0) {
    throw new SetupError(
      `Cannot create the virtual environment .venv/ (${python} -m venv):\n${tail(venv.output)}\n` +
        "On Debian, install python3-venv.",
    );
  }
  const pip = await run(venvBin("python"), [
    "-m",
    "pip",
    "install",
    "--disable-pip-version-check",
    ...LAB_PACKAGES,
  ], { label: "pip install jupyterlab" });
  if (pip.code !== 0) {
    fs.rmSync(VENV(), { recursive: true, force: true });
    throw new SetupError(
      `Cannot install JupyterLab from PyPI:\n${tail(pip.output, 8)}\n` +
        "Check that PyPI is reachable (pip config list), then run `deno task setup` again. " +
        "`deno task reproduce` does not need JupyterLab.",
    );
  }
  await writeKernelSpec();
  await writeJsonAtomic(LAB_STAMP(), { packages: [...LAB_PACKAGES] } satisfies LabStamp);
  return {
    step: "JupyterLab",
    action: "installed",
    detail: `.venv/ with the Deno kernel`,
    seconds: seconds(t0),
  };
}

// ---------------------------------------------------------------------------------------------

/** True when every part is in place, by file checks alone (no process spawned). */
export function everythingInPlace(opts: { skipLab: boolean }): boolean {
  return missingNpmPackages().length === 0 && backendInPlace() && (opts.skipLab || labInPlace());
}

export async function setup(
  opts: { ifNeeded?: boolean; skipLab?: boolean; rebuild?: boolean } = {},
): Promise<StepReport[]> {
  const skipLab = opts.skipLab ?? false;
  if (opts.ifNeeded && !opts.rebuild && everythingInPlace({ skipLab })) return [];
  const steps: StepReport[] = [];
  const npm = await ensureNpmPackages();
  steps.push(npm.report);
  steps.push(
    await ensureNativeBackend({
      rebuild: opts.rebuild ?? false,
      prebuiltFailure: npm.prebuiltFailure,
    }),
  );
  steps.push(await ensureGpuBackend());
  if (!skipLab) steps.push(await ensureLab());
  return steps;
}

if (import.meta.main) {
  const args = new Set(Deno.args);
  const known = ["--if-needed", "--skip-lab", "--rebuild", "--json"];
  const unknown = [...args].filter((a) => !known.includes(a));
  if (unknown.length > 0) {
    console.error(`setup: unknown option ${unknown.join(" ")}; valid: ${known.join(" ")}`);
    Deno.exit(2);
  }
  const t0 = performance.now();
  try {
    const steps = await setup({
      ifNeeded: args.has("--if-needed"),
      skipLab: args.has("--skip-lab"),
      rebuild: args.has("--rebuild"),
    });
    if (steps.length > 0 || !args.has("--if-needed")) {
      for (const s of steps) {
        log(`  ${s.step.padEnd(15)} ${s.action.padEnd(10)} ${s.detail} (${s.seconds} s)`);
      }
      log(`setup done in ${seconds(t0)} s (cache: ${userCacheDir()})`);
    }
    if (args.has("--json")) console.log(JSON.stringify({ steps, seconds: seconds(t0) }));
  } catch (error) {
    if (error instanceof SetupError) {
      console.error(`\nsetup failed: ${error.message}`);
      Deno.exit(1);
    }
    throw error;
  }
}
