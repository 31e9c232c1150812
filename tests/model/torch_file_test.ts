import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { Buffer } from "node:buffer";
import { unzipSync, zipSync } from "fflate";
import {
  readTorchFile,
  TorchFileError,
  type TorchTensor,
  writeTorchStateDict,
} from "../../lib/mod.ts";
import { freshDir } from "../_temp.ts";

const TORCH_PARITY = Deno.env.get("COVID_CXR_TORCH_PARITY");

/** A pickle (protocol 2) from opcodes given as text and bytes. */
function pickle(...parts: (string | number[])[]): Uint8Array {
  const bytes: number[] = [0x80, 0x02];
  for (const p of parts) bytes.push(...(typeof p === "string" ? new TextEncoder().encode(p) : p));
  bytes.push(0x2e); // STOP
  return Uint8Array.from(bytes);
}

/** A zip in torch.save's layout holding `pkl` as data.pkl. */
function torchZip(file: string, pkl: Uint8Array): string {
  fs.writeFileSync(
    file,
    zipSync({ "m/data.pkl": pkl, "m/version": new TextEncoder().encode("3\n") }),
  );
  return file;
}

Deno.test({
  name:
    "pytorch: reads torch.save's zip format and legacy format (the fixture's files): every tensor, counters included",
  ignore: !TORCH_PARITY,
  fn: () => {
    const zip = readTorchFile(path.join(TORCH_PARITY!, "mobilenet_v3_large_random.pth"));
    const legacy = readTorchFile(
      path.join(TORCH_PARITY!, "mobilenet_v3_large_random_3class_legacy_format.pt"),
    );
    const fixture = JSON.parse(fs.readFileSync(path.join(TORCH_PARITY!, "fixture.json"), "utf8"));
    assert.equal(zip.format, "zip");
    assert.equal(legacy.format, "legacy");
    // Names, shapes and dtypes in the state_dict's order, as torch wrote them.
    assert.deepEqual(
      [...zip.tensors].map(([n, t]) => ({ name: n, shape: t.shape, dtype: t.dtype })),
      fixture.state_dict,
    );
    assert.equal(zip.tensors.get("features.0.1.num_batches_tracked")!.dtype, "int64");
    // The same backbone in both files; only the classifier differs (1000 vs 3 classes).
    const differ = [...legacy.tensors.keys()].filter((n) => {
      const a = zip.tensors.get(n)!.values, b = legacy.tensors.get(n)!.values;
      return a.length !== b.length || a.some((v, i) => v !== b[i]);
    });
    assert.deepEqual(differ, ["classifier.3.weight", "classifier.3.bias"]);
    assert.deepEqual(legacy.tensors.get("classifier.3.weight")!.shape, [3, 1280]);
  },
});

Deno.test("pytorch: a whole pickled model, an optimizer's state, a non-PyTorch file and a cut file each get one message saying what they are", () => {
  const dir = freshDir("torch-file");
  const module = torchZip(
    path.join(dir, "module.pt"),
    pickle("ctorchvision.models.mobilenetv3\nMobileNetV3\n", [0x29, 0x81, 0x7d, 0x62]),
  );
  assert.throws(
    () => readTorchFile(module),
    (e: Error) =>
      e instanceof TorchFileError &&
      /whole pickled torchvision\.models\.mobilenetv3\.MobileNetV3 object/.test(e.message) &&
      /torch\.save\(model\.state_dict\(\), path\)/.test(e.message),
  );
  // {"state": {}, "param_groups": []}: an optimizer's state_dict.
  const optimizer = torchZip(
    path.join(dir, "optimizer.pt"),
    pickle([0x7d, 0x28, 0x58, 5, 0, 0, 0], "state", [0x7d, 0x58, 12, 0, 0, 0], "param_groups", [
      0x5d,
      0x75,
    ]),
  );
  assert.throws(
    () => readTorchFile(optimizer),
    /an optimizer's state_dict \(keys state, param_groups\)/,
  );
  const text = path.join(dir, "notes.pt");
  fs.writeFileSync(text, "not a model");
  assert.throws(
    () => readTorchFile(text),
    /not a PyTorch file .*torch\.save\(model\.state_dict\(\), path\)/,
  );
  const tensors: [string, TorchTensor][] = [["w", {
    dtype: "float32",
    shape: [2, 2],
    values: Float32Array.of(1, 2, 3, 4),
  }]];
  const good = path.join(dir, "good.pt");
  writeTorchStateDict(good, tensors);
  const cut = path.join(dir, "cut.pt");
  fs.writeFileSync(cut, fs.readFileSync(good).subarray(0, 100));
  assert.throws(
    () => readTorchFile(cut),
    /Cannot read PyTorch file .*cut\.pt.*truncated or damaged/,
  );
});

Deno.test("pytorch: a written state_dict reads back identical, in torch.save's zip layout with only the pickle globals torch.load(weights_only=True) allows", () => {
  const dir = freshDir("torch-write");
  const file = path.join(dir, "model.pt");
  const tensors: [string, TorchTensor][] = [
    ["a.weight", {
      dtype: "float32",
      shape: [2, 3, 1, 1],
      values: Float32Array.of(1, -2, 3.5, 4, 5, 6e-8),
    }],
    ["a.bias", { dtype: "float32", shape: [2], values: Float32Array.of(0.25, -0.5) }],
    ["bn.num_batches_tracked", { dtype: "int64", shape: [], values: BigInt64Array.of(7n) }],
  ];
  writeTorchStateDict(file, tensors, { archive: "model" });
  const back = readTorchFile(file);
  assert.equal(back.format, "zip");
  assert.deepEqual([...back.tensors.keys()], tensors.map(([n]) => n));
  for (const [name, t] of tensors) {
    const b = back.tensors.get(name)!;
    const list = (v: TorchTensor["values"]) => Array.from(v as ArrayLike<number | bigint>);
    assert.deepEqual([b.dtype, b.shape, list(b.values)], [t.dtype, t.shape, list(t.values)]);
  }
  const entries = unzipSync(fs.readFileSync(file));
  assert.deepEqual(Object.keys(entries).sort(), [
    "model/byteorder",
    "model/data.pkl",
    "model/data/0",
    "model/data/1",
    "model/data/2",
    "model/version",
  ]);
  assert.equal(new TextDecoder().decode(entries["model/byteorder"]), "little");
  // Each storage holds the raw little-endian values (an int64 7 is 8 bytes).
  assert.deepEqual(Array.from(entries["model/data/2"]), [7, 0, 0, 0, 0, 0, 0, 0]);
  // Python's own pickle tools read the pickle: the globals it names are exactly the ones
  // torch.load's weights_only unpickler allows for a state_dict.
  const pkl = path.join(dir, "data.pkl");
  fs.writeFileSync(pkl, entries["model/data.pkl"]);
  const py = new Deno.Command("python3", {
    args: [
      "-c",
      "import pickletools, sys, json\n" +
      "ops = list(pickletools.genops(open(sys.argv[1], 'rb').read()))\n" +
      "print(json.dumps(sorted({a.replace(' ', '.') for o, a, p in ops if o.name == 'GLOBAL'})))",
      pkl,
    ],
    stdout: "piped",
  }).outputSync();
  assert.ok(py.success, "python3 read the pickle");
  assert.deepEqual(JSON.parse(new TextDecoder().decode(py.stdout)), [
    "collections.OrderedDict",
    "torch.FloatStorage",
    "torch.LongStorage",
    "torch._utils._rebuild_tensor_v2",
  ]);
});

Deno.test("reliability: a PyTorch zip whose tensor bytes no longer match their CRC-32 is refused, naming the damaged entry", () => {
  const file = path.join(freshDir("crc"), "model.pt");
  const values = Float32Array.from({ length: 64 }, (_, i) => i + 0.5);
  writeTorchStateDict(file, [["w", { dtype: "float32", shape: [64], values }]]);
  assert.equal(readTorchFile(file).tensors.get("w")!.values[3], 3.5, "intact: read");
  const bytes = fs.readFileSync(file);
  // Stored uncompressed: find the tensor's bytes and change one value.
  const needle = new Uint8Array(values.buffer).subarray(12, 20);
  const at = bytes.indexOf(Buffer.from(needle));
  assert.ok(at > 0);
  bytes[at + 1] ^= 0xff;
  fs.writeFileSync(file, bytes);
  assert.throws(
    () => readTorchFile(file),
    (e: Error) =>
      e instanceof TorchFileError &&
      /data\/0 is damaged \(its CRC-32 does not match/.test(e.message),
  );
});

Deno.test("reliability: a pickle that calls posix.system or builtins.eval is refused as unsafe, naming the call, and is never run", () => {
  const dir = freshDir("unsafe-pickle");
  const marker = path.join(dir, "ran");
  for (
    const [module, name] of [["posix", "system"], ["builtins", "eval"], ["subprocess", "Popen"]]
  ) {
    // c<module>\n<name>\n (X <len> <command>) tuple1 R: call module.name(command).
    const command = `touch ${marker}`;
    const bytes = new TextEncoder().encode(command);
    const file = torchZip(
      path.join(dir, `${name}.pt`),
      pickle(`c${module}\n${name}\n`, [0x58, bytes.length, 0, 0, 0, ...bytes, 0x85, 0x52]),
    );
    assert.throws(
      () => readTorchFile(file),
      (e: Error) =>
        e instanceof TorchFileError &&
        e.message.includes(
          `it calls ${module}.${name}, which a state_dict never does: refused as unsafe`,
        ),
      `${module}.${name}`,
    );
  }
  assert.ok(!fs.existsSync(marker), "nothing was run");
});
