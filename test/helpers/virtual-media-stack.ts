import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { VirtualMediaDbusClient } from '../../src/dbus/virtual-media-dbus-client.ts';
import { type ImageServer, type ImageServerOptions, startImageServer } from './https-image-server.ts';
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
  stop(): Promise<void>;
}

export async function startVmStack(options: {
  images: Record<string, Uint8Array>;
  imageCredentials?: { user: string; password: string };
  /** Milliseconds the image server holds a request before answering it (a slow image server). */
  imageDelayMs?: ImageServerOptions['delayMs'];
  /** Both daemons allow plain http:// images (VMEDIA_ALLOW_HTTP, the integrator setting). */
  allowHttp?: boolean;
}): Promise<VmStack> {
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
  const server = await startTestServer({ virtualMedia: client, allowHttp: options.allowHttp ?? false });
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
