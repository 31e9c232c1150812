/**
 * The notebooks in a real JupyterLab, in a real (headless) browser, the way a reader opens them:
 * open, Run ▸ Run All Cells, wait, look. Quick mode keeps it to minutes.
 *
 * Needs Debian's Chromium (`.ci/run` installs it) and the data set. Without them the test is
 * ignored, unless COVID_CXR_REQUIRE_BROWSER=1 (set by CI), which makes their absence a failure.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import type { Page } from "playwright-core";
import { projectPath } from "../../lib/mod.ts";
import { chromiumPath, startBrowser, startLab } from "../_jupyterlab.ts";
import { dataAvailable, listNotebooks, quickNotebooks } from "../_notebook.ts";

const required = Deno.env.get("COVID_CXR_REQUIRE_BROWSER") === "1";
const ready = chromiumPath() !== undefined && dataAvailable();

/** Indices (in the notebook's cell list) of code cells tagged "figure". */
function figureCells(file: string): number[] {
  const nb = JSON.parse(fs.readFileSync(file, "utf8"));
  return nb.cells.flatMap((c: { metadata?: { tags?: string[] } }, i: number) =>
    (c.metadata?.tags ?? []).includes("figure") ? [i] : []
  );
}

/**
 * Notebook 06 compares the run with runs trained on masked images and with a seed sweep. The
 * headless test's `deno task notebooks --quick` trains exactly those (the same quick settings on the
 * same data; made once per suite, tests/_notebook.ts): copied into this lab's outputs, 06 finds and
 * reuses them, as it does a reader's earlier runs, instead of training them a second time. The
 * main run is left out: notebook 04 trains this lab's own. Whatever the task did not finish, 06
 * trains itself.
 */
async function addComparisonRuns(outputs: string): Promise<void> {
  const shared = await quickNotebooks();
  const latest = path.join(shared.outputs, "latest");
  const main = fs.existsSync(latest) ? fs.realpathSync(latest) : undefined;
  if (!fs.existsSync(shared.outputs)) return;
  for (const name of fs.readdirSync(shared.outputs)) {
    const from = path.join(shared.outputs, name);
    if (fs.lstatSync(from).isSymbolicLink() || from === main) continue;
    fs.cpSync(from, path.join(outputs, name), { recursive: true });
  }
}

async function promptsOf(page: Page): Promise<string[]> {
  return await page.locator(".jp-NotebookPanel:visible .jp-CodeCell .jp-InputPrompt")
    .allInnerTexts();
}

/**
 * The notebook's own state, read from the app (exposed by the lab's settings): its context loaded,
 * its kernel idle, and how many cells have started (an execution count or the "*" prompt).
 */
function notebookState(page: Page) {
  return page.evaluate(() => {
    // deno-lint-ignore no-explicit-any
    const app = (globalThis as any).jupyterapp;
    const widget = app?.shell?.currentWidget;
    const cells = widget?.content?.widgets ?? [];
    return {
      ready: Boolean(widget?.context?.isReady),
      kernel: widget?.sessionContext?.session?.kernel?.status as string | undefined,
      started: cells.filter((
        c: {
          model: { type: string; executionCount: number | null };
          node: { textContent: string };
        },
      ) =>
        c.model.type === "code" &&
        (c.model.executionCount !== null || /\[\*\]/.test(c.node.textContent ?? ""))
      ).length as number,
    };
  });
}

async function runAllCells(page: Page, name: string, timeoutMs: number): Promise<void> {
  // A Run All clicked before the notebook is the current widget with an idle kernel is a click
  // on a disabled menu item: nothing runs. Wait for both first (minutes on a loaded machine).
  await assertEventually(
    async () => {
      const s = await notebookState(page);
      return s.ready && s.kernel === "idle";
    },
    180_000,
    `${name}: the notebook's kernel never became idle`,
  );
  await page.locator(".jp-NotebookPanel:visible .jp-Notebook").first().click({
    position: { x: 5, y: 5 },
  });
  await page.locator(".lm-MenuBar-itemLabel", { hasText: /^Run$/ }).click();
  await page.locator(".lm-Menu-itemLabel", { hasText: /^Run All Cells$/ }).click();
  await assertEventually(
    async () => (await notebookState(page)).started > 0,
    60_000,
    `${name}: Run All Cells was clicked but no cell started`,
  );
  const deadline = Date.now() + timeoutMs;
  // Done when every code cell shows an execution count ("[3]:"), none "[*]:" or "[ ]:".
  while (Date.now() < deadline) {
    const prompts = await promptsOf(page);
    if (prompts.length > 0 && prompts.every((p) => /^\[\d+\]:$/.test(p.trim()))) return;
    await page.waitForTimeout(1000);
  }
  throw new Error(
    `cells still running after ${timeoutMs / 1000} s: ${(await promptsOf(page)).join(" ")}`,
  );
}

Deno.test({
  name:
    "browser: every notebook runs in JupyterLab with the Deno kernel, without errors, figures shown",
  ignore: !ready && !required,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    assert.ok(
      chromiumPath(),
      "Chromium not found (apt install chromium, or set COVID_CXR_CHROMIUM)",
    );
    assert.ok(dataAvailable(), "the data set is needed: set COVID_CXR_DATA");
    const scratch = await Deno.makeTempDir({ prefix: "browser-test-" });
    const shots = projectPath("outputs", "browser");
    fs.mkdirSync(shots, { recursive: true });
    const outputs = path.join(scratch, "outputs");
    const lab = await startLab(projectPath("notebooks"), {
      COVID_CXR_QUICK: "1",
      COVID_CXR_OUTPUTS: outputs,
    }, scratch);
    let browser: Awaited<ReturnType<typeof startBrowser>> | undefined;
    const timings: string[] = [];
    const onDisk = new Map(listNotebooks().map((f) => [f, Deno.readTextFileSync(f)]));
    try {
      browser = await startBrowser(scratch);
      for (const file of listNotebooks()) {
        const name = path.basename(file);
        if (name.startsWith("06")) await addComparisonRuns(outputs);
        const t0 = performance.now();
        // A fresh page and a reset workspace per notebook: only this notebook is open.
        const page = await browser.newPage();
        await page.goto(`${lab.url}/lab/tree/${name}?reset&token=${lab.token}`);
        await page.locator(".jp-NotebookPanel:visible").waitFor({ timeout: 60_000 });
        // The kernel named in the notebook's toolbar is the project's Deno kernel.
        const kernel = page.locator(".jp-NotebookPanel:visible .jp-Toolbar-kernelName");
        await assertEventually(
          async () => (await kernel.innerText()).trim() === "Deno",
          60_000,
          `${name}: kernel is not Deno`,
        );
        await runAllCells(page, name, 15 * 60_000);
        const seconds = (performance.now() - t0) / 1000;
        timings.push(`${name}: ${seconds.toFixed(0)} s`);

        const errors = page.locator(
          '.jp-NotebookPanel:visible .jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]',
        );
        const errorTexts = await errors.allInnerTexts();
        assert.deepEqual(errorTexts, [], `${name}: error or stderr output`);
        if (name.startsWith("06") && (await quickNotebooks()).code === 0) {
          // The comparison runs were there, so 06 used them rather than training again.
          const text = await page.locator(".jp-NotebookPanel:visible .jp-Notebook").innerText();
          assert.match(text, /Using the finished run \S*border-only\S* \(same settings\)/);
          assert.match(text, /Using the finished run \S*lung-only\S* \(same settings\)/);
          assert.match(text, /Seed sweep from \S*sweep_/);
        }
        const cells = page.locator(".jp-NotebookPanel:visible .jp-Notebook .jp-Cell");
        for (const index of figureCells(file)) {
          const images = cells.nth(index).locator(
            ".jp-OutputArea-output img, .jp-OutputArea-output svg",
          );
          assert.ok(await images.count() > 0, `${name}: figure cell ${index} shows no image`);
        }
        // One screenshot per notebook, from the top, tall enough for the whole notebook.
        const scrollTop = () =>
          page.evaluate(() => {
            // deno-lint-ignore no-explicit-any
            const doc = (globalThis as any).document;
            const scroller = doc.querySelector(
              ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-WindowedPanel-outer",
            );
            if (!scroller) return 1000;
            scroller.scrollTop = 0;
            return scroller.scrollHeight as number;
          });
        const height = await scrollTop();
        await page.setViewportSize({ width: 1400, height: Math.min(16000, height + 200) });
        await scrollTop();
        await page.waitForTimeout(300);
        await page.screenshot({ path: path.join(shots, `${path.basename(name, ".ipynb")}.png`) });
        await page.setViewportSize({ width: 1400, height: 1000 });
        // Shut this notebook's kernel down before the next one starts its own.
        const sessions = await (await fetch(`${lab.url}/api/sessions?token=${lab.token}`)).json();
        for (const s of sessions) {
          await (await fetch(`${lab.url}/api/sessions/${s.id}?token=${lab.token}`, {
            method: "DELETE",
          })).body?.cancel();
        }
      }
      for (const [file, text] of onDisk) {
        assert.equal(Deno.readTextFileSync(file), text, `${file} was changed by running it`);
      }
    } finally {
      await browser?.close().catch(() => {});
      await lab.stop();
      await Deno.remove(scratch, { recursive: true }).catch(() => {});
      console.log(
        `notebooks in the browser (quick mode): ${timings.join(", ")}; screenshots in ${shots}`,
      );
    }
  },
});

async function assertEventually(check: () => Promise<boolean>, timeoutMs: number, message: string) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 500));
  }
  assert.fail(message);
}
