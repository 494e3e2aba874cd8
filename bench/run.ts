/**
 * `npm run bench`: throughput and CPU of the bridge and the whole Proxy path next to their baselines,
 * all measured side by side in this one run (a benchmark, not a test). Prints a table and writes
 * bench/results/latest.json with `rows` and `ratios`. Loopback only.
 * VMEDIA_BENCH_MIB changes the payload (default 1024 MiB), VMEDIA_BENCH_ROUNDS the rounds per row (3).
 */
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs/promises';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import autocannon from 'autocannon';
import { WebSocket } from 'ws';
import { generateSelfSigned } from '../src/tls/certificate.ts';
import { byteSink, cpuSecondsOfTree, GiB, MiB, spawnServer } from './measure.ts';

const run = promisify(execFile);
const root = fileURLToPath(new URL('..', import.meta.url));
const payloadBytes = Number(process.env.VMEDIA_BENCH_MIB ?? 1024) * MiB;
const CHUNK = 256 * 1024;
const CLIENT_QUEUE = 4 * MiB;
const REQUEST_SECONDS = 10;
/** Rounds per throughput row; each row reports the median. */
const rounds = Number(process.env.VMEDIA_BENCH_ROUNDS ?? 3);

interface Row {
  name: string;
  what: string;
  mibPerSecond?: number;
  serverCpuSecondsPerGiB?: number;
  requestsPerSecond?: number;
}

const work = await fs.mkdtemp(path.join(os.tmpdir(), 'vmedia-bench-'));
const certFile = path.join(work, 'cert.pem');
const keyFile = path.join(work, 'key.pem');
const { cert, key } = await generateSelfSigned();
await fs.writeFile(certFile, cert);
await fs.writeFile(keyFile, key, { mode: 0o600 });
const sinkPath = path.join(work, 'sink.sock');
const pattern = Buffer.alloc(CHUNK);
for (let i = 0; i < CHUNK; i++) pattern[i] = (i * 2654435761) >>> 24;

type Server = Awaited<ReturnType<typeof spawnServer>>;

interface Relay {
  name: string;
  what: string;
  start(): Promise<Server>;
  send(server: Server): Promise<void>;
}

interface Sample {
  mibPerSecond: number;
  serverCpuSecondsPerGiB: number;
}

/** Streams `payloadBytes` through a fresh instance of `relay` and measures until the sink has them all. */
async function measureRelay(relay: Relay, round: number): Promise<Sample> {
  progress(`${relay.name}: ${payloadBytes / MiB} MiB, round ${round}`);
  const server = await relay.start();
  const sink = await byteSink(sinkPath);
  try {
    const received = sink.received(payloadBytes);
    const cpuBefore = await cpuSecondsOfTree(server.child.pid!);
    const started = process.hrtime.bigint();
    await Promise.all([relay.send(server), received]);
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    const cpu = (await cpuSecondsOfTree(server.child.pid!)) - cpuBefore;
    return { mibPerSecond: payloadBytes / MiB / seconds, serverCpuSecondsPerGiB: cpu / (payloadBytes / GiB) };
  } finally {
    sink.close();
    await server.stop();
  }
}

/** The middle value: one slow round (another process waking up) does not move it. */
function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

function sendOverWebSocket(url: string, protocols: string[] = []): Promise<void> {
  const ws = new WebSocket(url, protocols, { rejectUnauthorized: false, perMessageDeflate: false });
  return new Promise<void>((resolve, reject) => {
    let sent = 0;
    const pump = (error?: Error) => {
      if (error) return reject(error);
      while (sent < payloadBytes && ws.bufferedAmount < CLIENT_QUEUE) {
        const length = Math.min(CHUNK, payloadBytes - sent);
        ws.send(length === CHUNK ? pattern : pattern.subarray(0, length), { binary: true }, pump);
        sent += length;
      }
      if (sent >= payloadBytes) resolve();
    };
    ws.once('open', () => pump());
    ws.once('error', reject);
  }).finally(() => setTimeout(() => ws.terminate(), 1000).unref());
}

async function sendOverTls(port: number): Promise<void> {
  const socket = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false });
  await once(socket, 'secureConnect');
  for (let sent = 0; sent < payloadBytes; sent += CHUNK) {
    const length = Math.min(CHUNK, payloadBytes - sent);
    if (!socket.write(length === CHUNK ? pattern : pattern.subarray(0, length))) await once(socket, 'drain');
  }
  setTimeout(() => socket.destroy(), 1000).unref();
}

const tsx = (script: string, ...args: string[]) => ['--import', 'tsx', path.join(root, script), ...args];
const listening = /^listening (\d+)/;

const relays: Relay[] = [
  {
    name: 'bridge',
    what: 'WSS → our Relay → Unix socket',
    start: () =>
      spawnServer(
        process.execPath,
        tsx('bench/relay-server.ts', 'bridge', certFile, keyFile, sinkPath),
        listening,
      ),
    send: (server) => sendOverWebSocket(`wss://127.0.0.1:${server.match[1]}/`),
  },
  {
    name: 'tls',
    what: 'Node TLS socket → Unix socket (baseline)',
    start: () =>
      spawnServer(
        process.execPath,
        tsx('bench/relay-server.ts', 'tls', certFile, keyFile, sinkPath),
        listening,
      ),
    send: (server) => sendOverTls(Number(server.match[1])),
  },
  {
    name: 'websockify',
    what: 'WSS → websockify (Debian) → Unix socket',
    start: async () => {
      const port = await freePort();
      const args = ['--ssl-only', `--cert=${certFile}`, `--key=${keyFile}`, `--unix-target=${sinkPath}`];
      const server = await spawnServer('websockify', [...args, `127.0.0.1:${port}`], /Listen on/i);
      server.match[1] = String(port);
      return server;
    },
    send: (server) => sendOverWebSocket(`wss://127.0.0.1:${server.match[1]}/`, ['binary']),
  },
];

/** Every relay once per round, interleaved, so that a busy moment of the machine hits all of them alike. */
async function relayRows(): Promise<Row[]> {
  const samples = new Map<string, Sample[]>(relays.map((relay) => [relay.name, []]));
  for (let round = 1; round <= rounds; round++) {
    for (const relay of relays) samples.get(relay.name)!.push(await measureRelay(relay, round));
  }
  return relays.map(({ name, what }) => ({
    name,
    what,
    mibPerSecond: median(samples.get(name)!.map((sample) => sample.mibPerSecond)),
    serverCpuSecondsPerGiB: median(samples.get(name)!.map((sample) => sample.serverCpuSecondsPerGiB)),
  }));
}

async function freePort(): Promise<number> {
  const server = net.createServer().listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  server.close();
  return port;
}

/** requests/s of an autocannon run of REQUEST_SECONDS against `url`. */
async function requestsPerSecond(url: string, headers: Record<string, string> = {}): Promise<number> {
  const result = await autocannon({ url, headers, connections: 16, duration: REQUEST_SECONDS });
  if (result.non2xx > 0 || result.errors > 0) {
    throw new Error(`${url}: ${result.non2xx} non-2xx answers and ${result.errors} errors`);
  }
  return result.requests.average;
}

interface Stack {
  url: string;
  stateDir: string;
  token: string;
  stop(): Promise<void>;
}

async function startStack(): Promise<Stack> {
  const stateDir = path.join(work, 'state');
  const password = 'bench-Passw0rd-only';
  const stack = await spawnServer(
    process.execPath,
    [path.join(root, 'bin/vmedia.js'), 'start'],
    /vmedia ready: (https:\S+)/,
    {
      ...process.env,
      VMEDIA_STATE_DIR: stateDir,
      VMEDIA_PORT: '0',
      VMEDIA_ADMIN_PASSWORD: password,
      VMEDIA_LOG_LEVEL: 'warn',
    },
  );
  const url = stack.match[1]!;
  const login = await httpsJson(`${url}/redfish/v1/SessionService/Sessions`, {
    UserName: 'admin',
    Password: password,
  });
  return { url, stateDir, token: login.token, stop: stack.stop };
}

async function httpsJson(url: string, body: unknown): Promise<{ token: string }> {
  return new Promise((resolve, reject) => {
    const request = https.request(
      url,
      { method: 'POST', rejectUnauthorized: false, headers: { 'content-type': 'application/json' } },
      (response) => {
        response.resume();
        const token = response.headers['x-auth-token'];
        if (response.statusCode !== 201 || typeof token !== 'string')
          reject(new Error(`login: ${response.statusCode}`));
        else resolve({ token });
      },
    );
    request.on('error', reject);
    request.end(JSON.stringify(body));
  });
}

async function redfishRows(stack: Stack): Promise<Row[]> {
  const member = `${stack.url}/redfish/v1/Managers/bmc/VirtualMedia/Slot_0`;
  const vmedia = await requestsPerSecond(member, { 'X-Auth-Token': stack.token });
  const hello = await spawnServer(
    process.execPath,
    tsx('bench/hello-server.ts', certFile, keyFile),
    listening,
  );
  try {
    const bare = await requestsPerSecond(`https://127.0.0.1:${hello.match[1]}/`);
    return [
      { name: 'redfish', what: 'GET VirtualMedia member, session token', requestsPerSecond: vmedia },
      { name: 'hello', what: 'bare fastify HTTPS hello-world (baseline)', requestsPerSecond: bare },
    ];
  } finally {
    await hello.stop();
  }
}

/** A file of `payloadBytes` non-zero bytes: no holes, so no reader can skip any of it. */
async function imageFile(): Promise<string> {
  const file = path.join(work, 'image.img');
  const handle = await fs.open(file, 'w');
  for (let written = 0; written < payloadBytes; written += CHUNK)
    await handle.write(pattern, 0, Math.min(CHUNK, payloadBytes - written));
  await handle.close();
  return file;
}

async function timedCopy(socket: string): Promise<number> {
  const started = process.hrtime.bigint();
  await run('nbdcopy', [`nbd+unix:///?socket=${socket}`, 'null:']);
  return Number(process.hrtime.bigint() - started) / 1e9;
}

async function endToEndRows(stack: Stack, image: string): Promise<Row[]> {
  const passwordFile = path.join(work, 'password');
  await fs.writeFile(passwordFile, 'bench-Passw0rd-only', { mode: 0o600 });
  const hostSocket = path.join(stack.stateDir, 'host', 'Slot_0.sock');
  const mount = await spawnServer(
    process.execPath,
    [
      path.join(root, 'bin/vmedia.js'),
      'mount',
      'Slot_0',
      image,
      '--url',
      stack.url,
      '--user',
      'admin',
      '--password-file',
      passwordFile,
      '--insecure',
    ],
    /mounted|serving|Inserted/i,
  );
  const nbdkitSocket = path.join(work, 'nbdkit.sock');
  const nbdkit = await spawnServer(
    'nbdkit',
    ['--foreground', '--verbose', '--readonly', '--unix', nbdkitSocket, 'file', `file=${image}`],
    /nbdkit: .*(listening|bound|main thread)/i,
  );
  const e2e: number[] = [];
  const direct: number[] = [];
  try {
    for (let tries = 0; tries < 100 && !(await fs.stat(hostSocket).catch(() => undefined)); tries++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    for (let round = 1; round <= rounds; round++) {
      progress(`e2e and nbdkit: ${payloadBytes / MiB} MiB, round ${round}`);
      e2e.push(payloadBytes / MiB / (await timedCopy(hostSocket)));
      direct.push(payloadBytes / MiB / (await timedCopy(nbdkitSocket)));
    }
  } finally {
    await mount.stop();
    await nbdkit.stop();
  }
  return [
    {
      name: 'e2e',
      what: 'vmedia mount → WSS bridge → service → host export, nbdcopy',
      mibPerSecond: median(e2e),
    },
    {
      name: 'nbdkit',
      what: 'nbdkit file read directly with nbdcopy (no-network limit)',
      mibPerSecond: median(direct),
    },
  ];
}

function progress(message: string): void {
  process.stderr.write(`bench: ${message}\n`);
}

const ratio = (a: number | undefined, b: number | undefined) =>
  a && b ? Number((a / b).toFixed(3)) : undefined;

try {
  const rows = await relayRows();
  const image = await imageFile();
  const stack = await startStack();
  try {
    rows.push(...(await redfishRows(stack)));
    rows.push(...(await endToEndRows(stack, image)));
  } finally {
    await stack.stop();
  }
  const by = (name: string) => rows.find((row) => row.name === name)!;
  const ratios = {
    bridge_vs_tls: ratio(by('bridge').mibPerSecond, by('tls').mibPerSecond),
    bridge_vs_websockify: ratio(by('bridge').mibPerSecond, by('websockify').mibPerSecond),
    e2e_vs_nbdkit: ratio(by('e2e').mibPerSecond, by('nbdkit').mibPerSecond),
    redfish_vs_hello: ratio(by('redfish').requestsPerSecond, by('hello').requestsPerSecond),
  };
  const goals = { bridge_vs_tls: 0.8, bridge_vs_websockify: 2, e2e_vs_nbdkit: 0.5, redfish_vs_hello: 0.7 };
  const fixed = (value: number | undefined, digits: number) =>
    value === undefined ? '' : value.toFixed(digits);
  console.table(
    rows.map((row) => ({
      row: row.name,
      'MiB/s': fixed(row.mibPerSecond, 1),
      'server CPU s/GiB': fixed(row.serverCpuSecondsPerGiB, 2),
      'requests/s': fixed(row.requestsPerSecond, 0),
      what: row.what,
    })),
  );
  console.table(
    Object.entries(ratios).map(([name, value]) => ({
      ratio: name,
      value,
      goal: `≥ ${goals[name as keyof typeof goals]}`,
    })),
  );
  const results = {
    date: new Date().toISOString(),
    machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model, node: process.version },
    payloadMiB: payloadBytes / MiB,
    rounds,
    rows,
    ratios,
    goals,
  };
  await fs.mkdir(path.join(root, 'bench/results'), { recursive: true });
  await fs.writeFile(path.join(root, 'bench/results/latest.json'), `${JSON.stringify(results, null, 2)}\n`);
} finally {
  await fs.rm(work, { recursive: true, force: true });
}
