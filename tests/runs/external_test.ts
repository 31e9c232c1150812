import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { parse } from "csv-parse/sync";
import {
  checkExternalSet,
  evaluateExternal,
  initBackend,
  loadCheckpoint,
  withEnv,
} from "../../lib/mod.ts";
import { runScript, syntheticData, tinyArgs, tinyRun } from "../_fixtures.ts";
import { freshDir } from "../_temp.ts";

await initBackend();

const EXTERNAL = Deno.env.get("COVID_CXR_EXTERNAL");
const readJson = (file: string) => JSON.parse(fs.readFileSync(file, "utf8"));
const readCsv = (file: string): Record<string, string>[] =>
  parse(fs.readFileSync(file, "utf8"), { columns: true });

/** A few seconds of training on the synthetic data; the external set does the rest. */
const QUICK = tinyArgs({ epochs: 1 });

Deno.test({
  name:
    "external: reproduce --external scores the kept model on the shared external set; external/ and report.md have every section",
  ignore: !EXTERNAL, // CI sets COVID_CXR_EXTERNAL, so this runs there
  fn: async () => {
    const out = freshDir("external-run");
    const data = await syntheticData();
    const { code, text } = await runScript("reproduce", [
      "--data",
      data,
      "--out",
      out,
      ...QUICK,
      "--external",
      EXTERNAL!,
    ]);
    assert.equal(code, 0, text);
    assert.match(text, /External accuracy [\d.]+ % \(\d+ of 219\)/);
    const runDir = fs.realpathSync(path.join(out, "latest"));
    const ext = path.join(runDir, "external");
    for (
      const f of [
        "metrics.json",
        "classification_report.txt",
        "predictions.csv",
        "confusion_matrix.svg",
        "gray_metrics.json",
        "gray_predictions.csv",
        "gray_confusion_matrix.svg",
        "breakdowns.csv",
        "shortcut_probe.csv",
        "shortcut_probe.svg",
        "by_source.svg",
        "roc.svg",
        "gray_roc.svg",
        "report.md",
      ]
    ) assert.ok(fs.existsSync(path.join(ext, f)), `external/${f}`);

    // The counts the summary and the report give are the predictions' own.
    const summary = readJson(path.join(runDir, "summary.json"));
    assert.deepEqual(summary.external.counts, [
      { className: "Covid", images: 107 },
      { className: "Normal", images: 100 },
      { className: "Viral Pneumonia", images: 12 },
    ]);
    const predictions = readCsv(path.join(ext, "predictions.csv"));
    assert.equal(predictions.length, 219);
    const normalsCalledCovid = predictions.filter((p) =>
      p.true === "Normal" && p.predicted === "Covid"
    ).length;
    const [stored, gray] = summary.external.passes;
    assert.equal(stored.preprocessing, "as stored");
    assert.equal(gray.preprocessing, "gray 1024²");
    const normal = stored.probe.find((r: { className: string; level: string }) =>
      r.className === "Normal" && r.level === "image"
    );
    assert.deepEqual([normal.called, normal.total], [normalsCalledCovid, 100]);
    const vpPatients = stored.probe.find((r: { className: string; level: string }) =>
      r.className === "Viral Pneumonia" && r.level === "patient"
    );
    assert.equal(vpPatients.total, 7, "Viral Pneumonia: 12 images of 7 patients");
    const sources = new Set(
      stored.breakdowns.filter((r: { column: string }) => r.column === "source")
        .map((r: { value: string }) => r.value),
    );
    assert.ok(sources.has("muhammedtalo/COVID-19"), [...sources].join(", "));

    const report = fs.readFileSync(path.join(runDir, "report.md"), "utf8");
    for (
      const section of [
        "## Test set",
        "## Outside the data set",
        "### By source (as stored)",
        "### By view (as stored)",
        "## How sure is the model?",
        "## Reading these numbers",
      ]
    ) assert.ok(report.includes(section), `report.md: ${section}`);
    assert.match(report, /\| Normal called Covid \| \d+ of 4 .*\| \d+ of 100 .*\| \d+ of 100 /);
    assert.match(report, /\| Viral Pneumonia called Covid, per patient \| — \| \d+ of 7 /);
    assert.match(report, /\| external \| 219 \| /);
    assert.ok(report.includes("![By source](external/by_source.svg)"));
    // The set described from itself, and the reading computed from its manifest.
    assert.ok(report.includes("- Images per class: Covid 107, Normal 100, Viral Pneumonia 12."));
    assert.match(report, /- Ages \(218 images with one\): 18–94, median [\d.]+; 0 under 18\./);
    assert.match(report, /- Its README begins: “A small test set/);
    assert.match(report, /\| macro AUC \(95 % DeLong\) \| [\d.]+ \(/);
    assert.ok(report.includes("### Why images of other classes are called Covid"));
    const readings = stored.readings as { className: string; verdict: string }[];
    assert.deepEqual(readings.map((r) => r.className), ["Normal", "Viral Pneumonia"]);
    for (const r of readings) {
      assert.ok(
        [
          "age",
          "source",
          "age-or-source",
          "not-carried-over",
          "not-learnt",
          "told-apart",
          "cannot-tell",
        ]
          .includes(r.verdict),
        r.verdict,
      );
      // The shared set has one source per class and only adults: it cannot show an age effect
      // within a source, nor a source effect within an age group.
      assert.ok(!["age", "source", "age-or-source"].includes(r.verdict), r.verdict);
    }
    assert.ok(
      !/children|paediatric|age, not the disease/.test(report.split("Its README begins")[0]),
    );
    const own = fs.readFileSync(path.join(ext, "report.md"), "utf8");
    assert.ok(own.includes("### By age band (as stored)"), "external/report.md has every column");

    const calibration = readJson(path.join(runDir, "calibration.json"));
    assert.deepEqual(
      calibration.sets.map((s: { name: string; summary: { n: number } }) => [s.name, s.summary.n]),
      [["validation", summary.counts.validation], ["test", 12], ["external", 219]],
    );
  },
});

Deno.test("external: a missing external folder stops before training, naming the flag or COVID_CXR_EXTERNAL", async () => {
  const out = freshDir("external-missing");
  const data = await syntheticData();
  const nowhere = path.join(out, "no-such-set");
  const byFlag = await runScript("reproduce", [
    "--data",
    data,
    "--out",
    out,
    ...QUICK,
    "--external",
    nowhere,
  ]);
  assert.equal(byFlag.code, 1, byFlag.text);
  assert.match(byFlag.text, /No external set at .*no-such-set \(from --external\): no such folder/);
  const byEnv = await runScript("reproduce", ["--data", data, "--out", out, ...QUICK], {
    COVID_CXR_EXTERNAL: nowhere,
  });
  assert.equal(byEnv.code, 1, byEnv.text);
  assert.match(byEnv.text, /\(from COVID_CXR_EXTERNAL\)/);
  assert.doesNotMatch(byEnv.text, /^\s+at /m, "no stack trace");
  assert.deepEqual(fs.readdirSync(out), [], "no run folder was made");
});

Deno.test("external: an unreadable image in the external set stops reproduce before training, naming it; with --skip-bad the run trains and leaves it out", async () => {
  const dir = await externalLike();
  const broken = fs.readdirSync(path.join(dir, "Covid")).sort()[0];
  fs.writeFileSync(path.join(dir, "Covid", broken), "not an image");
  const data = await syntheticData();
  const out = freshDir("external-unreadable");
  const args = ["--data", data, "--out", out, ...QUICK, "--external", dir];

  const stopped = await runScript("reproduce", args);
  assert.equal(stopped.code, 1, stopped.text);
  assert.match(stopped.text, /1 bad file\(s\) in .*set:\n\s+Covid\/\S+: .*not a readable image/);
  assert.ok(stopped.text.includes(`Covid/${broken}`), stopped.text);
  assert.match(stopped.text, /run with --skip-bad/);
  assert.doesNotMatch(stopped.text, /Epoch 1/, "stopped before training");
  assert.doesNotMatch(stopped.text, /^\s+at /m, "no stack trace");
  assert.deepEqual(fs.readdirSync(out), [], "no run folder was made");

  const skipped = await runScript("reproduce", [...args, "--skip-bad"]);
  assert.equal(skipped.code, 0, skipped.text);
  const runDir = fs.realpathSync(path.join(out, "latest"));
  const summary = readJson(path.join(runDir, "summary.json"));
  const images =
    fs.readdirSync(dir).filter((c) => !c.includes(".")).flatMap((c) =>
      fs.readdirSync(path.join(dir, c))
    ).length;
  assert.equal(summary.external.skipped, 1);
  for (const pass of ["predictions.csv", "gray_predictions.csv"]) {
    const rows = readCsv(path.join(runDir, "external", pass));
    assert.equal(rows.length, images - 1, pass);
    assert.ok(!rows.some((r) => Object.values(r).some((v) => v.includes(broken))), pass);
  }
  assert.match(
    fs.readFileSync(path.join(runDir, "report.md"), "utf8"),
    /1 unreadable files left out/,
  );
});

Deno.test("external: checking an external set before training decodes it for both passes, so the evaluation after training decodes nothing", async () => {
  const run = await tinyRun();
  const dir = await externalLike();
  const { model, meta } = await loadCheckpoint(path.join(run.runDir, "best"));
  try {
    await withEnv({ COVID_CXR_PROJECT_CACHE: freshDir("external-cache") }, async () => {
      const seen: [number, number][] = [];
      await checkExternalSet(dir, meta.classNames, {
        decode: {
          imageSize: meta.imageSize,
          onProgress: (done, total) => seen.push([done, total]),
        },
      });
      const images = seen.at(-1)![1] / 2;
      assert.ok(images > 4, `${images} images`);
      assert.deepEqual(seen.at(-1), [2 * images, 2 * images], "both passes counted");
      const result = await evaluateExternal(model, meta, dir, { quiet: true });
      for (const pass of result.passes) {
        assert.deepEqual(
          { decoded: pass.cache.stats.decoded, fromDisk: pass.cache.stats.fromDisk },
          { decoded: 0, fromDisk: 2 * images }, // read twice: checked, then predicted
          pass.preprocessing,
        );
      }
    });
  } finally {
    model.dispose();
  }
});

/** An external-style folder: the synthetic test images, with a manifest naming source and patient. */
async function externalLike(): Promise<string> {
  const data = await syntheticData();
  const dir = path.join(freshDir("external-like"), "set");
  fs.cpSync(path.join(data, "test"), dir, { recursive: true });
  const rows = ["file\tsource\tpatient_id\tage\tview"];
  for (const c of fs.readdirSync(dir).sort()) {
    fs.readdirSync(path.join(dir, c)).sort().forEach((f, i) => {
      // Two images per patient, each class from its own source.
      rows.push(`${c}/${f}\t${c.toLowerCase()}-hospital\t${c}:${Math.floor(i / 2)}\t40\tPA`);
    });
  }
  fs.writeFileSync(path.join(dir, "MANIFEST.tsv"), rows.join("\n") + "\n");
  return dir;
}

Deno.test("external: deno task evaluate on a folder with a manifest breaks results down, probes per patient, scores a gray pass and writes them", async () => {
  const run = await tinyRun();
  const dir = await externalLike();
  const out = path.join(freshDir("external-eval"), "out");
  const { code, text } = await runScript("evaluate", [
    "--model",
    path.join(run.runDir, "best"),
    "--data",
    dir,
    "--out",
    out,
  ]);
  assert.equal(code, 0, text);
  assert.match(text, /As stored and as 1-channel gray 1024² \(manifest .*MANIFEST\.tsv\)/);
  assert.match(text, /Normal called Covid, per patient/);
  assert.match(text, /By source \(as stored\):[\s\S]*normal-hospital/);
  assert.match(text, /By age band \(as stored\):/);
  const rows = readCsv(path.join(out, "breakdowns.csv"));
  assert.deepEqual([...new Set(rows.map((r) => r.preprocessing))], ["as stored", "gray 1024²"]);
  // Each pass's breakdown by source covers all 12 images.
  for (const pass of ["as stored", "gray 1024²"]) {
    const n = rows.filter((r) => r.preprocessing === pass && r.column === "source")
      .reduce((s, r) => s + Number(r.images), 0);
    assert.equal(n, 12, pass);
  }
  const probe = readCsv(path.join(out, "shortcut_probe.csv"));
  const patients = probe.find((r) => r.class === "Normal" && r.level === "patient")!;
  assert.equal(patients.total, "2", "4 Normal images of 2 patients");
  assert.ok(fs.existsSync(path.join(out, "gray_predictions.csv")));
});
