/**
 * `npm run soak`: every slot streaming at once against `vmedia start`, for a while (VMEDIA_SOAK_SECONDS,
 * default 120): two Proxy slots served by `vmedia mount`, two Legacy slots reading HTTPS images from
 * Debian nginx, each read end to end from its host export with nbdcopy again and again and checked
 * byte for byte; meanwhile Redfish is polled at 50 requests a second. Reports the throughput per slot,
 * the errors (there must be none) and the RSS and open fds of the server and the service at the start
 * and at the end (after a warm-up of a minute they must stay flat). Exits 1 when any of that fails. A script, not a test: it
 * measures how the stack holds up over time, which a test run has no time for.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import fs from 'node:fs/promises';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { daemonPids, rssMiB } from '../bench/measure.ts';
import { startNginx } from '../test/helpers/nginx.ts';
import { createTestCertificates } from '../test/helpers/test-ca.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const vmediaBin = path.join(root, 'bin/vmedia.js');
const seconds = Number(process.env.VMEDIA_SOAK_SECONDS ?? 120);
const imageMiB = Number(process.env.VMEDIA_SOAK_IMAGE_MIB ?? 64);
const POLL_PER_SECOND = 50;
const password = 'soak-Passw0rd-only';
const MiB = 1024 * 1024;
/** What "flat" allows from the end of the warm-up to the end: a little heap growth, no fd leak. */
const RSS_GROWTH_ALLOWED = 1.1;
const FDS_GROWTH_ALLOWED = 4;

interface Footprint {
  rssMiB: number;
  fds: number;
}

const log = (message: string) => process.stderr.write(`soak: ${message}\n`);

async function main(): Promise<number> {
  const work = await fs.mkdtemp(path.join(os.tmpdir(), 'vmedia-soak-'));
  const children: ChildProcess[] = [];
  let nginxStop: (() => Promise<void>) | undefined;
  try {
    const certificates = await createTestCertificates(work);
    const images = Array.from({ length: 4 }, () => randomBytes(imageMiB * MiB));
    const expected = images.map((image) => createHash('sha256').update(image).digest('hex'));
    const nginx = await startNginx({ '/a.iso': images[2]!, '/b.iso': images[3]! }, certificates);
    nginxStop = nginx.stop;
    for (const [index, name] of [
      [0, 'proxy0.img'],
      [1, 'proxy1.img'],
    ] as const) {
      await fs.writeFile(path.join(work, name), images[index]!);
    }
    await fs.writeFile(path.join(work, 'password'), `${password}\n`, { mode: 0o600 });

    log(`starting vmedia (images of ${imageMiB} MiB, ${seconds} s)`);
    const stateDir = path.join(work, 'state');
    const stack = spawn(process.execPath, [vmediaBin, 'start', '--machine', 'none'], {
      env: {
        ...process.env,
        VMEDIA_STATE_DIR: stateDir,
        VMEDIA_PORT: '0',
        VMEDIA_ADMIN_PASSWORD: password,
        VMEDIA_CA_BUNDLE: certificates.caCertFile,
        VMEDIA_LOG_LEVEL: 'warn',
      },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    children.push(stack);
    const url = await readyUrl(stack);
    const token = await login(url);
    const redfish = (method: string, uri: string, body?: unknown) => request(url, token, method, uri, body);

    for (const [slotId, image] of [
      ['Slot_2', 'a.iso'],
      ['Slot_3', 'b.iso'],
    ] as const) {
      const inserted = await redfish(
        'POST',
        `/redfish/v1/Managers/bmc/VirtualMedia/${slotId}/Actions/VirtualMedia.InsertMedia`,
        {
          Image: `${nginx.origin}/${image}`,
        },
      );
      if (inserted.status === 202) await followTask(redfish, String(inserted.location));
      else if (inserted.status !== 204)
        throw new Error(`insert ${slotId}: ${inserted.status} ${inserted.text}`);
    }
    for (const [slotId, file] of [
      ['Slot_0', 'proxy0.img'],
      ['Slot_1', 'proxy1.img'],
    ] as const) {
      const mount = spawn(
        process.execPath,
        [
          vmediaBin,
          'mount',
          slotId,
          path.join(work, file),
          '--url',
          url,
          '--user',
          'admin',
          '--password-file',
          path.join(work, 'password'),
          '--ca',
          path.join(stateDir, 'certs', 'server.crt'),
        ],
        {
          stdio: ['ignore', 'ignore', 'ignore'],
          env: { ...process.env, VMEDIA_STATE_DIR: path.join(work, 'no-state') },
        },
      );
      children.push(mount);
    }
    const hostSocket = (slotId: string) => path.join(stateDir, 'host', `${slotId}.sock`);
    for (const slotId of ['Slot_0', 'Slot_1', 'Slot_2', 'Slot_3']) {
      for (let tries = 0; !(await exists(hostSocket(slotId))); tries++) {
        if (tries > 300) throw new Error(`${slotId} has no host export`);
        await sleep(100);
      }
    }

    const pids = await daemonPids(stack.pid!);
    const sample = async () => ({
      server: await footprint(pids.server),
      service: await footprint(pids.service),
    });
    const atStart = await sample();
    // The heaps grow to their working size in the first minute of streaming; flat is judged from there on.
    const warmUpSeconds = Math.min(60, seconds / 5);
    let afterWarmUp = atStart;
    const warmUp = sleep(warmUpSeconds * 1000).then(async () => {
      afterWarmUp = await sample();
    });
    log(`streaming all four slots and polling Redfish at ${POLL_PER_SECOND}/s`);
    const deadline = Date.now() + seconds * 1000;
    const slots = ['Slot_0', 'Slot_1', 'Slot_2', 'Slot_3'].map((slotId, index) => ({
      slotId,
      mode: index < 2 ? 'Proxy (vmedia mount)' : 'Legacy (nginx HTTPS)',
      bytes: 0,
      passes: 0,
      errors: [] as string[],
      busySeconds: 0,
    }));
    const readers = slots.map(async (slot, index) => {
      while (Date.now() < deadline) {
        const started = process.hrtime.bigint();
        try {
          const sha = await hashExport(hostSocket(slot.slotId));
          if (sha !== expected[index]) slot.errors.push(`pass ${slot.passes + 1}: wrong bytes`);
          slot.bytes += imageMiB * MiB;
          slot.passes++;
        } catch (error) {
          slot.errors.push(`pass ${slot.passes + 1}: ${(error as Error).message}`);
          await sleep(1000);
        }
        slot.busySeconds += Number(process.hrtime.bigint() - started) / 1e9;
      }
    });
    const poll = { requests: 0, errors: [] as string[] };
    const poller = (async () => {
      const uris = [
        '/redfish/v1/Managers/bmc/VirtualMedia',
        ...slots.map((s) => `/redfish/v1/Managers/bmc/VirtualMedia/${s.slotId}`),
      ];
      while (Date.now() < deadline) {
        const tick = Date.now();
        const uri = uris[poll.requests % uris.length]!;
        const answer = await redfish('GET', uri).catch((error: Error) => ({
          status: 0,
          text: error.message,
        }));
        poll.requests++;
        if (answer.status !== 200) poll.errors.push(`${uri}: ${answer.status} ${answer.text.slice(0, 120)}`);
        await sleep(Math.max(0, 1000 / POLL_PER_SECOND - (Date.now() - tick)));
      }
    })();
    await Promise.all([...readers, poller, warmUp]);
    const atEnd = await sample();

    const errors = slots.reduce((sum, slot) => sum + slot.errors.length, 0) + poll.errors.length;
    const flat = (a: Footprint, b: Footprint) =>
      b.rssMiB <= a.rssMiB * RSS_GROWTH_ALLOWED && b.fds <= a.fds + FDS_GROWTH_ALLOWED;
    const report = {
      seconds,
      imageMiB,
      slots: slots.map((slot) => ({
        slotId: slot.slotId,
        mode: slot.mode,
        passes: slot.passes,
        mib: slot.bytes / MiB,
        mibPerSecond: Number((slot.bytes / MiB / seconds).toFixed(1)),
        errors: slot.errors,
      })),
      redfish: {
        requests: poll.requests,
        perSecond: Number((poll.requests / seconds).toFixed(1)),
        errors: poll.errors,
      },
      footprint: { atStart, afterWarmUp, warmUpSeconds, atEnd },
      errors,
      flat: flat(afterWarmUp.server, atEnd.server) && flat(afterWarmUp.service, atEnd.service),
    };
    const resultFile = path.join(root, 'bench', 'results', 'soak.json');
    await fs.mkdir(path.dirname(resultFile), { recursive: true });
    await fs.writeFile(resultFile, `${JSON.stringify(report, null, 2)}\n`);
    printReport(report);
    return errors === 0 && report.flat ? 0 : 1;
  } finally {
    for (const child of children.reverse()) {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGINT');
        await Promise.race([once(child, 'exit'), sleep(10_000)]);
      }
    }
    await nginxStop?.();
    await fs.rm(work, { recursive: true, force: true });
  }
}

function printReport(report: {
  seconds: number;
  slots: { slotId: string; mode: string; passes: number; mibPerSecond: number; errors: string[] }[];
  redfish: { requests: number; perSecond: number; errors: string[] };
  footprint: {
    atStart: Record<string, Footprint>;
    afterWarmUp: Record<string, Footprint>;
    warmUpSeconds: number;
    atEnd: Record<string, Footprint>;
  };
  errors: number;
  flat: boolean;
}) {
  const lines = [
    `soak of ${report.seconds} s`,
    '| slot | mode | passes | MiB/s | errors |',
    '|---|---|---|---|---|',
  ];
  for (const slot of report.slots) {
    lines.push(
      `| ${slot.slotId} | ${slot.mode} | ${slot.passes} | ${slot.mibPerSecond} | ${slot.errors.length} |`,
    );
  }
  lines.push(
    `Redfish: ${report.redfish.requests} GETs (${report.redfish.perSecond}/s), ${report.redfish.errors.length} errors`,
  );
  const { atStart, afterWarmUp, warmUpSeconds, atEnd } = report.footprint;
  for (const name of ['server', 'service']) {
    const [a, w, b] = [atStart[name]!, afterWarmUp[name]!, atEnd[name]!];
    lines.push(
      `${name}: RSS ${a.rssMiB} → ${w.rssMiB} (after ${warmUpSeconds} s) → ${b.rssMiB} MiB, fds ${a.fds} → ${w.fds} → ${b.fds}`,
    );
  }
  lines.push(`errors: ${report.errors}; footprint flat: ${report.flat ? 'yes' : 'NO'}`);
  for (const slot of report.slots)
    for (const error of slot.errors.slice(0, 3)) lines.push(`  ${slot.slotId}: ${error}`);
  for (const error of report.redfish.errors.slice(0, 3)) lines.push(`  Redfish: ${error}`);
  process.stdout.write(`${lines.join('\n')}\n`);
}

/** The sha256 of a host export read start to end by nbdcopy (the host side, as a host reads it). */
function hashExport(socket: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('nbdcopy', [`nbd+unix:///?socket=${socket}`, '-'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const hash = createHash('sha256');
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => hash.update(chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
    });
    child.once('error', reject);
    child.once('exit', (code) =>
      code === 0
        ? resolve(hash.digest('hex'))
        : reject(new Error(`nbdcopy exited ${code}: ${stderr.trim()}`)),
    );
  });
}

async function footprint(pid: number): Promise<Footprint> {
  const fds = (await fs.readdir(`/proc/${pid}/fd`)).length;
  return { rssMiB: Math.round((await rssMiB(pid)) * 10) / 10, fds };
}

function readyUrl(child: ChildProcess): Promise<string> {
  return new Promise((resolve, reject) => {
    let output = '';
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      output += chunk;
      const match = output.match(/vmedia ready: (https:\/\/\S+)/);
      if (match) resolve(match[1]!);
    });
    child.once('exit', (code) => reject(new Error(`vmedia start exited with ${code}: ${output}`)));
  });
}

interface Answer {
  status: number;
  text: string;
  location?: string;
}

function request(
  base: string,
  token: string | undefined,
  method: string,
  uri: string,
  body?: unknown,
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { Accept: 'application/json' };
    if (token) headers['X-Auth-Token'] = token;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const req = https.request(new URL(uri, base), { method, headers, rejectUnauthorized: false }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (chunk: string) => {
        text += chunk;
      });
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          text,
          ...(res.headers.location ? { location: res.headers.location } : {}),
        }),
      );
    });
    req.on('error', reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

async function login(base: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      new URL('/redfish/v1/SessionService/Sessions', base),
      { method: 'POST', headers: { 'Content-Type': 'application/json' }, rejectUnauthorized: false },
      (res) => {
        res.resume();
        const token = res.headers['x-auth-token'];
        if (res.statusCode === 201 && typeof token === 'string') resolve(token);
        else reject(new Error(`login: ${res.statusCode}`));
      },
    );
    req.on('error', reject);
    req.end(JSON.stringify({ UserName: 'admin', Password: password }));
  });
}

async function followTask(
  redfish: (method: string, uri: string) => Promise<Answer>,
  monitor: string,
): Promise<void> {
  for (let tries = 0; tries < 600; tries++) {
    const answer = await redfish('GET', monitor);
    if (answer.status !== 202) {
      if (answer.status >= 300) throw new Error(`task ${monitor}: ${answer.status} ${answer.text}`);
      return;
    }
    await sleep(100);
  }
  throw new Error(`task ${monitor} did not finish`);
}

async function exists(file: string): Promise<boolean> {
  return fs.access(file).then(
    () => true,
    () => false,
  );
}

process.exitCode = await main();
