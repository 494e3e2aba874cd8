import { EventEmitter, once } from 'node:events';
import net from 'node:net';
import { createInterface } from 'node:readline';

/**
 * A QEMU Machine Protocol client over a Unix socket: JSON objects one per line, commands answered in
 * order (`return` or `error`), events (`event`) in between. Written here rather than taken from npm:
 * the protocol is a dozen lines of framing, and the QMP packages on npm are unmaintained or wrap a
 * TCP transport we do not use.
 */
export class QmpClient extends EventEmitter<{ event: [name: string, data: Record<string, unknown>] }> {
  private readonly pending: { resolve: (value: unknown) => void; reject: (error: Error) => void }[] = [];
  private closedError: Error | undefined;

  private constructor(private readonly socket: net.Socket) {
    super();
    const lines = createInterface({ input: socket });
    lines.on('line', (line) => this.receive(line));
    // A reset socket is a closed one: 'close' below fails whatever is pending.
    socket.on('error', () => undefined);
    lines.on('error', () => undefined);
    socket.once('close', () => {
      this.closedError = new QmpError('QMP connection closed', 'Closed');
      for (const waiter of this.pending.splice(0)) waiter.reject(this.closedError);
    });
  }

  /** Connects, reads the greeting and leaves capabilities negotiation mode. */
  static async connect(socketPath: string): Promise<QmpClient> {
    const socket = net.connect(socketPath);
    await once(socket, 'connect');
    const client = new QmpClient(socket);
    // The greeting arrives first and is answered like a command, so it is awaited as one.
    await new Promise((resolve, reject) => client.pending.push({ resolve, reject }));
    await client.execute('qmp_capabilities');
    return client;
  }

  /** Runs a command; rejects with QmpError when QEMU answers with an error. */
  execute(command: string, args?: Record<string, unknown>): Promise<unknown> {
    if (this.closedError) return Promise.reject(this.closedError);
    return new Promise((resolve, reject) => {
      this.pending.push({ resolve, reject });
      this.socket.write(
        `${JSON.stringify(args ? { execute: command, arguments: args } : { execute: command })}\n`,
      );
    });
  }

  /** Resolves when the event arrives (and `accept` takes its data), or rejects after `timeoutMs`. */
  waitForEvent(
    name: string,
    accept: (data: Record<string, unknown>) => boolean,
    timeoutMs: number,
  ): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.off('event', listener);
        reject(new QmpError(`no ${name} event within ${timeoutMs} ms`, 'Timeout'));
      }, timeoutMs);
      const listener = (event: string, data: Record<string, unknown>) => {
        if (event !== name || !accept(data)) return;
        clearTimeout(timer);
        this.off('event', listener);
        resolve();
      };
      this.on('event', listener);
    });
  }

  close(): void {
    this.socket.destroy();
  }

  private receive(line: string): void {
    let message: Record<string, unknown>;
    try {
      message = JSON.parse(line);
    } catch {
      return;
    }
    if (typeof message.event === 'string') {
      this.emit('event', message.event, (message.data ?? {}) as Record<string, unknown>);
      return;
    }
    const waiter = this.pending.shift();
    if (!waiter) return;
    if ('error' in message) {
      const error = message.error as { class?: string; desc?: string };
      waiter.reject(new QmpError(error.desc ?? 'QMP error', error.class ?? 'GenericError'));
    } else {
      waiter.resolve('return' in message ? message.return : message.QMP);
    }
  }
}

export class QmpError extends Error {
  constructor(
    message: string,
    readonly errorClass: string,
  ) {
    super(message);
    this.name = 'QmpError';
  }
}
