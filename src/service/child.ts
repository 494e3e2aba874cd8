import { type ChildProcess, type SpawnOptions, spawn } from 'node:child_process';
import { once } from 'node:events';
import type { Logger } from '../log.ts';
import type { CleanupStack } from './cleanup.ts';

const STDERR_KEPT = 16 * 1024;
const KILL_GRACE_MS = 3000;

/** A helper process (nbdkit, nbd-client) owned by one mount. */
export interface Child {
  process: ChildProcess;
  /** Resolves when the process has exited, with a description such as `exit 1` or `SIGKILL`. */
  exited: Promise<string>;
  /** The end of its stderr (bounded), for explaining failures. */
  stderr(): string;
}

/**
 * Spawns `command` with stderr captured (its tail is kept and logged) and registers its termination
 * (SIGTERM, SIGKILL after a grace period) on `cleanup`, so it can never outlive the mount.
 */
export function spawnChild(
  command: string,
  args: string[],
  options: { cleanup: CleanupStack; log: Logger; stdio?: SpawnOptions['stdio'] },
): Child {
  const child = spawn(command, args, { stdio: options.stdio ?? ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => {
    stderr = (stderr + chunk).slice(-STDERR_KEPT);
    for (const line of chunk.split('\n')) if (line.trim()) options.log.debug({ command }, line.trim());
  });
  const exited = new Promise<string>((resolve) => {
    child.once('exit', (code, signal) => resolve(signal ?? `exit ${code}`));
    // spawn failures (ENOENT) emit 'error' and no 'exit'.
    child.once('error', (error) => resolve(`spawn failed: ${error.message}`));
  });
  options.cleanup.defer(`stop ${command}`, () => stopChild(child, exited));
  return { process: child, exited, stderr: () => stderr };
}

async function stopChild(child: ChildProcess, exited: Promise<string>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), KILL_GRACE_MS);
  await Promise.race([exited, once(child, 'exit')]);
  clearTimeout(timer);
}
