import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import dbus, { type Message, type MessageBus } from 'dbus-next';
import { Interface, SERVICE_NAME } from '../../src/contract/dbus.ts';
import { connectBus } from '../../src/dbus/connection.ts';
import { type PrivateBus, startPrivateBus } from '../../src/dbus/private-bus.ts';
import { keepLog } from './run-logs.ts';
import { abortOnExit, waitFor } from './wait.ts';

const vmediaBin = fileURLToPath(new URL('../../bin/vmedia.js', import.meta.url));
const READY_TIMEOUT_MS = 30_000;

export interface ServiceHarnessOptions {
  /** Slot config document (seed format), given the runtime dir; written to a file, passed as --config. */
  config?: (runtimeDir: string) => unknown;
  hostMode?: 'auto' | 'emulated' | 'usb-gadget';
  /** More `vmedia service` arguments (--sysfs-root, --nbd-client, …). */
  args?: string[];
  env?: Record<string, string>;
  /**
   * Run on another harness's bus and state dir (a service restarted after the first one died), or on
   * a prepared one. Its owner stops the bus and removes the directory; this harness's stop does not.
   */
  shared?: { dir: string; stateDir: string; bus: PrivateBus };
}

export interface ServiceHarness {
  dir: string;
  stateDir: string;
  runtimeDir: string;
  hostDir: string;
  bus: PrivateBus;
  /** A client connection with Unix fd passing negotiated. */
  client: MessageBus;
  service: ChildProcess;
  /** Everything the service wrote to stdout and stderr so far. */
  output(): string;
  /** Signals from the service since start, oldest first. */
  signals: Message[];
  call(
    objectPath: string,
    iface: string,
    member: string,
    signature?: string,
    body?: unknown[],
  ): Promise<unknown[]>;
  getAll(objectPath: string, iface: string): Promise<Record<string, unknown>>;
  /** Resolves with the errno of the next Completion on `objectPath` after `since` signals. */
  completion(objectPath: string, since?: number): Promise<number>;
  waitFor(predicate: () => Promise<boolean> | boolean, what: string, timeoutMs?: number): Promise<void>;
  /** PIDs of the service's helper processes (nbdkit, nbd-client). */
  servicePids(): Promise<number[]>;
  stop(): Promise<void>;
}

/**
 * A private dbus-daemon plus `vmedia service` as a child process, with a temporary state dir, and a
 * client connection that records the service's signals. For the service's own tests and for anyone
 * who needs a real VirtualMedia service on a bus (the Redfish VirtualMedia tests).
 */
export async function startServiceHarness(options: ServiceHarnessOptions = {}): Promise<ServiceHarness> {
  const { shared } = options;
  const dir = shared?.dir ?? (await fs.mkdtemp(path.join(os.tmpdir(), 'vmedia-service-')));
  const stateDir = shared?.stateDir ?? path.join(dir, 'state');
  if (!shared) await fs.mkdir(stateDir);
  const bus = shared?.bus ?? (await startPrivateBus(dir));
  const args = [vmediaBin, 'service', '--bus-address', bus.address, '--state-dir', stateDir];
  args.push('--host-mode', options.hostMode ?? 'emulated', ...(options.args ?? []));
  if (options.config !== undefined) {
    const configFile = path.join(dir, 'slots.json');
    await fs.writeFile(configFile, JSON.stringify(options.config(path.join(stateDir, 'run'))));
    args.push('--config', configFile);
  }
  const service = spawn(process.execPath, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, VMEDIA_LOG_LEVEL: 'debug', ...options.env },
  });
  let output = '';
  service.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    output += chunk;
  });
  service.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
    output += chunk;
  });
  const serviceExited = abortOnExit(
    service,
    (code, signal) => `service exited (${code ?? signal}):\n${output}`,
  );

  const client = await connectBus(bus.address);
  const signals: Message[] = [];
  client.on('message', (message) => {
    if (
      message.type === dbus.MessageType.SIGNAL &&
      message.path?.startsWith('/xyz/openbmc_project/VirtualMedia')
    ) {
      signals.push(message);
    }
  });
  await busCall(client, {
    destination: 'org.freedesktop.DBus',
    path: '/org/freedesktop/DBus',
    interface: 'org.freedesktop.DBus',
    member: 'AddMatch',
    signature: 's',
    body: ["type='signal',path_namespace='/xyz/openbmc_project/VirtualMedia'"],
  });

  const harness: ServiceHarness = {
    dir,
    stateDir,
    runtimeDir: path.join(stateDir, 'run'),
    hostDir: path.join(stateDir, 'host'),
    bus,
    client,
    service,
    output: () => output,
    signals,
    async call(objectPath, iface, member, signature = '', body = []) {
      const reply = await busCall(client, {
        destination: SERVICE_NAME,
        path: objectPath,
        interface: iface,
        member,
        signature,
        body,
      });
      return reply.body ?? [];
    },
    async getAll(objectPath, iface) {
      const [values] = (await harness.call(objectPath, Interface.Properties, 'GetAll', 's', [iface])) as [
        Record<string, { value: unknown }>,
      ];
      return Object.fromEntries(Object.entries(values).map(([key, variant]) => [key, variant.value]));
    },
    async completion(objectPath, since = 0) {
      let found: number | undefined;
      await harness.waitFor(() => {
        found = signals.slice(since).find((s) => s.path === objectPath && s.member === 'Completion')
          ?.body[0] as number | undefined;
        return found !== undefined;
      }, `Completion on ${objectPath}`);
      return found!;
    },
    async waitFor(predicate, what, timeoutMs = 30_000) {
      await waitFor(predicate, { what, timeoutMs, intervalMs: 50, signal: serviceExited });
    },
    async servicePids() {
      // tsx may keep an esbuild transform service as a child of any process it runs in; not ours.
      const pids = await childrenOf(service.pid!);
      const commands = await Promise.all(
        pids.map((pid) => fs.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')),
      );
      return pids.filter((_, i) => !/\/esbuild\0--service=/.test(commands[i]!));
    },
    async stop() {
      client.disconnect();
      if (service.exitCode === null && service.signalCode === null) {
        service.kill('SIGTERM');
        await once(service, 'exit');
      }
      keepLog('service', output);
      if (shared) return;
      await bus.stop();
      await fs.rm(dir, { recursive: true, force: true });
    },
  };
  try {
    await harness.waitFor(() => /\bready\b/.test(output), 'the service to be ready', READY_TIMEOUT_MS);
  } catch (error) {
    await harness.stop();
    throw error;
  }
  return harness;
}

/** Proxy slot `n` in the config document: /nbd/<n> on /dev/nbd<n>, its socket nbd<n>.sock in `runtimeDir`. */
export function proxySlotConfig(runtimeDir: string, n: number) {
  return {
    EndpointId: `/nbd/${n}`,
    Mode: 0,
    NBDDevice: `/dev/nbd${n}`,
    UnixSocket: `${runtimeDir}/nbd${n}.sock`,
  };
}

async function busCall(
  bus: MessageBus,
  fields: ConstructorParameters<typeof dbus.Message>[0],
): Promise<Message> {
  const reply = await bus.call(new dbus.Message(fields));
  if (!reply) throw new Error(`no reply to ${fields.member}`);
  return reply;
}

/** Direct children of `pid`, from /proc. */
async function childrenOf(pid: number): Promise<number[]> {
  const children: number[] = [];
  for (const entry of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await fs.readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
    // Fields after the parenthesised command name: state, ppid, …
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    if (ppid === pid) children.push(Number(entry));
  }
  return children;
}

/** Every /proc/<pid>/cmdline on the machine, and the environ of `pids`, that contains `secret`. */
export async function processesExposing(secret: string, pids: number[]): Promise<string[]> {
  const found: string[] = [];
  for (const entry of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const cmdline = await fs.readFile(`/proc/${entry}/cmdline`).catch(() => Buffer.alloc(0));
    if (cmdline.includes(secret)) found.push(`${entry} cmdline`);
  }
  for (const pid of pids) {
    const environ = await fs.readFile(`/proc/${pid}/environ`).catch(() => Buffer.alloc(0));
    if (environ.includes(secret)) found.push(`${pid} environ`);
  }
  return found;
}
