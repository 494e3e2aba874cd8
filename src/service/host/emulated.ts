import { once } from 'node:events';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Errno } from '../../contract/dbus.ts';
import type { BlockDevice } from '../../nbd/block-device.ts';
import { NbdClient } from '../../nbd/client/client.ts';
import { serveNbd } from '../../nbd/server/serve.ts';
import { connectionFromSocket } from '../../transport/socket-connection.ts';
import type { IoStats, MountContext } from '../slot.ts';
import type { AttachHost, AttachRequest, HostAttachment } from './attachment.ts';

const CLOSE_GRACE_MS = 2000;

/**
 * The host as a userspace stand-in (docs/contract.md §1): the service is the NBD client of the source and
 * re-exports the medium as an NBD server on `<hostDir>/<SlotId>.sock`, where any NBD client (nbdcopy,
 * qemu's usb-storage) reads it as the host would. I/O through that export is what Stats count.
 */
export function emulatedHost(hostDir: string): AttachHost {
  const attach: AttachHost = (request, context) => attachEmulated(hostDir, request, context);
  // A killed service leaves its host export sockets; nothing listens on them any more.
  attach.recover = async (slots) => {
    await Promise.all(slots.map((slot) => fs.rm(path.join(hostDir, `${slot.slotId}.sock`), { force: true })));
  };
  return attach;
}

async function attachEmulated(
  hostDir: string,
  request: AttachRequest,
  context: MountContext,
): Promise<HostAttachment> {
  const { config } = request;
  const client = await connectToSource(request, context);
  const stats: IoStats = { readIO: 0n, writeIO: 0n };
  const writeProtected = request.writeProtected || client.readOnly;
  const device = countingDevice(client, writeProtected, stats);

  const hostSocket = path.join(hostDir, `${config.slotId}.sock`);
  await fs.rm(hostSocket, { force: true });
  const connections = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    connections.add(socket);
    socket.once('close', () => connections.delete(socket));
    serveNbd(connectionFromSocket(socket), () => device, { signal: context.signal }).catch((error) =>
      context.log.warn({ err: error }, 'host NBD connection failed'),
    );
  });
  context.cleanup.defer('close the host export', async () => {
    for (const socket of connections) socket.destroy();
    server.close();
    await fs.rm(hostSocket, { force: true });
  });
  server.listen(hostSocket);
  await once(server, 'listening');
  await fs.chmod(hostSocket, 0o600);
  context.log.info({ hostSocket, size: client.size, writeProtected }, 'host export ready');
  return {
    writeProtected,
    stats: () => ({ ...stats }),
    lost: client.closed.then(() => Errno.EIO),
  };
}

/** The service's own NBD connection to the source; a failure is explained by the source. */
async function connectToSource({ source }: AttachRequest, context: MountContext): Promise<NbdClient> {
  const socket = net.connect(source.socketPath);
  context.cleanup.defer('disconnect from the source', () => {
    socket.destroy();
  });
  try {
    await once(socket, 'connect');
    const client = await NbdClient.connect(connectionFromSocket(socket));
    // A polite NBD_CMD_DISC, but a stalled source must not hold up the rest of the cleanup.
    context.cleanup.defer('close the source NBD client', () =>
      Promise.race([client.close(), sleep(CLOSE_GRACE_MS, undefined, { ref: false })]),
    );
    return client;
  } catch (error) {
    throw await source.explain(error);
  }
}

/** The client as the host sees it: write-protected when asked, every read and write counted. */
function countingDevice(client: NbdClient, writeProtected: boolean, stats: IoStats): BlockDevice {
  const device: BlockDevice = {
    size: client.size,
    readOnly: writeProtected,
    blockSize: client.blockSize,
    read(offset, length) {
      stats.readIO++;
      return client.read(offset, length);
    },
    // What the server reads from the source goes to the host as it arrived, without being joined.
    readPieces(offset, length) {
      stats.readIO++;
      return client.readPieces(offset, length);
    },
    flush: client.canFlush ? () => client.flush() : undefined,
  };
  if (writeProtected) return device;
  return {
    ...device,
    write(offset, data, options) {
      stats.writeIO++;
      return client.write(offset, data, options);
    },
    trim: client.canTrim ? (offset, length) => client.trim(offset, length) : undefined,
  };
}
