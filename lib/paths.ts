/**
 * Where things live on disk. Only `node:` built-ins here: `scripts/setup.ts` imports this before
 * any npm package is installed.
 */
import * as path from "node:path";
import * as os from "node:os";

/** The project root (the folder holding deno.json). */
export const PROJECT_ROOT: string = path.resolve(import.meta.dirname!, "..");

/**
 * A setting from the environment: its value, or undefined when unset or empty (`VAR=` in a shell
 * means "not set", never "the current folder").
 */
export function envSetting(name: string): string | undefined {
  const value = Deno.env.get(name);
  return value === undefined || value.trim() === "" ? undefined : value;
}

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
  const explicit = envSetting("COVID_CXR_CACHE");
  if (explicit) return path.resolve(explicit);
  const xdg = Deno.env.get("XDG_CACHE_HOME");
  const base = xdg ? xdg : path.join(os.homedir(), ".cache");
  return path.join(base, "covid-cxr");
}

/** The project-local, git-ignored cache (decoded and resized images). */
export function projectCacheDir(): string {
  return projectPath(".cache");
}

/** An executable of the project's JupyterLab virtual environment (`.venv/bin/<name>`). */
export function venvBin(name: string): string {
  return projectPath(".venv", "bin", name);
}
