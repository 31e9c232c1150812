import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { type EpochRecord, initBackend, projectPath } from "../../lib/mod.ts";
import { startRunUntilFirstEpoch, syntheticData, tinyArgs } from "../_fixtures.ts";
import { workDir } from "../_temp.ts";

await initBackend();

// The synthetic data set (3 classes, 12 + 4 images each); each test writes its own outputs.
const WORK = workDir();
const DATA = await syntheticData();

/** Settings small enough for seconds per run. */
const SMALL = tinyArgs({ epochs: 3 });

async function reproduce(args: string[], env: Record<string, string> = {}) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", projectPath("scripts", "reproduce.ts"), "--data", DATA, ...args],
    env: { NO_COLOR: "1", COVID_CXR_EXTERNAL: "", ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  return { code: out.code, text };
}

function runFolders(root: string): string[] {
  return fs.existsSync(root)
    ? fs.readdirSync(root).filter((f) => f !== "latest" && !f.includes(".tmp")).sort()
    : [];
}

/** History without the fields that depend on the machine's speed. */
const comparable = (h: EpochRecord[]) => h.map(({ seconds: _s, peakRssMB: _m, ...rest }) => rest);
const readJson = (file: string) => JSON.parse(fs.readFileSync(file, "utf8"));

Deno.test("reproduce: a full run on a small synthetic data set writes every output and report.md", async () => {
  const out = path.join(WORK, "out-full");
  const run = await reproduce([...SMALL, "--out", out]);
  assert.equal(run.code, 0, run.text);
  assert.match(run.text, /Validation loss decreased \(inf --> \d\.\d{4}\)\. Saving model \.\.\./);
  const [dir] = runFolders(out);
  const runDir = path.join(out, dir);
  for (
    const f of [
      "config.json",
      "data_report.json",
      "history.json",
      "history.csv",
      "metrics.json",
      "classification_report.txt",
      "predictions.csv",
      "confusion_matrix.svg",
      "confusion_matrix.png",
      "training_curves.svg",
      "training_curves.png",
      "summary.json",
      "report.md",
      "best/model.json",
      "best/weights.bin",
      "best/metadata.json",
      "state/state.json",
    ]
  ) {
    assert.ok(fs.existsSync(path.join(runDir, f)), `missing ${f}`);
  }
  assert.equal(fs.realpathSync(path.join(out, "latest")), fs.realpathSync(runDir));
  const history = readJson(path.join(runDir, "history.json")) as EpochRecord[];
  assert.equal(history.length, 3);
  assert.equal(
    fs.readFileSync(path.join(runDir, "history.csv"), "utf8").trim().split("\n").length,
    4,
  );
  const metrics = readJson(path.join(runDir, "metrics.json"));
  assert.equal(metrics.total, 12);
  assert.equal(metrics.confusion.flat().reduce((a: number, b: number) => a + b, 0), 12);
  const report = fs.readFileSync(path.join(runDir, "report.md"), "utf8");
  // A model that was not pretrained says so before anything else.
  assert.match(
    report.split("\n").slice(0, 4).join("\n"),
    /\*\*Not pretrained\.\*\*.*not comparable/s,
  );
  assert.match(report, /Test accuracy: .* of 12 images; 95 % Clopper–Pearson interval/);
  assert.match(report, / precision {4}recall {2}f1-score {3}support/);
  const best = readJson(path.join(runDir, "best", "metadata.json"));
  assert.deepEqual(best.classNames, ["Covid", "Normal", "Viral Pneumonia"]);
  assert.equal(best.imageSize, 32);
  const bestEpoch = history.reduce((b, h) => (h.validLoss < b.validLoss ? h : b)).epoch;
  assert.equal(
    best.epoch,
    bestEpoch,
    "the kept checkpoint is the epoch with the lowest validation loss",
  );
});

Deno.test("reproduce: same seed, same split, history and metrics; an earlier run is never overwritten", async () => {
  const out = path.join(WORK, "out-twice");
  for (let i = 0; i < 2; i++) {
    const run = await reproduce([...SMALL, "--out", out]);
    assert.equal(run.code, 0, run.text);
  }
  const dirs = runFolders(out);
  assert.equal(dirs.length, 2, "two runs, two folders");
  assert.equal(fs.realpathSync(path.join(out, "latest")), fs.realpathSync(path.join(out, dirs[1])));
  const [a, b] = dirs.map((d) => path.join(out, d));
  assert.deepEqual(
    readJson(path.join(b, "data_report.json")).validation,
    readJson(path.join(a, "data_report.json")).validation,
  );
  assert.deepEqual(
    comparable(readJson(path.join(b, "history.json"))),
    comparable(readJson(path.join(a, "history.json"))),
  );
  assert.deepEqual(readJson(path.join(b, "metrics.json")), readJson(path.join(a, "metrics.json")));
});

Deno.test("resume: a run killed after an epoch and resumed with --resume ends with the uninterrupted history", async () => {
  const straightOut = path.join(WORK, "out-straight");
  const straight = await reproduce([...SMALL, "--out", straightOut]);
  assert.equal(straight.code, 0, straight.text);
  const expected = readJson(path.join(straightOut, "latest", "history.json"));

  // Start the same run and kill it (SIGKILL: no chance to clean up) once epoch 1 is saved.
  const out = path.join(WORK, "out-killed");
  const { child, runDir } = await startRunUntilFirstEpoch(
    ["--data", DATA, ...SMALL],
    out,
    "null",
  );
  const stateFile = path.join(runDir, "state", "state.json");
  child.kill("SIGKILL");
  await child.status;
  assert.ok(fs.existsSync(stateFile), "epoch 1 state was saved before the kill");
  const killedDir = path.dirname(path.dirname(stateFile));
  const done = readJson(stateFile).epoch;
  assert.ok(done >= 1 && done < 3, `killed after epoch ${done}`);

  const resumed = await reproduce(["--resume", killedDir]);
  assert.equal(resumed.code, 0, resumed.text);
  assert.match(resumed.text, new RegExp(`Resuming .* after epoch ${done} of 3`));
  assert.deepEqual(
    comparable(readJson(path.join(killedDir, "history.json"))),
    comparable(expected),
  );
  assert.deepEqual(
    readJson(path.join(killedDir, "metrics.json")),
    readJson(path.join(straightOut, "latest", "metrics.json")),
  );
});

Deno.test("reproduce: the default (torchvision's ImageNet weights) offline stops before any work, with the URL, the cache path and the alternatives", async () => {
  const out = path.join(WORK, "out-offline");
  const cache = path.join(WORK, "empty-cache");
  const run = await reproduce(["--image-size", "32", "--epochs", "1", "--out", out], {
    COVID_CXR_CACHE: cache,
  });
  assert.equal(run.code, 1, run.text);
  assert.match(
    run.text,
    /Cannot get torchvision's ImageNet weights \(IMAGENET1K_V1, the paper's\): downloading https:\/\/download\.pytorch\.org\/models\/mobilenet_v3_large-8738ca79\.pth failed/,
  );
  assert.ok(
    run.text.includes(
      `put it at\n  ${path.join(cache, "weights", "mobilenet_v3_large-8738ca79.pth")}\n`,
    ),
    run.text,
  );
  assert.match(run.text, /a SHA-256 starting with 8738ca79/);
  for (const alternative of ["--weights keras", "--weights FILE", "--weights none"]) {
    assert.ok(run.text.includes(alternative), alternative);
  }
  assert.ok(!/Checking and decoding images/.test(run.text), "no data work started");
  assert.ok(!run.text.includes("    at "), "no stack trace");
  assert.deepEqual(runFolders(out), [], "no run folder was made");
});

Deno.test("reliability: reproduce refuses bad flags with the valid choices; the ranges it states are the ones it accepts", async () => {
  const a = await reproduce(["--epochs", "zero"]);
  assert.equal(a.code, 2);
  assert.match(a.text, /--epochs must be an integer ≥ 1, got "zero"/);
  const b = await reproduce(["--learning-rate", "0.1"]);
  assert.equal(b.code, 2);
  assert.match(b.text, /Unknown option '--learning-rate'.*Valid options: .*--lr/s);
  const c = await reproduce(["--validation-fraction", "0"]);
  assert.equal(c.code, 2);
  assert.match(
    c.text,
    /--validation-fraction must be above 0: the method keeps the weights with the lowest validation loss/,
  );
  const d = await reproduce(["--stop-after-epoch", "1"]);
  assert.equal(d.code, 2, "no hidden testing flags among the user's options");
  // reliability: the range said is the range accepted (0 itself is refused, so "> 0", not "≥ 0").
  const e = await reproduce(["--validation-fraction=-0.1"]);
  assert.equal(e.code, 2);
  assert.match(e.text, /--validation-fraction must be a number > 0 ≤ 0\.9, got "-0\.1"/);
  const f = await reproduce(["--prevalence", "1"]);
  assert.equal(f.code, 2);
  assert.match(f.text, /--prevalence must be a number > 0 < 1, got "1"/);
});

const TORCH_PARITY = Deno.env.get("COVID_CXR_TORCH_PARITY");

Deno.test({
  name:
    "pytorch: reproduce --weights FILE.pth fine-tunes from a torchvision state_dict (head swapped) in torchvision's conventions",
  ignore: !TORCH_PARITY,
  fn: async () => {
    const out = path.join(WORK, "out-pth");
    const pth = path.join(TORCH_PARITY!, "mobilenet_v3_large_random.pth");
    const run = await reproduce([...SMALL, "--epochs", "1", "--weights", pth, "--out", out]);
    assert.equal(run.code, 0, run.text);
    const [dir] = runFolders(out);
    assert.match(dir, /_32px_file_seed42$/);
    const meta = readJson(path.join(out, dir, "best", "metadata.json"));
    assert.equal(meta.convention, "torchvision");
    assert.equal(meta.weights.format, "pytorch");
    assert.equal(meta.weights.file, pth);
    assert.deepEqual(meta.normalization.mean, [0.485, 0.456, 0.406]);
    const report = fs.readFileSync(path.join(out, dir, "report.md"), "utf8");
    assert.match(report, /Weights from .*mobilenet_v3_large_random\.pth \(SHA-256 [0-9a-f]{64}\)/);
    assert.match(report, /MobileNetV3-Large, weights from a PyTorch file, new 3-way classifier/);
  },
});
