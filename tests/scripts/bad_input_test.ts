/**
 * Bad input a hostile tester (or an untidy data set) brings to the tasks: every case ends in a
 * clear message naming the file and the fix, or in a result that says what it left out — never a
 * silently smaller or relabelled result.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { parse } from "csv-parse/sync";
import { csvText, csvUnsafe, initBackend } from "../../lib/mod.ts";
import {
  runScript,
  startRunUntilFirstEpoch,
  syntheticData,
  tinyArgs,
  tinyRun,
} from "../_fixtures.ts";
import { freshDir } from "../_temp.ts";

await initBackend();

/** A copy of the synthetic test folder (links followed) to spoil. */
async function testFolderCopy(name: string): Promise<string> {
  const data = await syntheticData();
  const dir = path.join(freshDir(name), "test");
  fs.cpSync(path.join(data, "test"), dir, { recursive: true, dereference: true });
  return dir;
}

Deno.test("reliability: evaluate stops on files it cannot read (a link to nothing, BMP, no extension, .dcm) and lists them; --skip-bad scores the rest and says so", async () => {
  const run = await tinyRun();
  const dir = await testFolderCopy("evaluate-subset");
  fs.symlinkSync(path.join(dir, "nowhere.png"), path.join(dir, "Covid", "dangling.png"));
  fs.writeFileSync(path.join(dir, "Covid", "scan.bmp"), "BM....");
  fs.writeFileSync(path.join(dir, "Normal", "no-extension"), "?");
  fs.writeFileSync(path.join(dir, "Normal", "study.dcm"), "DICM");
  const model = ["--model", path.join(run.runDir, "best"), "--data", dir];
  const stopped = await runScript("evaluate", model);
  assert.equal(stopped.code, 1, stopped.text);
  for (
    const line of [
      /Covid\/dangling\.png: a symbolic link to nothing/,
      /Covid\/scan\.bmp: BMP images cannot be decoded here/,
      /Normal\/no-extension: not an image file \(extension ""\)/,
      /Normal\/study\.dcm: not an image file \(extension "\.dcm"\)/,
      /--skip-bad/,
    ]
  ) assert.match(stopped.text, line);
  assert.doesNotMatch(stopped.text, /Accuracy:/, "no score on a subset");
  const skipped = await runScript("evaluate", [...model, "--skip-bad"]);
  assert.equal(skipped.code, 0, skipped.text);
  assert.match(skipped.text, /Images: 12 from .* 4 skipped as unreadable/);
  assert.match(skipped.text, /skipped .*study\.dcm: not an image file/);
});

Deno.test("reliability: --resume keeps the run's --external and --prevalence (config.json records them); a different one given is refused", async () => {
  const data = await syntheticData();
  const external = path.join(data, "test"); // an ImageFolder of the same classes
  const out = freshDir("resume-external");
  const args = ["--data", data, "--image-size", "32", "--epochs", "3", "--batch-size", "8"];
  const { child, runDir } = await startRunUntilFirstEpoch(
    [...args, "--weights", "none", "--external", external, "--prevalence", "0.05"],
    out,
    "null",
  );
  child.kill("SIGKILL");
  await child.status;
  assert.ok(runDir, "the first epoch was saved");
  const config = JSON.parse(fs.readFileSync(path.join(runDir, "config.json"), "utf8"));
  assert.deepEqual(config.options, { external, prevalence: 0.05 });
  const other = await runScript("reproduce", ["--resume", runDir, "--external", data]);
  assert.equal(other.code, 1, other.text);
  assert.match(other.text, new RegExp(`external: the run has ${external}, given ${data}`));
  const resumed = await runScript("reproduce", ["--resume", runDir]);
  assert.equal(resumed.code, 0, resumed.text);
  assert.match(resumed.text, /Evaluating on the external set/);
  assert.ok(fs.existsSync(path.join(runDir, "external", "report.md")));
  const report = fs.readFileSync(path.join(runDir, "report.md"), "utf8");
  assert.ok(report.includes("## Outside the data set"));
  assert.ok(report.includes("PPV at 5.0 %"), "the prevalence too");
});

Deno.test("reliability: predict follows a linked folder and takes paths relative to the folder the task was run from", async () => {
  const run = await tinyRun();
  const data = await syntheticData();
  const work = freshDir("predict-links");
  const real = path.join(work, "elsewhere", "real");
  fs.mkdirSync(real, { recursive: true });
  const [first, second] = fs.readdirSync(path.join(data, "test", "Covid")).sort();
  fs.copyFileSync(path.join(data, "test", "Covid", first), path.join(real, "=1+1.png"));
  fs.copyFileSync(path.join(data, "test", "Covid", second), path.join(real, "@SUM(A1).png"));
  fs.mkdirSync(path.join(work, "inputs"));
  fs.symlinkSync(path.join("..", "elsewhere", "real"), path.join(work, "inputs", "linked"));
  // `deno task` runs scripts in the project folder and says where the user was in INIT_CWD.
  const result = await runScript(
    "predict",
    ["inputs", "--model", path.join(run.runDir, "best"), "--csv", "p.csv"],
    { INIT_CWD: work },
  );
  assert.equal(result.code, 0, result.text);
  assert.doesNotMatch(result.text, /not an image file/);
  const rows = parse(fs.readFileSync(path.join(work, "p.csv"), "utf8"), { columns: true }) as {
    file: string;
  }[];
  assert.deepEqual(
    rows.map((r) => path.relative(work, r.file)).sort(),
    [path.join("inputs", "linked", "=1+1.png"), path.join("inputs", "linked", "@SUM(A1).png")],
  );
});

Deno.test("reliability: CSV cells that start like a formula (= + - @, tab) are written as text, and read back as they were", () => {
  const names = [
    '=HYPERLINK("http://x")',
    "+cmd|' /C calc'!A0",
    "-cmd",
    "@SUM(A1)",
    "\tx",
    "Covid",
    "-0.5",
    "3",
  ];
  const text = csvText([["class"], ...names.map((n) => [n])]);
  const cells = (parse(text, { columns: true }) as { class: string }[]).map((r) => r.class);
  assert.deepEqual(cells.slice(0, 5), names.slice(0, 5).map((n) => `'${n}`));
  assert.deepEqual(cells.slice(5), ["Covid", "-0.5", "3"], "plain names and numbers untouched");
  assert.equal(csvUnsafe("'+1"), "+1");
  assert.deepEqual(cells.map(csvUnsafe), names);
});

Deno.test("reliability: a bad --external manifest stops reproduce before training; a header-only one says so; rows naming absent files are said, a class that disagrees with the folder stops", async () => {
  const data = await syntheticData();
  const external = path.join(freshDir("bad-manifest"), "external");
  fs.cpSync(path.join(data, "test"), external, { recursive: true, dereference: true });
  const files = ["Covid", "Normal"].map((c) =>
    `${c}/${fs.readdirSync(path.join(external, c)).sort()[0]}`
  );
  const manifest = path.join(external, "MANIFEST.tsv");
  const args = ["--data", data, "--out", freshDir("bad-manifest-out"), "--image-size", "32"];
  const reproduce = () =>
    runScript("reproduce", [...args, "--epochs", "1", "--weights", "none", "--external", external]);

  fs.writeFileSync(manifest, "class\tfile\n");
  const headerOnly = await reproduce();
  assert.equal(headerOnly.code, 1, headerOnly.text);
  assert.match(headerOnly.text, /MANIFEST\.tsv: it has a header \(class, file\) but no rows/);
  assert.doesNotMatch(headerOnly.text, /Epoch 1/, "stopped before training");

  fs.writeFileSync(manifest, `class\tfile\nNormal\t${files[0]}\nNormal\t${files[1]}\n`);
  const conflict = await reproduce();
  assert.equal(conflict.code, 1, conflict.text);
  assert.match(
    conflict.text,
    /disagree on 1 image\(s\):\n\s+Covid\/.*: the manifest says Normal, its folder Covid/,
  );
  assert.doesNotMatch(conflict.text, /Epoch 1/, "stopped before training");

  fs.writeFileSync(manifest, `class\tfile\nCovid\t${files[0]}\nNormal\tNormal/gone.png\n`);
  const run = await tinyRun();
  const absent = await runScript("evaluate", [
    "--model",
    path.join(run.runDir, "best"),
    "--data",
    external,
  ]);
  assert.equal(absent.code, 0, absent.text);
  assert.match(
    absent.text,
    /1 row\(s\) of manifest MANIFEST\.tsv name files that are not among the images \(Normal\/gone\.png\)/,
  );
});

Deno.test("reliability: an unwritable image cache costs speed, not the task: evaluate keeps pixels in memory, says so once, and COVID_CXR_PROJECT_CACHE moves the cache", async () => {
  const run = await tinyRun();
  const data = await syntheticData();
  const work = freshDir("cache-unwritable");
  const blocker = path.join(work, "a-file");
  fs.writeFileSync(blocker, "not a folder"); // below a file nothing can be created, even by root
  const args = ["--model", path.join(run.runDir, "best"), "--data", path.join(data, "test")];
  const stuck = await runScript("evaluate", args, {
    COVID_CXR_PROJECT_CACHE: path.join(blocker, "cache"),
  });
  assert.equal(stuck.code, 0, stuck.text);
  assert.match(stuck.text, /Accuracy: .* of 12 images/);
  const said = stuck.text.match(/Cannot write decoded images to .*a-file\/cache/g) ?? [];
  assert.equal(said.length, 1, "said once");
  assert.match(stuck.text, /kept in memory for this run only\. Set COVID_CXR_PROJECT_CACHE=DIR/);
  const moved = path.join(work, "elsewhere");
  const ok = await runScript("evaluate", args, { COVID_CXR_PROJECT_CACHE: moved });
  assert.equal(ok.code, 0, ok.text);
  assert.ok(fs.existsSync(path.join(moved, "images")), "the cache went where it was told");
});

Deno.test("reliability: export writes weights and description as one unit; a killed re-export leaves no stale description, and a description of other weights is ignored, saying so", async () => {
  const run = await tinyRun();
  const data = await syntheticData();
  const dir = freshDir("export-pair");
  const pt = path.join(dir, "model.pt");
  const exported = await runScript("export", [
    "--model",
    path.join(run.runDir, "best"),
    "--to",
    pt,
  ]);
  assert.equal(exported.code, 0, exported.text);
  const description = JSON.parse(fs.readFileSync(`${pt}.json`, "utf8"));
  assert.match(description.weightsSha256, /^[0-9a-f]{64}$/);
  const evaluate = (extra: string[] = []) =>
    runScript("evaluate", ["--model", pt, "--data", path.join(data, "test"), ...extra]);
  const described = await evaluate();
  assert.equal(described.code, 0, described.text);
  assert.match(described.text, /classes from model\.pt\.json\)/);
  // Killed after the new weights, before their description: no description at all remains.
  const killed = await runScript(
    "export",
    ["--model", path.join(run.runDir, "best"), "--to", pt],
    { COVID_CXR_FAULT: "export-weights-written:1" },
  );
  assert.notEqual(killed.code, 0);
  assert.ok(fs.existsSync(pt) && !fs.existsSync(`${pt}.json`), "weights without a description");
  // A description of other weights (copied beside this file) is not believed.
  fs.writeFileSync(`${pt}.json`, JSON.stringify({ ...description, weightsSha256: "0".repeat(64) }));
  const stale = await evaluate();
  assert.equal(stale.code, 0, stale.text);
  assert.match(stale.text, /model\.pt\.json ignored: it describes other weights/);
});

Deno.test("reliability: a bad environment value is one line naming the variable and its choices; COVID_CXR_BACKEND=gpu without the GPU build stops instead of running on the CPU", async () => {
  const run = await tinyRun();
  const data = await syntheticData();
  const args = ["--model", path.join(run.runDir, "best"), "--data", path.join(data, "test")];
  const cases: [Record<string, string>, RegExp][] = [
    [{ COVID_CXR_XLA: "maybe" }, /COVID_CXR_XLA must be 1 \(on\) or 0 \(off\) .*got "maybe"/],
    [
      { COVID_CXR_BACKEND: "tpu" },
      /COVID_CXR_BACKEND must be one of auto, native, gpu, cpu, got "tpu"/,
    ],
    [
      { COVID_CXR_BACKEND: "gpu" },
      /COVID_CXR_BACKEND=gpu, but (@tensorflow\/tfjs-node-gpu is not installed|nvidia-smi does not answer)/,
    ],
    [
      { COVID_CXR_INFER_ENGINE: "fast" },
      /COVID_CXR_INFER_ENGINE must be one of graph, eager, got "fast"/,
    ],
  ];
  for (const [env, message] of cases) {
    const r = await runScript("evaluate", args, env);
    assert.equal(r.code, 1, `${JSON.stringify(env)}: ${r.text}`);
    assert.match(r.text, message);
    assert.doesNotMatch(r.text, /\n\s+at /, "no stack trace");
  }
  // On and off in the words people use.
  const yes = await runScript("evaluate", args, { COVID_CXR_QUICK: "yes", COVID_CXR_DEBUG: "no" });
  assert.equal(yes.code, 0, yes.text);
});

Deno.test("reliability: setup finds an NVIDIA GPU through nvidia-smi (a stand-in on PATH), not a driver that does not answer; asking for the GPU without its build says how to get it", async () => {
  const { detectNvidiaGpu } = await import("../../scripts/setup.ts");
  const bin = freshDir("fake-nvidia");
  const fake = (body: string) => {
    fs.writeFileSync(path.join(bin, "nvidia-smi"), `#!/bin/sh\n${body}\n`, { mode: 0o755 });
  };
  const path0 = Deno.env.get("PATH") ?? "";
  fake('echo "GPU 0: Stand-in RTX (UUID: GPU-1234)"');
  assert.equal(detectNvidiaGpu(`${bin}:${path0}`), "GPU 0: Stand-in RTX (UUID: GPU-1234)");
  fake(
    'echo "NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver"; exit 9',
  );
  assert.equal(
    detectNvidiaGpu(`${bin}:${path0}`),
    undefined,
    "a driver that does not answer is no GPU",
  );
  fs.rmSync(path.join(bin, "nvidia-smi"));
  assert.equal(detectNvidiaGpu(bin), undefined, "no nvidia-smi at all");
  // With a stand-in GPU but no GPU build installed, asking for the GPU says how to get it.
  fake('echo "GPU 0: Stand-in RTX (UUID: GPU-1234)"');
  const run = await tinyRun();
  const r = await runScript("evaluate", [
    "--model",
    path.join(run.runDir, "best"),
    "--data",
    run.data,
  ], {
    COVID_CXR_BACKEND: "gpu",
    PATH: `${bin}:${path0}`,
  });
  assert.equal(r.code, 1, r.text);
  assert.match(
    r.text,
    /@tensorflow\/tfjs-node-gpu is not installed \(deno task setup installs it where nvidia-smi answers\)/,
  );
});

Deno.test("reliability: images with an EXIF orientation tag are decoded as stored (as the paper's PIL pipeline does) and listed in data_report.json; --exif-rotate applies them", async () => {
  const base = await syntheticData();
  const data = path.join(freshDir("exif"), "data");
  fs.cpSync(base, data, { recursive: true, dereference: true });
  const { writeImage, classPattern } = await import("../_synthetic.ts");
  const { Rng } = await import("../../lib/mod.ts");
  await writeImage(
    path.join(data, "train", "Covid", "tagged.jpeg"),
    classPattern(0, 40, 36, new Rng(1)),
    40,
    36,
    "jpeg-rgb",
    { orientation: 6 },
  );
  const args = ["--data", data, ...tinyArgs({ epochs: 1 })];
  for (const rotate of [false, true]) {
    const out = freshDir("exif-out");
    const r = await runScript("reproduce", [
      ...args,
      "--out",
      out,
      ...(rotate ? ["--exif-rotate"] : []),
    ]);
    assert.equal(r.code, 0, r.text);
    assert.match(
      r.text,
      rotate
        ? /1 image\(s\) carry an EXIF orientation tag: rotated/
        : /1 image\(s\) carry an EXIF orientation tag: decoded as stored/,
    );
    const report = JSON.parse(
      fs.readFileSync(path.join(out, "latest", "data_report.json"), "utf8"),
    );
    assert.deepEqual(report.exifOrientation, {
      applied: rotate,
      images: [{ file: "train/Covid/tagged.jpeg", orientation: 6 }],
    });
    const config = JSON.parse(
      fs.readFileSync(path.join(out, "latest", "best", "metadata.json"), "utf8"),
    );
    assert.equal(
      config.training.exifRotate,
      rotate,
      "the checkpoint carries it to evaluate/predict",
    );
  }
});
