/**
 * The notebooks executed headlessly as a user makes them readable: `deno task notebooks --quick`
 * against a quick run (trained by the task when there is none), every cell's output present, and
 * the page it writes opened offline in Chromium. The task runs once per suite (tests/_notebook.ts);
 * the browser test reuses the runs it trained.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import {
  notebookHoles,
  type NotebookJson,
  projectNotebooks,
  projectPath,
  sourceText,
} from "../../lib/mod.ts";
import { chromiumPath, startBrowser } from "../_jupyterlab.ts";
import { dataAvailable, notebookName, quickNotebooks } from "../_notebook.ts";

const configured = Deno.env.get("COVID_CXR_DATA") !== undefined || dataAvailable();

Deno.test({
  name:
    "notebook: deno task notebooks --quick trains a quick run when there is none, executes every notebook against it, and no cell lacks its output",
  ignore: !configured,
  fn: async () => {
    const run = await quickNotebooks();
    assert.equal(run.code, 0, run.text.slice(-4000));
    assert.match(run.text, /No finished quick run in .*: training one now/);
    for (const file of projectNotebooks()) {
      const name = notebookName(file);
      assert.match(run.text, new RegExp(`${name}: done in \\d+ s`), name);
      const executed = path.join(run.dir!, `${name}.ipynb`);
      assert.ok(fs.existsSync(executed), executed);
      const nb = JSON.parse(fs.readFileSync(executed, "utf8")) as NotebookJson;
      assert.deepEqual(notebookHoles(nb), [], `${name}: cells that raised or show nothing`);
      const code = nb.cells.filter((c) => c.cell_type === "code");
      assert.ok(
        code.every((c) => typeof c.execution_count === "number"),
        `${name}: every cell ran`,
      );
      if (["05_evaluation", "06_review"].includes(name)) {
        const text = code.flatMap((c) => c.outputs ?? []).map((o) =>
          [o.text, o.data?.["text/plain"], o.data?.["text/html"]].flat().join("")
        ).join("\n");
        // The external set beside the test set when one is configured (CI sets it); else how to.
        assert.match(
          text,
          Deno.env.get("COVID_CXR_EXTERNAL")
            ? /Images per class: Covid \d+[\s\S]*external, as stored[\s\S]*Normal called Covid/
            : /No external set is configured/,
          `${name}: the external section`,
        );
      }
    }
    assert.ok(fs.existsSync(path.join(run.dir!, "index.html")));
    console.log(
      run.text.split("\n").filter((l) => /done in|Wrote/.test(l) && !/cell/.test(l)).join("\n"),
    );
  },
});

Deno.test({
  name:
    "notebook: index.html opens offline in Chromium with no request leaving the page, no console error, every figure drawn and every contents link landing",
  ignore: !configured || (chromiumPath() === undefined &&
    Deno.env.get("COVID_CXR_REQUIRE_BROWSER") !== "1"),
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const run = await quickNotebooks();
    assert.equal(run.code, 0, run.text.slice(-4000));
    const html = path.join(run.dir!, "index.html");
    const scratch = await Deno.makeTempDir({ prefix: "html-test-" });
    const browser = await startBrowser(scratch);
    try {
      const page = await browser.newPage();
      const problems: string[] = [];
      page.on("console", (m) => m.type() === "error" && problems.push(`console: ${m.text()}`));
      page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
      const requests: string[] = [];
      await page.route("**/*", (route) => {
        const url = route.request().url();
        if (url.startsWith("file:") || url.startsWith("data:")) return route.continue();
        requests.push(url);
        return route.abort();
      });
      await page.goto(`file://${html}`);
      await page.waitForLoadState("load");
      const figures = await page.evaluate(() => {
        // deno-lint-ignore no-explicit-any
        const doc = (globalThis as any).document;
        return [...doc.querySelectorAll("img.figure")].map((img: {
          naturalWidth: number;
          getBoundingClientRect(): { width: number; height: number };
        }) => ({
          natural: img.naturalWidth,
          width: img.getBoundingClientRect().width,
          height: img.getBoundingClientRect().height,
        }));
      });
      const figureCells = projectNotebooks().flatMap((f) =>
        (JSON.parse(fs.readFileSync(f, "utf8")) as NotebookJson).cells.filter((c) =>
          (c.metadata.tags ?? []).includes("figure")
        )
      ).length;
      assert.ok(
        figures.length >= figureCells,
        `${figures.length} figures for ${figureCells} cells`,
      );
      const blank = figures.filter((f) =>
        f.natural === 0 || f.width === 0 || f.height === 0
      );
      assert.deepEqual(blank, [], "every figure decoded and drawn with a size");
      const links = await page.locator("nav a").evaluateAll((as) =>
        as.map((a) => (a as unknown as { getAttribute(n: string): string }).getAttribute("href"))
      );
      assert.ok(links.length >= 7, `contents: ${links.length} links`);
      for (const href of links) {
        assert.ok(
          await page.locator(`[id="${href!.slice(1)}"]`).count() === 1,
          `contents link ${href} has its target`,
        );
      }
      // Clicking the last entry scrolls its heading into view.
      const last = links.at(-1)!;
      await page.locator(`nav a[href="${last}"]`).click();
      const landed = await page.evaluate((id: string) => {
        // deno-lint-ignore no-explicit-any
        const g = globalThis as any;
        const top = g.document.getElementById(id).getBoundingClientRect().top;
        return { hash: g.location.hash, top, height: g.innerHeight };
      }, last.slice(1));
      assert.equal(landed.hash, last);
      assert.ok(landed.top >= -1 && landed.top < landed.height, `heading at ${landed.top}`);
      assert.deepEqual(requests, [], "no request leaves the page");
      assert.deepEqual(problems, []);
      // A screenshot for a person to look at, beside the JupyterLab ones.
      const shots = projectPath("outputs", "browser");
      fs.mkdirSync(shots, { recursive: true });
      await page.screenshot({ path: path.join(shots, "index_html.png") });
      console.log(
        `index.html: ${(fs.statSync(html).size / 1e6).toFixed(1)} MB, ${figures.length} figures, ` +
          `${links.length} contents links`,
      );
    } finally {
      await browser.close().catch(() => {});
      await Deno.remove(scratch, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test("notebook code type-checks and lints clean (every code cell of every notebook, as one module each)", async () => {
  // Outside notebooks/ (which deno.json leaves out of lint), importing the library by its path.
  const dir = await Deno.makeTempDir({ prefix: "notebook-code-" });
  const files: string[] = [];
  try {
    for (const file of projectNotebooks()) {
      const nb = JSON.parse(await Deno.readTextFile(file)) as NotebookJson;
      const code = nb.cells
        .filter((c) => c.cell_type === "code")
        .map(sourceText)
        .join("\n\n")
        .replaceAll('"../lib/mod.ts"', JSON.stringify(projectPath("lib", "mod.ts")));
      const ts = path.join(dir, `${path.basename(file, ".ipynb")}.ts`);
      await Deno.writeTextFile(ts, `${code}\nexport {};\n`);
      files.push(ts);
    }
    const config = ["--config", projectPath("deno.json")];
    for (const command of [["check", ...config, ...files], ["lint", ...config, ...files]]) {
      const out = await new Deno.Command(Deno.execPath(), {
        args: command,
        cwd: dir,
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
      assert.equal(out.code, 0, `deno ${command[0]}: ${text}`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
