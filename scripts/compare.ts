/**
 * `deno task compare RUN_A RUN_B`: two finished runs on the same test images — is the difference
 * between their accuracies more than chance? McNemar's exact test on the images where they
 * disagree, and the accuracy difference with its 95 % interval (lib/runs/compare.ts).
 */
import * as path from "node:path";
import {
  compareOutcomes,
  comparisonSentence,
  loadRun,
  parseFlags,
  runMain,
  runOutcomes,
  UsageError,
  userPath,
  writeFileAtomic,
  writeJsonAtomic,
} from "../lib/mod.ts";

const USAGE = `Usage: deno task compare RUN_A RUN_B [--out DIR]

  RUN_A, RUN_B  finished run folders (or "latest"), scored on the same test images
  --out DIR     also write compare.json and compare.md there`;

async function main() {
  const { values: v, positionals } = parseFlags(Deno.args, {
    out: { type: "string" },
    help: { type: "boolean" },
  });
  if (v.help) return console.log(USAGE);
  if (positionals.length !== 2) {
    throw new UsageError(`two run folders are needed, got ${positionals.length}`);
  }
  const runs = positionals.map((p) => loadRun(p === "latest" ? p : userPath(p)));
  const names = runs.map((r) => path.basename(r.runDir)) as [string, string];
  const c = compareOutcomes(runOutcomes(runs[0]), runOutcomes(runs[1]), names);
  const sentence = comparisonSentence(c, names);
  console.log(`A: ${runs[0].runDir}\nB: ${runs[1].runDir}\n`);
  console.log(
    [
      `            B right  B wrong`,
      `A right  ${String(c.bothRight).padStart(9)}${String(c.onlyA).padStart(9)}`,
      `A wrong  ${String(c.onlyB).padStart(9)}${String(c.bothWrong).padStart(9)}`,
    ].join("\n"),
  );
  console.log(`\n${sentence.replaceAll(names[0], "A").replaceAll(names[1], "B")}`);
  if (v.out) {
    const out = userPath(v.out);
    await writeJsonAtomic(path.join(out, "compare.json"), {
      a: runs[0].runDir,
      b: runs[1].runDir,
      ...c,
    });
    await writeFileAtomic(
      path.join(out, "compare.md"),
      `# ${names[0]} against ${names[1]}\n\n${sentence}\n`,
    );
    console.log(`\nWritten to ${out}`);
  }
}

await runMain(main, USAGE);
