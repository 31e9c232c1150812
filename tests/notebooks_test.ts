import assert from "node:assert/strict";
import * as path from "node:path";
import { executeNotebook, listNotebooks } from "./_notebook.ts";

for (const file of listNotebooks()) {
  const name = path.basename(file, ".ipynb");
  Deno.test(`notebook ${name} executes headlessly through the Deno kernel with no error output`, async () => {
    const run = await executeNotebook(file);
    assert.deepEqual(run.errors, [], `${name}: error outputs`);
    assert.ok(run.outputTypes.some((t) => t.length > 0), `${name}: no cell produced output`);
    assert.deepEqual(run.figuresMissing, [], `${name}: figure cells without an image`);
    console.log(`${name}: ${run.seconds.toFixed(1)} s`);
  });
}
