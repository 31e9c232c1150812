/**
 * PyTorch's `torch.save` files, read and written without PyTorch: a state_dict (names → tensors).
 *
 * Two formats (torch/serialization.py):
 * - zip (torch ≥ 1.6, and torchvision's weight files): a zip holding `<archive>/data.pkl`, a pickle
 *   of the state_dict whose tensors are persistent ids pointing at raw little-endian storages
 *   `<archive>/data/<key>`, plus `byteorder` and `version` records.
 * - legacy (before 1.6; `_use_new_zipfile_serialization=False`): a magic-number pickle, the
 *   protocol version, system info, the state_dict pickle, the list of storage keys, then each
 *   storage as an int64 element count followed by its bytes.
 *
 * Zip is read and written with fflate, pickles are read with pickleparser; the only pickle written
 * here is the state_dict itself, with the few opcodes `torch.save` uses for one.
 */
import * as fs from "node:fs";
import zlib from "node:zlib";
import { unzipSync, zipSync } from "fflate";
import { BufferReader, NameRegistry, Parser } from "pickleparser";
import { UserError } from "../errors.ts";

/** Element types of PyTorch storages this reader understands, by storage class. */
const STORAGES: Record<string, { dtype: TorchDtype; bytes: number }> = {
  FloatStorage: { dtype: "float32", bytes: 4 },
  DoubleStorage: { dtype: "float64", bytes: 8 },
  HalfStorage: { dtype: "float16", bytes: 2 },
  BFloat16Storage: { dtype: "bfloat16", bytes: 2 },
  LongStorage: { dtype: "int64", bytes: 8 },
  IntStorage: { dtype: "int32", bytes: 4 },
  ShortStorage: { dtype: "int16", bytes: 2 },
  CharStorage: { dtype: "int8", bytes: 1 },
  ByteStorage: { dtype: "uint8", bytes: 1 },
  BoolStorage: { dtype: "bool", bytes: 1 },
};

export type TorchDtype =
  | "float32"
  | "float64"
  | "float16"
  | "bfloat16"
  | "int64"
  | "int32"
  | "int16"
  | "int8"
  | "uint8"
  | "bool";

/** A tensor from (or for) a state_dict: shape and row-major values. */
export interface TorchTensor {
  dtype: TorchDtype;
  shape: number[];
  /** Row-major values as float64 numbers (exact for float32 and the small ints used here). */
  values: Float32Array | Float64Array | BigInt64Array | Int32Array | Uint8Array;
}

/** A state_dict read from a file. */
export interface TorchStateDict {
  format: "zip" | "legacy";
  /** Entries in the file's order. */
  tensors: Map<string, TorchTensor>;
  /** How the state_dict was found, when it was not the file's whole content (e.g. a key). */
  foundIn?: string;
}

/** A file that is not a PyTorch state_dict we can use; the message says what it is and the fix. */
export class TorchFileError extends UserError {
  override name = "TorchFileError";
}

const HOW_TO_SAVE = "Save the model's weights with `torch.save(model.state_dict(), path)`.";

/** Legacy format's first pickle: PROTO 2, LONG1 of 10 bytes (torch's MAGIC_NUMBER), STOP. */
const LEGACY_MAGIC = Uint8Array.from([
  0x80,
  0x02,
  0x8a,
  0x0a,
  0x6c,
  0xfc,
  0x9c,
  0x46,
  0xf9,
  0x20,
  0x6a,
  0xa8,
  0x50,
  0x19,
  0x2e,
]);

/** A storage as a persistent id names it; its bytes are found later. */
interface StorageRef {
  key: string;
  storageClass: string;
  numel: number;
}

/** A tensor as `_rebuild_tensor_v2` describes it, before its storage's bytes are read. */
class LazyTensor {
  constructor(
    readonly storage: StorageRef,
    readonly offset: number,
    readonly shape: number[],
    readonly stride: number[],
  ) {}
}

/** `collections.OrderedDict`: a Map that also takes `__setstate__` (the `_metadata` attribute). */
class OrderedDict extends Map<unknown, unknown> {
  metadata?: unknown;
  __setstate__(state: unknown) {
    this.metadata = state;
  }
}

/** The pickle globals a state_dict uses; anything else is kept as a named placeholder object. */
function stateDictNames(): NameRegistry {
  const names = new NameRegistry();
  names.register("collections", "OrderedDict", () => new OrderedDict());
  names.register(
    "torch._utils",
    "_rebuild_tensor_v2",
    (storage: StorageRef, offset: number, shape: number[], stride: number[]) =>
      new LazyTensor(storage, offset, shape, stride),
  );
  // Parameters (in whole pickled modules) rebuild to their data tensor.
  names.register("torch._utils", "_rebuild_parameter", (data: unknown) => data);
  for (const storageClass of Object.keys(STORAGES)) {
    names.register("torch", storageClass, Object.assign(() => {}, { storageClass }));
  }
  return names;
}

/** A storage class as the pickle names it: ours (registered) or an unknown placeholder. */
interface StorageType {
  storageClass?: string;
  prototype?: { __name__?: string };
}

function parser(): Parser {
  return new Parser({
    nameResolver: stateDictNames(),
    unpicklingTypeOfDictionary: "Map",
    persistentResolver: {
      resolve: (pid: unknown) => {
        // ('storage', storage_type, key, location, numel[, view_metadata])
        const [kind, type, key, , numel] = pid as [string, StorageType, string, string, number];
        if (kind !== "storage") throw new Error(`unknown persistent id kind ${kind}`);
        const storageClass = type.storageClass ?? type.prototype?.__name__ ?? "unknown";
        return { key: String(key), storageClass, numel: Number(numel) } satisfies StorageRef;
      },
    },
  });
}

/** Read a `torch.save` file holding a state_dict. */
export function readTorchFile(file: string): TorchStateDict {
  let bytes: Uint8Array;
  try {
    bytes = Deno.readFileSync(file);
  } catch (error) {
    throw new TorchFileError(`Cannot read PyTorch file "${file}": ${(error as Error).message}`);
  }
  const isZip = bytes[0] === 0x50 && bytes[1] === 0x4b && bytes[2] === 0x03 && bytes[3] === 0x04;
  const isLegacy = LEGACY_MAGIC.every((b, i) => bytes[i] === b);
  if (!isZip && !isLegacy) {
    throw new TorchFileError(
      `Cannot read "${file}": not a PyTorch file (neither torch.save's zip format nor its legacy ` +
        `format). ${HOW_TO_SAVE}`,
    );
  }
  try {
    return isZip ? readZip(file, bytes) : readLegacy(file, bytes);
  } catch (error) {
    if (error instanceof TorchFileError) throw error;
    throw new TorchFileError(
      `Cannot read PyTorch file "${file}": ${(error as Error).message} (truncated or damaged?)`,
    );
  }
}

/**
 * Each zip entry's CRC-32 from the central directory, against its data: a damaged tensor is found
 * here, not in the model's outputs (fflate decompresses without checking).
 */
function checkZipCrcs(file: string, bytes: Uint8Array, entries: Record<string, Uint8Array>): void {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let end = -1;
  for (let i = bytes.length - 22; i >= Math.max(0, bytes.length - 22 - 65535); i--) {
    if (view.getUint32(i, true) === 0x06054b50) {
      end = i;
      break;
    }
  }
  if (end < 0) throw new TorchFileError(`Cannot read "${file}": its zip directory is missing`);
  let at = view.getUint32(end + 16, true);
  const count = view.getUint16(end + 10, true);
  for (let n = 0; n < count && at + 46 <= bytes.length; n++) {
    if (view.getUint32(at, true) !== 0x02014b50) break; // zip64 layouts: the entries checked so far
    const crc = view.getUint32(at + 16, true);
    const nameLength = view.getUint16(at + 28, true);
    const skip = nameLength + view.getUint16(at + 30, true) + view.getUint16(at + 32, true);
    const name = new TextDecoder().decode(bytes.subarray(at + 46, at + 46 + nameLength));
    const data = entries[name];
    if (data && (zlib.crc32(data) >>> 0) !== crc) {
      throw new TorchFileError(
        `Cannot read "${file}": ${name} is damaged (its CRC-32 does not match the zip's ` +
          "record); the file was changed or cut after it was saved. Save it again.",
      );
    }
    at += 46 + skip;
  }
}

function readZip(file: string, bytes: Uint8Array): TorchStateDict {
  const entries = unzipSync(bytes);
  checkZipCrcs(file, bytes, entries);
  const pkl = Object.keys(entries).find((n) => /^[^/]+\/data\.pkl$/.test(n));
  if (!pkl) throw new TorchFileError(`Cannot read "${file}": a zip without <archive>/data.pkl`);
  const archive = pkl.slice(0, -"data.pkl".length);
  const byteorder = entries[`${archive}byteorder`];
  if (byteorder && new TextDecoder().decode(byteorder).trim() !== "little") {
    throw new TorchFileError(`Cannot read "${file}": big-endian storages are not supported`);
  }
  const root = parser().parse(entries[pkl]);
  const storage = (ref: StorageRef) => {
    const data = entries[`${archive}data/${ref.key}`];
    if (!data) throw new TorchFileError(`Cannot read "${file}": storage ${ref.key} is missing`);
    return data;
  };
  return { format: "zip", ...collect(file, root, storage) };
}

function readLegacy(file: string, bytes: Uint8Array): TorchStateDict {
  const reader = new BufferReader(bytes);
  reader.skip(LEGACY_MAGIC.length); // the magic number, checked by the caller
  const p = parser();
  const protocol = p.read(reader);
  if (protocol !== 1001) {
    throw new TorchFileError(`Cannot read "${file}": legacy protocol ${protocol}, expected 1001`);
  }
  p.read(reader); // system info (byte order, type sizes)
  const root = p.read(reader);
  const keys = p.read(reader) as string[];
  // After the pickles: each storage, in `keys` order, as an int64 element count and its bytes.
  const sizes = new Map<string, number>();
  collectStorages(root, (ref) => sizes.set(ref.key, STORAGES[ref.storageClass]?.bytes ?? 1));
  const data = new Map<string, Uint8Array>();
  let offset = reader.position;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (const key of keys) {
    const count = Number(view.getBigInt64(offset, true));
    const length = count * (sizes.get(String(key)) ?? 1);
    if (offset + 8 + length > bytes.length) throw new Error(`storage ${key} runs past the end`);
    data.set(String(key), bytes.subarray(offset + 8, offset + 8 + length));
    offset += 8 + length;
  }
  const storage = (ref: StorageRef) => {
    const d = data.get(ref.key);
    if (!d) throw new TorchFileError(`Cannot read "${file}": storage ${ref.key} is missing`);
    return d;
  };
  return { format: "legacy", ...collect(file, root, storage) };
}

/** Every storage reference inside a parsed object (for sizes before reading the storages). */
function collectStorages(value: unknown, visit: (ref: StorageRef) => void): void {
  if (value instanceof LazyTensor) visit(value.storage);
  else if (value instanceof Map) { for (const v of value.values()) collectStorages(v, visit); }
}

/** The state_dict in a parsed file: the root, or a training checkpoint's model entry. */
function collect(
  file: string,
  root: unknown,
  storage: (ref: StorageRef) => Uint8Array,
): { tensors: Map<string, TorchTensor>; foundIn?: string } {
  const isStateDict = (v: unknown): v is Map<unknown, unknown> =>
    v instanceof Map && v.size > 0 &&
    [...v.values()].every((t) => t instanceof LazyTensor);
  let dict: Map<unknown, unknown> | undefined;
  let foundIn: string | undefined;
  if (isStateDict(root)) dict = root;
  else if (root instanceof Map) {
    for (const key of ["state_dict", "model_state_dict", "model"]) {
      if (isStateDict(root.get(key))) {
        dict = root.get(key) as Map<unknown, unknown>;
        foundIn = `the "${key}" entry of a checkpoint dict`;
        break;
      }
    }
  }
  if (!dict) throw new TorchFileError(`Cannot use "${file}": ${describe(root)}. ${HOW_TO_SAVE}`);
  const tensors = new Map<string, TorchTensor>();
  for (const [name, lazy] of dict) {
    tensors.set(String(name), materialise(lazy as LazyTensor, storage));
  }
  return { tensors, ...(foundIn ? { foundIn } : {}) };
}

/**
 * Modules whose functions a pickle calls to run code (the classic malicious pickles: os.system,
 * builtins.eval, subprocess.Popen …). A state_dict calls none of them.
 */
const UNSAFE_MODULES = new Set([
  "os",
  "posix",
  "nt",
  "subprocess",
  "builtins",
  "__builtin__",
  "sys",
  "shutil",
  "socket",
  "runpy",
  "importlib",
  "pickle",
  "pty",
  "code",
  "webbrowser",
  "ctypes",
  "commands",
  "platform",
]);

/** What a pickled object that is not a state_dict is, in words. */
function describe(root: unknown): string {
  const proto = (root as { __module__?: string; __name__?: string } | null) ?? {};
  if (proto.__module__ && UNSAFE_MODULES.has(proto.__module__.split(".")[0])) {
    return `it calls ${proto.__module__}.${proto.__name__}, which a state_dict never does: refused ` +
      "as unsafe (nothing in it was run)";
  }
  if (proto.__module__ && proto.__name__) {
    return `it holds a whole pickled ${proto.__module__}.${proto.__name__} object (a model saved ` +
      "with torch.save(model, path)), not a state_dict";
  }
  if (root instanceof Map) {
    const keys = [...root.keys()].map(String);
    if (keys.includes("state") && keys.includes("param_groups")) {
      return "it holds an optimizer's state_dict (keys state, param_groups), not a model's";
    }
    return `it holds a dict whose values are not all tensors (keys: ${keys.slice(0, 8).join(", ")}${
      keys.length > 8 ? ", …" : ""
    })`;
  }
  return `it holds a ${typeof root}, not a state_dict`;
}

/** A tensor's values, gathered from its storage with its offset and strides. */
function materialise(t: LazyTensor, storage: (ref: StorageRef) => Uint8Array): TorchTensor {
  const kind = STORAGES[t.storage.storageClass];
  if (!kind) throw new TorchFileError(`unsupported storage type ${t.storage.storageClass}`);
  const raw = storage(t.storage);
  const copy = new Uint8Array(raw); // a copy: aligned, owned bytes
  const all = typedArray(kind.dtype, copy.buffer);
  const count = t.shape.reduce((a, b) => a * b, 1);
  const out = typedArray(kind.dtype, new ArrayBuffer(count * kind.bytes));
  const contiguous = t.stride.every((s, i) =>
    s === t.shape.slice(i + 1).reduce((a, b) => a * b, 1) || t.shape[i] === 1
  );
  if (contiguous) {
    // deno-lint-ignore no-explicit-any
    (out as any).set((all as any).subarray(t.offset, t.offset + count));
  } else {
    const index = new Array(t.shape.length).fill(0);
    for (let i = 0; i < count; i++) {
      const at = t.offset + index.reduce((s, v, d) => s + v * t.stride[d], 0);
      // deno-lint-ignore no-explicit-any
      (out as any)[i] = (all as any)[at];
      for (let d = t.shape.length - 1; d >= 0; d--) {
        if (++index[d] < t.shape[d]) break;
        index[d] = 0;
      }
    }
  }
  return { dtype: kind.dtype, shape: t.shape, values: out };
}

function typedArray(dtype: TorchDtype, buffer: ArrayBuffer): TorchTensor["values"] {
  switch (dtype) {
    case "float32":
      return new Float32Array(buffer);
    case "float64":
      return new Float64Array(buffer);
    case "int64":
      return new BigInt64Array(buffer);
    case "int32":
      return new Int32Array(buffer);
    default:
      // float16, bfloat16, int16 and 8-bit types: kept as bytes (converted where used).
      return new Uint8Array(buffer);
  }
}

/** float32 values of a tensor (float16/bfloat16/float64 converted). */
export function float32Values(t: TorchTensor): Float32Array {
  if (t.values instanceof Float32Array) return t.values;
  if (t.values instanceof Float64Array) return Float32Array.from(t.values);
  if (t.dtype === "float16" || t.dtype === "bfloat16") {
    const halves = new Uint16Array(t.values.buffer, t.values.byteOffset, t.values.byteLength / 2);
    return Float32Array.from(halves, t.dtype === "bfloat16" ? bfloat16 : float16);
  }
  throw new TorchFileError(`a ${t.dtype} tensor where floating-point weights were expected`);
}

function bfloat16(h: number): number {
  return new Float32Array(new Uint32Array([h << 16]).buffer)[0];
}

function float16(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f, frac = h & 0x3ff;
  if (exp === 0) return sign * 2 ** -14 * (frac / 1024);
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * 2 ** (exp - 15) * (1 + frac / 1024);
}

// ---------------------------------------------------------------------------------------------
// Writing

/**
 * Write `tensors` (float32 or int64) as a state_dict in torch.save's zip format, so that
 * `torch.load(path)` returns an OrderedDict of those tensors (also under `weights_only=True`: only
 * OrderedDict, `_rebuild_tensor_v2` and the storage classes are named).
 */
export function writeTorchStateDict(
  file: string,
  tensors: [string, TorchTensor][],
  opts: { archive?: string } = {},
): Uint8Array {
  const archive = opts.archive ?? "archive";
  const p = new Pickler();
  p.proto(2);
  p.global("collections", "OrderedDict");
  p.emptyTuple();
  p.reduce();
  p.mark();
  const storages: Record<string, Uint8Array> = {};
  tensors.forEach(([name, t], i) => {
    const storageClass = t.dtype === "int64" ? "LongStorage" : "FloatStorage";
    if (t.dtype !== "int64" && t.dtype !== "float32") {
      throw new Error(`writeTorchStateDict: ${name} is ${t.dtype}; float32 or int64 expected`);
    }
    const count = t.shape.reduce((a, b) => a * b, 1);
    const key = String(i);
    storages[`${archive}/data/${key}`] = new Uint8Array(
      t.values.buffer.slice(t.values.byteOffset, t.values.byteOffset + t.values.byteLength),
    );
    p.unicode(name);
    p.global("torch._utils", "_rebuild_tensor_v2");
    p.mark();
    p.mark(); // the persistent id: ('storage', class, key, 'cpu', numel)
    p.unicode("storage");
    p.global("torch", storageClass);
    p.unicode(key);
    p.unicode("cpu");
    p.int(count);
    p.tuple();
    p.binpersid();
    p.int(0); // storage offset
    p.intTuple(t.shape);
    p.intTuple(t.shape.map((_, d) => t.shape.slice(d + 1).reduce((a, b) => a * b, 1)));
    p.bool(false); // requires_grad
    p.global("collections", "OrderedDict"); // backward hooks
    p.emptyTuple();
    p.reduce();
    p.tuple();
    p.reduce();
  });
  p.setitems();
  p.stop();
  const zipped = zipSync({
    [`${archive}/data.pkl`]: p.bytes(),
    [`${archive}/byteorder`]: new TextEncoder().encode("little"),
    ...storages,
    [`${archive}/version`]: new TextEncoder().encode("3\n"),
  }, { level: 0 });
  fs.writeFileSync(file, zipped);
  return zipped;
}

/** The pickle opcodes a state_dict needs (protocol 2). */
class Pickler {
  #out: number[] = [];
  #push(...b: number[]) {
    for (const x of b) this.#out.push(x);
  }
  #u32(n: number) {
    this.#push(n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff);
  }
  proto(v: number) {
    this.#push(0x80, v);
  }
  global(module: string, name: string) {
    this.#push(0x63, ...new TextEncoder().encode(`${module}\n${name}\n`));
  }
  mark() {
    this.#push(0x28);
  }
  tuple() {
    this.#push(0x74);
  }
  emptyTuple() {
    this.#push(0x29);
  }
  reduce() {
    this.#push(0x52);
  }
  binpersid() {
    this.#push(0x51);
  }
  setitems() {
    this.#push(0x75);
  }
  stop() {
    this.#push(0x2e);
  }
  bool(v: boolean) {
    this.#push(v ? 0x88 : 0x89);
  }
  unicode(s: string) {
    const b = new TextEncoder().encode(s);
    this.#push(0x58);
    this.#u32(b.length);
    this.#push(...b);
  }
  int(n: number) {
    if (!Number.isInteger(n) || n < 0 || n > 0x7fffffff) throw new Error(`Pickler: int ${n}`);
    if (n < 256) this.#push(0x4b, n); // BININT1
    else if (n < 65536) this.#push(0x4d, n & 0xff, n >> 8); // BININT2
    else {
      this.#push(0x4a); // BININT
      this.#u32(n);
    }
  }
  intTuple(values: number[]) {
    this.mark();
    for (const v of values) this.int(v);
    this.tuple();
  }
  bytes(): Uint8Array {
    return Uint8Array.from(this.#out);
  }
}
