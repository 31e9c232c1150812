/**
 * Where things live on disk. Only `node:` built-ins (and env.ts) here: `scripts/setup.ts` imports
 * this before any npm package is installed.
 */
import * as path from "node:path";
import * as os from "node:os";
import { envValue, hostEnv } from "./env.ts";

/** The project root (the folder holding deno.json). */
export const PROJECT_ROOT: string = path.resolve(import.meta.dirname!, "..");

/** Resolve a path relative to the project root. */
export function projectPath(...parts: string[]): string {
  return path.join(PROJECT_ROOT, ...parts);
}

/**
 * The user-level cache shared by every clone (downloads that are expensive to redo: the TensorFlow
 * wheel, the built native binding, ImageNet weights). `COVID_CXR_CACHE` overrides; otherwise the
 * platform convention (`$XDG_CACHE_HOME` or `~/.cache`), like Keras's `~/.keras`.
 */
export function userCacheDir(): string {
  const explicit = envValue("COVID_CXR_CACHE");
  if (explicit) return path.resolve(explicit);
  const xdg = hostEnv("XDG_CACHE_HOME");
  const base = xdg ? xdg : path.join(os.homedir(), ".cache");
  return path.join(base, "covid-cxr");
}

/**
 * The project's cache of work that is cheap to redo but slow (decoded and resized images, the
 * near-duplicate finder's calibration): `COVID_CXR_PROJECT_CACHE`, else `.cache/` in the project
 * (git-ignored).
 */
export function projectCacheDir(): string {
  const explicit = envValue("COVID_CXR_PROJECT_CACHE");
  return explicit ? path.resolve(explicit) : projectPath(".cache");
}

/** An executable of the project's JupyterLab virtual environment (`.venv/bin/<name>`). */
export function venvBin(name: string): string {
  return projectPath(".venv", "bin", name);
}
