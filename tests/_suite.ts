/**
 * Fixtures made once per test suite and shared by its test files through the disk.
 *
 * `deno test` runs every test file in an isolate of its own (module state is not shared, so a
 * module-level cache is per file) but all of them in one process, whose id therefore names the
 * suite. Whichever file asks for a fixture first makes it, holding a lock; a file that asks while
 * it is being made waits, and one that asks later reuses it. A test that runs alone
 * (`deno test --filter X`) makes what it needs itself. Fixtures are read-only to their users
 * (copy before changing anything). The folders of suites that have ended are removed by the next
 * suite, since no one test file knows that it is the last.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

const PREFIX = "covid-cxr-suite-";
const READY = ".ready";

/** This suite's folder in the temporary directory. */
function suiteDir(): string {
  return path.join(os.tmpdir(), `${PREFIX}${Deno.pid}`);
}

let pruned = false;

/** Remove the folders of earlier suites whose process is gone (Linux: no /proc/<pid>). */
function pruneEndedSuites(): void {
  if (pruned || !fs.existsSync("/proc/self")) return;
  pruned = true;
  for (const name of fs.readdirSync(os.tmpdir())) {
    const pid = Number(name.slice(PREFIX.length));
    if (!name.startsWith(PREFIX) || !Number.isInteger(pid) || pid === Deno.pid) continue;
    if (fs.existsSync(`/proc/${pid}`)) continue;
    fs.rmSync(path.join(os.tmpdir(), name), { recursive: true, force: true });
  }
}

const made = new Map<string, Promise<string>>();

/**
 * The folder of the suite-wide fixture `name`, made by `make(folder)` unless this suite already
 * made it. `make` writes into the folder at its final path (the paths it records stay true); the
 * fixture counts as made only when `make` returns. When `make` throws, its partial folder is
 * removed, the error reaches the caller, and the next caller tries again.
 */
export function suiteFixture(name: string, make: (dir: string) => Promise<void>): Promise<string> {
  let fixture = made.get(name);
  if (!fixture) {
    fixture = obtain(name, make);
    made.set(name, fixture);
    fixture.catch(() => made.delete(name));
  }
  return fixture;
}

async function obtain(name: string, make: (dir: string) => Promise<void>): Promise<string> {
  pruneEndedSuites();
  const dir = path.join(suiteDir(), name);
  const lock = `${dir}.lock`;
  fs.mkdirSync(suiteDir(), { recursive: true });
  while (!fs.existsSync(path.join(dir, READY))) {
    try {
      Deno.mkdirSync(lock); // atomic: exactly one file of the suite gets it
    } catch (e) {
      if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
      await new Promise((r) => setTimeout(r, 200)); // another file is making it
      continue;
    }
    try {
      if (fs.existsSync(path.join(dir, READY))) break; // made while this file waited
      fs.rmSync(dir, { recursive: true, force: true });
      fs.mkdirSync(dir);
      await make(dir);
      fs.writeFileSync(path.join(dir, READY), "");
    } catch (e) {
      fs.rmSync(dir, { recursive: true, force: true });
      throw e;
    } finally {
      fs.rmSync(lock, { recursive: true, force: true });
    }
  }
  return dir;
}
