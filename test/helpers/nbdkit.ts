import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { abortOnExit, waitFor } from './wait.ts';

export interface Nbdkit {
  socket: string;
  process: ChildProcess;
  /** Stops nbdkit (SIGTERM unless told otherwise) and waits until it has exited. */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/**
 * `nbdkit --unix <dir>/<name>.sock <args…>` in the foreground (options, plugin and its parameters),
 * resolved once it listens (pid file written); killed if it does not within 10 s.
 */
export async function startNbdkit(dir: string, name: string, args: string[]): Promise<Nbdkit> {
  const socket = path.join(dir, `${name}.sock`);
  const pidFile = path.join(dir, `${name}.pid`);
  const child = spawn(
    'nbdkit',
    ['--foreground', '--exit-with-parent', '--unix', socket, '--pidfile', pidFile, ...args],
    {
      stdio: ['ignore', 'ignore', 'inherit'],
    },
  );
  try {
    // nbdkit writes its pid file once it accepts connections.
    await waitFor(() => fs.access(pidFile).then(() => true), {
      what: `the pid file ${pidFile}`,
      timeoutMs: 10_000,
      signal: abortOnExit(child, (code, signal) => `nbdkit exited with ${code ?? signal}`),
    });
  } catch (error) {
    child.kill('SIGKILL');
    throw new Error(`nbdkit ${args.join(' ')}: ${(error as Error).message}`);
  }
  return {
    socket,
    process: child,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill(signal);
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
