/**
 * Make sure what a notebook cell displayed has reached the notebook before the cell ends.
 *
 * Why this exists (the Deno kernel 2.9, `cli/js/jupyter_kernel.js`, and a reproduction in
 * `tests/notebooks/iopub_order.py`): user code runs on a REPL thread, and `Deno.jupyter.display`
 * (like `console.log`) only puts the message into a queue to the kernel's main thread, where a
 * drainer signs and publishes the queue one message at a time on the iopub channel. When the cell
 * returns, the kernel sends `execute_reply` and the `idle` status directly, without waiting for
 * that queue to empty. So a display can be published *after* the cell's `idle`; a client stops
 * collecting a cell's outputs at `idle` (nbclient/nbconvert always, JupyterLab's output area
 * too), and the figure is lost. Large outputs and a busy CPU make the drainer lag further behind.
 *
 * The fix here: after displaying, send a marker message into the same queue and wait until it
 * comes back on the kernel's iopub channel, read through a SUB connection of our own (ZMTP 3.0,
 * the NULL mechanism the kernel speaks). The queue is first in, first out and drained in order,
 * so once the marker is published, so is everything the cell sent before it. The marker is an
 * `update_display_data` for a display id nobody created, which clients ignore.
 */

interface JupyterBroadcast {
  broadcast(
    msgType: string,
    content: Record<string, unknown>,
    extra?: { metadata?: Record<string, unknown>; buffers?: Uint8Array[] },
  ): Promise<void>;
}

function jupyterApi(): JupyterBroadcast | undefined {
  try {
    return (Deno as unknown as { jupyter?: JupyterBroadcast }).jupyter;
  } catch {
    return undefined; // outside the kernel, the getter throws
  }
}

/** Where the kernel publishes iopub: from the connection file the kernel was started with. */
export interface IopubAddress {
  hostname: string;
  port: number;
}

/** The `--conn FILE` argument of a command line (as /proc/PID/cmdline gives it, NUL-separated). */
export function connectionFileOf(commandLine: string[]): string | undefined {
  const at = commandLine.indexOf("--conn");
  if (at >= 0 && commandLine[at + 1]) return commandLine[at + 1];
  const joined = commandLine.find((a) => a.startsWith("--conn="));
  return joined?.slice("--conn=".length);
}

/** The iopub address in a Jupyter connection file's JSON; undefined for a non-TCP transport. */
export function iopubAddressOf(connection: {
  transport?: string;
  ip?: string;
  iopub_port?: number;
}): IopubAddress | undefined {
  if ((connection.transport ?? "tcp") !== "tcp" || !connection.iopub_port) return undefined;
  const ip = connection.ip && connection.ip !== "0.0.0.0" ? connection.ip : "127.0.0.1";
  return { hostname: ip, port: connection.iopub_port };
}

function ownCommandLine(): string[] {
  try {
    return Deno.readTextFileSync("/proc/self/cmdline").split("\0").filter((a) => a !== "");
  } catch {
    // No /proc (macOS): ask ps. Arguments with spaces are rare for a connection file's path.
    try {
      const out = new Deno.Command("ps", { args: ["-o", "args=", "-p", String(Deno.pid)] })
        .outputSync();
      return new TextDecoder().decode(out.stdout).trim().split(/\s+/);
    } catch {
      return [];
    }
  }
}

let cachedAddress: IopubAddress | null | undefined;

function kernelIopub(): IopubAddress | null {
  if (cachedAddress !== undefined) return cachedAddress;
  const file = connectionFileOf(ownCommandLine());
  try {
    cachedAddress = file ? iopubAddressOf(JSON.parse(Deno.readTextFileSync(file))) ?? null : null;
  } catch {
    cachedAddress = null;
  }
  return cachedAddress;
}

// --- a minimal ZMTP 3.0 SUB socket (NULL mechanism) ---------------------------------------------

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const DELIMITER = "<IDS|MSG>";

/** The 64-byte ZMTP 3.0 greeting: signature, version 3.0, mechanism NULL, not as server. */
function greeting(): Uint8Array {
  const g = new Uint8Array(64);
  g[0] = 0xff;
  g[9] = 0x7f;
  g[10] = 3;
  g.set(encoder.encode("NULL"), 12);
  return g;
}

/** A short or long ZMTP frame. */
export function zmtpFrame(body: Uint8Array, opts: { more?: boolean; command?: boolean } = {}) {
  const long = body.length > 255;
  const flags = (opts.more ? 1 : 0) | (long ? 2 : 0) | (opts.command ? 4 : 0);
  const head = long ? new Uint8Array(9) : new Uint8Array(2);
  head[0] = flags;
  if (long) new DataView(head.buffer).setBigUint64(1, BigInt(body.length));
  else head[1] = body.length;
  const frame = new Uint8Array(head.length + body.length);
  frame.set(head);
  frame.set(body, head.length);
  return frame;
}

/** The READY command announcing a SUB socket. */
function readyCommand(): Uint8Array {
  const name = encoder.encode("READY");
  const key = encoder.encode("Socket-Type");
  const value = encoder.encode("SUB");
  const body = new Uint8Array(1 + name.length + 1 + key.length + 4 + value.length);
  let o = 0;
  body[o++] = name.length;
  body.set(name, o);
  o += name.length;
  body[o++] = key.length;
  body.set(key, o);
  o += key.length;
  new DataView(body.buffer).setUint32(o, value.length);
  o += 4;
  body.set(value, o);
  return zmtpFrame(body, { command: true });
}

/** Reads exact byte counts from a connection, through a buffer (figures are megabytes). */
class Reader {
  #buffer = new Uint8Array(0);
  constructor(private conn: Deno.Conn) {}

  async exactly(n: number): Promise<Uint8Array> {
    while (this.#buffer.length < n) {
      const chunk = new Uint8Array(Math.max(65536, n - this.#buffer.length));
      const got = await this.conn.read(chunk);
      if (got === null) throw new Error("the kernel closed its iopub connection");
      const joined = new Uint8Array(this.#buffer.length + got);
      joined.set(this.#buffer);
      joined.set(chunk.subarray(0, got), this.#buffer.length);
      this.#buffer = joined;
    }
    const out = this.#buffer.slice(0, n);
    this.#buffer = this.#buffer.subarray(n);
    return out;
  }

  async frame(): Promise<{ body: Uint8Array; more: boolean; command: boolean }> {
    const [flags] = await this.exactly(1);
    const size = flags & 2
      ? Number(new DataView((await this.exactly(8)).buffer).getBigUint64(0))
      : (await this.exactly(1))[0];
    return { body: await this.exactly(size), more: (flags & 1) !== 0, command: (flags & 4) !== 0 };
  }

  /** The next message's frames (commands skipped). */
  async message(): Promise<Uint8Array[]> {
    const frames: Uint8Array[] = [];
    while (true) {
      const f = await this.frame();
      if (f.command) continue;
      frames.push(f.body);
      if (!f.more) return frames;
    }
  }
}

/** The Jupyter header and content of an iopub message's frames (content only when asked). */
export function jupyterMessageOf(
  frames: Uint8Array[],
  wantContent: (msgType: string) => boolean,
): { msgType: string; content?: Record<string, unknown> } | undefined {
  const at = frames.findIndex((f) =>
    f.length === DELIMITER.length && decoder.decode(f) === DELIMITER
  );
  if (at < 0 || frames.length < at + 6) return undefined;
  const header = JSON.parse(decoder.decode(frames[at + 2]));
  const msgType = String(header.msg_type);
  return wantContent(msgType)
    ? { msgType, content: JSON.parse(decoder.decode(frames[at + 5])) }
    : { msgType };
}

// --- the barrier ---------------------------------------------------------------------------------

let warned = false;
let counter = 0;

/** How long to wait for the marker before the cell fails (a lagging kernel on a loaded machine). */
const FLUSH_TIMEOUT_MS = 120_000;
/** A marker sent before our subscription was active never comes back: send another this often. */
const RESEND_MS = 1_000;

/**
 * Wait until every output this cell has sent so far (displays, printed text) is published by the
 * kernel, so it reaches the notebook before the cell ends. Outside the Deno kernel it does
 * nothing. Throws when the kernel does not publish within two minutes: a cell that fails says so,
 * where a lost figure would not.
 */
export async function flushNotebookOutput(): Promise<void> {
  const api = jupyterApi();
  if (!api) return;
  const address = kernelIopub();
  if (!address) {
    if (!warned) {
      warned = true;
      console.error(
        "Cannot find the Deno kernel's iopub port (no --conn connection file in its command " +
          "line): outputs at the end of a cell may be lost; run the cell again if one is missing.",
      );
    }
    return;
  }
  const conn = await Deno.connect({ hostname: address.hostname, port: address.port });
  const ids = new Set<string>();
  let timer: ReturnType<typeof setTimeout> | undefined;
  let resend: ReturnType<typeof setInterval> | undefined;
  let seen: Promise<void> | undefined;
  try {
    await writeAll(conn, greeting());
    const reader = new Reader(conn);
    await reader.exactly(64); // the kernel's greeting
    await writeAll(conn, readyCommand());
    await reader.frame(); // the kernel's READY
    await writeAll(conn, zmtpFrame(new Uint8Array([1]))); // subscribe to everything
    // Deno's broadcast is synchronous though typed as a promise; either way, errors surface here.
    const sendMarker = async () => {
      const id = `covid-cxr-flush-${Deno.pid}-${counter++}`;
      ids.add(id);
      await api.broadcast("update_display_data", {
        data: { "text/plain": "" },
        metadata: {},
        transient: { display_id: id },
      });
    };
    await sendMarker();
    resend = setInterval(() => sendMarker().catch(() => {}), RESEND_MS);
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new Error(
              `The Deno kernel did not publish this cell's output within ${
                FLUSH_TIMEOUT_MS / 1000
              } s; it may be lost: run the cell again.`,
            ),
          ),
        FLUSH_TIMEOUT_MS,
      );
    });
    seen = (async () => {
      while (true) {
        const message = jupyterMessageOf(
          await reader.message(),
          (type) => type === "update_display_data",
        );
        const transient = message?.content?.transient as { display_id?: string } | undefined;
        if (transient?.display_id && ids.has(transient.display_id)) return;
      }
    })();
    await Promise.race([seen, timeout]);
  } finally {
    clearTimeout(timer);
    clearInterval(resend);
    conn.close();
    seen?.catch(() => {}); // its read ends with the connection
  }
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < bytes.length) offset += await conn.write(bytes.subarray(offset));
}
