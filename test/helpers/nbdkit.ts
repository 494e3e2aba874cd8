import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';

export interface Nbdkit {
  socket: string;
  process: ChildProcess;
  stop(): Promise<void>;
}

/** `nbdkit --unix <dir>/<name>.sock <plugin args…>`, resolved once it listens (pidfile written). */
export async function startNbdkit(dir: string, name: string, pluginArgs: string[]): Promise<Nbdkit> {
  const socket = path.join(dir, `${name}.sock`);
  const pidFile = path.join(dir, `${name}.pid`);
  const child = spawn(
    'nbdkit',
    ['--exit-with-parent', '--unix', socket, '--pidfile', pidFile, ...pluginArgs],
    {
      stdio: ['ignore', 'ignore', 'inherit'],
    },
  );
  while (
    !(await fs.access(pidFile).then(
      () => true,
      () => false,
    ))
  ) {
    if (child.exitCode !== null) throw new Error(`nbdkit ${pluginArgs.join(' ')} exited`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return {
    socket,
    process: child,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        await once(child, 'exit');
      }
    },
  };
}

export interface UnixListener {
  /** Connections accepted so far. */
  connections: net.Socket[];
  close(): Promise<void>;
}

/**
 * Plays the server's side of Proxy mode on a slot socket: listens on `socketPath` and hands each
 * accepted connection to `onConnection` (relay it, send garbage, stay silent).
 */
export async function listenUnix(
  socketPath: string,
  onConnection: (socket: net.Socket) => void,
): Promise<UnixListener> {
  await fs.rm(socketPath, { force: true });
  const connections: net.Socket[] = [];
  const server = net.createServer((socket) => {
    connections.push(socket);
    socket.on('error', () => {});
    onConnection(socket);
  });
  server.listen(socketPath);
  await once(server, 'listening');
  return {
    connections,
    async close() {
      for (const socket of connections) socket.destroy();
      server.close();
      await fs.rm(socketPath, { force: true });
    },
  };
}

/** Relays a connection to the Unix socket `target` in both directions. */
export function relayTo(target: string): (socket: net.Socket) => void {
  return (socket) => {
    const upstream = net.connect(target);
    upstream.on('error', () => socket.destroy());
    socket.on('close', () => upstream.destroy());
    upstream.on('close', () => socket.destroy());
    socket.pipe(upstream).pipe(socket);
  };
}
