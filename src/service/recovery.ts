import fs from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import dbus, { type MessageBus } from 'dbus-next';
import { SERVICE_NAME, SlotMode } from '../contract/dbus.ts';
import type { Logger } from '../log.ts';
import { helperPidFile, processAlive } from './child.ts';
import type { SlotConfig } from './config.ts';
import type { AttachHost } from './host/attachment.ts';
import { recoverCifsMount } from './sources/cifs-kernel.ts';

const EXIT_WAIT_MS = 5000;
const POLL_MS = 50;

/** Who owns the bus name now: nobody, a running process (another service), or a dead one. */
export type NameOwner = { state: 'none' } | { state: 'alive' | 'dead'; pid: number };

/**
 * The bus name's owner as the bus daemon sees it. A service killed with SIGKILL keeps owning the
 * name for as long as anything still holds its bus socket; the daemon then reports the dead
 * service's pid (taken from the socket's credentials when it connected).
 */
export async function nameOwner(bus: MessageBus): Promise<NameOwner> {
  let reply: dbus.Message | null;
  try {
    reply = await bus.call(
      new dbus.Message({
        destination: 'org.freedesktop.DBus',
        path: '/org/freedesktop/DBus',
        interface: 'org.freedesktop.DBus',
        member: 'GetConnectionUnixProcessID',
        signature: 's',
        body: [SERVICE_NAME],
      }),
    );
  } catch {
    return { state: 'none' }; // NameHasNoOwner (or a daemon that cannot tell: nothing to recover)
  }
  const pid = Number(reply?.body?.[0]);
  if (!Number.isInteger(pid) || pid <= 0) return { state: 'none' };
  return { state: pid !== process.pid && processAlive(pid) ? 'alive' : 'dead', pid };
}

/**
 * Removes what a service that died without its cleanup left for these slots, before this one
 * mounts anything: its helper processes (found by their pidfiles and recognised by their argv, so
 * a recycled pid is never killed), then the host attachments (gadgets, NBD devices, host export
 * sockets), then the Legacy slots' CIFS mounts, then their sockets and the pidfiles. Returns how many processes it killed.
 */
export async function recoverLeftovers(
  slots: SlotConfig[],
  attachHost: AttachHost,
  log: Logger,
): Promise<number> {
  const killed: number[] = [];
  for (const slot of slots) {
    const pidFiles = [helperPidFile(slot, 'nbd-client')];
    if (slot.mode === SlotMode.Legacy) pidFiles.push(helperPidFile(slot, 'nbdkit'));
    for (const pidFile of pidFiles) {
      const pid = await leftoverPid(pidFile, slot.unixSocket);
      if (pid === undefined) continue;
      log.warn({ slot: slot.slotId, pid, pidFile }, 'killing a helper process left by a previous service');
      try {
        process.kill(pid, 'SIGKILL');
        killed.push(pid);
      } catch (error) {
        log.warn({ err: error, pid }, 'cannot kill a leftover helper process');
      }
    }
  }
  await waitForExit(killed);
  await attachHost.recover?.(slots, log);
  // Its nbdkit is gone now, so a share a Legacy slot had mounted is no longer busy.
  for (const slot of slots) if (slot.mode === SlotMode.Legacy) await recoverCifsMount(slot, log);
  for (const slot of slots) {
    const stale = [helperPidFile(slot, 'nbd-client')];
    // A Proxy slot's socket belongs to the server, which may be listening on it right now.
    if (slot.mode === SlotMode.Legacy) stale.push(helperPidFile(slot, 'nbdkit'), slot.unixSocket);
    await Promise.all(stale.map((file) => fs.rm(file, { force: true })));
  }
  return killed.length;
}

/** The pid in `pidFile` if that process runs and its argv names the slot's socket. */
async function leftoverPid(pidFile: string, socketPath: string): Promise<number | undefined> {
  const pid = Number((await fs.readFile(pidFile, 'utf8').catch(() => '')).trim());
  if (!Number.isInteger(pid) || pid <= 1 || pid === process.pid || !processAlive(pid)) return undefined;
  const argv = (await fs.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).split('\0');
  return argv.includes(socketPath) || argv.includes(path.resolve(socketPath)) ? pid : undefined;
}

async function waitForExit(pids: number[]): Promise<void> {
  const deadline = Date.now() + EXIT_WAIT_MS;
  while (pids.some(processAlive) && Date.now() < deadline) await sleep(POLL_MS);
}
