/**
 * The layout rules of lib/, read off the real import graph (`deno info --json`): no import cycle,
 * folders in layers (a folder imports only from folders below it), other folders reached only
 * through their `mod.ts`, and scripts, notebooks and the bench using the public surface only.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { projectPath } from "../lib/mod.ts";

/** The layers, lowest first: a module may import from its own folder or any lower layer. */
const LAYERS: Record<string, number> = {
  core: 0, // lib/*.ts: backend, config, paths, files, cli, rng, progress, tables, show, …
  data: 1,
  model: 2,
  engine: 3,
  train: 4,
  evaluate: 4,
  figures: 5,
  runs: 6,
  review: 7,
  notebooks: 7,
};

interface Graph {
  /** lib-relative module path → the lib-relative modules it imports (code or types). */
  edges: Map<string, string[]>;
}

async function importGraph(...roots: string[]): Promise<Map<string, string[]>> {
  const edges = new Map<string, string[]>();
  for (const root of roots) {
    for (const [from, to] of await moduleImports(root)) edges.set(from, to);
  }
  return edges;
}

/** The project-local import edges reachable from one root module. */
async function moduleImports(root: string): Promise<Map<string, string[]>> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", root],
    cwd: projectPath(),
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  const info = JSON.parse(new TextDecoder().decode(out.stdout));
  const edges = new Map<string, string[]>();
  const local = (specifier: string) =>
    specifier.startsWith("file://")
      ? path.relative(projectPath(), new URL(specifier).pathname)
      : "";
  for (const m of info.modules) {
    const from = local(m.specifier);
    if (!from) continue;
    const to = (m.dependencies ?? [])
      .map((d: { code?: { specifier: string }; type?: { specifier: string } }) =>
        local(d.code?.specifier ?? d.type?.specifier ?? "")
      )
      .filter((p: string) => p !== "");
    edges.set(from, to);
  }
  return edges;
}

const libGraph = async (): Promise<Graph> => ({ edges: await importGraph("lib/mod.ts") });

/** "core" for lib/x.ts, the folder name for lib/<folder>/x.ts. */
function folderOf(module: string): string {
  const parts = module.split("/");
  return parts.length === 2 ? "core" : parts[1];
}

/** Every cycle (as a path of modules), by depth-first search. */
function cycles(edges: Map<string, string[]>): string[][] {
  const found: string[][] = [];
  const state = new Map<string, "open" | "done">();
  const stack: string[] = [];
  const visit = (m: string) => {
    state.set(m, "open");
    stack.push(m);
    for (const n of edges.get(m) ?? []) {
      if (state.get(n) === "open") found.push([...stack.slice(stack.indexOf(n)), n]);
      else if (!state.has(n)) visit(n);
    }
    stack.pop();
    state.set(m, "done");
  };
  for (const m of edges.keys()) if (!state.has(m)) visit(m);
  return found;
}

Deno.test("architecture: lib/ has no import cycle", async () => {
  const { edges } = await libGraph();
  assert.ok(edges.size > 40, `the graph was read (${edges.size} modules)`);
  assert.deepEqual(cycles(edges).map((c) => c.join(" → ")), []);
});

Deno.test("architecture: every lib/ folder is a known layer with a mod.ts", () => {
  const folders = fs.readdirSync(projectPath("lib"), { withFileTypes: true })
    .filter((e) => e.isDirectory()).map((e) => e.name).sort();
  assert.deepEqual(folders, Object.keys(LAYERS).filter((f) => f !== "core").sort());
  for (const f of folders) assert.ok(fs.existsSync(projectPath("lib", f, "mod.ts")), f);
});

Deno.test("architecture: imports run down the layers (data never imports train), other folders only through mod.ts", async () => {
  const { edges } = await libGraph();
  const wrong: string[] = [];
  for (const [from, tos] of edges) {
    if (!from.startsWith("lib/") || from === "lib/mod.ts") continue;
    const a = folderOf(from);
    for (const to of tos) {
      if (!to.startsWith("lib/")) continue;
      const b = folderOf(to);
      if (a === b) continue;
      if (LAYERS[b] >= LAYERS[a]) wrong.push(`${from} → ${to} (${a} may not import ${b})`);
      else if (b !== "core" && path.basename(to) !== "mod.ts") {
        wrong.push(`${from} → ${to} (reach ${b}/ through ${b}/mod.ts)`);
      }
    }
  }
  assert.deepEqual(wrong, []);
});

Deno.test("architecture: scripts, the bench and the notebooks import only lib/mod.ts", async () => {
  // Setup runs before any npm package is installed: it may use the dependency-free core files, and
  // its own steps (scripts/setup/), and where the fused kernels are built (node: built-ins only).
  const setupCore = [
    "lib/paths.ts",
    "lib/files.ts",
    "lib/env.ts",
    "lib/errors.ts",
    "lib/engine/kernel_library.ts",
  ];
  const setupSteps = fs.readdirSync(projectPath("scripts", "setup")).filter((f) =>
    f.endsWith(".ts")
  )
    .map((f) => `scripts/setup/${f}`);
  const allowed: Record<string, string[]> = {
    "scripts/setup.ts": [...setupCore, ...setupSteps],
    ...Object.fromEntries(setupSteps.map((f) => [f, [...setupCore, ...setupSteps]])),
    "scripts/lab.ts": ["lib/paths.ts", "lib/env.ts", "lib/errors.ts"],
  };
  const entries = [
    ...fs.readdirSync(projectPath("scripts")).map((f) => `scripts/${f}`),
    ...setupSteps,
    ...fs.readdirSync(projectPath("bench")).filter((f) => f.endsWith(".ts")).map((f) =>
      `bench/${f}`
    ),
  ].filter((f) => f.endsWith(".ts"));
  const edges = await importGraph(...entries);
  const wrong: string[] = [];
  for (const from of entries) {
    for (const to of edges.get(from) ?? []) {
      if (to.startsWith("lib/") && to !== "lib/mod.ts" && !(allowed[from] ?? []).includes(to)) {
        wrong.push(`${from} → ${to}`);
      }
      if (to.startsWith("scripts/") && !(allowed[from] ?? []).includes(to)) {
        wrong.push(`${from} → ${to} (scripts do not import scripts)`);
      }
    }
  }
  // Notebooks: every import in every code cell.
  for (const file of fs.readdirSync(projectPath("notebooks")).filter((f) => f.endsWith(".ipynb"))) {
    const nb = JSON.parse(fs.readFileSync(projectPath("notebooks", file), "utf8"));
    for (const cell of nb.cells.filter((c: { cell_type: string }) => c.cell_type === "code")) {
      for (const m of cell.source.join("").matchAll(/from\s+"([^"]+)"/g)) {
        if (m[1] !== "../lib/mod.ts") wrong.push(`notebooks/${file} → ${m[1]}`);
      }
    }
  }
  assert.deepEqual(wrong, []);
});

Deno.test("architecture: only lib/engine/plan.ts switches on layer class", () => {
  // The one translator rule (lib/engine/plan.ts's header): layer classes are read nowhere else
  // in the engine, so a new layer kind is added in one place.
  const offenders: string[] = [];
  for (const file of fs.readdirSync(projectPath("lib", "engine"))) {
    if (file === "plan.ts") continue;
    const text = fs.readFileSync(projectPath("lib", "engine", file), "utf8");
    if (
      /getClassName\(\)|instanceof (BatchNorm|HardSwish|HardSigmoid|Normalize|SeededDropout)/.test(
        text,
      )
    ) {
      offenders.push(file);
    }
  }
  assert.deepEqual(offenders, []);
});

Deno.test("architecture: only lib/env.ts reads the environment (lib, scripts and the bench)", () => {
  const offenders: string[] = [];
  const walk = (dir: string) => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(p);
      else if (
        entry.name.endsWith(".ts") && /Deno\.env\b|process\.env\b/.test(fs.readFileSync(p, "utf8"))
      ) {
        offenders.push(path.relative(projectPath(), p));
      }
    }
  };
  for (const dir of ["lib", "scripts", "bench"]) walk(projectPath(dir));
  assert.deepEqual(offenders, ["lib/env.ts"]);
});

Deno.test("architecture: the README's variable tables list exactly the variables lib/env.ts declares", async () => {
  const { VARIABLES } = await import("../lib/env.ts");
  const whole = fs.readFileSync(projectPath("README.md"), "utf8");
  const start = whole.indexOf("## Environment variables");
  const readme = whole.slice(start, whole.indexOf("\n## ", start + 1));
  const listed = [...readme.matchAll(/^\| `(COVID_CXR_[A-Z_]+)[=`]/gm)].map((m) => m[1]);
  assert.deepEqual([...new Set(listed)].sort(), Object.keys(VARIABLES).sort());
  // And each variable's choices appear where it is described.
  for (const [name, v] of Object.entries(VARIABLES)) {
    const kind = v.kind as { type: string; values?: string[] };
    if (kind.type !== "choice") continue;
    const row = readme.split("\n").find((l) => l.startsWith(`| \`${name}`))!;
    for (const value of kind.values!) {
      assert.ok(row.includes(value), `${name}: ${value} in the README`);
    }
  }
});

Deno.test("architecture: the README's Start here table names files that exist and functions they export", () => {
  const readme = fs.readFileSync(projectPath("README.md"), "utf8");
  const section = readme.split("## Start here")[1]?.split("\n## ")[0] ?? "";
  const rows = section.split("\n").filter((l) =>
    l.startsWith("| ") && !/^\| (paper step|-)/.test(l)
  );
  assert.ok(rows.length >= 8, `${rows.length} rows in Start here`);
  for (const row of rows) {
    const [, , files, functions] = row.split("|");
    // A bare name (`split.ts`) is in the folder of the path before it.
    let folder = "";
    const paths = [...files.matchAll(/`([^`]+)`/g)].map(([, f]) => {
      if (f.includes("/")) folder = f.endsWith("/") ? f : path.dirname(f);
      return f.includes("/") ? f : path.join(folder, f);
    });
    const sources = paths.flatMap((p) => {
      assert.ok(fs.existsSync(projectPath(p)), `${p} (README Start here) exists`);
      return fs.statSync(projectPath(p)).isDirectory()
        ? fs.readdirSync(projectPath(p)).map((f) => fs.readFileSync(projectPath(p, f), "utf8"))
        : [fs.readFileSync(projectPath(p), "utf8")];
    }).join("\n");
    for (const [, name] of functions.matchAll(/`(\w+)`/g)) {
      assert.match(
        sources,
        new RegExp(`export (async )?function\\*? ${name}\\b|^(async )?function ${name}\\b`, "m"),
        `${name} is defined in ${paths.join(", ")}`,
      );
    }
  }
});
