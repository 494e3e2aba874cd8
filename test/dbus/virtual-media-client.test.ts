import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { DbusError, Interface } from '../../src/contract/dbus.ts';
import { type PrivateBus, startPrivateBus } from '../../src/dbus/private-bus.ts';
import {
  type SlotState,
  VirtualMediaCallError,
  VirtualMediaUnavailable,
} from '../../src/dbus/virtual-media-client.ts';
import { VirtualMediaDbusClient } from '../../src/dbus/virtual-media-dbus-client.ts';
import { FakeVirtualMediaService, SlotMode } from '../helpers/fake-virtual-media-service.ts';
import { waitFor } from '../helpers/wait.ts';

/** For conditions driven by D-Bus signals: the bound only turns a hang into a failure. */
const SIGNAL_TIMEOUT_MS = 5000;

describe('VirtualMediaDbusClient against a fake service on a private bus', () => {
  let directory: string;
  let bus: PrivateBus;
  let fake: FakeVirtualMediaService;
  let client: VirtualMediaDbusClient;

  before(async () => {
    directory = await fs.mkdtemp(path.join(os.tmpdir(), 'vmedia-dbus-client-'));
    bus = await startPrivateBus(directory);
    fake = await FakeVirtualMediaService.start(bus.address, [
      ['Slot_0', SlotMode.Proxy],
      ['Slot_2', SlotMode.Legacy],
    ]);
    client = await VirtualMediaDbusClient.connect({ address: bus.address });
  });

  after(async () => {
    await client.close();
    fake.stop();
    await bus.stop();
    await fs.rm(directory, { recursive: true, force: true });
  });

  test('loads every slot once with typed properties', () => {
    assert.equal(client.available, true);
    assert.deepEqual(
      client.slots().map((s) => s.slotId),
      ['Slot_0', 'Slot_2'],
    );
    const proxy = client.slot('Slot_0')!;
    assert.equal(proxy.mode, SlotMode.Proxy);
    assert.equal(proxy.endpointId, '/nbd/0');
    assert.equal(proxy.timeout, 30);
    assert.equal(proxy.active, false);
    assert.equal(proxy.readIO, 0n);
    assert.equal(client.slot('Slot_2')!.mode, SlotMode.Legacy);
    assert.equal(client.slotByEndpoint('/nbd/0')?.slotId, 'Slot_0');
    assert.equal(client.slotByEndpoint(''), undefined);
  });

  test('PropertiesChanged updates the cache and notifies', async () => {
    const seen: SlotState[] = [];
    const off = client.onChange((slot) => seen.push(slot));
    fake.set('Slot_2', Interface.Stats, { ReadIO: 2n ** 40n });
    fake.set('Slot_2', Interface.Process, { Active: true });
    await waitFor(() => client.slot('Slot_2')!.active, { what: 'Active', timeoutMs: SIGNAL_TIMEOUT_MS });
    off();
    assert.equal(client.slot('Slot_2')!.readIO, 2n ** 40n);
    assert.ok(seen.some((s) => s.slotId === 'Slot_2' && s.active));
    fake.set('Slot_2', Interface.Process, { Active: false });
    await waitFor(() => !client.slot('Slot_2')!.active, { what: 'inactive', timeoutMs: SIGNAL_TIMEOUT_MS });
  });

  test('InterfacesAdded and InterfacesRemoved add and remove slots', async () => {
    fake.addSlot('Slot_9', SlotMode.Legacy);
    await waitFor(() => client.slot('Slot_9') !== undefined, {
      what: 'Slot_9',
      timeoutMs: SIGNAL_TIMEOUT_MS,
    });
    assert.equal(client.slot('Slot_9')!.timeout, 90);
    fake.removeSlot('Slot_9');
    await waitFor(() => client.slot('Slot_9') === undefined, {
      what: 'Slot_9 gone',
      timeoutMs: SIGNAL_TIMEOUT_MS,
    });
  });

  test('Legacy.Mount with credentials passes sbh and a pipe holding user\\0password\\0', async () => {
    await client.legacyMount('Slot_2', 'https://example.test/a.iso', false, {
      user: 'operator',
      password: 'pä55',
    });
    const call = fake.calls.at(-1)!;
    assert.equal(call.signature, 'sbh');
    assert.equal(call.url, 'https://example.test/a.iso');
    assert.equal(call.readWrite, false);
    assert.deepEqual(call.secret, Buffer.from('operator\0pä55\0', 'utf8'));
  });

  test('Legacy.Mount without credentials uses the sbv -1 form', async () => {
    await client.legacyMount('Slot_2', 'https://example.test/b.iso', true);
    const call = fake.calls.at(-1)!;
    assert.equal(call.signature, 'sbv');
    assert.equal(call.secret, null);
    assert.equal(call.readWrite, true);
  });

  test('a precheck failure surfaces as VirtualMediaCallError with its D-Bus name', async () => {
    fake.failNextMount = DbusError.InvalidArgument;
    await assert.rejects(
      client.legacyMount('Slot_2', 'https://example.test/c.iso', false),
      (error: unknown) =>
        error instanceof VirtualMediaCallError && error.dbusName === DbusError.InvalidArgument,
    );
  });

  test('nextCompletion resolves with the errno of that slot only', async () => {
    const completion = client.nextCompletion('Slot_2');
    fake.complete('Slot_0', 0);
    fake.complete('Slot_2', 111);
    assert.equal(await completion, 111);
  });

  test('nextCompletion can be aborted', async () => {
    const controller = new AbortController();
    const completion = client.nextCompletion('Slot_2', controller.signal);
    controller.abort(new Error('gave up'));
    await assert.rejects(completion, /gave up/);
  });

  test('Proxy.Mount and Unmount are plain calls', async () => {
    await client.proxyMount('Slot_0');
    await client.proxyUnmount('Slot_0');
    assert.deepEqual(
      fake.calls.slice(-2).map((c) => `${c.interface.split('.').at(-1)}.${c.member}`),
      ['Proxy.Mount', 'Proxy.Unmount'],
    );
  });

  test('a service that leaves makes the client unavailable; a new one is picked up by itself', async () => {
    const pending = client.nextCompletion('Slot_2');
    fake.stop();
    await assert.rejects(pending, VirtualMediaUnavailable);
    await waitFor(() => !client.available, { what: 'unavailable', timeoutMs: SIGNAL_TIMEOUT_MS });
    assert.deepEqual(client.slots(), []);
    await assert.rejects(client.proxyMount('Slot_0'), VirtualMediaUnavailable);
    fake = await FakeVirtualMediaService.start(bus.address, [['Slot_1', SlotMode.Proxy]]);
    await waitFor(() => client.available, { what: 'available again', timeoutMs: SIGNAL_TIMEOUT_MS });
    assert.deepEqual(
      client.slots().map((s) => s.slotId),
      ['Slot_1'],
    );
  });
});
