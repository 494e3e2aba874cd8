import { once } from 'node:events';
import fs from 'node:fs/promises';
import type { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { Errno } from '../../contract/dbus.ts';
import { helperPidFile, spawnChild } from '../child.ts';
import type { SlotConfig } from '../config.ts';
import type { Credentials } from '../credentials.ts';
import type { MountFailure } from '../errors.ts';
import type { MountContext } from '../slot.ts';
import type { MediumSource } from './source.ts';

/** The fd nbdkit's plugin reads the password from (`password=-3`): nothing secret in argv, env or on disk. */
const PASSWORD_FD = 3;
const READY_POLL_MS = 50;
/** How long a failed handshake waits for nbdkit's explanation to arrive on stderr. */
const EXPLANATION_WAIT_MS = 1000;

export interface NbdkitOptions {
  config: SlotConfig;
  /** The nbdkit executable. */
  nbdkit: string;
  readOnly: boolean;
  /** Plugin name or file, then its `key=value` parameters. */
  plugin: string[];
  /**
   * Appended as `user=<name> password=-3` (the convention of nbdkit's curl plugin, which ours follows),
   * the password written to fd 3 and closed; the caller wipes it once nbdkit has started.
   */
  credentials: Credentials | undefined;
  /** Turns nbdkit's stderr into the errno and reason of a failure (its plugin's own messages). */
  explain(stderr: string, cause?: unknown): MountFailure;
}

/**
 * Serves a Legacy medium with nbdkit on the slot's socket, the one way every Legacy source starts it:
 * `--exit-with-parent`, a pid file written once it listens (readiness, and how a later service finds a
 * leftover nbdkit), the password through a pipe. A plugin that fails before listening (a wrong password
 * checked at start) fails the mount with `explain`'s reading of its stderr.
 */
export async function startNbdkit(options: NbdkitOptions, context: MountContext): Promise<MediumSource> {
  const { config, credentials } = options;
  const socketPath = config.unixSocket;
  const pidFile = helperPidFile(config, 'nbdkit');
  await Promise.all([fs.rm(socketPath, { force: true }), fs.rm(pidFile, { force: true })]);
  context.cleanup.defer('remove nbdkit socket and pidfile', async () => {
    await Promise.all([fs.rm(socketPath, { force: true }), fs.rm(pidFile, { force: true })]);
  });

  const args = ['--exit-with-parent', '--unix', socketPath, '--pidfile', pidFile];
  if (options.readOnly) args.push('--readonly');
  args.push(...options.plugin);
  if (credentials) args.push(`user=${credentials.user}`, `password=-${PASSWORD_FD}`);
  const nbdkit = spawnChild(options.nbdkit, args, {
    cleanup: context.cleanup,
    log: context.log,
    stdio: ['ignore', 'ignore', 'pipe', credentials ? 'pipe' : 'ignore'],
  });
  if (credentials) {
    const passwordPipe = nbdkit.process.stdio[PASSWORD_FD] as Writable;
    passwordPipe.on('error', () => {}); // nbdkit exiting early is reported through its exit instead
    passwordPipe.end(credentials.password);
  }

  let exited = false;
  void nbdkit.exited.then(() => {
    exited = true;
  });
  while (!(await exists(pidFile))) {
    if (exited) throw options.explain(nbdkit.stderr());
    if (context.signal.aborted) throw context.signal.reason;
    await sleep(READY_POLL_MS);
  }
  return {
    socketPath,
    lost: nbdkit.exited.then(() => Errno.EIO),
    async explain(error) {
      // The handshake failure can overtake nbdkit's stderr line that says why.
      await waitForExplanation(nbdkit.process.stderr!, nbdkit.stderr);
      return options.explain(nbdkit.stderr(), error);
    },
  };
}

async function waitForExplanation(stderr: NodeJS.ReadableStream, text: () => string): Promise<void> {
  const deadline = Date.now() + EXPLANATION_WAIT_MS;
  while (!/error:/.test(text()) && Date.now() < deadline) {
    await Promise.race([once(stderr, 'data'), sleep(deadline - Date.now())]);
  }
}

/** The most telling line of nbdkit's stderr: the last error, else the last line. */
export function lastLine(text: string): string {
  const lines = text.trim().split('\n');
  return (lines.filter((line) => line.includes('error')).pop() ?? lines.pop() ?? '').trim();
}

async function exists(file: string): Promise<boolean> {
  try {
    await fs.access(file);
    return true;
  } catch {
    return false;
  }
}
