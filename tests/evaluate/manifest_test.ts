import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import {
  ageBand,
  breakdown,
  clopperPearson,
  DatasetError,
  type Prediction,
  readManifest,
  shortcutProbe,
} from "../../lib/mod.ts";
import { freshDir } from "../_temp.ts";

const CLASSES = ["Covid", "Normal", "Viral Pneumonia"];

/** A prediction of `relPath` (class from its folder) as `predicted`. */
function prediction(relPath: string, predicted: string): Prediction {
  const className = relPath.split("/")[0];
  const label = CLASSES.indexOf(className);
  const p = CLASSES.indexOf(predicted);
  return {
    item: { path: `/x/${relPath}`, relPath, split: "test", label, className, sha256: relPath },
    predicted: p,
    logits: CLASSES.map((_, k) => (k === p ? 2 : 0)),
    probabilities: CLASSES.map((_, k) => (k === p ? 0.8 : 0.1)),
    correct: p === label,
  };
}

/** The external set's layout in miniature: tab-separated, no quoting, facts in `note`. */
const MANIFEST = [
  "class\tfile\tsource_repo\tpatient_id\tage\tsex\tview\tnote",
  'Covid\tCovid/a.png\tieee8023/covid (via fork)\tieee:1\t67\tF\tAP\tgroup=publication; url="x"',
  "Covid\tCovid/b.jpg\tieee8023/covid (via fork)\tieee:2\t35\tM\tPA\tgroup=eurorad",
  "Normal\tNormal/n1.png\tnih/chestxray\tnih:1\t25\tF\tPA\timage=1",
  "Normal\tNormal/n2.png\tnih/chestxray\tnih:2\t50\tM\tPA\timage=2",
  "Normal\tNormal/n3.png\tnih/chestxray\tnih:3\t80\tF\tPA\timage=3",
  "Viral Pneumonia\tViral Pneumonia/v1.png\tieee8023/covid (via fork)\tieee:9\t23\tM\tPA\tprimary_image_of_patient=no",
  "Viral Pneumonia\tViral Pneumonia/v2.png\tieee8023/covid (via fork)\tieee:9\t23\tM\tPA\tprimary_image_of_patient=yes",
  "Viral Pneumonia\tViral Pneumonia/v3.png\tieee8023/covid (via fork)\tieee:10\t\t\tAP\tprimary_image_of_patient=yes",
].join("\n") + "\n";

function writeManifest(): string {
  const file = path.join(freshDir("manifest"), "MANIFEST.tsv");
  fs.writeFileSync(file, MANIFEST);
  return file;
}

// v1 and v2 are one patient: v1 called Covid, v2 (the primary image) called right.
const PREDICTIONS = [
  prediction("Covid/a.png", "Covid"),
  prediction("Covid/b.jpg", "Normal"),
  prediction("Normal/n1.png", "Covid"),
  prediction("Normal/n2.png", "Covid"),
  prediction("Normal/n3.png", "Normal"),
  prediction("Viral Pneumonia/v1.png", "Covid"),
  prediction("Viral Pneumonia/v2.png", "Viral Pneumonia"),
  prediction("Viral Pneumonia/v3.png", "Covid"),
  prediction("Normal/unlisted.png", "Normal"),
];

Deno.test("external: manifest — a manifest's note keys, age band and source become columns, quotes kept as text", () => {
  const m = readManifest(writeManifest());
  for (const c of ["group", "primary_image_of_patient", "age band", "source", "view"]) {
    assert.ok(m.columns.includes(c), `${c} in ${m.columns}`);
  }
  assert.equal(m.patientColumn, "patient_id");
  const a = m.rows.get("Covid/a.png")!;
  assert.equal(a.group, "publication");
  assert.equal(a.url, '"x"'); // no quoting in the TSV: quotes are part of the value
  assert.equal(a.source, "ieee8023/covid");
  assert.equal(a["age band"], "60–74");
  assert.equal(m.rows.get("Viral Pneumonia/v3.png")!["age band"], "unknown");
  assert.deepEqual(
    ["18", "29", "30", "44", "45", "74", "75", "17", ""].map(ageBand),
    ["18–29", "18–29", "30–44", "30–44", "45–59", "60–74", "75+", "under 18", "unknown"],
  );
});

Deno.test("external: manifest — breakdowns group predictions by a column and the true class", () => {
  const m = readManifest(writeManifest());
  const bySource = breakdown(PREDICTIONS, m, "source", CLASSES);
  const row = (value: string, className: string) =>
    bySource.find((r) => r.value === value && r.className === className)!;
  assert.deepEqual(row("nih/chestxray", "Normal"), {
    column: "source",
    value: "nih/chestxray",
    className: "Normal",
    images: 3,
    correct: 1,
    predicted: [2, 1, 0],
  });
  assert.deepEqual(row("ieee8023/covid", "Covid").predicted, [1, 1, 0]);
  assert.deepEqual(row("ieee8023/covid", "Viral Pneumonia").predicted, [2, 0, 1]);
  // An image the manifest does not list is not dropped.
  assert.equal(row("(not in manifest)", "Normal").images, 1);
  assert.equal(bySource.reduce((s, r) => s + r.images, 0), PREDICTIONS.length);
  const byAge = breakdown(PREDICTIONS, m, "age band", CLASSES);
  assert.deepEqual(
    byAge.filter((r) => r.className === "Normal").map((r) => [r.value, r.images]),
    [["(not in manifest)", 1], ["18–29", 1], ["45–59", 1], ["75+", 1]],
  );
});

Deno.test("external: manifest — the shortcut probe counts other classes called Covid, per image and per patient, with exact intervals", () => {
  const m = readManifest(writeManifest());
  const probe = shortcutProbe(PREDICTIONS, CLASSES, { manifest: m });
  const line = (className: string, level: string) =>
    probe.find((r) => r.className === className && r.level === level)!;
  assert.deepEqual(
    [line("Normal", "image").called, line("Normal", "image").total],
    [2, 4],
  );
  assert.deepEqual(line("Normal", "image").interval, clopperPearson(2, 4));
  assert.deepEqual(
    [line("Viral Pneumonia", "image").called, line("Viral Pneumonia", "image").total],
    [2, 3],
  );
  // Per patient: ieee:9 is represented by v2 (its primary image, called right), ieee:10 by v3.
  assert.deepEqual(
    [line("Viral Pneumonia", "patient").called, line("Viral Pneumonia", "patient").total],
    [1, 2],
  );
  // No manifest: images only; Covid itself is never a probe line.
  const plain = shortcutProbe(PREDICTIONS, CLASSES);
  assert.deepEqual(plain.map((r) => `${r.className}/${r.level}`), [
    "Normal/image",
    "Viral Pneumonia/image",
  ]);
});

Deno.test("external: manifest — a manifest without a column naming the images is refused, naming the file", () => {
  const file = path.join(freshDir("manifest"), "facts.csv");
  fs.writeFileSync(file, "image_name,age\na.png,40\n");
  assert.throws(() => readManifest(file), (e: Error) => {
    assert.ok(e instanceof DatasetError);
    assert.match(e.message, /facts\.csv: no column naming the images .*it has image_name, age/);
    return true;
  });
});
