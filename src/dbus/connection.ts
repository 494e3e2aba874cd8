import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import dbus, { type MessageBus } from 'dbus-next';

/**
 * Connects to the bus at `address` (the system bus when absent) with Unix fd passing negotiated —
 * Legacy.Mount carries the credentials pipe as an fd, which dbus-next only passes through usocket
 * and only when both ends ask for it.
 */
export async function connectBus(address?: string): Promise<MessageBus> {
  // SessionBusOptions lacks negotiateUnixFd in dbus-next's typings, although the library honours it.
  const options = { busAddress: address, negotiateUnixFd: true } as Parameters<typeof dbus.sessionBus>[0];
  const bus = address ? dbus.sessionBus(options) : dbus.systemBus({ negotiateUnixFd: true });
  // Hello is sent asynchronously by the constructor, so 'connect' (or 'error') is still to come.
  const [error] = await Promise.race([once(bus, 'connect').then(() => [undefined]), once(bus, 'error')]);
  if (error) throw error;
  return bus;
}

/**
 * The bus both daemons use: the `--bus-address` flag, else the address the embedded stack's launcher
 * wrote to `<state>/dbus-address`, else undefined (the system bus).
 */
export async function chooseBusAddress(
  flag: string | undefined,
  addressFile: string,
): Promise<string | undefined> {
  if (flag) return flag;
  const text = await readFile(addressFile, 'utf8').catch(() => '');
  return text.trim() || undefined;
}
