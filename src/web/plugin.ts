import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import type { FastifyInstance } from 'fastify';

const sourceDir = path.dirname(fileURLToPath(import.meta.url));

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

function asset(name: string, body: Buffer | Uint8Array): [string, Asset] {
  const buffer = Buffer.from(body);
  const etag = `"${createHash('sha256').update(buffer).digest('base64url').slice(0, 22)}"`;
  return [
    `/${name}`,
    { body: buffer, type: contentTypes[path.extname(name)] ?? 'application/octet-stream', etag },
  ];
}

/**
 * Bundles the UI with esbuild, in memory. Built when the server starts (once per process, ~100 ms) rather
 * than by a separate step: the served page always matches the sources, there is no build output to go
 * stale or to race over when several servers start at once, and a fresh clone needs nothing extra.
 */
async function buildAssets(): Promise<Map<string, Asset>> {
  const result = await build({
    entryPoints: { app: path.join(sourceDir, 'main.ts') },
    bundle: true,
    format: 'esm',
    target: 'es2022',
    minify: true,
    sourcemap: 'linked',
    outdir: '/',
    write: false,
    logLevel: 'silent',
  });
  const files = new Map(result.outputFiles.map((file) => asset(path.basename(file.path), file.contents)));
  files.set('/', asset('index.html', await fs.readFile(path.join(sourceDir, 'index.html')))[1]);
  files.set(...asset('favicon.svg', await fs.readFile(path.join(sourceDir, 'favicon.svg'))));
  return files;
}

/**
 * Serves the web UI: `/` and the bundle beside it, public (the page itself asks for a login). The
 * security headers (CSP and friends) come from the server's own plugin, as for every response.
 */
export async function webUiPlugin(app: FastifyInstance): Promise<void> {
  assets ??= buildAssets();
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
