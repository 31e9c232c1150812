import assert from "node:assert/strict";
import {
  configProto,
  createPredictor,
  initBackend,
  type SessionSettings,
  sessionSettings,
  tf,
  threadPools,
  UserError,
  type VariableName,
  withEnv,
} from "../../lib/mod.ts";
import { readFields } from "../../lib/engine/protobuf.ts";
import { outputs, pixels, small } from "../_models.ts";

await initBackend();

Deno.test("session_config: the environment's settings become the ConfigProto TensorFlow reads; bad values are refused", () => {
  assert.equal(
    configProto(
      sessionSettings({ precision: "fp32", jit: false, intraOpThreads: 0, interOpThreads: 0 }),
    ).length,
    0,
  );
  const s = withEnv(
    { COVID_CXR_PRECISION: "bf16", COVID_CXR_XLA: "1", COVID_CXR_THREADS: "2,1" },
    () => sessionSettings(),
  );
  assert.deepEqual(s, { precision: "bf16", jit: true, intraOpThreads: 2, interOpThreads: 1 });
  const fields = readFields(configProto(s));
  // ConfigProto: intra_op_parallelism_threads 2, inter_op_parallelism_threads 5, graph_options 10.
  assert.deepEqual(fields.map((f) => [f.field, typeof f.value]), [
    [2, "bigint"],
    [5, "bigint"],
    [10, "object"],
  ]);
  const graphOptions = readFields(fields[2].value as Uint8Array);
  // GraphOptions.optimizer_options 3 { global_jit_level 5 = ON_1, cpu_global_jit 7 }
  const optimizer = readFields(graphOptions.find((f) => f.field === 3)!.value as Uint8Array);
  assert.deepEqual(optimizer.map((f) => [f.field, f.value]), [[5, 1n], [7, 1n]]);
  // GraphOptions.rewrite_options 10 { auto_mixed_precision_onednn_bfloat16 31 = ON }
  const rewrite = readFields(graphOptions.find((f) => f.field === 10)!.value as Uint8Array);
  assert.deepEqual(rewrite.map((f) => [f.field, f.value]), [[31, 1n]]);
  const bad: Partial<Record<VariableName, string>>[] = [{ COVID_CXR_PRECISION: "fp8" }, {
    COVID_CXR_THREADS: "two",
  }];
  for (const env of bad) {
    assert.throws(() => withEnv(env, () => sessionSettings()), UserError);
  }
});

Deno.test("session_config: the thread pools a session gets: its own setting, else TensorFlow's variables, else TensorFlow's default", () => {
  const defaults: SessionSettings = {
    precision: "fp32",
    jit: false,
    intraOpThreads: 0,
    interOpThreads: 0,
  };
  const pools = (env: Record<string, string | undefined>, s = defaults) =>
    withEnv(env, () => threadPools(s));
  const unset = { TF_NUM_INTRAOP_THREADS: undefined, TF_NUM_INTEROP_THREADS: undefined };
  assert.deepEqual(pools(unset), { intraOp: 0, interOp: 0 });
  assert.deepEqual(pools({ TF_NUM_INTRAOP_THREADS: "2", TF_NUM_INTEROP_THREADS: "1" }), {
    intraOp: 2,
    interOp: 1,
  });
  // COVID_CXR_THREADS goes into the session's config, which TensorFlow reads before its variables.
  assert.deepEqual(
    pools({ TF_NUM_INTEROP_THREADS: "1" }, { ...defaults, intraOpThreads: 1, interOpThreads: 2 }),
    { intraOp: 1, interOp: 2 },
  );
  // TensorFlow ignores a value it cannot read as a count: its default then.
  assert.deepEqual(pools({ ...unset, TF_NUM_INTEROP_THREADS: "two" }), { intraOp: 0, interOp: 0 });
});

Deno.test({
  name:
    "session_config: TensorFlow applies the precision: bfloat16 predictions differ from float32 by bfloat16's rounding only",
  ignore: tf.getBackend() !== "tensorflow",
  fn: async () => {
    const model = small();
    const x = pixels();
    try {
      const predict = async () => {
        const p = createPredictor(model);
        try {
          const y = p.predict(x);
          const v = await y.data() as Float32Array;
          y.dispose();
          return v;
        } finally {
          p.dispose();
        }
      };
      const fp32 = await predict();
      const bf16 = await withEnv({ COVID_CXR_PRECISION: "bf16" }, predict);
      const reference = await outputs(model, x);
      const maxAbs = (a: Float32Array, b: Float32Array) =>
        Math.max(...a.map((v, i) => Math.abs(v - b[i])));
      const scale = Math.max(...reference.map(Math.abs));
      assert.ok(maxAbs(fp32, reference) / scale < 1e-4, "float32 graph = the layers model");
      const err = maxAbs(bf16, reference) / scale;
      // bfloat16 keeps 8 significant bits: errors of about 1e-2 relative, but not none.
      assert.ok(err > 1e-5 && err < 0.1, `bfloat16 relative error ${err}`);
    } finally {
      x.dispose();
      model.dispose();
    }
  },
});
