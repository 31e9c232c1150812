/** The project's notebooks for tests, and whether a data set is there to run them on. */
import * as path from "node:path";
import { projectNotebooks, resolveDataDir } from "../lib/mod.ts";

/** Every notebook the project ships, sorted. */
export const listNotebooks = projectNotebooks;

/** "05_evaluation" for notebooks/05_evaluation.ipynb. */
export const notebookName = (file: string) => path.basename(file, ".ipynb");

/** True when a data set is configured (COVID_CXR_DATA or data/Covid19-dataset) and present. */
export function dataAvailable(): boolean {
  try {
    resolveDataDir();
    return true;
  } catch {
    return false;
  }
}
