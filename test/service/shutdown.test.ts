import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { once } from 'node:events';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import dbus from 'dbus-next';
import { Interface, SlotMode, slotPath } from '../../src/contract/dbus.ts';
import { createFakeKernel, type FakeKernel } from '../helpers/fake-kernel.ts';
import { type ImageServer, startImageServer } from '../helpers/https-image-server.ts';
import { type ServiceHarness, startServiceHarness } from '../helpers/service-harness.ts';
import { createTestCertificates } from '../helpers/test-ca.ts';

const MOUNTED = slotPath(SlotMode.Legacy, 'Slot_2');
const ACTIVATING = slotPath(SlotMode.Legacy, 'Slot_3');
const noSecret = new dbus.Variant('i', -1);
/**
 * Far below the Legacy slots' completion timer (90 s + margin): a shutdown that waited for an
 * activation to time out instead of cancelling it would miss this.
 */
const EXIT_BOUND_MS = 20_000;

async function mount(harness: ServiceHarness, slot: string, url: string): Promise<void> {
  assert.deepEqual(await harness.call(slot, Interface.Legacy, 'Mount', 'sbv', [url, false, noSecret]), [
    true,
  ]);
}

async function mounted(harness: ServiceHarness, slot: string, url: string): Promise<void> {
  const since = harness.signals.length;
  await mount(harness, slot, url);
  assert.equal(await harness.completion(slot, since), 0, harness.output());
}

/**
 * SIGTERM to the service; resolves with how it exited once it has, and checks that none of the helper
 * processes it had started outlived it (its cleanup reaps them; were they left to nbdkit's
 * --exit-with-parent, they would still be there the moment the service is gone).
 */
async function terminate(harness: ServiceHarness): Promise<{ code: number | null; signal: string | null }> {
  const helpers = await harness.servicePids();
  assert.ok(helpers.length > 0, 'the service runs helper processes before SIGTERM');
  harness.service.kill('SIGTERM');
  const [code, signal] = (await once(harness.service, 'exit', {
    signal: AbortSignal.timeout(EXIT_BOUND_MS),
  }).catch((error: unknown) => {
    throw new Error(`no exit ${EXIT_BOUND_MS} ms after SIGTERM:\n${harness.output()}`, { cause: error });
  })) as [number | null, string | null];
  const alive = helpers.filter((pid) => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  });
  assert.deepEqual(alive, [], 'no helper process outlives the service');
  return { code, signal };
}

/** The slot sockets, nbdkit pidfiles and host exports are gone; the CA bundle copy may stay. */
async function assertNoSockets(harness: ServiceHarness): Promise<void> {
  assert.deepEqual(
    (await fs.readdir(harness.runtimeDir)).filter((name) => name !== 'ca-bundle.pem'),
    [],
    'nothing left in <state>/run',
  );
  assert.deepEqual(await fs.readdir(harness.hostDir), [], 'nothing left in <state>/host');
}

describe('SIGTERM with a Legacy slot mounted and another activating (emulated host)', () => {
  let dir: string;
  let server: ImageServer;
  let silent: net.Server;
  const silentConnections: net.Socket[] = [];
  let harness: ServiceHarness;

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vmedia-shutdown-'));
    const certificates = await createTestCertificates(dir);
    server = await startImageServer({ certificates, images: { '/disk.img': crypto.randomBytes(1 << 20) } });
    // Accepts and never answers, not even the TLS handshake: nbdkit-curl's open() waits on it.
    silent = net.createServer((socket) => silentConnections.push(socket)).listen(0, '127.0.0.1');
    await once(silent, 'listening');
    harness = await startServiceHarness({ env: { VMEDIA_CA_BUNDLE: certificates.caCertFile } });
  });
  after(async () => {
    await harness?.stop();
    for (const socket of silentConnections) socket.destroy();
    silent?.close();
    await server?.close();
    await fs.rm(dir, { recursive: true, force: true });
  });

  test('exits 0 promptly, reaps nbdkit, removes every socket', async () => {
    await mounted(harness, MOUNTED, `${server.origin}/disk.img`);
    const { port } = silent.address() as net.AddressInfo;
    const since = harness.signals.length;
    await mount(harness, ACTIVATING, `https://127.0.0.1:${port}/stuck.img`);
    await harness.waitFor(() => silentConnections.length > 0, 'nbdkit-curl to be stuck on the silent server');
    // Active is false both while activating and after a failed mount; only a missing Completion tells them apart.
    const ended = harness.signals
      .slice(since)
      .filter((s) => s.path === ACTIVATING && s.member === 'Completion');
    assert.deepEqual(ended, [], 'still activating');
    assert.equal((await harness.getAll(ACTIVATING, Interface.Process)).Active, false, 'not mounted');

    assert.deepEqual(await terminate(harness), { code: 0, signal: null }, harness.output());
    await assertNoSockets(harness);
  });
});

describe('SIGTERM with a Legacy slot mounted (usb-gadget host, temporary sysfs/configfs)', () => {
  let kernel: FakeKernel;
  let harness: ServiceHarness;

  before(async () => {
    kernel = await createFakeKernel();
    harness = await startServiceHarness({ hostMode: 'usb-gadget', args: kernel.args });
  });
  after(async () => {
    await harness?.stop();
    await kernel?.remove();
  });

  test('exits 0, the gadget is torn down and the NBD device disconnected', async () => {
    // nbdkit-curl contacts the server only when a client connects; the fake nbd-client never does.
    await mounted(harness, MOUNTED, 'https://127.0.0.1:1/disk.img');
    assert.deepEqual(await kernel.gadgets(), ['mass-storage-Slot_2']);

    assert.deepEqual(await terminate(harness), { code: 0, signal: null }, harness.output());
    assert.deepEqual(await kernel.gadgets(), [], 'gadget directories removed');
    assert.match(await kernel.nbdClientArgv(), /^-d \/dev\/nbd2$/m, 'nbd-client -d ran');
    await assertNoSockets(harness);
  });
});
