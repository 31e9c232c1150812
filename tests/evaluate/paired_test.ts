import assert from "node:assert/strict";
import { comparePaired, fisherExact, mcnemarExact, pairedCounts } from "../../lib/mod.ts";

const reference = JSON.parse(
  Deno.readTextFileSync(new URL("../testdata/review_reference.json", import.meta.url)),
) as {
  paired: {
    counts: [number, number, number, number];
    mcnemar_p: number;
    difference: number;
    newcombe_lower: number;
    newcombe_upper: number;
  }[];
};

Deno.test("mcnemar: exact p-values match statsmodels; Newcombe's paired interval matches the reference", () => {
  for (const r of reference.paired) {
    const [bothRight, onlyA, onlyB, bothWrong] = r.counts;
    const c = comparePaired({ bothRight, onlyA, onlyB, bothWrong });
    const what = `counts ${r.counts.join(",")}`;
    assert.ok(
      Math.abs(c.mcnemarP - r.mcnemar_p) < 1e-12,
      `${what}: p ${c.mcnemarP} vs ${r.mcnemar_p}`,
    );
    assert.ok(Math.abs(c.difference - r.difference) < 1e-12, what);
    assert.ok(Math.abs(c.differenceInterval.lower - r.newcombe_lower) < 1e-6, `${what}: lower`);
    assert.ok(Math.abs(c.differenceInterval.upper - r.newcombe_upper) < 1e-6, `${what}: upper`);
    assert.ok(
      c.differenceInterval.lower <= c.difference && c.difference <= c.differenceInterval.upper,
    );
  }
});

Deno.test("mcnemar: counts from two models' outcomes; no discordant pair gives p = 1", () => {
  const a = [true, true, false, false, true];
  const b = [true, false, true, false, false];
  assert.deepEqual(pairedCounts(a, b), { bothRight: 1, onlyA: 2, onlyB: 1, bothWrong: 1 });
  assert.equal(mcnemarExact(0, 0), 1);
  assert.ok(Math.abs(mcnemarExact(0, 6) - 2 * 0.5 ** 6) < 1e-12);
  assert.throws(() => pairedCounts([true], []), /1 and 0/);
});

Deno.test("review: Fisher's exact test (two-sided) matches SciPy's fisher_exact", () => {
  const { fisher } = JSON.parse(
    Deno.readTextFileSync(new URL("../testdata/review_reference.json", import.meta.url)),
  ) as { fisher: { table: [[number, number], [number, number]]; p: number }[] };
  assert.ok(fisher.length >= 8);
  for (const { table: [[a, b], [c, d]], p } of fisher) {
    const ours = fisherExact(a, b, c, d);
    assert.ok(
      Math.abs(ours - p) <= 1e-9 * Math.max(1, p) + 1e-12,
      `${a},${b},${c},${d}: ${ours} vs ${p}`,
    );
  }
});
