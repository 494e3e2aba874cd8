import { mkdtemp, rm } from 'node:fs/promises';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import { createLogger } from '../../src/log.ts';
import { type ServerOptions, startServer } from '../../src/server/app.ts';
import { ensureSelfSigned } from '../../src/tls/certificate.ts';
import { assertValidRedfish } from './redfish-schema.ts';
import { recordSecret, runLogFile } from './run-logs.ts';

export const adminPassword = 'correct horse battery';
recordSecret(adminPassword);

/**
 * The test server's log: VMEDIA_TEST_LOG's level on stdout when asked for; in `npm test`, debug level
 * into the run's logs (checked for secrets at the end); otherwise none.
 */
function testServerLogger() {
  if (process.env.VMEDIA_TEST_LOG) return createLogger('test-server', process.env.VMEDIA_TEST_LOG);
  const file = runLogFile('server');
  return file
    ? createLogger('test-server', 'debug', pino.destination({ dest: file, sync: true }))
    : createLogger('test-server', 'silent');
}

export interface Response {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  // biome-ignore lint/suspicious/noExplicitAny: tests inspect response bodies freely.
  json: any;
}

export type Credentials = { basic: [string, string] } | { token: string } | { none: true };

export interface RequestOptions {
  /** Serialised as JSON with Content-Type application/json. */
  body?: unknown;
  /** Sent as is, for malformed or non-JSON bodies. */
  rawBody?: string | Buffer;
  headers?: Record<string, string>;
  /** admin's Basic credentials unless given. */
  auth?: Credentials;
  /** The client's source address (any of 127.0.0.0/8 reaches the server): another client to the server. */
  localAddress?: string;
}

export interface TestServer {
  app: FastifyInstance;
  url: string;
  stateDir: string;
  /** The generated certificate, to be trusted by clients. */
  ca: string;
  request(method: string, uri: string, options?: RequestOptions): Promise<Response>;
  /** Logs in through SessionService and answers the token and the session's URI. */
  login(username: string, password: string): Promise<{ token: string; location: string }>;
  close(): Promise<void>;
}

/** Documents under /redfish that are not Redfish resources (no schema in schemas/ describes them). */
const schemaless = new Set(['/redfish', '/redfish/', '/redfish/v1/odata']);

/**
 * The real HTTPS server on 127.0.0.1 with an ephemeral port and a temporary state directory, `admin`
 * provisioned with `adminPassword`. Every JSON body fetched under /redfish is validated against its
 * schema in schemas/ before the test sees it.
 */
export async function startTestServer(overrides: Partial<ServerOptions> = {}): Promise<TestServer> {
  const stateDir = overrides.stateDir ?? (await mkdtemp(path.join(os.tmpdir(), 'vmedia-test-')));
  const options: ServerOptions = {
    stateDir,
    host: '127.0.0.1',
    port: 0,
    adminPassword,
    logger: testServerLogger(),
    ...overrides,
  };
  const { app, url } = await startServer(options);
  const ca = overrides.tls ? undefined : (await ensureSelfSigned(path.join(stateDir, 'certs'))).cert;
  const agent = new https.Agent({ ca, keepAlive: false });

  const request = async (
    method: string,
    uri: string,
    requestOptions: RequestOptions = {},
  ): Promise<Response> => {
    const headers: Record<string, string> = { ...requestOptions.headers };
    const auth = requestOptions.auth ?? { basic: ['admin', adminPassword] };
    if ('basic' in auth)
      headers.Authorization = `Basic ${Buffer.from(auth.basic.join(':')).toString('base64')}`;
    if ('token' in auth) headers['X-Auth-Token'] = auth.token;
    let payload = requestOptions.rawBody;
    if (requestOptions.body !== undefined && payload === undefined) {
      payload = JSON.stringify(requestOptions.body);
      headers['Content-Type'] ??= 'application/json';
    }
    const response = await new Promise<Response>((resolve, reject) => {
      const { localAddress } = requestOptions;
      const req = https.request(
        new URL(uri, url),
        { method, headers, agent, ...(localAddress ? { localAddress } : {}) },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            const isJson = /^application\/json/.test(String(res.headers['content-type'] ?? ''));
            resolve({
              status: res.statusCode ?? 0,
              headers: res.headers,
              text,
              json: isJson && text ? JSON.parse(text) : undefined,
            });
          });
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.end(payload);
    });
    const pathname = new URL(uri, url).pathname;
    if (response.json !== undefined && pathname.startsWith('/redfish') && !schemaless.has(pathname)) {
      assertValidRedfish(response.json);
    }
    return response;
  };

  const login = async (username: string, password: string) => {
    const response = await request('POST', '/redfish/v1/SessionService/Sessions', {
      auth: { none: true },
      body: { UserName: username, Password: password },
    });
    if (response.status !== 201)
      throw new Error(`login as ${username} failed: ${response.status} ${response.text}`);
    const token = String(response.headers['x-auth-token']);
    recordSecret(token);
    return { token, location: String(response.headers.location) };
  };

  return {
    app,
    url,
    stateDir,
    ca: ca ?? '',
    request,
    login,
    async close() {
      agent.destroy();
      await app.close();
      if (!overrides.stateDir) await rm(stateDir, { recursive: true, force: true });
    },
  };
}
