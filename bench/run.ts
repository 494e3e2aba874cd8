/**
 * `npm run bench`: the bridge, the Redfish server and the whole Proxy path next to their baselines, both
 * sides of every ratio measured side by side in this one run (a benchmark, not a test: missed goals are
 * reported, the exit code stays 0). Loopback only. The stack runs from dist/ (`npm run bench` builds it
 * first), as deployed; the relays run from source, which costs nothing per byte.
 *
 *   bridge, tls, websockify   a payload streamed through each relay: MiB/s and the relay's CPU s/GiB
 *   redfish, hello            autocannon against a VirtualMedia member (session token) and against a bare
 *                             fastify HTTPS hello-world bundled like dist/: requests/s, server CPU µs/request
 *   login                     30 logins, each session deleted again: median and p90 ms, server CPU ms/login
 *   proxy                     `vmedia mount` → WSS → server → service → host export, read with nbdcopy:
 *                             MiB/s and the CPU s/GiB of every vmedia process together
 *   qd1, qd1_nbdkit           4 KiB random reads one at a time from the host export, and from nbdkit behind
 *                             the bare TLS pipe: p50 and p99 µs
 *   rss_node, rss_server,     VmRSS of a bare idle node, and of the server and the service idle and at their
 *   rss_service               peak during the proxy copies
 *   startup, startup_hello    `vmedia server` and the hello-world: spawn until the first answered GET, in ms
 *
 * Prints a table of rows and one of ratios against their goals; writes bench/results/latest.json.
 * VMEDIA_BENCH_MIB changes the payload and image (default 1024 MiB), VMEDIA_BENCH_ROUNDS the rounds of the
 * relay and proxy rows (default 3; each reports the median). The startup rows take the median of 5 starts.
 */
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import autocannon from 'autocannon';
import { build } from 'esbuild';
import { WebSocket } from 'ws';
import { statePaths } from '../src/config/environment.ts';
import { NbdClient } from '../src/nbd/client/client.ts';
import { generateSelfSigned } from '../src/tls/self-signed.ts';
import { connectionFromSocket } from '../src/transport/socket-connection.ts';
import { waitFor } from '../test/helpers/wait.ts';
import {
  byteSink,
  cpuSecondsOf,
  cpuSecondsOfTrees,
  daemonPids,
  freePort,
  GiB,
  MiB,
  median,
  percentile,
  rssMiB,
  type Spawned,
  sampleRssPeaks,
  seededRandom,
  spawnProcess,
  spawnServer,
} from './measure.ts';

const execFileAsync = promisify(execFile);
const root = fileURLToPath(new URL('..', import.meta.url));
const vmediaBin = path.join(root, 'dist/vmedia.mjs');
const payloadBytes = Number(process.env.VMEDIA_BENCH_MIB ?? 1024) * MiB;
const rounds = Number(process.env.VMEDIA_BENCH_ROUNDS ?? 3);
const CHUNK = 256 * 1024;
const CLIENT_QUEUE = 4 * MiB;
const REQUEST_SECONDS = 10;
const LOGINS = 30;
const QD1_BLOCK = 4096;
const QD1_WARMUP = 200;
const QD1_READS = 3000;
const STARTS = 5;
/** How long the idle processes are left alone before their memory is read. */
const QUIET_MS = 2000;
const RSS_SAMPLE_MS = 50;
const STARTUP_POLL_MS = 5;
const password = 'bench-Passw0rd-only';
const sessionsPath = '/redfish/v1/SessionService/Sessions';
const memberPath = '/redfish/v1/Managers/bmc/VirtualMedia/Slot_0';

/** Every figure a row can have, with how it is printed (the key names its unit in the JSON). */
const figureFormats = {
  mibPerSecond: (v: number) => `${v.toFixed(1)} MiB/s`,
  serverCpuSecondsPerGiB: (v: number) => `${v.toFixed(2)} server CPU s/GiB`,
  vmediaCpuSecondsPerGiB: (v: number) => `${v.toFixed(2)} vmedia CPU s/GiB`,
  requestsPerSecond: (v: number) => `${v.toFixed(0)} requests/s`,
  serverCpuMicrosecondsPerRequest: (v: number) => `${v.toFixed(0)} server CPU µs/request`,
  medianMs: (v: number) => `median ${v.toFixed(1)} ms`,
  p90Ms: (v: number) => `p90 ${v.toFixed(1)} ms`,
  serverCpuMsPerLogin: (v: number) => `${v.toFixed(1)} server CPU ms/login`,
  p50Microseconds: (v: number) => `p50 ${v.toFixed(0)} µs`,
  p99Microseconds: (v: number) => `p99 ${v.toFixed(0)} µs`,
  idleRssMiB: (v: number) => `idle ${v.toFixed(1)} MiB`,
  peakRssMiB: (v: number) => `peak ${v.toFixed(1)} MiB`,
  startupMs: (v: number) => `${v.toFixed(0)} ms to the first answer`,
};
type Figure = keyof typeof figureFormats;
type Row = { name: string; what: string } & { [F in Figure]?: number };

interface Goal {
  op: '>=' | '<=';
  value: number;
}

/** A ratio of two rows' figures, `of` over `over`, and the goal it is held to (if any). */
interface RatioSpec {
  name: string;
  of: [row: string, figure: Figure];
  over: [row: string, figure: Figure];
  goal?: Goal;
}

const atLeast = (value: number): Goal => ({ op: '>=', value });
const atMost = (value: number): Goal => ({ op: '<=', value });
const ratioSpecs: RatioSpec[] = [
  {
    name: 'bridge_vs_tls',
    of: ['bridge', 'mibPerSecond'],
    over: ['tls', 'mibPerSecond'],
    goal: atLeast(0.9),
  },
  {
    name: 'bridge_vs_tls_cpu',
    of: ['bridge', 'serverCpuSecondsPerGiB'],
    over: ['tls', 'serverCpuSecondsPerGiB'],
    goal: atMost(1.1),
  },
  {
    name: 'bridge_vs_websockify',
    of: ['bridge', 'mibPerSecond'],
    over: ['websockify', 'mibPerSecond'],
    goal: atLeast(2),
  },
  {
    name: 'bridge_vs_websockify_cpu',
    of: ['bridge', 'serverCpuSecondsPerGiB'],
    over: ['websockify', 'serverCpuSecondsPerGiB'],
    goal: atMost(0.5),
  },
  {
    name: 'redfish_vs_hello',
    of: ['redfish', 'requestsPerSecond'],
    over: ['hello', 'requestsPerSecond'],
    goal: atLeast(0.7),
  },
  {
    name: 'redfish_cpu_vs_hello',
    of: ['redfish', 'serverCpuMicrosecondsPerRequest'],
    over: ['hello', 'serverCpuMicrosecondsPerRequest'],
  },
  { name: 'proxy_vs_tls', of: ['proxy', 'mibPerSecond'], over: ['tls', 'mibPerSecond'], goal: atLeast(0.8) },
  // The whole path's CPU (three processes, NBD framing at both ends) against the one bare TLS pipe.
  {
    name: 'proxy_vs_tls_cpu',
    of: ['proxy', 'vmediaCpuSecondsPerGiB'],
    over: ['tls', 'serverCpuSecondsPerGiB'],
    goal: atMost(2.5),
  },
  {
    name: 'qd1_p50',
    of: ['qd1', 'p50Microseconds'],
    over: ['qd1_nbdkit', 'p50Microseconds'],
    goal: atMost(1.5),
  },
  {
    name: 'qd1_p99',
    of: ['qd1', 'p99Microseconds'],
    over: ['qd1_nbdkit', 'p99Microseconds'],
    goal: atMost(2),
  },
  {
    name: 'rss_server_idle',
    of: ['rss_server', 'idleRssMiB'],
    over: ['rss_node', 'idleRssMiB'],
    goal: atMost(1.6),
  },
  {
    name: 'rss_server_peak',
    of: ['rss_server', 'peakRssMiB'],
    over: ['rss_node', 'idleRssMiB'],
    goal: atMost(2.5),
  },
  {
    name: 'rss_service_idle',
    of: ['rss_service', 'idleRssMiB'],
    over: ['rss_node', 'idleRssMiB'],
    goal: atMost(1.3),
  },
  {
    name: 'rss_service_peak',
    of: ['rss_service', 'peakRssMiB'],
    over: ['rss_node', 'idleRssMiB'],
    goal: atMost(1.8),
  },
  { name: 'startup', of: ['startup', 'startupMs'], over: ['startup_hello', 'startupMs'], goal: atMost(2) },
];

function progress(message: string): void {
  process.stderr.write(`bench: ${message}\n`);
}

if (!existsSync(vmediaBin)) {
  progress(
    `${path.relative(root, vmediaBin)} is missing: build it with \`npm run build\` (npm run bench does)`,
  );
  process.exit(1);
}

const work = await fs.mkdtemp(path.join(os.tmpdir(), 'vmedia-bench-'));
const certFile = path.join(work, 'cert.pem');
const keyFile = path.join(work, 'key.pem');
const helloBundle = path.join(work, 'hello.mjs');
const sinkPath = path.join(work, 'sink.sock');
const pattern = Buffer.alloc(CHUNK);
for (let i = 0; i < CHUNK; i++) pattern[i] = (i * 2654435761) >>> 24;

const seconds = (since: bigint) => Number(process.hrtime.bigint() - since) / 1e9;

// ---- bridge, tls, websockify ----

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
    const cpuBefore = await cpuSecondsOfTrees(server.child.pid!);
    const started = process.hrtime.bigint();
    await Promise.all([relay.send(server), received]);
    const elapsed = seconds(started);
    const cpu = (await cpuSecondsOfTrees(server.child.pid!)) - cpuBefore;
    return { mibPerSecond: payloadBytes / MiB / elapsed, serverCpuSecondsPerGiB: cpu / (payloadBytes / GiB) };
  } finally {
    sink.close();
    await server.stop();
  }
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

/** The bare TLS pipe of bench/relay-server.ts in front of the Unix socket `target`. */
const startTlsPipe = (target: string) =>
  spawnServer(process.execPath, tsx('bench/relay-server.ts', 'tls', certFile, keyFile, target), listening);

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
    start: () => startTlsPipe(sinkPath),
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

// ---- the stack ----

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
}

/** One HTTPS request (certificate not checked: the stack's is self-signed); the body is read and dropped. */
function httpsRequest(
  url: string,
  options: { method?: string; headers?: Record<string, string>; body?: unknown; agent?: https.Agent | false },
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const headers = options.body === undefined ? {} : { 'content-type': 'application/json' };
    const request = https.request(
      url,
      {
        method: options.method ?? 'GET',
        rejectUnauthorized: false,
        headers: { ...headers, ...options.headers },
        agent: options.agent,
      },
      (response) => {
        response.resume();
        response.once('end', () => resolve({ status: response.statusCode!, headers: response.headers }));
      },
    );
    request.on('error', reject);
    request.end(options.body === undefined ? undefined : JSON.stringify(options.body));
  });
}

/** POSTs a login; the session's token and Location, which a 201 must carry. */
async function login(url: string, agent?: https.Agent): Promise<{ token: string; location: string }> {
  const answer = await httpsRequest(`${url}${sessionsPath}`, {
    method: 'POST',
    body: { UserName: 'admin', Password: password },
    agent,
  });
  const { 'x-auth-token': token, location } = answer.headers;
  if (answer.status !== 201 || typeof token !== 'string' || typeof location !== 'string') {
    throw new Error(`login: ${answer.status}, token ${typeof token}, Location ${typeof location}`);
  }
  return { token, location };
}

interface Stack extends Spawned {
  url: string;
  stateDir: string;
  token: string;
  /** The launcher's private D-Bus bus. */
  busAddress: string;
  server: number;
  service: number;
}

/**
 * `vmedia start` from dist/, logged in, having answered one authenticated GET; as a BMC runs it after its
 * first boot: a first start provisions the state directory (the
 * certificate, the accounts) and is stopped unmeasured, so the rows see the code of every later start.
 */
async function startStack(): Promise<Stack> {
  const stateDir = path.join(work, 'state');
  const launch = () =>
    spawnServer(process.execPath, [vmediaBin, 'start', '--machine', 'none'], /vmedia ready: (https:\S+)/, {
      ...process.env,
      VMEDIA_STATE_DIR: stateDir,
      VMEDIA_PORT: '0',
      VMEDIA_ADMIN_PASSWORD: password,
      VMEDIA_LOG_LEVEL: 'warn',
    });
  progress('stack: first start, provisioning the state directory (not measured)');
  await (await launch()).stop();
  const launcher = await launch();
  try {
    const url = launcher.match[1]!;
    const { token } = await login(url);
    const member = await httpsRequest(`${url}${memberPath}`, { headers: { 'X-Auth-Token': token } });
    if (member.status !== 200) throw new Error(`GET ${memberPath}: ${member.status}`);
    const busAddress = (await fs.readFile(statePaths(stateDir).dbusAddress, 'utf8')).trim();
    return { ...launcher, url, stateDir, token, busAddress, ...(await daemonPids(launcher.child.pid!)) };
  } catch (error) {
    await launcher.stop();
    throw error;
  }
}

// ---- redfish, hello, login ----

/** An autocannon run of REQUEST_SECONDS against `url`, with the CPU `pid` alone used over exactly that run. */
async function loadTest(
  url: string,
  pid: number,
  headers: Record<string, string> = {},
): Promise<Pick<Row, 'requestsPerSecond' | 'serverCpuMicrosecondsPerRequest'>> {
  const cpuBefore = await cpuSecondsOf(pid);
  const result = await autocannon({ url, headers, connections: 16, duration: REQUEST_SECONDS });
  const cpu = (await cpuSecondsOf(pid)) - cpuBefore;
  if (result.non2xx > 0 || result.errors > 0) {
    throw new Error(`${url}: ${result.non2xx} non-2xx answers and ${result.errors} errors`);
  }
  return {
    requestsPerSecond: result.requests.average,
    serverCpuMicrosecondsPerRequest: (cpu * 1e6) / result.requests.total,
  };
}

/** The bare fastify hello-world bundled like dist/vmedia.mjs, so that both run as plain node. */
async function bundleHello(): Promise<void> {
  await build({
    entryPoints: [path.join(root, 'bench/hello-server.ts')],
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    outfile: helloBundle,
    banner: {
      js: "import { createRequire as __r } from 'node:module'; const require = __r(import.meta.url);",
    },
    logLevel: 'warning',
  });
}

async function redfishRows(stack: Stack): Promise<Row[]> {
  progress(`redfish: ${REQUEST_SECONDS} s of GET ${memberPath}`);
  const vmedia = await loadTest(`${stack.url}${memberPath}`, stack.server, { 'X-Auth-Token': stack.token });
  const hello = await spawnServer(process.execPath, [helloBundle, certFile, keyFile], listening);
  try {
    progress(`hello: ${REQUEST_SECONDS} s of GET /`);
    const bare = await loadTest(`https://127.0.0.1:${hello.match[1]}/`, hello.child.pid!);
    return [
      { name: 'redfish', what: 'GET VirtualMedia member, session token, 16 connections', ...vmedia },
      { name: 'hello', what: 'bare fastify HTTPS hello-world, bundled (baseline)', ...bare },
    ];
  } finally {
    await hello.stop();
  }
}

/**
 * LOGINS logins one after the other over one kept-alive connection (the TLS handshake is not a login's
 * cost). Each session is deleted again at once: the account's 16th would push out the longest idle one,
 * the bench's own token among them.
 */
async function loginRow(stack: Stack): Promise<Row> {
  progress(`login: ${LOGINS} logins`);
  const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
  const times: number[] = [];
  try {
    const cpuBefore = await cpuSecondsOf(stack.server);
    for (let i = 0; i < LOGINS; i++) {
      const started = process.hrtime.bigint();
      const session = await login(stack.url, agent);
      times.push(seconds(started) * 1000);
      const deleted = await httpsRequest(new URL(session.location, stack.url).href, {
        method: 'DELETE',
        headers: { 'X-Auth-Token': session.token },
        agent,
      });
      if (deleted.status >= 300) throw new Error(`DELETE ${session.location}: ${deleted.status}`);
    }
    const cpu = (await cpuSecondsOf(stack.server)) - cpuBefore;
    return {
      name: 'login',
      what: `POST a session (timed), then DELETE it; ${LOGINS} in a row`,
      medianMs: median(times),
      p90Ms: percentile(times, 90),
      serverCpuMsPerLogin: (cpu * 1000) / LOGINS,
    };
  } finally {
    agent.destroy();
  }
}

// ---- proxy, qd1 ----

/** A file of `payloadBytes` non-zero bytes: no holes, so no reader can skip any of it. */
async function imageFile(): Promise<string> {
  const file = path.join(work, 'image.img');
  const handle = await fs.open(file, 'w');
  for (let written = 0; written < payloadBytes; written += CHUNK)
    await handle.write(pattern, 0, Math.min(CHUNK, payloadBytes - written));
  await handle.close();
  return file;
}

/** `vmedia mount` of `image` on Slot_0 (a Proxy slot); resolves once the host export is there. */
async function startMount(stack: Stack, image: string): Promise<Spawned & { hostSocket: string }> {
  const passwordFile = path.join(work, 'password');
  await fs.writeFile(passwordFile, password, { mode: 0o600 });
  const hostSocket = path.join(statePaths(stack.stateDir).host, 'Slot_0.sock');
  const mount = await spawnServer(
    process.execPath,
    [
      vmediaBin,
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
    /serving/,
  );
  try {
    await waitFor(() => existsSync(hostSocket), { what: `the host export ${hostSocket}` });
  } catch (error) {
    await mount.stop();
    throw error;
  }
  return { ...mount, hostSocket };
}

/**
 * The whole Proxy path, read end to end with nbdcopy. CPU is that of every vmedia process (the mount CLI,
 * the server, the service, with any children), read before and after each copy; the server's and the
 * service's RSS are sampled throughout, for the rss rows' peaks.
 */
async function proxyRow(
  stack: Stack,
  mount: Spawned & { hostSocket: string },
): Promise<{ row: Row; peakRss: { server: number; service: number } }> {
  const pids = [mount.child.pid!, stack.server, stack.service];
  const speeds: number[] = [];
  const cpus: number[] = [];
  const peaks = [0, 0];
  for (let round = 1; round <= rounds; round++) {
    progress(`proxy: ${payloadBytes / MiB} MiB, round ${round}`);
    const sampler = sampleRssPeaks([stack.server, stack.service], RSS_SAMPLE_MS);
    const cpuBefore = await cpuSecondsOfTrees(...pids);
    const started = process.hrtime.bigint();
    await execFileAsync('nbdcopy', [`nbd+unix:///?socket=${mount.hostSocket}`, 'null:']);
    const elapsed = seconds(started);
    const cpu = (await cpuSecondsOfTrees(...pids)) - cpuBefore;
    (await sampler.stop()).forEach((peak, index) => {
      peaks[index] = Math.max(peaks[index]!, peak);
    });
    speeds.push(payloadBytes / MiB / elapsed);
    cpus.push(cpu / (payloadBytes / GiB));
  }
  return {
    row: {
      name: 'proxy',
      what: 'vmedia mount → WSS → server → service → host export, nbdcopy to null:',
      mibPerSecond: median(speeds),
      vmediaCpuSecondsPerGiB: median(cpus),
    },
    peakRss: { server: peaks[0]!, service: peaks[1]! },
  };
}

/** The same 4 KiB-aligned offsets for both qd1 rows: warm-up reads first, then the timed ones. */
const qd1Offsets = (() => {
  const random = seededRandom(0x5eed);
  const blocks = Math.floor(payloadBytes / QD1_BLOCK);
  return Array.from({ length: QD1_WARMUP + QD1_READS }, () => Math.floor(random() * blocks) * QD1_BLOCK);
})();

/** QD1 latency through our NbdClient on `socket`: one 4 KiB read at a time, p50 and p99 of the timed ones. */
async function qd1Latency(socket: net.Socket): Promise<Pick<Row, 'p50Microseconds' | 'p99Microseconds'>> {
  const client = await NbdClient.connect(connectionFromSocket(socket));
  try {
    const times: number[] = [];
    for (const [index, offset] of qd1Offsets.entries()) {
      const started = process.hrtime.bigint();
      await client.read(offset, QD1_BLOCK);
      if (index >= QD1_WARMUP) times.push(seconds(started) * 1e6);
    }
    return { p50Microseconds: percentile(times, 50), p99Microseconds: percentile(times, 99) };
  } finally {
    await client.close();
  }
}

/** Run while the mount is up and nothing else reads it. */
async function qd1Row(hostSocket: string): Promise<Row> {
  progress(`qd1: ${QD1_READS} reads of 4 KiB from the host export`);
  const socket = net.connect(hostSocket);
  await once(socket, 'connect');
  return {
    name: 'qd1',
    what: '4 KiB random reads at queue depth 1, NbdClient on the host export',
    ...(await qd1Latency(socket)),
  };
}

/** The same reads from nbdkit serving the image file, behind the bare TLS pipe of the tls row. */
async function qd1NbdkitRow(image: string): Promise<Row> {
  progress(`qd1_nbdkit: ${QD1_READS} reads of 4 KiB from nbdkit through the TLS pipe`);
  const nbdkitSocket = path.join(work, 'nbdkit.sock');
  const nbdkit = spawnProcess('nbdkit', [
    '--foreground',
    '--readonly',
    '--unix',
    nbdkitSocket,
    'file',
    `file=${image}`,
  ]);
  try {
    await waitFor(() => existsSync(nbdkitSocket), { what: `nbdkit's socket ${nbdkitSocket}` });
    const pipe = await startTlsPipe(nbdkitSocket);
    try {
      const socket = tls.connect({
        host: '127.0.0.1',
        port: Number(pipe.match[1]),
        rejectUnauthorized: false,
      });
      await once(socket, 'secureConnect');
      return {
        name: 'qd1_nbdkit',
        what: 'the same reads from nbdkit behind the TLS pipe (baseline)',
        ...(await qd1Latency(socket)),
      };
    } finally {
      await pipe.stop();
    }
  } finally {
    await nbdkit.stop();
  }
}

// ---- rss ----

/** VmRSS of a node process that does nothing, after it has settled. */
async function bareNodeRss(): Promise<number> {
  progress('rss: bare idle node');
  const node = spawnProcess(process.execPath, ['-e', 'setInterval(() => {}, 1 << 30)']);
  try {
    await sleep(QUIET_MS);
    return await rssMiB(node.child.pid!);
  } finally {
    await node.stop();
  }
}

/** The server's and the service's VmRSS after QUIET_MS of nothing, before any transfer. */
async function idleRss(stack: Stack): Promise<{ server: number; service: number }> {
  progress('rss: the stack idle');
  await sleep(QUIET_MS);
  return { server: await rssMiB(stack.server), service: await rssMiB(stack.service) };
}

function rssRows(
  node: number,
  idle: { server: number; service: number },
  peak: { server: number; service: number },
): Row[] {
  return [
    { name: 'rss_node', what: 'bare idle node (baseline)', idleRssMiB: node },
    {
      name: 'rss_server',
      what: 'vmedia server: idle, and peak during the proxy copies',
      idleRssMiB: idle.server,
      peakRssMiB: peak.server,
    },
    {
      name: 'rss_service',
      what: 'vmedia service: idle, and peak during the proxy copies',
      idleRssMiB: idle.service,
      peakRssMiB: peak.service,
    },
  ];
}

// ---- startup ----

/**
 * Milliseconds from spawning `args` (with VMEDIA_PORT = `port`) until `url` answers at all: any HTTP
 * status counts, a refused or reset connection means not yet. Then the process is stopped and waited for.
 */
async function timeToFirstAnswer(args: string[], port: number, url: string): Promise<number> {
  const env = {
    ...process.env,
    VMEDIA_PORT: String(port),
    VMEDIA_ADMIN_PASSWORD: password,
    VMEDIA_LOG_LEVEL: 'warn',
  };
  const started = process.hrtime.bigint();
  const spawned = spawnProcess(process.execPath, args, env);
  try {
    for (;;) {
      if (spawned.child.exitCode !== null)
        throw new Error(`${args.join(' ')} exited with ${spawned.child.exitCode}`);
      try {
        await httpsRequest(url, { agent: false });
        return seconds(started) * 1000;
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        if (code !== 'ECONNREFUSED' && code !== 'ECONNRESET') throw error;
      }
      await sleep(STARTUP_POLL_MS);
    }
  } finally {
    await spawned.stop();
  }
}

/**
 * A second `vmedia server` on the running stack's bus, in a state directory of its own, against the
 * hello-world; interleaved. The server's first start in that directory creates its certificate and
 * accounts, which no later start does: it is left out.
 */
async function startupRows(stack: Stack): Promise<Row[]> {
  const stateDir = path.join(work, 'startup-state');
  const server = async () => {
    const port = await freePort();
    const args = [vmediaBin, 'server', '--bus-address', stack.busAddress, '--state-dir', stateDir];
    return timeToFirstAnswer(args, port, `https://127.0.0.1:${port}/redfish/v1`);
  };
  const hello = async () => {
    const port = await freePort();
    return timeToFirstAnswer(
      [helloBundle, certFile, keyFile, String(port)],
      port,
      `https://127.0.0.1:${port}/`,
    );
  };
  progress('startup: first start (certificate and accounts, not measured)');
  await server();
  const servers: number[] = [];
  const hellos: number[] = [];
  for (let start = 1; start <= STARTS; start++) {
    progress(`startup: start ${start} of ${STARTS}`);
    servers.push(await server());
    hellos.push(await hello());
  }
  return [
    {
      name: 'startup',
      what: 'vmedia server spawned → first answer to GET /redfish/v1',
      startupMs: median(servers),
    },
    {
      name: 'startup_hello',
      what: 'hello.mjs spawned → first answer to GET / (baseline)',
      startupMs: median(hellos),
    },
  ];
}

// ---- report ----

interface RatioResult {
  value?: number;
  goal?: Goal;
  met?: boolean;
}

function ratios(rows: Row[]): Record<string, RatioResult> {
  const figure = ([name, key]: [string, Figure]) => rows.find((row) => row.name === name)?.[key];
  const results: Record<string, RatioResult> = {};
  for (const { name, of, over, goal } of ratioSpecs) {
    const a = figure(of);
    const b = figure(over);
    const value = a !== undefined && b ? Number((a / b).toFixed(3)) : undefined;
    const met =
      goal && value !== undefined
        ? goal.op === '>='
          ? value >= goal.value
          : value <= goal.value
        : undefined;
    results[name] = { value, ...(goal ? { goal, met } : {}) };
  }
  return results;
}

function printTables(rows: Row[], results: Record<string, RatioResult>): void {
  console.table(
    rows.map((row) => ({
      row: row.name,
      figures: (Object.keys(figureFormats) as Figure[])
        .filter((key) => row[key] !== undefined)
        .map((key) => figureFormats[key](row[key]!))
        .join(', '),
      what: row.what,
    })),
  );
  console.table(
    Object.entries(results).map(([name, { value, goal, met }]) => ({
      ratio: name,
      value: value ?? '',
      goal: goal ? `${goal.op === '>=' ? '≥' : '≤'} ${goal.value}` : '',
      met: met === undefined ? '—' : met ? 'yes' : 'NO',
    })),
  );
}

try {
  const { cert, key } = await generateSelfSigned();
  await fs.writeFile(certFile, cert);
  await fs.writeFile(keyFile, key, { mode: 0o600 });
  await bundleHello();
  const rows = await relayRows();
  const image = await imageFile();
  const nodeRss = await bareNodeRss();
  progress('starting the stack from dist/');
  const stack = await startStack();
  try {
    const idle = await idleRss(stack);
    rows.push(...(await redfishRows(stack)));
    rows.push(await loginRow(stack));
    const mount = await startMount(stack, image);
    let peak: { server: number; service: number };
    try {
      const proxy = await proxyRow(stack, mount);
      peak = proxy.peakRss;
      rows.push(proxy.row, await qd1Row(mount.hostSocket));
    } finally {
      await mount.stop();
    }
    rows.push(await qd1NbdkitRow(image));
    rows.push(...rssRows(nodeRss, idle, peak));
    rows.push(...(await startupRows(stack)));
  } finally {
    await stack.stop();
  }
  const results = ratios(rows);
  printTables(rows, results);
  await fs.mkdir(path.join(root, 'bench/results'), { recursive: true });
  await fs.writeFile(
    path.join(root, 'bench/results/latest.json'),
    `${JSON.stringify(
      {
        date: new Date().toISOString(),
        machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model, node: process.version },
        payloadMiB: payloadBytes / MiB,
        rounds,
        rows,
        ratios: results,
      },
      null,
      2,
    )}\n`,
  );
} finally {
  await fs.rm(work, { recursive: true, force: true });
}
