import assert from "node:assert/strict";
import {
  computeMetrics,
  type EpochRecord,
  KERAS_NORMALIZATION,
  PAPER_CONFIG,
  renderReport,
  type RunSummary,
} from "../../lib/mod.ts";

const metrics = computeMetrics(
  Array.from({ length: 66 }, (_, i) => i % 3),
  Array.from({ length: 66 }, (_, i) => (i < 2 ? (i + 1) % 3 : i % 3)),
  3,
);
const history: EpochRecord[] = [1, 2].map((epoch) => ({
  epoch,
  learningRate: 0.001,
  trainLoss: 1 / epoch,
  trainAccuracy: 0.8,
  validLoss: 0.5 / epoch,
  validAccuracy: 0.9,
  improved: true,
  seconds: 30,
  peakRssMB: 1500,
}));

function summary(overrides: Partial<RunSummary> = {}): RunSummary {
  return {
    runId: "20261201-000000_446px_none_seed42",
    config: { ...PAPER_CONFIG, weights: "none", epochs: 2 },
    weights: { kind: "none", normalization: KERAS_NORMALIZATION },
    classNames: ["Covid", "Normal", "Viral Pneumonia"],
    dataRoot: "/data",
    counts: { train: 216, validation: 35, test: 66 },
    history,
    bestEpoch: 2,
    test: metrics,
    skippedFiles: [],
    backend: {
      backend: "tensorflow",
      versions: { "tfjs-core": "4.22.0", libtensorflow: "2.21.0" },
    },
    trainingEngine: "graph",
    inferenceEngine: "graph",
    codeVersion: "abc1234",
    totalSeconds: 120,
    ...overrides,
  };
}

Deno.test("report: report.md opens with the not-pretrained warning, gives the accuracy with its interval, and says how it ran", () => {
  const text = renderReport(summary());
  const head = text.split("\n").slice(0, 4).join("\n");
  assert.match(head, /\*\*Not pretrained\.\*\*.*not comparable/s);
  assert.match(
    text,
    /\*\*Test accuracy: 96\.97 % \(64 of 66 images; 95 % Clopper–Pearson interval 89\.5 % – 99\.6 %\)/,
  );
  assert.match(text, /Settings differ from the paper's \(446 px, 8 epochs\): 446 px, 2 epochs/);
  assert.match(
    text,
    /each training step run as one TensorFlow graph; predictions run as one TensorFlow graph/,
  );
  assert.match(text, /Covid: 21 of 22 right, 1 wrong/);
  assert.match(text, /weighted avg/);
});

Deno.test("report: the eager engines and the unseen-test accuracy are reported when they apply", () => {
  const unseen = computeMetrics([0, 1, 2, 0], [0, 1, 2, 1], 3);
  const text = renderReport(summary({
    trainingEngine: "eager",
    inferenceEngine: "eager",
    unseenTest: { metrics: unseen, excluded: ["test/Covid/a.jpg"] },
  }));
  assert.match(text, /training steps run op by op \(eager\); predictions run op by op \(eager\)/);
  assert.match(
    text,
    /On the 4 test images that are not copies of training images \(1 are byte-identical/,
  );
});

Deno.test("report: a run under bfloat16, XLA or set thread pools says so beside the engines", () => {
  const defaults = renderReport(summary({
    sessionSettings: { precision: "fp32", jit: false, intraOpThreads: 0, interOpThreads: 0 },
  }));
  assert.doesNotMatch(defaults, /bfloat16|XLA|thread pools/);
  const text = renderReport(summary({
    sessionSettings: { precision: "bf16", jit: true, intraOpThreads: 2, interOpThreads: 0 },
  }));
  assert.match(
    text,
    /predictions run as one TensorFlow graph; bfloat16 mixed precision \(COVID_CXR_PRECISION=bf16; results differ from float32\); XLA JIT \(COVID_CXR_XLA=1\); TensorFlow thread pools 2 intra-op, default inter-op/,
  );
});

Deno.test("report: the peak memory says where its figure came from", () => {
  const line = (o: Partial<RunSummary> = {}) =>
    renderReport(summary(o)).split("\n").find((l) => l.includes("wall time"))!;
  assert.match(line(), /2\.0 min; peak memory 1500 MB \|/);
  assert.match(
    line({ peakMemory: { mb: 2100, source: "high-water mark" } }),
    /peak memory 2100 MB \(the process's high-water mark\)/,
  );
  assert.match(
    line({ peakMemory: { mb: 1800, source: "current" } }),
    /memory 1800 MB at the end \(this system gives no peak figure, so the peak may be higher\)/,
  );
});

Deno.test("report: which BatchNorm kernels trained the model, and epochs of a resumed run that ran others", () => {
  const line = (o: Partial<RunSummary> = {}) =>
    renderReport(summary(o)).split("\n").find((l) => l.startsWith("| backend |"))!;
  assert.doesNotMatch(line(), /kernels/, "runs before kernels were recorded say nothing");
  assert.match(
    line({ kernels: { kind: "fused", detail: "cxr_kernels-0123abcd.so" } }),
    /; BatchNorm and its activation, and the depthwise convolutions, as the project's fused kernels \(cxr_kernels-0123abcd\.so\)/,
  );
  assert.match(
    line({ kernels: { kind: "standard", detail: "asked for" } }),
    /; BatchNorm as TensorFlow's own kernels \(asked for\)/,
  );
  const mixed = line({
    kernels: { kind: "fused", detail: "cxr_kernels-0123abcd.so" },
    history: history.map((h) => ({ ...h, kernels: h.epoch === 1 ? "standard" : "fused" })),
  });
  assert.match(
    mixed,
    /fused kernels \(cxr_kernels-0123abcd\.so\); epoch 1 ran the standard kernels/,
  );
  assert.match(
    line({ inferenceKernels: { kind: "fused", detail: "cxr_kernels-0123abcd.so" } }),
    /predictions run as one TensorFlow graph \(hard-swish and the depthwise convolutions as the fused kernels; the other convolutions with their bias and ReLU, or hard-swish where oneDNN runs, as one op\)/,
  );
  assert.doesNotMatch(line(), /hard-swish/);
});
