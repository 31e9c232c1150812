/** Step 3: JupyterLab in the project's `.venv/`, with the Deno kernel registered inside it. */
import * as fs from "node:fs";
import * as path from "node:path";
import { projectPath, venvBin } from "../../lib/paths.ts";
import { writeJsonAtomic } from "../../lib/files.ts";
import {
  exists,
  LAB_PACKAGES,
  log,
  readJson,
  run,
  seconds,
  SetupError,
  type StepReport,
  tail,
} from "./common.ts";
import { findPython } from "./native_backend.ts";

const VENV = () => projectPath(".venv");
const LAB_STAMP = () => path.join(VENV(), ".covid-cxr-lab.json");
const KERNEL_DIR = () => path.join(VENV(), "share", "jupyter", "kernels", "deno");

interface LabStamp {
  packages: string[];
}

export function labInPlace(): boolean {
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

export async function ensureLab(): Promise<StepReport> {
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
