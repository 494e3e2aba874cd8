import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import path from 'node:path';

/** A dbus-daemon of our own: the embedded stack's bus, and every test's. */
export interface PrivateBus {
  address: string;
  process: ChildProcess;
  stop(): Promise<void>;
}

/** Starts `dbus-daemon --session` listening on a socket inside `directory` and waits for its address. */
export async function startPrivateBus(directory: string): Promise<PrivateBus> {
  const socket = path.join(directory, 'bus.sock');
  const child = spawn(
    'dbus-daemon',
    ['--session', '--nofork', '--nopidfile', '--print-address=1', `--address=unix:path=${socket}`],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  let output = '';
  const address = await new Promise<string>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`dbus-daemon exited with ${code} before it was ready`)));
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (chunk: string) => {
      output += chunk;
      const line = output.split('\n').find((l, i, all) => i < all.length - 1 && l.trim());
      if (line) resolve(line.trim());
    });
  });
  child.removeAllListeners('exit');
  return {
    address,
    process: child,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      await once(child, 'exit');
    },
  };
}
