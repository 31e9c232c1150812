/**
 * The external set's reading on synthetic manifests, one per outcome: every verdict is reached by
 * numbers that call for it, and its sentence says what those numbers allow — and no more.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import {
  clopperPearson,
  type ImageItem,
  type Prediction,
  readExternalSet,
  readingText,
  readManifest,
  type ShortcutRate,
} from "../../lib/mod.ts";
import { freshDir } from "../_temp.ts";

const CLASSES = ["Covid", "Normal", "Viral Pneumonia"];

/** Images of one class in one group: how many, how many called Covid, their source and ages. */
interface Group {
  label: number;
  n: number;
  calledCovid: number;
  source: string;
  ages: [number, number];
}

/** Predictions and a real MANIFEST.tsv (read back by readManifest) for the groups. */
function syntheticSet(groups: Group[]): { predictions: Prediction[]; manifest: string } {
  const dir = freshDir("reading");
  const lines = ["class\tfile\tpatient_id\tage\tsource"];
  const predictions: Prediction[] = [];
  let id = 0;
  for (const g of groups) {
    for (let i = 0; i < g.n; i++) {
      const relPath = `${CLASSES[g.label]}/img${id}.png`;
      const age = g.ages[0] + (i % (g.ages[1] - g.ages[0] + 1));
      lines.push(`${CLASSES[g.label]}\t${relPath}\tp${id}\t${age}\t${g.source}`);
      const predicted = i < g.calledCovid ? 0 : g.label;
      const item = { relPath, label: g.label, className: CLASSES[g.label] } as ImageItem;
      predictions.push({
        item,
        predicted,
        logits: [0, 0, 0],
        probabilities: [1 / 3, 1 / 3, 1 / 3],
        correct: predicted === g.label,
      });
      id++;
    }
  }
  const manifest = path.join(dir, "MANIFEST.tsv");
  fs.writeFileSync(manifest, lines.join("\n") + "\n");
  return { predictions, manifest };
}

function readNormal(groups: Group[], testProbe?: ShortcutRate[]) {
  const { predictions, manifest } = syntheticSet(groups);
  const readings = readExternalSet(predictions, CLASSES, {
    manifest: readManifest(manifest),
    testProbe,
  });
  const normal = readings.find((r) => r.className === "Normal")!;
  return { reading: normal, text: readingText(normal) };
}

const CHILD: [number, number] = [3, 12];
const ADULT: [number, number] = [30, 44];
const probe = (called: number, total: number): ShortcutRate[] => [{
  className: "Normal",
  level: "image",
  called,
  total,
  rate: called / total,
  interval: clopperPearson(called, total),
}];

Deno.test("review: the external reading tells an age effect, a source effect and a class not learnt apart", async (t) => {
  await t.step("age effect: inside one hospital, adults called Covid and children not", () => {
    const { reading, text } = readNormal([
      { label: 1, n: 20, calledCovid: 2, source: "hospital-a", ages: CHILD },
      { label: 1, n: 20, calledCovid: 18, source: "hospital-a", ages: ADULT },
    ]);
    assert.equal(reading.verdict, "age");
    assert.equal(reading.ageDifference!.within, "hospital-a");
    assert.equal(reading.ageDifference!.high.group, "adults (18 and over)");
    assert.ok(reading.ageDifference!.p < 0.001);
    assert.match(text, /^Normal: 20 of 40 \(50\.0 %; [\d.]+ % – [\d.]+ %\) called Covid\./);
    assert.match(
      text,
      /Within hospital-a, adults \(18 and over\): 18 of 20 .*children \(under 18\): 2 of 20/,
    );
    assert.match(text, /the age group goes with being called Covid, with the source held fixed/);
    assert.doesNotMatch(text, /source goes with/);
  });

  await t.step(
    "source effect: adults of one age band, one source called Covid and the other not",
    () => {
      const { reading, text } = readNormal([
        { label: 1, n: 20, calledCovid: 18, source: "nih", ages: ADULT },
        { label: 1, n: 20, calledCovid: 2, source: "montgomery", ages: ADULT },
      ]);
      assert.equal(reading.verdict, "source");
      assert.equal(reading.sourceDifference!.within, "30–44");
      assert.match(text, /Among 30–44, nih: 18 of 20 .*montgomery: 2 of 20/);
      assert.match(text, /the source goes with being called Covid, at the same age/);
      assert.doesNotMatch(text, /age group goes with/);
    },
  );

  await t.step("not learnt: children and adults, both sources, all mostly called Covid", () => {
    const { reading, text } = readNormal([
      { label: 1, n: 10, calledCovid: 9, source: "a", ages: CHILD },
      { label: 1, n: 10, calledCovid: 9, source: "a", ages: ADULT },
      { label: 1, n: 10, calledCovid: 9, source: "b", ages: CHILD },
      { label: 1, n: 10, calledCovid: 9, source: "b", ages: ADULT },
    ], probe(18, 20));
    assert.equal(reading.verdict, "not-learnt");
    assert.match(
      text,
      /Called Covid in every age group and source this set has .*children \(under 18\) 18\/20/,
    );
    assert.match(text, /and on the test set too: the model has not learnt Normal/);
    assert.doesNotMatch(text, /goes with/);
  });

  await t.step("age and source coincide: the set cannot say which", () => {
    const { reading, text } = readNormal([
      { label: 1, n: 20, calledCovid: 2, source: "children's hospital", ages: CHILD },
      { label: 1, n: 20, calledCovid: 18, source: "adult clinic", ages: ADULT },
    ]);
    assert.equal(reading.verdict, "age-or-source");
    assert.equal(reading.ageAndSourceCoincide, true);
    assert.match(
      text,
      /every source holds a single age group: it cannot tell whether age or source/,
    );
  });

  await t.step(
    "told apart on the test set, called Covid here, one source and one age group",
    () => {
      const { reading, text } = readNormal(
        [{ label: 1, n: 30, calledCovid: 28, source: "nih", ages: ADULT }],
        probe(0, 20),
      );
      assert.equal(reading.verdict, "not-carried-over");
      assert.match(text, /on the test set 0 of 20/);
      assert.match(
        text,
        /this set cannot separate: its Normal images come from one source and one age group/,
      );
    },
  );

  await t.step("few images per age group: the ages are said to be too few, not missing", () => {
    const { reading, text } = readNormal(
      [
        { label: 1, n: 4, calledCovid: 4, source: "a", ages: [20, 25] },
        { label: 1, n: 4, calledCovid: 4, source: "a", ages: [50, 55] },
      ],
      probe(0, 20),
    );
    assert.equal(reading.verdict, "not-carried-over");
    assert.equal(reading.withAge, 8);
    assert.match(text, /its 8 ages fall in groups too small to compare \(under 5 images each\)/);
    assert.doesNotMatch(text, /no ages given/);
  });

  await t.step("told apart: mostly not called Covid", () => {
    const { reading, text } = readNormal([
      { label: 1, n: 20, calledCovid: 3, source: "a", ages: ADULT },
    ]);
    assert.equal(reading.verdict, "told-apart");
    assert.match(text, /on this set the model tells Normal from Covid/);
  });

  await t.step("too few images to read", () => {
    const { reading, text } = readNormal([
      { label: 1, n: 3, calledCovid: 3, source: "a", ages: ADULT },
    ]);
    assert.equal(reading.verdict, "cannot-tell");
    assert.match(text, /Fewer than 5 images: too few to read/);
  });

  await t.step("no manifest columns to compare: one group, nothing else", () => {
    const { predictions } = syntheticSet([
      { label: 1, n: 30, calledCovid: 27, source: "a", ages: ADULT },
    ]);
    const [normal] = readExternalSet(predictions, CLASSES).filter((r) => r.className === "Normal");
    assert.equal(normal.verdict, "cannot-tell");
    assert.match(readingText(normal), /this set cannot say why/);
  });
});

Deno.test("reliability: a breakdown row of an image the manifest lists without the column is '(not given)', one it does not list '(not in manifest)'", async () => {
  const { breakdown } = await import("../../lib/mod.ts");
  const { predictions, manifest } = syntheticSet([
    { label: 1, n: 2, calledCovid: 0, source: "a", ages: ADULT },
  ]);
  // A note column whose key only one row has: the derived column exists, the other row lacks it.
  const lines = fs.readFileSync(manifest, "utf8").trim().split("\n");
  fs.writeFileSync(
    manifest,
    [`${lines[0]}\tnote`, `${lines[1]}\tgroup=eurorad`, `${lines[2]}\tlicence=CC`].join("\n"),
  );
  const extra = {
    ...predictions[0],
    item: { ...predictions[0].item, relPath: "Normal/unlisted.png" },
  };
  const rows = breakdown([...predictions, extra], readManifest(manifest), "group", CLASSES);
  assert.deepEqual(rows.map((r) => r.value).sort(), [
    "(not given)",
    "(not in manifest)",
    "eurorad",
  ]);
});
