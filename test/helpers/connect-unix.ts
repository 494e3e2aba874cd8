import net from 'node:net';
import type { NbdConnection } from '../../src/nbd/connection.ts';
import { connectionFromSocket } from '../../src/transport/socket-connection.ts';

/** Connects to an NBD server listening on the Unix socket `path`. */
export function connectUnix(path: string): Promise<NbdConnection> {
  return new Promise((resolve, reject) => {
    const socket = net.createConnection({ path });
    const onError = (error: Error) => {
      socket.destroy();
      reject(error);
    };
    socket.once('error', onError);
    socket.once('connect', () => {
      socket.off('error', onError);
      resolve(connectionFromSocket(socket));
    });
  });
}
