/**
 * `deno task lab`: JupyterLab from the project's venv, on notebooks/, with the Deno kernel that
 * `deno task setup` registered inside the venv. Extra arguments go to `jupyter lab`
 * (e.g. `deno task lab --port 8890 --no-browser`).
 */
import * as fs from "node:fs";
import { projectPath, venvBin } from "../lib/paths.ts";

const jupyter = venvBin("jupyter");
if (!fs.existsSync(jupyter)) {
  console.error("JupyterLab is not installed in .venv/; run `deno task setup` first.");
  Deno.exit(1);
}
const child = new Deno.Command(jupyter, {
  args: [
    "lab",
    `--ServerApp.root_dir=${projectPath("notebooks")}`,
    // Jupyter refuses to run as root unless told; containers and CI machines often are root.
    ...(Deno.uid() === 0 ? ["--allow-root"] : []),
    ...Deno.args,
  ],
  stdin: "inherit",
  stdout: "inherit",
  stderr: "inherit",
}).spawn();
Deno.exit((await child.status).code);
