import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { freeLoopbackPort } from './ports.ts';
import { waitFor } from './wait.ts';

export interface Nginx {
  /** `http://127.0.0.1:<port>`, or `https://` when started with TLS */
  origin: string;
  stop(): Promise<void>;
}

/**
 * Debian's nginx serving `files` (URL path → bytes) over plain HTTP on a free loopback port: a real web
 * server, with its own range handling. One process (`master_process off`), everything in a temporary
 * folder, so it runs next to anything else and leaves nothing behind.
 */
export async function startNginx(
  files: Record<string, Uint8Array>,
  /** PEM certificate and key: serve HTTPS instead of HTTP. */
  tls?: { cert: string; key: string },
): Promise<Nginx> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vmedia-nginx-'));
  const root = path.join(dir, 'www');
  for (const [urlPath, bytes] of Object.entries(files)) {
    const file = path.join(root, urlPath);
    await fs.mkdir(path.dirname(file), { recursive: true });
    await fs.writeFile(file, bytes);
  }
  const port = await freeLoopbackPort();
  if (tls) {
    await fs.writeFile(path.join(dir, 'server.crt'), tls.cert);
    await fs.writeFile(path.join(dir, 'server.key'), tls.key, { mode: 0o600 });
  }
  const listen = tls
    ? `listen 127.0.0.1:${port} ssl; ssl_certificate ${path.join(dir, 'server.crt')}; ssl_certificate_key ${path.join(dir, 'server.key')};`
    : `listen 127.0.0.1:${port};`;
  const temp = (name: string) => `${name} ${path.join(dir, name)};`;
  const config = `daemon off;
master_process off;
worker_processes 1;
pid ${path.join(dir, 'nginx.pid')};
error_log ${path.join(dir, 'error.log')};
events { worker_connections 64; }
http {
  access_log off;
  ${temp('client_body_temp_path')} ${temp('proxy_temp_path')} ${temp('fastcgi_temp_path')}
  ${temp('uwsgi_temp_path')} ${temp('scgi_temp_path')}
  server { ${listen} root ${root}; }
}
`;
  await fs.writeFile(path.join(dir, 'nginx.conf'), config);
  const child: ChildProcess = spawn(
    '/usr/sbin/nginx',
    ['-c', path.join(dir, 'nginx.conf'), '-e', path.join(dir, 'error.log')],
    { stdio: 'ignore' },
  );
  const origin = `${tls ? 'https' : 'http'}://127.0.0.1:${port}`;
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      await once(child, 'exit');
    }
    await fs.rm(dir, { recursive: true, force: true });
  };
  try {
    const listening = async () =>
      new Promise<boolean>((resolve) => {
        const socket = net.connect(port, '127.0.0.1', () => {
          socket.destroy();
          resolve(true);
        });
        socket.once('error', () => resolve(false));
      });
    await waitFor(listening, {
      what: 'nginx to listen',
      timeoutMs: 10_000,
      intervalMs: 50,
    });
  } catch (error) {
    const log = await fs.readFile(path.join(dir, 'error.log'), 'utf8').catch(() => '');
    await stop();
    throw new Error(`nginx did not start: ${log}`, { cause: error });
  }
  return { origin, stop };
}
