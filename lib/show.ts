/**
 * Show results in a notebook, or print them in a terminal.
 *
 * Notebooks call `await show(x)` rather than ending a cell with `x`: the Deno kernel (2.9) can
 * report a cell finished before its outputs are published, and a client stops collecting a
 * cell's outputs at that point. `show` returns only once the kernel has published what it
 * displayed (lib/jupyter.ts explains the race and the barrier); a bare last expression has no
 * such guarantee.
 */
import { flushNotebookOutput } from "./jupyter.ts";

interface JupyterApi {
  display(obj: unknown, options?: { raw?: boolean }): Promise<void>;
}

function jupyter(): JupyterApi | undefined {
  try {
    return (Deno as unknown as { jupyter?: JupyterApi }).jupyter;
  } catch {
    return undefined; // outside the kernel, the getter throws
  }
}

/** True inside the Deno Jupyter kernel. */
export function inNotebook(): boolean {
  return jupyter() !== undefined;
}

/** Display each item (figures, tables, values) in the notebook; outside one, print it. */
export async function show(...items: unknown[]): Promise<void> {
  const api = jupyter();
  for (const item of items) {
    if (api) {
      // Strings as plain text, not as a quoted JavaScript value.
      await api.display(typeof item === "string" ? { "text/plain": item } : item, {
        raw: typeof item === "string",
      });
    } else if (typeof item === "string") {
      console.log(item);
    } else if (
      item && typeof item === "object" && "toString" in item &&
      item.toString !== Object.prototype.toString
    ) {
      console.log(String(item));
    } else {
      console.log(Deno.inspect(item, { colors: false, depth: 4 }));
    }
  }
  if (api) await flushNotebookOutput();
}
