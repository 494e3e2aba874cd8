import fs from 'node:fs/promises';
import https from 'node:https';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ParseArgsConfig } from 'node:util';
import { WebSocket } from 'ws';
import { readEnvironment, statePaths } from '../config/environment.ts';

/** The connection options every client verb takes (docs/contract.md §7), for `parseArgs`. */
export const connectionOptions = {
  url: { type: 'string' },
  user: { type: 'string' },
  'password-file': { type: 'string' },
  ca: { type: 'string' },
  insecure: { type: 'boolean', default: false },
} as const satisfies ParseArgsConfig['options'];

export const connectionUsage =
  '--url URL (default https://VMEDIA_HOST:VMEDIA_PORT), --user NAME (or VMEDIA_USER; default admin), ' +
  '--password-file FILE (or VMEDIA_PASSWORD), --ca FILE | --insecure';

export type ConnectionValues = {
  url?: string;
  user?: string;
  'password-file'?: string;
  ca?: string;
  insecure?: boolean;
};

export interface RedfishResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  // biome-ignore lint/suspicious/noExplicitAny: Redfish documents are read field by field.
  json: any;
}

/** A refusal from the server, with the Redfish message it gave (never the request's body). */
export class RedfishRequestError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'RedfishRequestError';
  }
}

const TASK_POLL_MS = 250;

/**
 * A Redfish session for the CLI verbs: logs in once through SessionService (the password is sent
 * once; later requests carry the session token), and logs out on `close()`.
 */
export class RedfishClient {
  private constructor(
    readonly baseUrl: URL,
    private readonly agent: https.Agent,
    private readonly tls: { ca?: string; rejectUnauthorized: boolean },
    private token = '',
    private sessionUri = '',
  ) {}

  /**
   * Connects with the given options. Without `--ca`, the local stack's certificate is trusted when the
   * state directory has one (the generated self-signed certificate), then the system's CAs.
   * Without a password option, `admin` uses `<state>/admin-password` if the stack generated one.
   */
  static async connect(values: ConnectionValues, env?: NodeJS.ProcessEnv): Promise<RedfishClient> {
    const environment = readEnvironment(env);
    const host = environment.host.includes(':') ? `[${environment.host}]` : environment.host;
    const baseUrl = new URL(values.url ?? `https://${host}:${environment.port}`);
    if (baseUrl.protocol !== 'https:') throw new Error(`--url must be an https:// URL, got ${baseUrl.href}`);
    const user = values.user ?? environment.clientUser ?? 'admin';
    const paths = statePaths(environment.stateDir);
    const password = await readPassword(
      values['password-file'],
      environment.clientPassword,
      user,
      paths.adminPassword,
    );
    const ca = values.ca
      ? await fs.readFile(values.ca, 'utf8')
      : await fs.readFile(path.join(paths.certs, 'server.crt'), 'utf8').catch(() => undefined);
    const tls = { ...(ca && !values.insecure ? { ca } : {}), rejectUnauthorized: !values.insecure };
    const agent = new https.Agent({ ...tls, keepAlive: true });
    const client = new RedfishClient(baseUrl, agent, tls);
    await client.login(user, password);
    return client;
  }

  async request(method: string, uri: string, body?: unknown): Promise<RedfishResponse> {
    const headers: Record<string, string> = { Accept: 'application/json' };
    if (this.token) headers['X-Auth-Token'] = this.token;
    const payload = body === undefined ? undefined : JSON.stringify(body);
    if (payload !== undefined) headers['Content-Type'] = 'application/json';
    return new Promise((resolve, reject) => {
      const req = https.request(new URL(uri, this.baseUrl), { method, headers, agent: this.agent }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json: unknown;
          try {
            json = text ? JSON.parse(text) : undefined;
          } catch {
            json = undefined;
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, json });
        });
        res.on('error', reject);
      });
      req.on('error', reject);
      req.end(payload);
    });
  }

  /** GET that must succeed. */
  async get(uri: string): Promise<RedfishResponse['json']> {
    const response = await this.request('GET', uri);
    if (response.status !== 200) throw failure(response, `GET ${uri}`);
    return response.json;
  }

  /**
   * POSTs an action and waits for its outcome: a synchronous answer, or the task behind a 202, followed
   * on its monitor until it finishes. Throws a RedfishRequestError with the server's message on failure.
   */
  async action(uri: string, body: unknown): Promise<void> {
    let response = await this.request('POST', uri, body);
    while (response.status === 202) {
      const monitor = header(response, 'location');
      if (!monitor) throw new Error(`${uri} answered 202 without a task monitor`);
      await sleep(TASK_POLL_MS);
      response = await this.request('GET', monitor);
    }
    if (response.status >= 400) throw failure(response, `POST ${uri}`);
  }

  /** A WebSocket to `endpoint` on the server, authenticated with the session token. */
  webSocket(endpoint: string, options: { maxPayload?: number } = {}): WebSocket {
    const url = new URL(endpoint, this.baseUrl);
    url.protocol = 'wss:';
    return new WebSocket(url, {
      ...this.tls,
      ...options,
      headers: { 'X-Auth-Token': this.token },
      perMessageDeflate: false,
      // Masking guards against cache poisoning by proxies that can read the frames; inside TLS none
      // can, and an all-zero key lets ws (and the server) skip masking the payload altogether.
      generateMask: (mask: Buffer) => mask.fill(0),
    });
  }

  /** Logs out (best effort: the session expires anyway) and releases the connections. */
  async close(): Promise<void> {
    if (this.sessionUri) await this.request('DELETE', this.sessionUri).catch(() => undefined);
    this.sessionUri = '';
    this.token = '';
    this.agent.destroy();
  }

  private async login(user: string, password: string): Promise<void> {
    const response = await this.request('POST', '/redfish/v1/SessionService/Sessions', {
      UserName: user,
      Password: password,
    });
    if (response.status !== 201) throw failure(response, `login as ${user}`);
    this.token = header(response, 'x-auth-token') ?? '';
    this.sessionUri = header(response, 'location') ?? '';
    if (!this.token) throw new Error('the server created a session without a token');
  }
}

async function readPassword(
  file: string | undefined,
  fromEnv: string | undefined,
  user: string,
  generated: string,
): Promise<string> {
  // One line; the trailing newline an editor or `echo` adds is not part of the password.
  if (file) return (await fs.readFile(file, 'utf8')).replace(/\r?\n$/, '');
  if (fromEnv) return fromEnv;
  if (user === 'admin') {
    const saved = await fs.readFile(generated, 'utf8').catch(() => undefined);
    if (saved !== undefined) return saved.trim();
  }
  throw new Error('no password: give --password-file or set VMEDIA_PASSWORD');
}

function header(response: RedfishResponse, name: string): string | undefined {
  const value = response.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

/** The Redfish message of an error response (the first extended message, else the summary). */
function failure(response: RedfishResponse, what: string): RedfishRequestError {
  const error = response.json?.error;
  const extended = error?.['@Message.ExtendedInfo']?.[0]?.Message;
  const message = extended ?? error?.message ?? `HTTP ${response.status}`;
  return new RedfishRequestError(response.status, `${what}: ${message}`);
}
