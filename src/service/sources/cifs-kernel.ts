import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { Errno } from '../../contract/dbus.ts';
import type { SmbLocation } from '../../contract/image-url.ts';
import type { Logger } from '../../log.ts';
import type { SlotConfig } from '../config.ts';
import type { Credentials } from '../credentials.ts';
import { MountFailure } from '../errors.ts';
import type { MountContext } from '../slot.ts';
import { lastLine, startNbdkit } from './nbdkit.ts';
import type { MediumSource } from './source.ts';

const run = promisify(execFile);
/** SMB 3.1.1 first; a server that cannot (EOPNOTSUPP) is asked for 3.0, which still encrypts. */
const DIALECTS = ['3.1.1', '3.0'] as const;
const UMOUNT_TIMEOUT_MS = 10_000;

export interface KernelCifsOptions {
  config: SlotConfig;
  location: SmbLocation;
  readOnly: boolean;
  credentials: Credentials | undefined;
  nbdkit: string;
}

/** Where a slot's share is mounted while its medium is in: beside the slot's socket, like its pid files. */
export function cifsMountPoint(config: SlotConfig): string {
  return path.join(path.dirname(config.unixSocket), `${config.slotId}.cifs`);
}

function credentialsFile(config: SlotConfig): string {
  return path.join(path.dirname(config.unixSocket), `${config.slotId}.cifs-credentials`);
}

/**
 * Legacy smb:// source on a kernel with CIFS: the share mounted by the kernel (`mount.cifs`, read-only
 * unless the medium is writable, SMB 3.1.1 or 3.0, `seal`: SMB3 encryption or no mount), then
 * `nbdkit file` on the image in it. The credentials reach mount.cifs in a 0600 file that is removed as
 * soon as the mount returns; the share is unmounted and the mount point removed on every exit path.
 */
export async function startKernelCifsSource(
  options: KernelCifsOptions,
  context: MountContext,
): Promise<MediumSource> {
  const { config, location, credentials } = options;
  if (credentials && /[,\n\r]/.test(credentials.user)) {
    // mount.cifs would read the rest of a user name after a comma as another option.
    throw new MountFailure(Errno.EINVAL, 'a user name for an SMB share must not contain a comma');
  }
  const mountPoint = cifsMountPoint(config);
  await fs.mkdir(mountPoint, { recursive: true, mode: 0o700 });
  context.cleanup.defer('remove the CIFS mount point', () => removeMountPoint(mountPoint));

  const secretFile = credentialsFile(config);
  try {
    await writeCredentialsFile(secretFile, credentials);
    await mountShare(options, mountPoint, secretFile, context);
  } finally {
    await fs.rm(secretFile, { force: true });
  }
  context.cleanup.defer('unmount the CIFS share', () => unmount(mountPoint, context.log));

  const image = path.join(mountPoint, ...location.path.split('/'));
  await checkImageFile(image, location);
  return startNbdkit(
    {
      config,
      nbdkit: options.nbdkit,
      readOnly: options.readOnly,
      plugin: ['file', `file=${image}`],
      credentials: undefined, // the kernel has them: nbdkit only reads a local file
      explain: (stderr, cause) => new MountFailure(Errno.EIO, lastLine(stderr), { cause }),
    },
    context,
  );
}

/**
 * `username=`/`password=` lines, the form mount.cifs reads (a password may hold commas; a newline would
 * start another line, so it is refused). Without credentials, a guest session.
 */
async function writeCredentialsFile(file: string, credentials: Credentials | undefined): Promise<void> {
  if (!credentials) return;
  if (credentials.password.includes(0x0a) || credentials.password.includes(0x0d)) {
    throw new MountFailure(Errno.EINVAL, 'a password for an SMB share must not contain a line break');
  }
  const [user, domain] = splitDomain(credentials.user);
  const text = Buffer.concat([
    Buffer.from(`username=${user}\n${domain ? `domain=${domain}\n` : ''}password=`),
    credentials.password,
    Buffer.from('\n'),
  ]);
  try {
    await fs.writeFile(file, text, { mode: 0o600, flag: 'wx' });
  } finally {
    text.fill(0);
  }
}

/** `DOMAIN\user` or `user@DOMAIN`, as Windows clients take them. */
function splitDomain(user: string): [string, string | undefined] {
  const backslash = user.indexOf('\\');
  if (backslash > 0) return [user.slice(backslash + 1), user.slice(0, backslash)];
  return [user, undefined];
}

async function mountShare(
  options: KernelCifsOptions,
  mountPoint: string,
  secretFile: string,
  context: MountContext,
): Promise<void> {
  const { location } = options;
  const unc = `//${location.host}/${location.share}`;
  for (const [index, dialect] of DIALECTS.entries()) {
    const mountOptions = [
      options.readOnly ? 'ro' : 'rw',
      `vers=${dialect}`,
      'seal',
      options.credentials ? `credentials=${secretFile}` : 'guest',
      'nosharesock',
      ...(location.port ? [`port=${location.port}`] : []),
    ];
    try {
      await run('mount.cifs', [unc, mountPoint, '-o', mountOptions.join(',')], { signal: context.signal });
      context.log.info({ share: unc, dialect }, 'CIFS share mounted');
      return;
    } catch (error) {
      if (context.signal.aborted) throw context.signal.reason;
      const failure = explainMountError(error);
      const lastDialect = index === DIALECTS.length - 1;
      if (failure.errno !== Errno.ENOTSUP || lastDialect) {
        throw failure.errno === Errno.ENOTSUP
          ? new MountFailure(Errno.EPROTONOSUPPORT, 'the SMB server refused SMB3 encryption (seal)', {
              cause: error,
            })
          : failure;
      }
    }
  }
}

/** mount.cifs says `mount error(N): text`, N the kernel's errno. */
function explainMountError(error: unknown): MountFailure {
  const stderr = String((error as { stderr?: unknown }).stderr ?? '');
  const reason = lastLine(stderr) || String(error);
  const code = Number(/mount error\((\d+)\)/.exec(stderr)?.[1]);
  const errno = (() => {
    if (/could not resolve address/i.test(stderr)) return Errno.EHOSTUNREACH;
    switch (code) {
      case 1:
      case 13:
        return Errno.EACCES;
      case 2:
        return Errno.ENOENT;
      case 95:
        return Errno.ENOTSUP;
      case 111:
        return Errno.ECONNREFUSED;
      case 101:
      case 110:
      case 112:
      case 113:
        return Errno.EHOSTUNREACH;
      default:
        return Errno.EIO;
    }
  })();
  return new MountFailure(errno, reason, { cause: error });
}

async function checkImageFile(image: string, location: SmbLocation): Promise<void> {
  let stats: Awaited<ReturnType<typeof fs.stat>>;
  try {
    stats = await fs.stat(image);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const errno = code === 'ENOENT' || code === 'ENOTDIR' ? Errno.ENOENT : Errno.EACCES;
    throw new MountFailure(errno, `${location.path} cannot be opened on share ${location.share}: ${code}`);
  }
  if (!stats.isFile()) {
    throw new MountFailure(Errno.ENOENT, `${location.path} on share ${location.share} is not a file`);
  }
}

/** Unmounts, lazily if something still holds the share, so the slot is never left mounted. */
async function unmount(mountPoint: string, log: Logger): Promise<void> {
  try {
    await run('umount', [mountPoint], { timeout: UMOUNT_TIMEOUT_MS });
  } catch (error) {
    log.warn({ err: error, mountPoint }, 'the CIFS share is busy: detaching it lazily');
    await run('umount', ['-l', mountPoint], { timeout: UMOUNT_TIMEOUT_MS });
  }
}

/**
 * At service start: a share a killed service left mounted for this slot is unmounted (its nbdkit was
 * killed first) and the mount point and any credentials file removed.
 */
export async function recoverCifsMount(config: SlotConfig, log: Logger): Promise<void> {
  const mountPoint = cifsMountPoint(config);
  await fs.rm(credentialsFile(config), { force: true });
  if (await isMountPoint(mountPoint)) {
    log.warn({ slot: config.slotId, mountPoint }, 'unmounting a CIFS share left by a previous service');
    await unmount(mountPoint, log).catch((error) => log.warn({ err: error }, 'cannot unmount the share'));
  }
  await removeMountPoint(mountPoint).catch(() => undefined);
}

/** rmdir, never a recursive removal: that would delete the share's files if the unmount had failed. */
async function removeMountPoint(mountPoint: string): Promise<void> {
  try {
    await fs.rmdir(mountPoint);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
}

async function isMountPoint(dir: string): Promise<boolean> {
  const mounts = await fs.readFile('/proc/self/mountinfo', 'utf8').catch(() => '');
  // Field 5 is the mount point, with spaces and backslashes octal-escaped.
  return mounts.split('\n').some((line) => line.split(' ')[4] === dir);
}
