/**
 * The project's JupyterLab (from .venv) on a free loopback port with a per-run token, and Debian's
 * Chromium driven by playwright-core, for tests that use the notebooks the way a reader does.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { chromium as playwright } from "playwright-core";
import { projectPath } from "../lib/paths.ts";

/** Where Chromium is: COVID_CXR_CHROMIUM, else Debian's /usr/bin/chromium. */
export function chromiumPath(): string | undefined {
  const candidates = [
    Deno.env.get("COVID_CXR_CHROMIUM"),
    "/usr/bin/chromium",
    "/usr/bin/chromium-browser",
  ];
  return candidates.find((c) => c && fs.existsSync(c));
}

/** Launch flags for a closed network: no background requests, no sandbox (root in CI). */
export const CHROMIUM_FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-quic",
  "--no-first-run",
];

export interface Lab {
  url: string;
  token: string;
  port: number;
  stop(): Promise<void>;
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

/**
 * Start JupyterLab on `rootDir` with a fresh settings and runtime folder (windowing off, so every
 * cell is in the page), and wait until it answers.
 */
export async function startLab(
  rootDir: string,
  env: Record<string, string>,
  scratch: string,
): Promise<Lab> {
  const port = freePort();
  const token = crypto.randomUUID().replaceAll("-", "");
  const settings = path.join(scratch, "lab-settings");
  const notebookSettings = path.join(settings, "@jupyterlab", "notebook-extension");
  fs.mkdirSync(notebookSettings, { recursive: true });
  // Windowed notebooks detach off-screen cells from the page; the test reads every cell.
  fs.writeFileSync(
    path.join(notebookSettings, "tracker.jupyterlab-settings"),
    JSON.stringify({ windowingMode: "none" }),
  );
  // Autosave off: running the notebooks must not write their outputs into the project's files.
  const docmanager = path.join(settings, "@jupyterlab", "docmanager-extension");
  fs.mkdirSync(docmanager, { recursive: true });
  fs.writeFileSync(
    path.join(docmanager, "plugin.jupyterlab-settings"),
    JSON.stringify({ autosave: false }),
  );
  const log = path.join(scratch, "jupyterlab.log");
  const child = new Deno.Command(projectPath(".venv", "bin", "jupyter"), {
    args: [
      "lab",
      "--no-browser",
      "--ServerApp.ip=127.0.0.1",
      `--ServerApp.port=${port}`,
      "--ServerApp.port_retries=0",
      `--IdentityProvider.token=${token}`,
      `--ServerApp.root_dir=${rootDir}`,
      "--LabApp.news_url=",
      // window.jupyterapp: the test asks the app whether the kernel is ready before running.
      "--LabApp.expose_app_in_browser=True",
      "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
      ...(Deno.uid() === 0 ? ["--allow-root"] : []),
    ],
    env: {
      ...env,
      JUPYTERLAB_SETTINGS_DIR: settings,
      JUPYTER_RUNTIME_DIR: path.join(scratch, "runtime"),
      JUPYTERLAB_WORKSPACES_DIR: path.join(scratch, "workspaces"),
    },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  // The server logs to stderr; keep both streams in one file for the failure message.
  const logFile = await Deno.open(log, { write: true, create: true, append: true });
  const sink = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream) await logFile.write(chunk);
  };
  Promise.all([sink(child.stdout), sink(child.stderr)]).catch(() => {}).finally(() =>
    logFile.close()
  );
  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch { /* already gone */ }
    const timer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
    }, 10_000);
    await child.status;
    clearTimeout(timer);
  };
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    try {
      const res = await fetch(`${url}/api/status`, {
        headers: { Authorization: `token ${token}` },
      });
      await res.body?.cancel();
      if (res.ok) return { url, token, port, stop };
    } catch { /* not up yet */ }
    await new Promise((r) => setTimeout(r, 250));
  }
  await stop();
  throw new Error(
    `JupyterLab did not start within 60 s; log: ${fs.readFileSync(log, "utf8").slice(-2000)}`,
  );
}

/** A headless Chromium with a fresh profile. */
export async function startBrowser(scratch: string) {
  const executablePath = chromiumPath();
  if (!executablePath) {
    throw new Error("Chromium not found: install Debian's chromium or set COVID_CXR_CHROMIUM");
  }
  return await playwright.launchPersistentContext(path.join(scratch, "chromium-profile"), {
    executablePath,
    headless: true,
    args: CHROMIUM_FLAGS,
    viewport: { width: 1400, height: 1000 },
  });
}
