import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { HostControlDbusClient } from '../../src/dbus/host-control-client.ts';
import { VirtualMediaDbusClient } from '../../src/dbus/virtual-media-dbus-client.ts';
import { type ImageServer, type ImageServerOptions, startImageServer } from './https-image-server.ts';
import { keepLog, recordSecret } from './run-logs.ts';
import { type RequestOptions, type Response, startTestServer, type TestServer } from './server.ts';
import { type ServiceHarness, startServiceHarness } from './service-harness.ts';
import { createTestCertificates, type TestCertificates } from './test-ca.ts';
import { abortOnExit, waitFor } from './wait.ts';

const vmediaBin = fileURLToPath(new URL('../../bin/vmedia.js', import.meta.url));

/**
 * The whole Redfish VirtualMedia path on loopback: a private bus with the real `vmedia service`
 * (emulated host, trusting the test CA), the server's D-Bus client, the real HTTPS server, and an
 * HTTPS image server whose certificate the test CA signed.
 */
export interface VmStack {
  dir: string;
  harness: ServiceHarness;
  certificates: TestCertificates;
  images: ImageServer;
  client: VirtualMediaDbusClient;
  /** The real HTTPS server; its `request` validates every Redfish body against the DMTF schemas. */
  server: TestServer;
  /** `server.request`, recording every response in `responses` (so a test can scan them all for secrets). */
  request(method: string, uri: string, options?: RequestOptions): Promise<Response>;
  responses: Response[];
  /** Kills the service with SIGKILL (no cleanup, as a crash would). */
  killService(): Promise<void>;
  /** Starts a new `vmedia service` on the same bus and state directory. */
  restartService(): Promise<void>;
  /** `vmedia machine` (the emulated host) on the same bus, when asked for; its files are in `machineDir`. */
  machine?: ChildProcess;
  machineDir: string;
  stop(): Promise<void>;
}

export async function startVmStack(options: {
  images: Record<string, Uint8Array>;
  imageCredentials?: { user: string; password: string };
  /** Milliseconds the image server holds a request before answering it (a slow image server). */
  imageDelayMs?: ImageServerOptions['delayMs'];
  /** Both daemons allow plain http:// images (VMEDIA_ALLOW_HTTP, the integrator setting). */
  allowHttp?: boolean;
  /** Run the emulated host machine too, and give the server a host control client. */
  machine?: boolean;
}): Promise<VmStack> {
  if (options.imageCredentials) recordSecret(options.imageCredentials.password);
  const certDir = await fs.mkdtemp(path.join(os.tmpdir(), 'vmedia-vm-certs-'));
  const certificates = await createTestCertificates(certDir);
  const images = await startImageServer({
    certificates,
    images: options.images,
    ...(options.imageCredentials ? { credentials: options.imageCredentials } : {}),
    ...(options.imageDelayMs ? { delayMs: options.imageDelayMs } : {}),
  });
  const serviceEnv = {
    VMEDIA_CA_BUNDLE: certificates.caCertFile,
    ...(options.allowHttp ? { VMEDIA_ALLOW_HTTP: '1' } : {}),
  };
  const harness = await startServiceHarness({ env: serviceEnv });
  const client = await VirtualMediaDbusClient.connect({ address: harness.bus.address });
  const machine = options.machine ? await startMachine(harness) : undefined;
  const hostControl = options.machine
    ? new HostControlDbusClient({ address: harness.bus.address })
    : undefined;
  const server = await startTestServer({
    virtualMedia: client,
    allowHttp: options.allowHttp ?? false,
    ...(hostControl ? { hostControl } : {}),
  });
  let replacement: ChildProcess | undefined;

  const responses: Response[] = [];
  const stack: VmStack = {
    dir: harness.dir,
    harness,
    certificates,
    images,
    client,
    server,
    responses,
    ...(machine ? { machine } : {}),
    machineDir: path.join(harness.stateDir, 'machine'),
    async request(method, uri, options) {
      const response = await server.request(method, uri, options);
      responses.push(response);
      return response;
    },
    async killService() {
      const victim = replacement ?? harness.service;
      if (victim.exitCode !== null || victim.signalCode !== null) return;
      victim.kill('SIGKILL');
      await once(victim, 'exit');
    },
    async restartService() {
      const child = spawn(
        process.execPath,
        [vmediaBin, 'service', '--bus-address', harness.bus.address, '--state-dir', harness.stateDir],
        { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...serviceEnv } },
      );
      replacement = child;
      let output = '';
      child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
        output += chunk;
      });
      child.stderr!.resume();
      try {
        await waitFor(() => /\bready\b/.test(output), {
          what: 'the new service to be ready',
          timeoutMs: 30_000,
          intervalMs: 50,
          signal: abortOnExit(child, (code, signal) => `it exited with ${code ?? signal}`),
        });
      } catch (error) {
        throw new Error(`restart failed: ${(error as Error).message}\n${output}`, { cause: error });
      }
    },
    async stop() {
      await server.close();
      await client.close();
      await hostControl?.close();
      if (machine && machine.exitCode === null && machine.signalCode === null) {
        machine.kill('SIGTERM');
        await once(machine, 'exit');
      }
      if (machine) keepLog('machine', machineOutput.get(machine) ?? '');
      if (replacement && replacement.exitCode === null && replacement.signalCode === null) {
        replacement.kill('SIGTERM');
        await once(replacement, 'exit');
      }
      await harness.stop();
      await images.close();
      await fs.rm(certDir, { recursive: true, force: true });
    },
  };
  return stack;
}

/** What each `vmedia machine` printed, kept for the run's logs. */
const machineOutput = new WeakMap<ChildProcess, string>();

/** `vmedia machine` on the harness's bus and state directory, once it owns the host's D-Bus names. */
export async function startMachine(harness: ServiceHarness): Promise<ChildProcess> {
  const child = spawn(
    process.execPath,
    [vmediaBin, 'machine', '--bus-address', harness.bus.address, '--state-dir', harness.stateDir],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, VMEDIA_LOG_LEVEL: 'info' } },
  );
  let output = '';
  // VMEDIA_TEST_LOG shows what the machine logs (its QMP errors, QEMU's own messages) as it happens.
  const collect = (chunk: string) => {
    output += chunk;
    if (process.env.VMEDIA_TEST_LOG) process.stderr.write(chunk);
  };
  child.stdout!.setEncoding('utf8').on('data', collect);
  child.stderr!.setEncoding('utf8').on('data', collect);
  machineOutput.set(child, '');
  child.on('exit', () => machineOutput.set(child, output));
  try {
    await waitFor(() => /vmedia machine ready/.test(output), {
      what: 'the emulated host machine to be ready',
      timeoutMs: 30_000,
      intervalMs: 50,
      signal: abortOnExit(child, (code, signal) => `it exited with ${code ?? signal}`),
    });
  } catch (error) {
    throw new Error(`vmedia machine: ${(error as Error).message}\n${output}`, { cause: error });
  }
  return child;
}

/** Follows a task monitor until the task has finished; answers (and records) the final monitor response. */
export async function followTask(stack: VmStack, monitor: string): Promise<Response> {
  const final = await waitFor(
    async () => {
      const response = await stack.server.request('GET', monitor);
      return response.status !== 202 && response;
    },
    { what: `task ${monitor} to finish`, timeoutMs: 60_000, intervalMs: 100 },
  );
  stack.responses.push(final);
  return final;
}

/**
 * The outcome of an InsertMedia or EjectMedia (or a PATCH doing either): the response itself when the
 * server answered at once, else (202) its task's final monitor response.
 */
export async function outcomeOf(stack: VmStack, response: Response): Promise<Response> {
  if (response.status !== 202) return response;
  return followTask(stack, String(response.headers.location));
}

/** The MessageIds of an error response, without the registry prefix (`ResourceNotFound`). */
export function messageIds(response: Response): string[] {
  const info = response.json?.error?.['@Message.ExtendedInfo'] ?? [];
  return info.map((m: { MessageId: string }) => m.MessageId.replace(/^Base\.1\.22\.1\./, ''));
}
