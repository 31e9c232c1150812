/**
 * TensorFlow's C API through Deno's FFI, for the graph engines (graph_predictor.ts,
 * graph_train.ts): import a GraphDef, add its gradients (TF_AddGradients uses TensorFlow's own C++
 * gradient functions), and run it in a session. tfjs-node's binding exposes eager execution only.
 *
 * The library opened is the very libtensorflow tfjs-node has already loaded (found in
 * /proc/self/maps), so one TensorFlow runtime serves both. Linux only: `graphEnginesAvailable()`
 * says whether this process can use it (engine/select.ts decides what runs instead).
 */
import { tf } from "../backend.ts";

const SYMBOLS = {
  TF_NewStatus: { parameters: [], result: "pointer" },
  TF_DeleteStatus: { parameters: ["pointer"], result: "void" },
  TF_GetCode: { parameters: ["pointer"], result: "i32" },
  TF_Message: { parameters: ["pointer"], result: "pointer" },
  TF_NewGraph: { parameters: [], result: "pointer" },
  TF_DeleteGraph: { parameters: ["pointer"], result: "void" },
  TF_NewBufferFromString: { parameters: ["buffer", "usize"], result: "pointer" },
  TF_DeleteBuffer: { parameters: ["pointer"], result: "void" },
  TF_NewImportGraphDefOptions: { parameters: [], result: "pointer" },
  TF_DeleteImportGraphDefOptions: { parameters: ["pointer"], result: "void" },
  TF_ImportGraphDefOptionsAddInputMapping: {
    // The last parameter is a TF_Output passed by value.
    parameters: ["pointer", "buffer", "i32", { struct: ["pointer", "i32"] }],
    result: "void",
  },
  TF_ImportGraphDefOptionsRemapControlDependency: {
    parameters: ["pointer", "buffer", "pointer"],
    result: "void",
  },
  TF_GraphImportGraphDef: {
    parameters: ["pointer", "pointer", "pointer", "pointer"],
    result: "void",
  },
  TF_GraphOperationByName: { parameters: ["pointer", "buffer"], result: "pointer" },
  TF_AddGradientsWithPrefix: {
    parameters: [
      "pointer",
      "buffer",
      "buffer",
      "i32",
      "buffer",
      "i32",
      "buffer",
      "pointer",
      "buffer",
    ],
    result: "void",
  },
  TF_NewBuffer: { parameters: [], result: "pointer" },
  TF_NewSessionOptions: { parameters: [], result: "pointer" },
  TF_SetConfig: { parameters: ["pointer", "buffer", "usize", "pointer"], result: "void" },
  TF_DeleteSessionOptions: { parameters: ["pointer"], result: "void" },
  TF_NewSession: { parameters: ["pointer", "pointer", "pointer"], result: "pointer" },
  TF_CloseSession: { parameters: ["pointer", "pointer"], result: "void" },
  TF_DeleteSession: { parameters: ["pointer", "pointer"], result: "void" },
  TF_SessionRun: {
    parameters: [
      "pointer", // session
      "pointer", // run options
      "buffer", // inputs: TF_Output[]
      "buffer", // input values: TF_Tensor*[]
      "i32",
      "buffer", // outputs: TF_Output[]
      "buffer", // output values: TF_Tensor*[] (filled in)
      "i32",
      "buffer", // targets: TF_Operation*[]
      "i32",
      "pointer", // run metadata
      "pointer", // status
    ],
    result: "void",
  },
  TF_AllocateTensor: { parameters: ["i32", "buffer", "i32", "usize"], result: "pointer" },
  TF_DeleteTensor: { parameters: ["pointer"], result: "void" },
  TF_TensorData: { parameters: ["pointer"], result: "pointer" },
  TF_TensorByteSize: { parameters: ["pointer"], result: "usize" },
  TF_NumDims: { parameters: ["pointer"], result: "i32" },
  TF_Dim: { parameters: ["pointer", "i32"], result: "i64" },
  TF_LoadLibrary: { parameters: ["buffer", "pointer"], result: "pointer" },
  TF_GraphToGraphDef: { parameters: ["pointer", "pointer", "pointer"], result: "void" },
} as const;

type Lib = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

// TensorFlow's DataType enum (tensorflow/core/framework/types.proto).
export const DT_FLOAT = 1;
export const DT_INT32 = 3;
export const DT_RESOURCE = 20;

const encoder = new TextEncoder();
const cString = (s: string) => encoder.encode(s + "\0");

/** The path of the libtensorflow this process has loaded (tfjs-node's). */
export function loadedLibrary(): string {
  const maps = Deno.readTextFileSync("/proc/self/maps");
  const found = maps.split("\n").map((l) => l.split(/\s+/).at(-1) ?? "").find((p) =>
    /\/libtensorflow(_cc)?\.so(\.\d+)*$/.test(p)
  );
  if (!found) throw new Error("libtensorflow is not loaded in this process (native backend off?)");
  return found;
}

let opened: TensorFlowC | undefined;

/**
 * Why the graph engines cannot run in this process, or undefined when they can: they need the
 * native backend (tfjs-node's libtensorflow) and Linux (to find that library and open it).
 */
export function graphEnginesUnavailable(): string | undefined {
  if (tf.getBackend() !== "tensorflow") {
    return "the native TensorFlow backend is not live";
  }
  if (Deno.build.os !== "linux") {
    return `TensorFlow's C API is opened on Linux only (${Deno.build.os})`;
  }
  return undefined;
}

/** Open the C API (once per process). Throws when {@link graphEnginesUnavailable} says why. */
export function openTensorFlow(): TensorFlowC {
  if (opened) return opened;
  const why = graphEnginesUnavailable();
  if (why) throw new Error(`Cannot open TensorFlow's C API: ${why}`);
  opened = new TensorFlowC(Deno.dlopen(loadedLibrary(), SYMBOLS).symbols);
  return opened;
}

/** A graph output: operation and output index (C's TF_Output, 16 bytes). */
export interface Output {
  op: Deno.PointerValue;
  index: number;
}

function outputsBuffer(outputs: Output[]): Uint8Array {
  const buf = new Uint8Array(16 * Math.max(outputs.length, 1));
  const view = new DataView(buf.buffer);
  outputs.forEach((o, i) => {
    view.setBigUint64(16 * i, BigInt(Deno.UnsafePointer.value(o.op)), true);
    view.setInt32(16 * i + 8, o.index, true);
  });
  return buf;
}

function pointersBuffer(pointers: Deno.PointerValue[]): Uint8Array {
  const buf = new Uint8Array(8 * Math.max(pointers.length, 1));
  const view = new DataView(buf.buffer);
  pointers.forEach((p, i) => view.setBigUint64(8 * i, BigInt(Deno.UnsafePointer.value(p)), true));
  return buf;
}

function readPointers(buf: Uint8Array, n: number): Deno.PointerValue[] {
  const view = new DataView(buf.buffer);
  return Array.from(
    { length: n },
    (_, i) => Deno.UnsafePointer.create(view.getBigUint64(8 * i, true)),
  );
}

/** A copy of a TF_Buffer's bytes (struct TF_Buffer { const void* data; size_t length; … }). */
function bufferBytes(buffer: Deno.PointerObject): Uint8Array {
  const view = new Deno.UnsafePointerView(buffer);
  const data = Deno.UnsafePointer.create(view.getBigUint64(0));
  const length = Number(view.getBigUint64(8));
  if (!data || length === 0) return new Uint8Array(0);
  return new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(data, length)).slice();
}

/** A host tensor to feed: float32 or int32 values and a shape. */
export interface HostTensor {
  values: Float32Array | Int32Array;
  shape: number[];
}

/** Thin wrappers that turn TF_Status failures into exceptions. */
export class TensorFlowC {
  constructor(readonly lib: Lib) {}

  private check<T>(what: string, fn: (status: Deno.PointerValue) => T): T {
    const status = this.lib.TF_NewStatus();
    try {
      const result = fn(status);
      if (this.lib.TF_GetCode(status) !== 0) {
        const message = Deno.UnsafePointerView.getCString(this.lib.TF_Message(status)!);
        throw new Error(`${what}: ${message}`);
      }
      return result;
    } finally {
      this.lib.TF_DeleteStatus(status);
    }
  }

  newGraph(): Deno.PointerValue {
    return this.lib.TF_NewGraph();
  }

  deleteGraph(graph: Deno.PointerValue) {
    this.lib.TF_DeleteGraph(graph);
  }

  /**
   * Import a serialised GraphDef into `graph`. `inputMap` maps a node:output of the GraphDef to
   * an output already in the graph (how optimizer nodes reach the gradients), and "^node" (a
   * control dependency in the GraphDef) to a control dependency on the output's operation.
   */
  importGraphDef(graph: Deno.PointerValue, bytes: Uint8Array, inputMap: [string, Output][] = []) {
    const buffer = this.lib.TF_NewBufferFromString(bytes, BigInt(bytes.length));
    const options = this.lib.TF_NewImportGraphDefOptions();
    try {
      for (const [name, output] of inputMap) {
        if (name.startsWith("^")) {
          // "^node": the GraphDef's control dependency on `node` becomes one on output.op.
          this.lib.TF_ImportGraphDefOptionsRemapControlDependency(
            options,
            cString(name.slice(1)),
            output.op,
          );
          continue;
        }
        const [node, index] = name.split(":");
        this.lib.TF_ImportGraphDefOptionsAddInputMapping(
          options,
          cString(node),
          Number(index ?? 0),
          outputsBuffer([output]),
        );
      }
      this.check(
        "import GraphDef",
        (s) => this.lib.TF_GraphImportGraphDef(graph, buffer, options, s),
      );
    } finally {
      this.lib.TF_DeleteImportGraphDefOptions(options);
      this.lib.TF_DeleteBuffer(buffer);
    }
  }

  operation(graph: Deno.PointerValue, name: string): Deno.PointerValue {
    const op = this.lib.TF_GraphOperationByName(graph, cString(name));
    if (!op) throw new Error(`no operation ${name} in the graph`);
    return op;
  }

  output(graph: Deno.PointerValue, name: string): Output {
    const [node, index] = name.split(":");
    return { op: this.operation(graph, node), index: Number(index ?? 0) };
  }

  /** d(sum of ys)/d(xs), added to the graph under `prefix`; returns one output per x. */
  addGradients(
    graph: Deno.PointerValue,
    prefix: string,
    ys: Output[],
    xs: Output[],
    dys?: Output[],
  ): Output[] {
    if (dys && dys.length !== ys.length) throw new Error("addGradients: one dy per y");
    const dy = new Uint8Array(16 * xs.length);
    this.check("add gradients", (s) =>
      this.lib.TF_AddGradientsWithPrefix(
        graph,
        cString(prefix),
        outputsBuffer(ys),
        ys.length,
        outputsBuffer(xs),
        xs.length,
        dys ? outputsBuffer(dys) : null,
        s,
        dy,
      ));
    const view = new DataView(dy.buffer);
    return xs.map((_, i) => ({
      op: Deno.UnsafePointer.create(view.getBigUint64(16 * i, true)),
      index: view.getInt32(16 * i + 8, true),
    }));
  }

  /** The graph as a serialised GraphDef (for inspection: which node reads which tensor). */
  graphDef(graph: Deno.PointerValue): Uint8Array {
    const buffer = this.lib.TF_NewBuffer();
    try {
      this.check("graph to GraphDef", (s) => this.lib.TF_GraphToGraphDef(graph, buffer, s));
      return bufferBytes(buffer!);
    } finally {
      this.lib.TF_DeleteBuffer(buffer);
    }
  }

  /**
   * Load a library of ops and kernels into this process's TensorFlow (TF_LoadLibrary: the ops it
   * registers become usable in every graph). Throws with TensorFlow's message when it fails.
   */
  loadLibrary(file: string): void {
    // The handle is kept for the life of the process: TensorFlow cannot unregister ops.
    this.check(`load ${file}`, (s) => this.lib.TF_LoadLibrary(cString(file), s));
  }

  /** A session on `graph`, configured by a serialised ConfigProto (session_config.ts) if given. */
  newSession(graph: Deno.PointerValue, config?: Uint8Array): Deno.PointerValue {
    const options = this.lib.TF_NewSessionOptions();
    try {
      if (config?.length) {
        this.check(
          "session config",
          (s) => this.lib.TF_SetConfig(options, config, BigInt(config.length), s),
        );
      }
      return this.check("new session", (s) => this.lib.TF_NewSession(graph, options, s));
    } finally {
      this.lib.TF_DeleteSessionOptions(options);
    }
  }

  deleteSession(session: Deno.PointerValue) {
    this.check("close session", (s) => this.lib.TF_CloseSession(session, s));
    this.check("delete session", (s) => this.lib.TF_DeleteSession(session, s));
  }

  /** A TF_Tensor holding a copy of `t`; the caller deletes it (run() does for its feeds). */
  tensor(t: HostTensor): Deno.PointerValue {
    const dims = new BigInt64Array(t.shape.map(BigInt));
    const bytes = t.values.byteLength;
    const dtype = t.values instanceof Float32Array ? DT_FLOAT : DT_INT32;
    const tensor = this.lib.TF_AllocateTensor(
      dtype,
      new Uint8Array(dims.buffer),
      t.shape.length,
      BigInt(bytes),
    );
    if (!tensor) throw new Error("TF_AllocateTensor failed");
    const data = this.lib.TF_TensorData(tensor)!;
    new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(data, bytes)).set(
      new Uint8Array(t.values.buffer, t.values.byteOffset, bytes),
    );
    return tensor;
  }

  /** Copy a float TF_Tensor out and delete it. */
  takeFloats(tensor: Deno.PointerValue): HostTensor {
    try {
      const n = this.lib.TF_NumDims(tensor);
      const shape = Array.from({ length: n }, (_, i) => Number(this.lib.TF_Dim(tensor, i)));
      const bytes = Number(this.lib.TF_TensorByteSize(tensor));
      const values = new Float32Array(bytes / 4);
      if (bytes > 0) {
        const data = this.lib.TF_TensorData(tensor)!;
        new Uint8Array(values.buffer).set(
          new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(data, bytes)),
        );
      }
      return { values, shape };
    } finally {
      this.lib.TF_DeleteTensor(tensor);
    }
  }

  /**
   * Run `session`: feed `feeds`, fetch `fetches` (copied out as floats), run `targets` for their
   * effects (variable updates).
   */
  run(
    session: Deno.PointerValue,
    feeds: [Output, HostTensor][],
    fetches: Output[],
    targets: Deno.PointerValue[] = [],
    trace?: { runOptions: Uint8Array; metadata: (bytes: Uint8Array) => void },
  ): HostTensor[] {
    const inputTensors = feeds.map(([, t]) => this.tensor(t));
    const outputValues = new Uint8Array(8 * Math.max(fetches.length, 1));
    const runOptions = trace
      ? this.lib.TF_NewBufferFromString(trace.runOptions, BigInt(trace.runOptions.length))
      : null;
    const metadata = trace ? this.lib.TF_NewBuffer() : null;
    try {
      this.check("session run", (s) =>
        this.lib.TF_SessionRun(
          session,
          runOptions,
          outputsBuffer(feeds.map(([o]) => o)),
          pointersBuffer(inputTensors),
          feeds.length,
          outputsBuffer(fetches),
          outputValues,
          fetches.length,
          pointersBuffer(targets),
          targets.length,
          metadata,
          s,
        ));
      if (trace && metadata) trace.metadata(bufferBytes(metadata));
    } finally {
      inputTensors.forEach((t) => this.lib.TF_DeleteTensor(t));
      if (runOptions) this.lib.TF_DeleteBuffer(runOptions);
      if (metadata) this.lib.TF_DeleteBuffer(metadata);
    }
    return readPointers(outputValues, fetches.length).map((t) => this.takeFloats(t));
  }
}

let live = 0;

/** How many graph sessions are open in this process (tests check that none leak). */
export function liveSessions(): number {
  return live;
}

/**
 * A TensorFlow graph and, once started, a session on it. `close()` frees both; call it on every
 * path (builders close it themselves when a step after creation throws).
 */
export class GraphSession {
  private readonly c: TensorFlowC;
  private readonly graph: Deno.PointerValue;
  #session: Deno.PointerValue = null;
  #closed = false;

  constructor() {
    this.c = openTensorFlow();
    this.graph = this.c.newGraph();
    live++;
  }

  /** The graph, while it exists (every use of it goes through here). */
  #live(): Deno.PointerValue {
    if (this.#closed) throw new Error("GraphSession: closed");
    return this.graph;
  }

  /** Import GraphDef bytes (see TensorFlowC.importGraphDef for `inputMap`). */
  import(bytes: Uint8Array, inputMap: [string, Output][] = []): void {
    this.c.importGraphDef(this.#live(), bytes, inputMap);
  }

  output(name: string): Output {
    return this.c.output(this.#live(), name);
  }

  operation(name: string): Deno.PointerValue {
    return this.c.operation(this.#live(), name);
  }

  /**
   * d(sum of ys)/d(xs), added to the graph (see TensorFlowC.addGradients); with `dys`, the
   * gradients flowing into the ys (the chain rule's upstream term) instead of ones.
   */
  addGradients(prefix: string, ys: Output[], xs: Output[], dys?: Output[]): Output[] {
    return this.c.addGradients(this.#live(), prefix, ys, xs, dys);
  }

  /** The graph as a serialised GraphDef. */
  graphDef(): Uint8Array {
    return this.c.graphDef(this.#live());
  }

  /** Start the session (after the last import), configured by a ConfigProto when given. */
  start(config?: Uint8Array): void {
    if (this.#session) throw new Error("GraphSession: already started");
    this.#session = this.c.newSession(this.#live(), config);
  }

  /** Feed, fetch (copied out as floats) and run targets; see TensorFlowC.run. */
  run(
    feeds: [Output, HostTensor][],
    fetches: Output[],
    targets: Deno.PointerValue[] = [],
  ): HostTensor[] {
    if (this.#closed || !this.#session) throw new Error("GraphSession: not running");
    return this.c.run(this.#session, feeds, fetches, targets);
  }

  /**
   * As {@link run}, with TensorFlow's tracing on: also returns the serialised RunMetadata (per-op
   * step stats; profile.ts reads them). `runOptions` is a serialised RunOptions.
   */
  runTraced(
    feeds: [Output, HostTensor][],
    fetches: Output[],
    targets: Deno.PointerValue[],
    runOptions: Uint8Array,
  ): { outputs: HostTensor[]; metadata: Uint8Array } {
    if (this.#closed || !this.#session) throw new Error("GraphSession: not running");
    let metadata: Uint8Array = new Uint8Array(0);
    const outputs = this.c.run(this.#session, feeds, fetches, targets, {
      runOptions,
      metadata: (bytes) => metadata = bytes,
    });
    return { outputs, metadata };
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    live--;
    try {
      if (this.#session) this.c.deleteSession(this.#session);
    } finally {
      this.c.deleteGraph(this.graph);
    }
  }
}
