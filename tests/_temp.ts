/**
 * Temporary folders for tests: one per test process, removed when the process ends, with a fresh
 * folder inside it for each use. Light on purpose (no library import), so any test can use it.
 */
let work: string | undefined;

/** A temporary folder for this test process, removed when it ends. */
export function workDir(): string {
  if (!work) {
    work = Deno.makeTempDirSync({ prefix: "covid-cxr-test-" });
    const dir = work;
    globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
  }
  return work;
}

/** A fresh folder inside {@link workDir}, named `<name>-<random>`. */
export function freshDir(name: string): string {
  return Deno.makeTempDirSync({ dir: workDir(), prefix: `${name}-` });
}
