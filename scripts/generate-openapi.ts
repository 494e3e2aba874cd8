/**
 * Writes openapi/openapi.yaml from the routes' own schemas (`npm run openapi`). The server is built
 * (every plugin registered, nothing listening) in a throw-away state directory.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createLogger } from '../src/log.ts';
import { buildServer, prepareServerState } from '../src/server/app.ts';

export const openapiFile = fileURLToPath(new URL('../openapi/openapi.yaml', import.meta.url));

export async function renderOpenapi(): Promise<string> {
  const stateDir = await mkdtemp(path.join(os.tmpdir(), 'vmedia-openapi-'));
  try {
    const options = {
      stateDir,
      host: '127.0.0.1',
      port: 0,
      adminPassword: 'openapi-generation',
      logger: createLogger('openapi', 'silent'),
    };
    const app = await buildServer(options, await prepareServerState(options));
    await app.ready();
    const yaml = app.swagger({ yaml: true });
    await app.close();
    return yaml;
  } finally {
    await rm(stateDir, { recursive: true, force: true });
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  await writeFile(openapiFile, await renderOpenapi());
  process.stdout.write(`wrote ${path.relative(process.cwd(), openapiFile)}\n`);
}
