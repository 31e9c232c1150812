import assert from "node:assert/strict";
import { initBackend, liveSessions } from "../../lib/mod.ts";
import { GraphWriter } from "../../lib/engine/graph_def.ts";
import { GraphSession } from "../../lib/engine/tf_c.ts";

await initBackend();

/** y = 2x + 1 as a GraphDef. */
function affineGraph(): Uint8Array {
  const g = new GraphWriter();
  g.placeholder("x", [-1]);
  const two = g.floatConst("two", [], Float32Array.of(2));
  const one = g.floatConst("one", [], Float32Array.of(1));
  g.op("y", "AddV2", [g.op("twice", "Mul", ["x", two]), one]);
  return g.bytes();
}

Deno.test("tf_c: a GraphSession imports a GraphDef, runs it, and close() frees it (counted)", () => {
  const before = liveSessions();
  const session = new GraphSession();
  assert.equal(liveSessions(), before + 1);
  session.import(affineGraph());
  session.start();
  const [y] = session.run(
    [[session.output("x"), { values: Float32Array.of(1, 2, 3), shape: [3] }]],
    [session.output("y")],
  );
  assert.deepEqual(Array.from(y.values), [3, 5, 7]);
  assert.deepEqual(y.shape, [3]);
  session.close();
  session.close(); // idempotent
  assert.equal(liveSessions(), before);
  // After close nothing reaches the freed graph.
  assert.throws(() => session.output("y"), /closed/);
  assert.throws(() => session.run([], []), /not running/);
});

Deno.test("tf_c: TensorFlow's errors become exceptions with TensorFlow's message", () => {
  const session = new GraphSession();
  try {
    assert.throws(() => session.import(Uint8Array.of(0xff, 0xff, 0xff)), /import GraphDef: /);
    session.import(affineGraph());
    assert.throws(() => session.output("nope"), /no operation nope in the graph/);
    session.start();
    // A feed of the wrong type (int32 into a float placeholder): the session refuses it.
    assert.throws(
      () =>
        session.run([[session.output("x"), { values: Int32Array.of(1), shape: [1] }]], [
          session.output("y"),
        ]),
      /session run: .*float/i,
    );
  } finally {
    session.close();
  }
});
