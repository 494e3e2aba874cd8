import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BuildOptions } from 'esbuild';
import type { FastifyInstance } from 'fastify';

const sourceDir = path.dirname(fileURLToPath(import.meta.url));

/**
 * The folder of the prebuilt UI, relative to the bundle's own file: scripts/build.ts (esbuild `define`)
 * replaces this name with a string literal ("web") in dist/. Running from the sources nothing defines
 * it, `typeof` answers 'undefined', and the UI is bundled in memory instead.
 */
declare const VMEDIA_PREBUILT_UI: string | undefined;

/** The browser bundle: built in memory here from the sources, written to dist/web/ by scripts/build.ts. */
export const uiBuildOptions = {
  entryPoints: { app: path.join(sourceDir, 'main.ts') },
  bundle: true,
  format: 'esm',
  target: 'es2022',
  minify: true,
  sourcemap: 'linked',
} satisfies BuildOptions;

/** What is served beside the bundle as it is; index.html is served at `/`. */
export const uiStaticFiles = ['index.html', 'favicon.svg'] as const;

interface Asset {
  body: Buffer;
  type: string;
  etag: string;
}

const contentTypes: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.svg': 'image/svg+xml',
};

let assets: Promise<Map<string, Asset>> | undefined;

/** The URL a file is served at (index.html at `/`) and its asset. */
function asset(name: string, body: Buffer | Uint8Array): [string, Asset] {
  const buffer = Buffer.from(body);
  const etag = `"${createHash('sha256').update(buffer).digest('base64url').slice(0, 22)}"`;
  return [
    name === 'index.html' ? '/' : `/${name}`,
    { body: buffer, type: contentTypes[path.extname(name)] ?? 'application/octet-stream', etag },
  ];
}

/**
 * Bundles the UI with esbuild, in memory. Built when the server starts (once per process, ~100 ms) rather
 * than by a separate step: the served page always matches the sources, there is no build output to go
 * stale or to race over when several servers start at once, and a fresh clone needs nothing extra.
 * esbuild is loaded here only, so that the bundle in dist/ (which never calls this) does not need it.
 */
async function buildAssets(): Promise<Map<string, Asset>> {
  const { build } = await import('esbuild');
  const result = await build({ ...uiBuildOptions, outdir: '/', write: false, logLevel: 'silent' });
  const files = new Map(result.outputFiles.map((file) => asset(path.basename(file.path), file.contents)));
  for (const name of uiStaticFiles) files.set(...asset(name, await fs.readFile(path.join(sourceDir, name))));
  return files;
}

/** Reads the UI that scripts/build.ts wrote beside the bundle: every file of the folder, as it is. */
async function readPrebuiltAssets(folder: string): Promise<Map<string, Asset>> {
  const dir = fileURLToPath(new URL(`${folder}/`, import.meta.url));
  const names = (await fs.readdir(dir)).sort();
  return new Map(
    await Promise.all(names.map(async (name) => asset(name, await fs.readFile(path.join(dir, name))))),
  );
}

/**
 * A ternary on the `typeof` itself, so that esbuild folds it in the bundle and drops the other branch
 * (buildAssets, and the esbuild import with it): scripts/build.ts checks that none is left.
 */
function loadAssets(): Promise<Map<string, Asset>> {
  return typeof VMEDIA_PREBUILT_UI === 'string' ? readPrebuiltAssets(VMEDIA_PREBUILT_UI) : buildAssets();
}

/**
 * Serves the web UI: `/` and the bundle beside it, public (the page itself asks for a login). The
 * security headers (CSP and friends) come from the server's own plugin, as for every response.
 */
export async function webUiPlugin(app: FastifyInstance): Promise<void> {
  assets ??= loadAssets();
  const files = await assets.catch((error: unknown) => {
    assets = undefined; // let a later start retry after the sources are fixed
    throw error;
  });
  for (const [url, { body, type, etag }] of files) {
    app.get(url, { config: { public: true }, schema: { hide: true } }, async (request, reply) => {
      reply.headers({ 'Cache-Control': 'no-cache', ETag: etag });
      if (request.headers['if-none-match'] === etag) return reply.code(304).send();
      return reply.type(type).send(body);
    });
  }
}
