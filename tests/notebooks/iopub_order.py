"""Reproduction: outputs the Deno kernel publishes after a cell's `idle` status (and so loses).

A Jupyter client collects a cell's outputs until the kernel publishes `status: idle` for it
(nbclient/nbconvert stop there; so does JupyterLab's output area). This script starts the Deno
kernel with jupyter_client, runs N cells that each display twenty large outputs, and counts, per
cell, the outputs that arrived only after `idle`: outputs a notebook would lose.

    .venv/bin/python tests/notebooks/iopub_order.py raw 10    # Deno.jupyter.display
    .venv/bin/python tests/notebooks/iopub_order.py show 10   # lib/show.ts's show()

Run from the project folder (the kernel imports lib/show.ts from there). The last line printed
is JSON: {"mode", "cells", "cells_with_output_after_idle", "outputs_after_idle", "outputs"}.
tests/notebooks/iopub_order_test.ts runs it; lib/jupyter.ts explains the cause.
"""
import json
import os
import sys
import time

from jupyter_client.manager import start_new_kernel

mode = sys.argv[1] if len(sys.argv) > 1 else "raw"
cells = int(sys.argv[2]) if len(sys.argv) > 2 else 10
show_module = "file://" + os.path.abspath(os.path.join("lib", "show.ts"))

# Twenty displays of 200 kB each: the kernel signs and sends them one at a time after the cell's
# code has queued them, so the last ones are still queued when the cell returns.
CODE = {
    "raw": "for (let i = 0; i < 20; i++) {\n"
    "  await Deno.jupyter.display({ 'text/plain': `${i} ` + 'x'.repeat(200000) }, { raw: true });\n"
    "}",
    "show": f"import {{ show }} from {json.dumps(show_module)};\n"
    "await show(...Array.from({ length: 20 }, (_, i) => `${i} ` + 'x'.repeat(200000)));",
}[mode]

km, kc = start_new_kernel(kernel_name="deno", cwd=os.getcwd())
late_cells = 0
late_outputs = 0
all_outputs = 0
try:
    # Warm up: the first cell compiles the imports.
    kc.execute_interactive("1", timeout=120)
    for i in range(cells):
        msg_id = kc.execute(CODE)
        kc.get_shell_msg(timeout=300)
        idle = False
        before, after = 0, 0
        quiet_since = None
        while True:
            try:
                msg = kc.get_iopub_msg(timeout=0.5)
            except Exception:
                # After idle, wait 2 s of silence for stragglers, then move on.
                if idle and quiet_since is not None and time.time() - quiet_since > 2:
                    break
                if idle and quiet_since is None:
                    quiet_since = time.time()
                continue
            quiet_since = None
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind = msg["msg_type"]
            if kind == "status" and msg["content"]["execution_state"] == "idle":
                idle = True
            elif kind in ("display_data", "execute_result", "stream", "error"):
                if idle:
                    after += 1
                    if os.environ.get("IOPUB_VERBOSE"):
                        print("  late:", kind, str(msg["content"])[:200], flush=True)
                else:
                    before += 1
                    if os.environ.get("IOPUB_VERBOSE"):
                        print("  in time:", kind, str(msg["content"])[:120], flush=True)
        all_outputs += before + after
        late_outputs += after
        late_cells += 1 if after else 0
        print(f"cell {i}: {before} outputs before idle, {after} after", flush=True)
finally:
    kc.stop_channels()
    km.shutdown_kernel(now=True)

print(json.dumps({
    "mode": mode,
    "cells": cells,
    "cells_with_output_after_idle": late_cells,
    "outputs_after_idle": late_outputs,
    "outputs": all_outputs,
}))
