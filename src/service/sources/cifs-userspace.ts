import { fileURLToPath } from 'node:url';
import { Errno } from '../../contract/dbus.ts';
import type { SlotConfig } from '../config.ts';
import type { Credentials } from '../credentials.ts';
import { MountFailure } from '../errors.ts';
import type { MountContext } from '../slot.ts';
import { lastLine, startNbdkit } from './nbdkit.ts';
import type { MediumSource } from './source.ts';

/**
 * The nbdkit plugin, beside this module in the source tree and beside the bundle in dist/ (scripts/build.ts
 * copies it there).
 */
const PLUGIN = fileURLToPath(new URL('./smb-plugin.py', import.meta.url));

export interface UserspaceCifsOptions {
  config: SlotConfig;
  url: URL;
  readOnly: boolean;
  credentials: Credentials | undefined;
  nbdkit: string;
}

/**
 * Legacy smb:// source where the kernel has no CIFS: `nbdkit python` with src/service/sources/smb-plugin.py,
 * Samba's libsmbclient reading the file over SMB 3.0–3.1.1, encryption required. The plugin connects
 * before nbdkit listens, so a wrong password, a missing share or file, or a server that cannot encrypt
 * fails the mount at once, with the plugin's `vmedia-smb: ERRNO: reason` line.
 */
export function startUserspaceCifsSource(
  options: UserspaceCifsOptions,
  context: MountContext,
): Promise<MediumSource> {
  const plugin = ['python', PLUGIN, `url=${options.url.href}`, `readonly=${options.readOnly}`];
  return startNbdkit({ ...options, plugin, explain: explainPluginFailure }, context);
}

const ERRNO_BY_NAME: Readonly<Record<string, number>> = {
  EACCES: Errno.EACCES,
  EPERM: Errno.EACCES, // libsmbclient's answer to a refused session setup
  ENOENT: Errno.ENOENT,
  ENOTDIR: Errno.ENOENT,
  EISDIR: Errno.ENOENT,
  ECONNREFUSED: Errno.ECONNREFUSED,
  EHOSTUNREACH: Errno.EHOSTUNREACH,
  ENETUNREACH: Errno.EHOSTUNREACH,
  ETIMEDOUT: Errno.EHOSTUNREACH,
  EPROTONOSUPPORT: Errno.EPROTONOSUPPORT,
};

function explainPluginFailure(stderr: string, cause?: unknown): MountFailure {
  const line = /^vmedia-smb: (E[A-Z]+): (.*)$/m.exec(stderr);
  if (!line)
    return new MountFailure(Errno.EIO, lastLine(stderr) || 'nbdkit refused the connection', { cause });
  return new MountFailure(ERRNO_BY_NAME[line[1]!] ?? Errno.EIO, line[2]!, { cause });
}
