import assert from "node:assert/strict";
import {
  connectionFileOf,
  flushNotebookOutput,
  iopubAddressOf,
  jupyterMessageOf,
  zmtpFrame,
} from "../lib/jupyter.ts";

Deno.test("jupyter: the connection file comes from the kernel's --conn argument", () => {
  const argv = ["/usr/bin/deno", "jupyter", "--kernel", "--conn", "/run/kernel-1.json"];
  assert.equal(connectionFileOf(argv), "/run/kernel-1.json");
  assert.equal(connectionFileOf(["deno", "jupyter", "--conn=/tmp/k.json"]), "/tmp/k.json");
  assert.equal(connectionFileOf(["deno", "run", "x.ts"]), undefined);
  assert.equal(connectionFileOf(["deno", "--conn"]), undefined);
});

Deno.test("jupyter: the iopub address of a connection file (TCP only; 0.0.0.0 reached on loopback)", () => {
  assert.deepEqual(iopubAddressOf({ transport: "tcp", ip: "127.0.0.1", iopub_port: 5001 }), {
    hostname: "127.0.0.1",
    port: 5001,
  });
  assert.deepEqual(iopubAddressOf({ ip: "0.0.0.0", iopub_port: 7 }), {
    hostname: "127.0.0.1",
    port: 7,
  });
  assert.equal(iopubAddressOf({ transport: "ipc", ip: "kernel", iopub_port: 2 }), undefined);
  assert.equal(iopubAddressOf({ transport: "tcp", ip: "127.0.0.1" }), undefined);
});

Deno.test("jupyter: ZMTP frames are short up to 255 bytes and long (8-byte size) above", () => {
  const short = zmtpFrame(new Uint8Array([1, 2, 3]), { more: true });
  assert.deepEqual([...short], [1, 3, 1, 2, 3]);
  const command = zmtpFrame(new Uint8Array([9]), { command: true });
  assert.deepEqual([...command], [4, 1, 9]);
  const long = zmtpFrame(new Uint8Array(300));
  assert.equal(long[0], 2);
  assert.equal(new DataView(long.buffer).getBigUint64(1), 300n);
  assert.equal(long.length, 9 + 300);
});

Deno.test("jupyter: an iopub message's type is read from its header, its content only on request", () => {
  const enc = (s: string) => new TextEncoder().encode(s);
  const frames = [
    enc("<IDS|MSG>"),
    enc("signature"),
    enc(JSON.stringify({ msg_type: "update_display_data" })),
    enc("{}"),
    enc("{}"),
    enc(JSON.stringify({ transient: { display_id: "x" } })),
  ];
  assert.deepEqual(jupyterMessageOf(frames, () => true), {
    msgType: "update_display_data",
    content: { transient: { display_id: "x" } },
  });
  assert.deepEqual(jupyterMessageOf(frames, () => false), { msgType: "update_display_data" });
  assert.equal(jupyterMessageOf(frames.slice(1), () => true), undefined, "no delimiter");
});

Deno.test("jupyter: flushNotebookOutput does nothing outside the kernel", async () => {
  await flushNotebookOutput(); // resolves at once: no kernel, no connection
});
