/**
 * `npm run build` (`node --import tsx scripts/build.ts [--outdir DIR]`, default dist/): the whole CLI for
 * Node 20, runnable with plain `node DIR/vmedia.mjs <command>`: no node_modules, no tsx, no npm.
 *
 *   DIR/vmedia.mjs        src/cli/main.ts, the entry; each command's lazy `import()` becomes its own
 *   DIR/<command>-*.mjs   file (esbuild `splitting`), so `vmedia start` does not load the server, and
 *   DIR/chunk-*.mjs       what several commands share goes into chunks. Every runtime dependency is in
 *                         them, the JSON schemas inlined; esbuild, tsx and the dev tools are not.
 *   DIR/smb-plugin.py     the nbdkit plugin of the userspace CIFS path (src/service/sources/cifs-userspace.ts)
 *   DIR/web/              the web UI built ahead of time, served by src/web/plugin.ts from there
 *   DIR/node_modules/     the compiled addons, optional at run time (see `nativePackages`)
 *
 * Every .mjs stays at the top of DIR: the web UI and the bundle's own path are found from
 * `import.meta.url`, whichever file the code lands in.
 */
import fs from 'node:fs/promises';
import { createRequire, isBuiltin } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { build, type Metafile, type Plugin } from 'esbuild';
import { uiBuildOptions, uiStaticFiles } from '../src/web/plugin.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const require = createRequire(path.join(root, 'package.json'));

/** Folder of the prebuilt UI, relative to the bundle (src/web/plugin.ts reads `VMEDIA_PREBUILT_UI`). */
const WEB_DIR = 'web';
const BUNDLE = 'vmedia.mjs';
/** Files the code finds beside itself with `new URL('./name', import.meta.url)`: copied next to the bundle. */
const bundleAssets = ['src/service/sources/smb-plugin.py'];

/**
 * The runtime dependencies with a compiled addon. Each is written to DIR/node_modules/<name>/ as its JS
 * bundled into one index.js, the loader that finds the addon at run time (`bindings`, `node-gyp-build`:
 * they search from the caller's file) replaced by a plain `require` of the one addon this host built or
 * picked, copied beside it. The main bundle keeps `require('<name>')` (external), which the createRequire
 * banner resolves from DIR/. This makes DIR specific to the build host's platform and Node ABI (usocket
 * is compiled against Node's own headers; bufferutil is N-API).
 *
 * Both are optional: without DIR/node_modules the stack starts and serves. ws then masks in JS. dbus-next
 * falls back to a net.Socket for `unix:path=` buses (ours and the system bus; an `abstract=` address
 * would fail to connect), which cannot pass fds: a Legacy InsertMedia with UserName/Password fails,
 * the credentials pipe's fd having no way to the service.
 */
const nativePackages: {
  name: string;
  loader: string;
  /** The addon's path, asked of the package's own loader (`load`) as it would at run time. */
  addon: (load: NodeJS.Require, dir: string) => string;
}[] = [
  {
    name: 'usocket',
    loader: 'bindings',
    addon: (load, dir) => load('bindings')({ bindings: 'uwrap', module_root: dir, path: true }),
  },
  { name: 'bufferutil', loader: 'node-gyp-build', addon: (load, dir) => load('node-gyp-build').resolve(dir) },
];

/**
 * Optional dependencies of dependencies, not installed (ws tries utf-8-validate; dbus-next needs x11 only
 * to read a session bus address from an X selection): left external, for `require` to miss.
 */
const absentOptional = ['utf-8-validate', 'x11'];

/** Never in the bundle: the dev tools (esbuild is imported by plugin.ts's source-mode branch only). */
const devOnly = new Set([
  'esbuild',
  'tsx',
  'typescript',
  ...Object.keys(readPackage().devDependencies ?? {}),
]);

function readPackage(): { devDependencies?: Record<string, string> } {
  return require('./package.json');
}

/** The package name of a node_modules path in the metafile (`node_modules/@a/b/x.js` → `@a/b`). */
function packageOf(input: string): string | undefined {
  const match = input.match(/(?:^|\/)node_modules\/((?:@[^/]+\/)?[^/]+)\/(?!.*node_modules\/)/);
  return match?.[1];
}

function checkBundle(metafile: Metafile): void {
  const problems: string[] = [];
  const bundled = new Set(Object.keys(metafile.inputs).map(packageOf).filter(Boolean));
  for (const name of bundled)
    if (devOnly.has(name!)) problems.push(`the dev-only package ${name} is bundled`);
  const allowedExternal = new Set([...nativePackages.map((p) => p.name), ...absentOptional]);
  for (const [file, output] of Object.entries(metafile.outputs)) {
    for (const imported of output.imports) {
      if (!imported.external || isBuiltin(imported.path)) continue;
      const name = imported.path.startsWith('@')
        ? imported.path.split('/', 2).join('/')
        : imported.path.split('/')[0]!;
      if (!allowedExternal.has(name)) problems.push(`${file} still imports ${imported.path}`);
    }
  }
  if (problems.length > 0) throw new Error(`the bundle is not self-contained:\n  ${problems.join('\n  ')}`);
}

async function buildCli(outdir: string): Promise<Metafile> {
  const result = await build({
    absWorkingDir: root,
    entryPoints: { [path.basename(BUNDLE, '.mjs')]: 'src/cli/main.ts' },
    outdir,
    outExtension: { '.js': '.mjs' },
    bundle: true,
    splitting: true,
    chunkNames: '[name]-[hash]',
    platform: 'node',
    target: 'node20',
    format: 'esm',
    // Whitespace and syntax only: names stay readable in stack traces, and plugin.ts's
    // `typeof VMEDIA_PREBUILT_UI === 'string' ? … : …` folds away the branch that imports esbuild.
    minifyWhitespace: true,
    minifySyntax: true,
    legalComments: 'linked',
    sourcemap: 'linked',
    sourcesContent: false,
    // CommonJS dependencies call require() (node built-ins, the native packages): give the module one.
    banner: {
      js: "import { createRequire as __vmediaCreateRequire } from 'node:module';\nconst require = __vmediaCreateRequire(import.meta.url);",
    },
    define: { VMEDIA_PREBUILT_UI: JSON.stringify(WEB_DIR) },
    external: ['esbuild', ...nativePackages.map((p) => p.name), ...absentOptional],
    metafile: true,
    logLevel: 'warning',
  });
  checkBundle(result.metafile);
  return result.metafile;
}

async function buildWeb(outdir: string): Promise<void> {
  const dir = path.join(outdir, WEB_DIR);
  await build({ ...uiBuildOptions, outdir: dir, write: true, logLevel: 'warning' });
  const sourceDir = path.dirname(uiBuildOptions.entryPoints.app);
  for (const name of uiStaticFiles) await fs.copyFile(path.join(sourceDir, name), path.join(dir, name));
}

async function buildNative(outdir: string): Promise<string[]> {
  const notes: string[] = [];
  for (const { name, loader, addon } of nativePackages) {
    const packageDir = path.dirname(require.resolve(`${name}/package.json`));
    const manifest = JSON.parse(await fs.readFile(path.join(packageDir, 'package.json'), 'utf8'));
    const target = path.join(outdir, 'node_modules', name);
    let addonPath: string;
    try {
      addonPath = addon(createRequire(path.join(packageDir, 'package.json')), packageDir);
    } catch (error) {
      notes.push(`${name}: no compiled addon here (${(error as Error).message.split('\n')[0]}); left out`);
      continue;
    }
    const addonRelative = path.relative(packageDir, addonPath).split(path.sep).join('/');
    const shim: Plugin = {
      name: `${name}-addon`,
      setup(b) {
        b.onResolve({ filter: new RegExp(`^${loader}$`) }, () => ({
          path: loader,
          namespace: 'addon-loader',
        }));
        b.onLoad({ filter: /.*/, namespace: 'addon-loader' }, () => ({
          contents: `module.exports = () => require(${JSON.stringify(`./${addonRelative}`)});`,
          loader: 'js',
        }));
        b.onResolve({ filter: /\.node$/ }, (args) => ({ path: args.path, external: true }));
      },
    };
    await build({
      entryPoints: [path.join(packageDir, manifest.main ?? 'index.js')],
      outfile: path.join(target, 'index.js'),
      bundle: true,
      platform: 'node',
      target: 'node20',
      format: 'cjs',
      plugins: [shim],
      logLevel: 'warning',
    });
    await fs.mkdir(path.dirname(path.join(target, addonRelative)), { recursive: true });
    await fs.copyFile(addonPath, path.join(target, addonRelative));
    const license = (await fs.readdir(packageDir)).find((file) => /^licen[cs]e/i.test(file));
    if (license) await fs.copyFile(path.join(packageDir, license), path.join(target, license));
    const { version, license: licenseName } = manifest;
    await fs.writeFile(
      path.join(target, 'package.json'),
      `${JSON.stringify({ name, version, license: licenseName, main: 'index.js', private: true }, null, 2)}\n`,
    );
  }
  return notes;
}

async function listFiles(dir: string): Promise<{ file: string; size: number }[]> {
  const entries = await fs.readdir(dir, { recursive: true, withFileTypes: true });
  return Promise.all(
    entries
      .filter((entry) => entry.isFile())
      .map(async (entry) => {
        const file = path.join(entry.parentPath, entry.name);
        return { file: path.relative(dir, file), size: (await fs.stat(file)).size };
      }),
  );
}

const kib = (bytes: number) => `${(bytes / 1024).toFixed(1).padStart(8)} KiB`;

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { outdir: { type: 'string', default: 'dist' } } });
  const outdir = path.resolve(values.outdir);
  // The folder is emptied first: make sure it is an earlier build (or empty), not the repository or $HOME.
  const previous: string[] = await fs.readdir(outdir).catch(() => []);
  if (previous.length > 0 && !previous.includes(BUNDLE)) {
    throw new Error(`--outdir ${outdir} is neither empty nor an earlier build: not removing it`);
  }
  const started = performance.now();
  await fs.rm(outdir, { recursive: true, force: true });
  await fs.mkdir(outdir, { recursive: true });
  const [, , notes] = await Promise.all([buildCli(outdir), buildWeb(outdir), buildNative(outdir)]);
  for (const asset of bundleAssets)
    await fs.copyFile(path.join(root, asset), path.join(outdir, path.basename(asset)));

  const files = (await listFiles(outdir)).sort((a, b) => b.size - a.size);
  const sum = (list: typeof files) => list.reduce((total, { size }) => total + size, 0);
  const maps = files.filter(({ file }) => file.endsWith('.map'));
  const shown = path.relative(process.cwd(), outdir);
  const lines = [
    `built ${shown.startsWith('..') ? outdir : shown || '.'}/ in ${Math.round(performance.now() - started)} ms: ` +
      `${files.length} files, ${kib(sum(files)).trim()} in all (${kib(sum(maps)).trim()} of it source maps)`,
    ...files.slice(0, 8).map(({ file, size }) => `${kib(size)}  ${file}`),
    ...(files.length > 8 ? [`  (${files.length - 8} smaller files)`] : []),
    ...notes,
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}

await main();
