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
  freshDir,
  runScript,
  startRunUntilFirstEpoch,
  syntheticData,
  tinyRun,
} from "../_fixtures.ts";

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
