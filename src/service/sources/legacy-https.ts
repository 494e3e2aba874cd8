import { once } from 'node:events';
import fs from 'node:fs/promises';
import type { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { Errno } from '../../contract/dbus.ts';
import { checkImageUrl } from '../../contract/image-url.ts';
import { helperPidFile, spawnChild } from '../child.ts';
import type { SlotConfig } from '../config.ts';
import type { Credentials } from '../credentials.ts';
import { MountFailure, PrecheckError } from '../errors.ts';
import type { MountContext } from '../slot.ts';
import type { MediumSource } from './source.ts';

/** The fd nbdkit reads the password from (`password=-3`): nothing secret in argv, env or on disk. */
const PASSWORD_FD = 3;
const READY_POLL_MS = 50;
/** How long a failed handshake waits for nbdkit's explanation to arrive on stderr. */
const EXPLANATION_WAIT_MS = 1000;

/**
 * Mount precheck for a Legacy image URL: the checks of src/contract/image-url.ts, the same the Redfish
 * layer applies (only https://, smb:// refused until CIFS lands, no credentials or control characters).
 */
export function checkLegacyUrl(imageUrl: string): URL {
  const checked = checkImageUrl(imageUrl);
  if (!checked.ok) throw PrecheckError.invalid(checked.message);
  return checked.url;
}

export interface HttpsSourceOptions {
  config: SlotConfig;
  url: URL;
  readOnly: boolean;
  credentials: Credentials | undefined;
  /** PEM bundle replacing curl's default trust store (system CAs plus VMEDIA_CA_BUNDLE). */
  caBundle: string | undefined;
  nbdkit: string;
}

/**
 * Legacy https:// source: `nbdkit curl` serving the image on the slot's socket, certificate
 * verification on, TLS ≥ 1.2, https only and no redirects. Waits until nbdkit listens (its pidfile
 * is written after the socket is ready).
 */
export async function startHttpsSource(
  options: HttpsSourceOptions,
  context: MountContext,
): Promise<MediumSource> {
  const { config, credentials } = options;
  const socketPath = config.unixSocket;
  // nbdkit writes it once it listens: readiness, and how a later service finds a leftover nbdkit.
  const pidFile = helperPidFile(config, 'nbdkit');
  await Promise.all([fs.rm(socketPath, { force: true }), fs.rm(pidFile, { force: true })]);
  context.cleanup.defer('remove nbdkit socket and pidfile', async () => {
    await Promise.all([fs.rm(socketPath, { force: true }), fs.rm(pidFile, { force: true })]);
  });

  const args = ['--exit-with-parent', '--unix', socketPath, '--pidfile', pidFile];
  if (options.readOnly) args.push('--readonly');
  args.push(
    'curl',
    `url=${options.url.href}`,
    'protocols=https',
    'followlocation=false',
    'ssl-version=tlsv1.2',
  );
  if (options.caBundle) args.push(`cainfo=${options.caBundle}`);
  if (credentials) args.push(`user=${credentials.user}`, `password=-${PASSWORD_FD}`);

  const nbdkit = spawnChild(options.nbdkit, args, {
    cleanup: context.cleanup,
    log: context.log,
    stdio: ['ignore', 'ignore', 'pipe', credentials ? 'pipe' : 'ignore'],
  });
  if (credentials) {
    const passwordPipe = nbdkit.process.stdio[PASSWORD_FD] as Writable;
    passwordPipe.on('error', () => {}); // nbdkit exiting early is reported through its exit instead
    passwordPipe.end(credentials.password, () => credentials.wipe());
  }

  let exited = false;
  void nbdkit.exited.then(() => {
    exited = true;
  });
  while (!(await exists(pidFile))) {
    if (exited) {
      throw new MountFailure(Errno.EIO, `nbdkit did not start: ${lastLine(nbdkit.stderr())}`);
    }
    if (context.signal.aborted) throw context.signal.reason;
    await sleep(READY_POLL_MS);
  }
  return {
    socketPath,
    lost: nbdkit.exited.then(() => Errno.EIO),
    async explain(error) {
      // The handshake failure can overtake nbdkit's stderr line that says why.
      await waitForExplanation(nbdkit.process.stderr!, nbdkit.stderr);
      return explainCurlFailure(nbdkit.stderr(), error);
    },
  };
}

async function waitForExplanation(stderr: NodeJS.ReadableStream, text: () => string): Promise<void> {
  const deadline = Date.now() + EXPLANATION_WAIT_MS;
  while (!/error:/.test(text()) && Date.now() < deadline) {
    await Promise.race([once(stderr, 'data'), sleep(deadline - Date.now())]);
  }
}

/** Maps nbdkit-curl's (libcurl's) error text to the errno reported in Completion. */
function explainCurlFailure(stderr: string, cause?: unknown): MountFailure {
  const reason = lastLine(stderr) || 'nbdkit refused the connection';
  const errno = (() => {
    if (/returned error: 40[13]\b/.test(stderr)) return Errno.EACCES;
    if (/returned error: 404\b|returned error: 410\b/.test(stderr)) return Errno.ENOENT;
    if (/SSL|certificate|TLS/i.test(stderr)) return Errno.EPERM;
    if (/Couldn't connect|Connection refused/i.test(stderr)) return Errno.ECONNREFUSED;
    if (/Couldn't resolve|No route to host|Network is unreachable/i.test(stderr)) return Errno.EHOSTUNREACH;
    return Errno.EIO;
  })();
  return new MountFailure(errno, reason, { cause });
}

/** The most telling line of nbdkit's stderr: the last error, else the last line. */
function lastLine(text: string): string {
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
