import { Errno } from '../../contract/dbus.ts';
import type { SlotConfig } from '../config.ts';
import { MountFailure } from '../errors.ts';
import type { MediumSource } from './source.ts';

/**
 * Proxy mode: the server (bmcweb's role) listens on the slot's socket and relays the browser's or
 * CLI's NBD server; the service only connects to it.
 */
export function proxySource(config: SlotConfig): MediumSource {
  return {
    socketPath: config.unixSocket,
    lost: new Promise(() => {}),
    async explain(error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ECONNREFUSED') {
        return new MountFailure(Errno.ECONNREFUSED, `nothing listens on ${config.unixSocket}`, {
          cause: error,
        });
      }
      return new MountFailure(Errno.EIO, `no usable NBD server on ${config.unixSocket}`, { cause: error });
    },
  };
}
