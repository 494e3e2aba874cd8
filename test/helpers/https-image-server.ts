import { once } from 'node:events';
import type { IncomingMessage, ServerResponse } from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { TestCertificates } from './test-ca.ts';

export interface ImageServerOptions {
  certificates: Pick<TestCertificates, 'key' | 'cert'>;
  /** URL path → image bytes. */
  images: Record<string, Uint8Array>;
  /** When set, every request needs this Basic auth. */
  credentials?: { user: string; password: string };
  /** Requests for which this returns true are never answered: a transfer that is surely in progress. */
  stall?: (request: ImageServerRequest) => boolean;
  /** Milliseconds to hold a request before answering it (0 or undefined: at once), for slow servers. */
  delayMs?: (request: ImageServerRequest) => number;
}

export interface ImageServerRequest {
  method: string;
  path: string;
  range: string | undefined;
  authorized: boolean;
}

export interface ImageServer {
  /** `https://127.0.0.1:<port>` */
  origin: string;
  requests: ImageServerRequest[];
  close(): Promise<void>;
}

/** A loopback HTTPS server for disk images: Basic auth, HEAD, single-range GET (what nbdkit-curl uses). */
export async function startImageServer(options: ImageServerOptions): Promise<ImageServer> {
  const requests: ImageServerRequest[] = [];
  const expectedAuth = options.credentials
    ? `Basic ${Buffer.from(`${options.credentials.user}:${options.credentials.password}`).toString('base64')}`
    : undefined;
  const server = https.createServer(
    { key: options.certificates.key, cert: options.certificates.cert },
    (req, res) => {
      // The path as sent (`//x` is a path here, not a host): a target no URL parser takes is a 400, as a
      // real web server answers it.
      let path: string;
      try {
        path = new URL(`https://image.test${req.url ?? '/'}`).pathname;
      } catch {
        res.writeHead(400).end();
        return;
      }
      const authorized = expectedAuth === undefined || req.headers.authorization === expectedAuth;
      const request = { method: req.method ?? '', path, range: req.headers.range, authorized };
      requests.push(request);
      if (options.stall?.(request)) return;
      const delayMs = options.delayMs?.(request) ?? 0;
      if (delayMs > 0) {
        const timer = setTimeout(() => answer(req, res, request), delayMs);
        res.once('close', () => clearTimeout(timer));
        return;
      }
      answer(req, res, request);
    },
  );
  /** Answers one request: 401 without the credentials, 404, 405, 416 or the (ranged) image. */
  function answer(req: IncomingMessage, res: ServerResponse, request: ImageServerRequest): void {
    const { authorized, path } = request;
    if (!authorized) {
      res.writeHead(401, { 'WWW-Authenticate': 'Basic realm="images"' }).end();
      return;
    }
    const image = options.images[path];
    if (!image) {
      res.writeHead(404).end();
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { Allow: 'GET, HEAD' }).end();
      return;
    }
    const range = parseRange(req.headers.range, image.length);
    if (range === 'invalid') {
      res.writeHead(416, { 'Content-Range': `bytes */${image.length}` }).end();
      return;
    }
    const [start, end] = range ?? [0, image.length - 1];
    const headers = {
      'Accept-Ranges': 'bytes',
      'Content-Type': 'application/octet-stream',
      'Content-Length': String(end - start + 1),
      ...(range ? { 'Content-Range': `bytes ${start}-${end}/${image.length}` } : {}),
    };
    res.writeHead(range ? 206 : 200, headers);
    res.end(req.method === 'HEAD' ? undefined : image.subarray(start, end + 1));
  }
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    origin: `https://127.0.0.1:${port}`,
    requests,
    async close() {
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    },
  };
}

function parseRange(header: string | undefined, size: number): [number, number] | 'invalid' | undefined {
  if (!header) return undefined;
  const match = /^bytes=(\d*)-(\d*)$/.exec(header);
  if (!match || (match[1] === '' && match[2] === '')) return 'invalid';
  let start: number;
  let end: number;
  if (match[1] === '') {
    start = Math.max(0, size - Number(match[2]));
    end = size - 1;
  } else {
    start = Number(match[1]);
    end = match[2] === '' ? size - 1 : Math.min(Number(match[2]), size - 1);
  }
  return start > end || start >= size ? 'invalid' : [start, end];
}
