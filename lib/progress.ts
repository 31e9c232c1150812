/**
 * Progress of long loops: a one-line bar with count, running loss and ETA in a terminal; one
 * updating display in a notebook (not thousands of lines); a line every 30 s in logs (CI).
 */
import { flushNotebookOutput } from "./jupyter.ts";
import { inNotebook } from "./show.ts";

export interface Progress {
  /** `done` of `total` steps finished; `info` is shown after the bar (e.g. "loss 0.4123"). */
  update(done: number, info?: string): void;
  /** Finish the bar with a final message; in a notebook, resolves once the notebook has it. */
  end(message?: string): Promise<void>;
}

function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return "?";
  const s = Math.round(seconds);
  return s >= 3600
    ? `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`
    : s >= 60
    ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`
    : `${s}s`;
}

function line(label: string, done: number, total: number, started: number, info?: string): string {
  const width = 24;
  const filled = total > 0 ? Math.round((done / total) * width) : 0;
  const elapsed = (performance.now() - started) / 1000;
  const eta = done > 0 ? (elapsed / done) * (total - done) : NaN;
  return `${label} [${"=".repeat(filled)}${filled < width ? ">" : ""}${
    " ".repeat(Math.max(0, width - filled - 1))
  }] ` +
    `${done}/${total}${info ? ` ${info}` : ""} · ${formatDuration(elapsed)} elapsed, ETA ${
      formatDuration(eta)
    }`;
}

interface JupyterDisplay {
  display(
    obj: unknown,
    options?: { raw?: boolean; update?: boolean; display_id?: string },
  ): Promise<void>;
}

let counter = 0;

/**
 * A progress reporter suited to where we run. `quiet` reports nothing (tests).
 */
export function createProgress(
  label: string,
  total: number,
  opts: { quiet?: boolean } = {},
): Progress {
  const started = performance.now();
  if (opts.quiet) return { update() {}, end: () => Promise.resolve() };
  if (inNotebook()) {
    const jupyter = (Deno as unknown as { jupyter: JupyterDisplay }).jupyter;
    const id = `progress-${Deno.pid}-${counter++}`;
    let shown = false;
    let last = 0;
    const send = (text: string, force = false) => {
      if (!force && performance.now() - last < 500) return; // at most two updates a second
      last = performance.now();
      const bundle = { "text/plain": text };
      jupyter.display(bundle, { raw: true, display_id: id, update: shown }).catch(() => {});
      shown = true;
    };
    return {
      update: (done, info) => send(line(label, done, total, started, info), done === total),
      end: async (message) => {
        send(message ?? line(label, total, total, started), true);
        await flushNotebookOutput();
      },
    };
  }
  if (Deno.stderr.isTerminal()) {
    const encoder = new TextEncoder();
    const write = (text: string) => Deno.stderr.writeSync(encoder.encode(text));
    return {
      update: (done, info) => write(`\r\x1b[2K${line(label, done, total, started, info)}`),
      end: (message) => {
        write(`\r\x1b[2K${message ?? line(label, total, total, started)}\n`);
        return Promise.resolve();
      },
    };
  }
  // Logs: a line at most every 30 s, and the last one.
  let last = performance.now();
  return {
    update: (done, info) => {
      if (performance.now() - last < 30_000 && done < total) return;
      last = performance.now();
      console.error(line(label, done, total, started, info));
    },
    end: (message) => {
      if (message) console.error(message);
      return Promise.resolve();
    },
  };
}
