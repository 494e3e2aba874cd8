import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import dbus, { type Message, type MessageBus } from 'dbus-next';

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

/**
 * A method call bounded in time: dbus-next never fails a call whose peer vanished. A reply that does not
 * come within `timeoutMs` (or comes empty) rejects with `absent(reason)`.
 */
export async function boundedCall(
  bus: MessageBus,
  message: Message,
  timeoutMs: number,
  absent: (reason: Error) => Error,
): Promise<Message> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(absent(new Error(`${message.member}: no reply`))), timeoutMs);
  });
  try {
    const reply = await Promise.race([bus.call(message), timeout]);
    if (!reply) throw absent(new Error(`${message.member}: empty reply`));
    return reply;
  } finally {
    clearTimeout(timer);
  }
}

/** D-Bus errors that mean "nobody is there to answer", as opposed to a refusal by the service. */
const ABSENT_ERRORS = new Set([
  'org.freedesktop.DBus.Error.ServiceUnknown',
  'org.freedesktop.DBus.Error.NameHasNoOwner',
  'org.freedesktop.DBus.Error.NoReply',
  'org.freedesktop.DBus.Error.Disconnected',
  'org.freedesktop.DBus.Error.UnknownObject',
]);

/** Whether a D-Bus error means the peer is not there (as opposed to a refusal by the peer). */
export function isAbsentPeer(error: { type: string }): boolean {
  return ABSENT_ERRORS.has(error.type);
}
