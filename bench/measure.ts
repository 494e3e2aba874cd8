/** What the bench reads of processes (/proc), spawns, waits for and summarises. */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs/promises';
import net from 'node:net';
import { createInterface } from 'node:readline';

const CLOCK_TICKS_PER_SECOND = 100;
export const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;

interface ProcStat {
  parent: number;
  /** User + system CPU, in clock ticks. */
  ticks: number;
}

/** /proc/<pid>/stat's parent and CPU time; undefined once the process is gone. */
async function procStat(pid: number | string): Promise<ProcStat | undefined> {
  const stat = await fs.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  // The command name may contain spaces: fields are counted after its closing parenthesis.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  if (fields.length < 13) return undefined;
  return { parent: Number(fields[1]), ticks: Number(fields[11]) + Number(fields[12]) };
}

async function allProcesses(): Promise<Map<number, ProcStat>> {
  const stats = new Map<number, ProcStat>();
  for (const entry of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await procStat(entry);
    if (stat) stats.set(Number(entry), stat);
  }
  return stats;
}

/** CPU seconds (user + system) used so far by one process alone. */
export async function cpuSecondsOf(pid: number): Promise<number> {
  const stat = await procStat(pid);
  if (!stat) throw new Error(`process ${pid} is gone`);
  return stat.ticks / CLOCK_TICKS_PER_SECOND;
}

/** CPU seconds used so far by the processes `pids` and every live descendant of theirs, each counted once. */
export async function cpuSecondsOfTrees(...pids: number[]): Promise<number> {
  const stats = await allProcesses();
  const tree = new Set(pids);
  // Parents have lower pids almost always, but not necessarily: iterate until no process joins.
  for (let grew = true; grew; ) {
    grew = false;
    for (const [child, { parent }] of stats) {
      if (tree.has(parent) && !tree.has(child)) {
        tree.add(child);
        grew = true;
      }
    }
  }
  let ticks = 0;
  for (const member of tree) ticks += stats.get(member)?.ticks ?? 0;
  return ticks / CLOCK_TICKS_PER_SECOND;
}

/** The direct children of `parent`, with their command lines. */
export async function childProcesses(parent: number): Promise<{ pid: number; args: string[] }[]> {
  const children: { pid: number; args: string[] }[] = [];
  for (const [pid, stat] of await allProcesses()) {
    if (stat.parent !== parent) continue;
    const cmdline = await fs.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    children.push({ pid, args: cmdline.split('\0').filter(Boolean) });
  }
  return children;
}

/**
 * The `vmedia server` and `vmedia service` that the `vmedia start` launcher `launcher` runs: its children
 * whose command line names the vmedia entry (bin/vmedia.js or dist/vmedia.mjs) and then that command.
 */
export async function daemonPids(launcher: number): Promise<{ server: number; service: number }> {
  const found: Record<string, number> = {};
  for (const { pid, args } of await childProcesses(launcher)) {
    const entry = args.findIndex((arg) => /[/\\]vmedia\.m?js$/.test(arg));
    if (entry >= 0) found[args[entry + 1]!] = pid;
  }
  if (!found.server || !found.service) throw new Error('the server or the service process was not found');
  return { server: found.server, service: found.service };
}

/** Resident memory of one process (VmRSS), in MiB. */
export async function rssMiB(pid: number): Promise<number> {
  const status = await fs.readFile(`/proc/${pid}/status`, 'utf8');
  const kiB = status.match(/^VmRSS:\s+(\d+)/m)?.[1];
  if (kiB === undefined) throw new Error(`process ${pid} has no VmRSS`);
  return Number(kiB) / 1024;
}

/** Samples the RSS of `pids` every `intervalMs` until `stop()`, which resolves with each one's maximum. */
export function sampleRssPeaks(pids: number[], intervalMs: number): { stop(): Promise<number[]> } {
  const peaks = pids.map(() => 0);
  let pending: Promise<void> | undefined;
  const sample = () => {
    // A read still under way when the next tick comes is not overlapped: that tick is skipped.
    pending ??= Promise.all(pids.map(rssMiB))
      .then((now) => {
        for (const [index, value] of now.entries()) peaks[index] = Math.max(peaks[index]!, value);
      })
      .finally(() => {
        pending = undefined;
      });
    return pending;
  };
  void sample();
  const timer = setInterval(sample, intervalMs);
  return {
    async stop() {
      clearInterval(timer);
      await pending;
      await sample();
      return peaks;
    },
  };
}

/** A Unix socket that swallows bytes and resolves once `total` arrived over one connection. */
export async function byteSink(
  path: string,
): Promise<{ received(total: number): Promise<void>; close(): void }> {
  await fs.rm(path, { force: true });
  const server = net.createServer();
  server.listen(path);
  await once(server, 'listening');
  return {
    received: (total) =>
      new Promise((resolve, reject) => {
        server.once('connection', (socket) => {
          let count = 0;
          socket.on('data', (chunk: Buffer) => {
            count += chunk.length;
            if (count >= total) resolve();
          });
          socket.on('error', reject);
        });
      }),
    close: () => server.close(),
  };
}

export interface Spawned {
  child: ChildProcess;
  /** SIGINT (SIGKILL after 5 s), resolving once the process has exited. */
  stop(): Promise<void>;
}

/** Spawns a process whose output is not read: stdout discarded, stderr passed through. */
export function spawnProcess(command: string, args: string[], env: NodeJS.ProcessEnv = process.env): Spawned {
  return stoppable(spawn(command, args, { stdio: ['ignore', 'ignore', 'inherit'], env }));
}

/** Spawns a server and resolves once a line of its output matches `ready` (the match is kept). */
export async function spawnServer(
  command: string,
  args: string[],
  ready: RegExp,
  env: NodeJS.ProcessEnv = process.env,
): Promise<Spawned & { match: RegExpMatchArray }> {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
  const match = await new Promise<RegExpMatchArray>((resolve, reject) => {
    for (const stream of [child.stdout!, child.stderr!]) {
      createInterface({ input: stream }).on('line', (line) => {
        const found = line.match(ready);
        if (found) resolve(found);
      });
    }
    child.once('exit', (code) => reject(new Error(`${command} exited with ${code} before it was ready`)));
  });
  return { ...stoppable(child), match };
}

function stoppable(child: ChildProcess): Spawned {
  return {
    child,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGINT');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await once(child, 'exit');
      clearTimeout(timer);
    },
  };
}

export async function freePort(): Promise<number> {
  const server = net.createServer().listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as net.AddressInfo;
  server.close();
  return port;
}

/** The middle value: one slow round (another process waking up) does not move it. */
export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/** The nearest-rank percentile `p` (0 < p ≤ 100): the smallest value at least p % of them do not exceed. */
export function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

/** mulberry32: a tiny seeded PRNG in [0, 1), so that two runs (and two rows) read the same offsets. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}
