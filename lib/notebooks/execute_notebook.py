"""Execute one notebook in the Deno kernel with nbclient, reporting progress as JSON lines.

    python execute_notebook.py IN.ipynb OUT.ipynb TIMEOUT_SECONDS CWD

Every line on stdout is a JSON event: {"event": "start", "cell": i, "cells": n},
{"event": "done", "cell": i, "seconds": s}, {"event": "error", "cell": i, "ename": ..., "evalue":
...}, {"event": "finished"}. The executed notebook is written to OUT only when every cell ran
without an error; exit code 0, else 3 (a cell raised) or 1 (anything else). lib/notebooks/execute.ts
runs it with the project's JupyterLab venv.
"""
import json
import sys
import time

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError


def emit(**event):
    print(json.dumps(event), flush=True)


def main():
    source, target, timeout, cwd = sys.argv[1:5]
    nb = nbformat.read(source, as_version=4)
    cells = len(nb.cells)
    started = {}

    def on_start(cell, cell_index):
        started[cell_index] = time.time()
        if cell.cell_type == "code":
            emit(event="start", cell=cell_index, cells=cells)

    def on_done(cell, cell_index, execute_reply):
        emit(event="done", cell=cell_index, seconds=time.time() - started.get(cell_index, time.time()))

    client = NotebookClient(
        nb,
        timeout=int(timeout),
        kernel_name="deno",
        allow_errors=False,
        resources={"metadata": {"path": cwd}},
        on_cell_start=on_start,
        on_cell_executed=on_done,
    )
    try:
        client.execute()
    except CellExecutionError as error:
        failed = next(
            (i for i, c in enumerate(nb.cells)
             if any(o.get("output_type") == "error" for o in c.get("outputs", []))),
            None,
        )
        emit(event="error", cell=failed, ename=getattr(error, "ename", "Error"),
             evalue=getattr(error, "evalue", str(error)))
        sys.exit(3)
    nbformat.write(nb, target)
    emit(event="finished")


if __name__ == "__main__":
    main()
