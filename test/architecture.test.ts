/**
 * The architecture, enforced from the code's own imports: which top folder of src/ may import which, that
 * the folder graph has no cycle, that what runs in the browser needs no Node, and two "one place" rules
 * (RedfishError is built in redfish/errors.ts, the environment is read in config/environment.ts).
 *
 * Imports are read with the TypeScript parser, so comments and strings never count: `import … from`,
 * `import type`, `export … from`, `import x = require()`, `import('…')` and `typeof import('…')`.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { builtinModules } from 'node:module';
import path from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const srcDir = path.join(root, 'src');

/**
 * Who may import whom, by top folder of src/ (`src/contract/dbus.ts` is in `contract`, `src/log.ts` is the
 * folder `log`). A folder may always import itself. Lower layers come first.
 */
const layers: Record<string, readonly string[]> = {
  contract: [],
  nbd: ['contract'],
  transport: ['contract', 'nbd'],
  config: ['contract'],
  log: ['config'],
  tls: ['config', 'log'],
  redfish: ['contract', 'log', 'config'],
  auth: ['redfish', 'contract', 'config', 'log'],
  dbus: ['contract', 'log', 'config'],
  resources: ['redfish', 'auth', 'contract', 'dbus', 'log'],
  bridge: ['redfish', 'auth', 'contract', 'dbus', 'log', 'nbd', 'transport'],
  service: ['contract', 'nbd', 'transport', 'log', 'config'],
  web: ['contract', 'nbd', 'transport', 'redfish', 'auth'],
  // The emulated host: a daemon of its own beside the service, a client of it over D-Bus like the server.
  machine: ['contract', 'dbus', 'log', 'config'],
  cli: [
    'contract',
    'nbd',
    'transport',
    'config',
    'log',
    'server',
    'service',
    'machine',
    'dbus',
    'tls',
    'redfish',
  ],
};
/** The server assembles everything but the command line that starts it and the other daemons' own parts. */
const allowed: Record<string, readonly string[]> = {
  ...layers,
  server: Object.keys(layers).filter((folder) => folder !== 'cli' && folder !== 'machine'),
};

/** The only folders that may import the Redfish JSON schemas of the top-level `schemas/` folder. */
const schemaImporters = new Set(['redfish', 'resources']);

/** Bare packages known to run in a browser; any other bare import fails the Node-free check. */
const browserSafePackages = new Set<string>();

/** Globals that exist in Node only. */
const nodeGlobals = new Set([
  'Buffer',
  'process',
  'require',
  'module',
  '__dirname',
  '__filename',
  'global',
  'setImmediate',
  'clearImmediate',
  'NodeJS',
]);

// ---------------------------------------------------------------------------------------------------------

interface Import {
  specifier: string;
  line: number;
  /** The file a relative specifier names, if it names one. */
  target?: string;
}

interface Module {
  /** Absolute path. */
  file: string;
  source: ts.SourceFile;
  imports: Import[];
  /** Lines of `import()` calls whose specifier is computed: no checker can follow them. */
  computedImports: number[];
}

/** The path relative to the repository root, with forward slashes, as messages name it. */
const rel = (file: string) => path.relative(root, file).split(path.sep).join('/');

const lineOf = (source: ts.SourceFile, node: ts.Node) =>
  source.getLineAndCharacterOfPosition(node.getStart(source)).line + 1;

function listSources(dir: string): string[] {
  return fs
    .readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .filter((entry) => entry.endsWith('.ts'))
    .map((entry) => path.join(dir, entry))
    .sort();
}

function resolveRelative(from: string, specifier: string): string | undefined {
  const base = path.resolve(path.dirname(from), specifier);
  const candidates = [base, base.replace(/\.js$/, '.ts'), `${base}.ts`, path.join(base, 'index.ts')];
  return candidates.find((candidate) => fs.statSync(candidate, { throwIfNoEntry: false })?.isFile());
}

function parseModule(file: string): Module {
  const source = ts.createSourceFile(
    file,
    fs.readFileSync(file, 'utf8'),
    ts.ScriptTarget.Latest,
    true,
    ts.ScriptKind.TS,
  );
  const imports: Import[] = [];
  const computedImports: number[] = [];
  const add = (node: ts.Node, specifier: string) => {
    const target = specifier.startsWith('.') ? resolveRelative(file, specifier) : undefined;
    imports.push({ specifier, line: lineOf(source, node), ...(target ? { target } : {}) });
  };
  const visit = (node: ts.Node) => {
    if (
      (ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) &&
      node.moduleSpecifier &&
      ts.isStringLiteral(node.moduleSpecifier)
    ) {
      add(node, node.moduleSpecifier.text);
    } else if (
      ts.isImportEqualsDeclaration(node) &&
      ts.isExternalModuleReference(node.moduleReference) &&
      ts.isStringLiteral(node.moduleReference.expression)
    ) {
      add(node, node.moduleReference.expression.text);
    } else if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword) {
      const [argument] = node.arguments;
      if (argument && ts.isStringLiteralLike(argument)) add(node, argument.text);
      else computedImports.push(lineOf(source, node));
    } else if (
      ts.isImportTypeNode(node) &&
      ts.isLiteralTypeNode(node.argument) &&
      ts.isStringLiteral(node.argument.literal)
    ) {
      add(node, node.argument.literal.text);
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return { file, source, imports, computedImports };
}

/** The top folder under src/ (`src/log.ts` → `log`), or undefined outside src/. */
function folderOf(file: string): string | undefined {
  const relative = path.relative(srcDir, file);
  if (relative.startsWith('..') || path.isAbsolute(relative)) return undefined;
  const [first, ...rest] = relative.split(path.sep);
  return rest.length > 0 ? first : first!.replace(/\.[^.]+$/, '');
}

interface Violation {
  message: string;
}

/** Fails with every violation, each on its own line. */
function assertNone(violations: Violation[], check: string): void {
  assert.ok(violations.length === 0, `${check}:\n  ${violations.map((v) => v.message).join('\n  ')}`);
}

/** A cycle of the graph as a path that ends where it starts, or undefined; self-loops do not count. */
function findCycle(graph: ReadonlyMap<string, Iterable<string>>): string[] | undefined {
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const visit = (node: string): string[] | undefined => {
    state.set(node, 'open');
    stack.push(node);
    for (const next of graph.get(node) ?? []) {
      if (next === node) continue;
      if (state.get(next) === 'open') return [...stack.slice(stack.indexOf(next)), next];
      if (!state.has(next)) {
        const cycle = visit(next);
        if (cycle) return cycle;
      }
    }
    stack.pop();
    state.set(node, 'done');
    return undefined;
  };
  for (const node of [...graph.keys()].sort()) {
    if (!state.has(node)) {
      const cycle = visit(node);
      if (cycle) return cycle;
    }
  }
  return undefined;
}

const modules = listSources(srcDir).map(parseModule);
const byFile = new Map(modules.map((module) => [module.file, module]));

/** Every relative import that crosses from one top folder to another (or out of src/). */
function crossings() {
  const found: { module: Module; from: string; imported: Import & { target: string }; to?: string }[] = [];
  for (const module of modules) {
    const from = folderOf(module.file)!;
    for (const imported of module.imports) {
      if (!imported.target) continue;
      const to = folderOf(imported.target);
      if (to !== from) found.push({ module, from, imported: { ...imported, target: imported.target }, to });
    }
  }
  return found;
}

describe('architecture', () => {
  test('the checker reads the tree: every import resolves and every folder has its entry', () => {
    assert.ok(modules.length > 50, `only ${modules.length} files under src/`);
    const problems: Violation[] = [];
    for (const module of modules) {
      for (const imported of module.imports) {
        if (imported.specifier.startsWith('.') && !imported.target) {
          problems.push({
            message: `${rel(module.file)}:${imported.line} imports '${imported.specifier}', which names no file`,
          });
        }
      }
      for (const line of module.computedImports) {
        problems.push({
          message: `${rel(module.file)}:${line} imports a computed specifier: write import('…') with a string literal`,
        });
      }
    }
    for (const folder of new Set(modules.map((module) => folderOf(module.file)!))) {
      if (!(folder in allowed)) {
        problems.push({
          message: `src/${folder} is not in the allow-list: say what it may import`,
        });
      }
    }
    for (const [folder, targets] of Object.entries(allowed)) {
      for (const target of targets) {
        if (!(target in allowed)) {
          problems.push({ message: `${folder} may import unknown ${target}` });
        }
      }
    }
    assertNone(problems, 'the import graph cannot be checked');
  });

  test('folders import only what the allow-list lets them', () => {
    const violations: Violation[] = [];
    for (const { module, from, imported, to } of crossings()) {
      const importer = `${rel(module.file)}:${imported.line}`;
      if (to === undefined) {
        const isSchema = rel(imported.target).startsWith('schemas/') && imported.target.endsWith('.json');
        if (isSchema && schemaImporters.has(from)) continue;
        violations.push({
          message: isSchema
            ? `${importer} imports ${rel(imported.target)}: only ${[...schemaImporters].join(', ')} may import schemas/`
            : `${importer} imports ${rel(imported.target)}, outside src/`,
        });
      } else if (!allowed[from]?.includes(to)) {
        violations.push({
          message:
            `${importer} imports ${rel(imported.target)}: the edge ${from} -> ${to} is forbidden ` +
            `(${from} may import ${allowed[from]?.join(', ') || 'no other folder'})`,
        });
      }
    }
    assertNone(violations, 'forbidden imports');
  });

  test('the allowed folder graph and the actual one are acyclic', () => {
    // The detector itself, so that a silent pass means something.
    const loop = new Map([
      ['a', ['b']],
      ['b', ['c']],
      ['c', ['a', 'c']],
    ]);
    assert.deepEqual(findCycle(loop), ['a', 'b', 'c', 'a']);
    assert.equal(findCycle(new Map([['a', ['a', 'b']]])), undefined);

    const allowedCycle = findCycle(new Map(Object.entries(allowed)));
    assert.equal(allowedCycle, undefined, `the allow-list has a cycle: ${allowedCycle?.join(' -> ')}`);

    const actual = new Map<string, Set<string>>();
    const example = new Map<string, string>();
    for (const { module, from, imported, to } of crossings()) {
      if (to === undefined) continue;
      (actual.get(from) ?? actual.set(from, new Set()).get(from)!).add(to);
      if (!example.has(`${from} ${to}`))
        example.set(`${from} ${to}`, `${rel(module.file)} -> ${rel(imported.target)}`);
    }
    const cycle = findCycle(actual);
    const edges = cycle
      ?.slice(1)
      .map((to, i) => `  ${cycle[i]} -> ${to}: ${example.get(`${cycle[i]} ${to}`)}`);
    assert.equal(cycle, undefined, `the folders import each other in a cycle:\n${edges?.join('\n')}`);
  });

  test('what runs in the browser imports no Node module and uses no Node global', () => {
    // The browser bundle: whatever web/plugin.ts hands esbuild as entry points.
    const plugin = byFile.get(path.join(srcDir, 'web/plugin.ts'));
    assert.ok(plugin, 'src/web/plugin.ts (the bundler) is gone: find the browser entry point');
    const entries: string[] = [];
    const findEntries = (node: ts.Node, inEntryPoints: boolean) => {
      const here =
        inEntryPoints ||
        (ts.isPropertyAssignment(node) && ts.isIdentifier(node.name) && node.name.text === 'entryPoints');
      if (here && ts.isStringLiteralLike(node) && node.text.endsWith('.ts')) {
        entries.push(path.join(srcDir, 'web', node.text));
      }
      ts.forEachChild(node, (child) => findEntries(child, here));
    };
    findEntries(plugin.source, false);
    assert.deepEqual(entries.map(rel), ['src/web/main.ts']);

    const roots = [
      ...listSources(path.join(srcDir, 'contract')),
      ...listSources(path.join(srcDir, 'nbd')),
      path.join(srcDir, 'transport/browser-websocket-connection.ts'),
      ...entries,
    ];
    // Everything they import, transitively, runs in the browser too; `via` says how it was reached.
    const via = new Map<string, string | undefined>(roots.map((file) => [file, undefined]));
    const queue = [...roots];
    for (let file = queue.shift(); file; file = queue.shift()) {
      for (const { target } of byFile.get(file)?.imports ?? []) {
        if (target?.endsWith('.ts') && !via.has(target)) {
          via.set(target, file);
          queue.push(target);
        }
      }
    }
    const chain = (file: string): string => {
      const parent = via.get(file);
      return parent ? `${chain(parent)} -> ${rel(file)}` : rel(file);
    };
    for (const expected of [
      'src/contract/bridge.ts',
      'src/nbd/protocol.ts',
      'src/nbd/server/serve.ts',
      'src/nbd/client/client.ts',
      'src/transport/browser-websocket-connection.ts',
      'src/web/proxy-mount.ts',
      'src/web/file-device.ts',
    ]) {
      assert.ok(via.has(path.join(root, expected)), `${expected} is not checked`);
    }

    const violations: Violation[] = [];
    for (const file of via.keys()) {
      const module = byFile.get(file);
      assert.ok(module, `${rel(file)} is reached but is not under src/`);
      const where = (line: number) => `${rel(file)}:${line} (reached as ${chain(file)})`;
      for (const { specifier, line } of module.imports) {
        if (specifier.startsWith('.')) continue;
        const name = specifier.startsWith('@') ? specifier.split('/', 2).join('/') : specifier.split('/')[0]!;
        if (specifier.startsWith('node:') || builtinModules.includes(name)) {
          violations.push({
            message: `${where(line)} imports ${specifier}`,
          });
        } else if (!browserSafePackages.has(name)) {
          violations.push({
            message: `${where(line)} imports the package ${specifier}, not known to run in a browser`,
          });
        }
      }
      const visit = (node: ts.Node) => {
        if (ts.isIdentifier(node) && nodeGlobals.has(node.text) && isReference(node)) {
          violations.push({
            message: `${where(lineOf(module.source, node))} uses the Node global ${node.text}`,
          });
        }
        ts.forEachChild(node, visit);
      };
      visit(module.source);
    }
    assertNone(violations, 'Node in browser code');
  });

  test('only src/redfish/errors.ts constructs a RedfishError', () => {
    const home = path.join(srcDir, 'redfish/errors.ts');
    const violations: Violation[] = [];
    let atHome = 0;
    for (const module of modules) {
      // The names RedfishError goes by in this file: its own, an alias, or a namespace's member.
      const names = new Set(['RedfishError']);
      for (const statement of module.source.statements) {
        const bindings = ts.isImportDeclaration(statement)
          ? statement.importClause?.namedBindings
          : undefined;
        if (bindings && ts.isNamedImports(bindings)) {
          for (const element of bindings.elements) {
            if ((element.propertyName ?? element.name).text === 'RedfishError') names.add(element.name.text);
          }
        }
      }
      const isRedfishError = (expression: ts.Expression) =>
        (ts.isIdentifier(expression) && names.has(expression.text)) ||
        (ts.isPropertyAccessExpression(expression) && expression.name.text === 'RedfishError');
      const visit = (node: ts.Node) => {
        const built =
          (ts.isNewExpression(node) && isRedfishError(node.expression)) ||
          (ts.isHeritageClause(node) &&
            node.token === ts.SyntaxKind.ExtendsKeyword &&
            node.types.some((type) => isRedfishError(type.expression)));
        if (built && module.file === home) atHome++;
        else if (built) {
          violations.push({
            message: `${rel(module.file)}:${lineOf(module.source, node)} constructs or extends RedfishError: use the factories in src/redfish/errors.ts`,
          });
        }
        ts.forEachChild(node, visit);
      };
      visit(module.source);
    }
    assert.ok(atHome > 0, 'src/redfish/errors.ts builds no RedfishError: has it moved?');
    assertNone(violations, 'RedfishError built outside its home');
  });

  test('only src/config/environment.ts reads process.env', () => {
    const home = path.join(srcDir, 'config/environment.ts');
    const violations: Violation[] = [];
    let atHome = 0;
    const isProcess = (node: ts.Node) => ts.isIdentifier(node) && node.text === 'process';
    for (const module of modules) {
      const visit = (node: ts.Node) => {
        const reads =
          (ts.isPropertyAccessExpression(node) && isProcess(node.expression) && node.name.text === 'env') ||
          (ts.isElementAccessExpression(node) &&
            isProcess(node.expression) &&
            ts.isStringLiteralLike(node.argumentExpression) &&
            node.argumentExpression.text === 'env') ||
          (ts.isVariableDeclaration(node) &&
            node.initializer !== undefined &&
            isProcess(node.initializer) &&
            ts.isObjectBindingPattern(node.name) &&
            node.name.elements.some((element) => (element.propertyName ?? element.name).getText() === 'env'));
        if (reads && module.file === home) atHome++;
        else if (reads) {
          violations.push({
            message: `${rel(module.file)}:${lineOf(module.source, node)} reads process.env: read it in src/config/environment.ts`,
          });
        }
        ts.forEachChild(node, visit);
      };
      visit(module.source);
    }
    assert.ok(atHome > 0, 'src/config/environment.ts reads no process.env: has it moved?');
    assertNone(violations, 'process.env read outside src/config/environment.ts');
  });
});

/** Whether an identifier names a variable, not a property or a member (`x.Buffer`, `{ process: 1 }`). */
function isReference(node: ts.Identifier): boolean {
  const parent = node.parent;
  if (ts.isPropertyAccessExpression(parent) && parent.name === node) return false;
  if (ts.isQualifiedName(parent) && parent.right === node) return false;
  if (
    (ts.isPropertyAssignment(parent) ||
      ts.isPropertySignature(parent) ||
      ts.isPropertyDeclaration(parent) ||
      ts.isMethodDeclaration(parent) ||
      ts.isMethodSignature(parent) ||
      ts.isGetAccessorDeclaration(parent) ||
      ts.isSetAccessorDeclaration(parent) ||
      ts.isEnumMember(parent)) &&
    parent.name === node
  ) {
    return false;
  }
  return !(ts.isBindingElement(parent) && parent.propertyName === node);
}
