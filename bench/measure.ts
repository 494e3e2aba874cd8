import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs/promises';
import net from 'node:net';
import { createInterface } from 'node:readline';

const CLOCK_TICKS_PER_SECOND = 100;

/** CPU seconds (user + system) used so far by `pid` and every live descendant. */
export async function cpuSecondsOfTree(pid: number): Promise<number> {
  const stats = new Map<number, { parent: number; ticks: number }>();
  for (const entry of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await fs.readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
    // The command name may contain spaces: fields are counted after its closing parenthesis.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (fields.length < 13) continue;
    stats.set(Number(entry), { parent: Number(fields[1]), ticks: Number(fields[11]) + Number(fields[12]) });
  }
  let ticks = 0;
  const tree = new Set([pid]);
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
  for (const member of tree) ticks += stats.get(member)?.ticks ?? 0;
  return ticks / CLOCK_TICKS_PER_SECOND;
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

/** Spawns a server and resolves once a line of its output matches `ready` (the match is kept). */
export async function spawnServer(
  command: string,
  args: string[],
  ready: RegExp,
  env: NodeJS.ProcessEnv = process.env,
): Promise<{ child: ChildProcess; match: RegExpMatchArray; stop(): Promise<void> }> {
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
  return {
    child,
    match,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGINT');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await once(child, 'exit');
      clearTimeout(timer);
    },
  };
}

export const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;
