import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Interface, SlotMode, slotPath } from '../../src/contract/dbus.ts';
import {
  compareSlotIds,
  type ManagedObjects,
  type ObjectInterfaces,
  SlotCache,
} from '../../src/dbus/slot-cache.ts';

/** A slot object as the service publishes it (plain values: the watcher unwraps the variants). */
function slotObject(
  slotId: string,
  mode: SlotMode,
  mountPoint: Record<string, unknown> = {},
): ObjectInterfaces {
  const n = slotId.replace(/\D/g, '');
  return {
    [Interface.MountPoint]: {
      EndpointId: mode === SlotMode.Proxy ? `/nbd/${n}` : '',
      Mode: mode,
      Device: `/dev/nbd${n}`,
      Socket: `/run/vmedia/nbd${n}.sock`,
      Timeout: mode === SlotMode.Proxy ? 30 : 90,
      BlockSize: 512,
      RemainingInactivityTimeout: 0,
      ImageURL: '',
      WriteProtected: true,
      ...mountPoint,
    },
    [Interface.Process]: { Active: false, ExitCode: -1 },
    [Interface.Stats]: { ReadIO: 0n, WriteIO: 0n },
    [mode === SlotMode.Proxy ? Interface.Proxy : Interface.Legacy]: {},
  };
}

function managed(...slots: Array<[string, SlotMode]>): ManagedObjects {
  return Object.fromEntries(slots.map(([id, mode]) => [slotPath(mode, id), slotObject(id, mode)]));
}

const ids = (cache: SlotCache) => cache.slots().map((slot) => slot.slotId);

describe('SlotCache (no bus)', () => {
  test('empty and unavailable until the owner’s objects are loaded', () => {
    const cache = new SlotCache();
    assert.equal(cache.available, false);
    assert.deepEqual(cache.slots(), []);
    // Signals before GetManagedObjects's answer change nothing visible.
    cache.apply({
      type: 'interfacesAdded',
      path: slotPath(SlotMode.Proxy, 'Slot_0'),
      interfaces: slotObject('Slot_0', SlotMode.Proxy),
    });
    assert.deepEqual(cache.slots(), []);
    assert.equal(cache.slot('Slot_0'), undefined);
  });

  test('managedObjects: typed, frozen slots sorted by id with numbers compared as numbers', () => {
    const cache = new SlotCache();
    const changed = cache.apply({
      type: 'managedObjects',
      objects: {
        ...managed(['Slot_10', SlotMode.Legacy], ['Slot_2', SlotMode.Legacy], ['Slot_0', SlotMode.Proxy]),
        // An object that is not a slot (no MountPoint) is no slot.
        '/xyz/openbmc_project/VirtualMedia': { [Interface.ObjectManager]: {} },
      },
    });
    assert.equal(cache.available, true);
    assert.deepEqual(ids(cache), ['Slot_0', 'Slot_2', 'Slot_10']);
    assert.deepEqual(
      changed.map((slot) => slot.slotId),
      ['Slot_0', 'Slot_2', 'Slot_10'],
      'every loaded slot is announced',
    );
    const slots = cache.slots();
    assert.ok(Object.isFrozen(slots));
    assert.ok(slots.every((slot) => Object.isFrozen(slot)));
    assert.equal(cache.slots(), slots, 'the same array until something changes');
    assert.deepEqual(cache.slot('Slot_0'), {
      slotId: 'Slot_0',
      objectPath: slotPath(SlotMode.Proxy, 'Slot_0'),
      mode: SlotMode.Proxy,
      endpointId: '/nbd/0',
      device: '/dev/nbd0',
      socket: '/run/vmedia/nbd0.sock',
      timeout: 30,
      blockSize: 512,
      remainingInactivityTimeout: 0,
      imageUrl: '',
      writeProtected: true,
      active: false,
      exitCode: -1,
      readIO: 0n,
      writeIO: 0n,
      verifyCertificate: true,
      certificates: [],
    });
    assert.equal(cache.slot('Slot_2')!.mode, SlotMode.Legacy);
    assert.equal(cache.slotByEndpoint('/nbd/0')?.slotId, 'Slot_0');
    assert.equal(cache.slotByEndpoint(''), undefined, 'Legacy slots have no endpoint to find them by');
  });

  test('missing properties take safe defaults; the mode falls back to the object path', () => {
    const cache = new SlotCache();
    cache.apply({
      type: 'managedObjects',
      objects: { [slotPath(SlotMode.Legacy, 'Slot_3')]: { [Interface.MountPoint]: {} } },
    });
    const slot = cache.slot('Slot_3')!;
    assert.equal(slot.mode, SlotMode.Legacy);
    assert.equal(slot.writeProtected, true);
    assert.equal(slot.active, false);
    assert.equal(slot.exitCode, -1);
    assert.equal(slot.readIO, 0n);
  });

  test('propertiesChanged updates one slot, answers it, and invalidates the shared view', () => {
    const cache = new SlotCache();
    cache.apply({
      type: 'managedObjects',
      objects: managed(['Slot_0', SlotMode.Proxy], ['Slot_2', SlotMode.Legacy]),
    });
    const before = cache.slots();
    const slot2 = cache.slot('Slot_2');
    const changed = cache.apply({
      type: 'propertiesChanged',
      path: slotPath(SlotMode.Legacy, 'Slot_2'),
      interface: Interface.Process,
      changed: { Active: true },
      invalidated: [],
    });
    assert.equal(changed.length, 1);
    assert.equal(changed[0]!.active, true);
    assert.ok(Object.isFrozen(changed[0]));
    assert.notEqual(cache.slots(), before, 'a new view after a change');
    assert.equal(cache.slot('Slot_2')!.active, true);
    assert.equal(slot2!.active, false, 'what readers held before is not mutated');
    assert.deepEqual(cache.slot('Slot_0'), before[0], 'unchanged slots compare equal in content');

    cache.apply({
      type: 'propertiesChanged',
      path: slotPath(SlotMode.Legacy, 'Slot_2'),
      interface: Interface.Stats,
      changed: { ReadIO: 2n ** 40n },
      invalidated: ['WriteIO'],
    });
    assert.equal(cache.slot('Slot_2')!.readIO, 2n ** 40n);
    assert.equal(cache.slot('Slot_2')!.writeIO, 0n, 'an invalidated property reads as its default');
  });

  test('propertiesChanged for an unknown object is ignored', () => {
    const cache = new SlotCache();
    cache.apply({ type: 'managedObjects', objects: managed(['Slot_0', SlotMode.Proxy]) });
    const before = cache.slots();
    const changed = cache.apply({
      type: 'propertiesChanged',
      path: slotPath(SlotMode.Proxy, 'Slot_7'),
      interface: Interface.Process,
      changed: { Active: true },
      invalidated: [],
    });
    assert.deepEqual(changed, []);
    assert.equal(cache.slots(), before);
  });

  test('interfacesAdded adds a slot in order; interfacesRemoved of all its interfaces removes it silently', () => {
    const cache = new SlotCache();
    cache.apply({
      type: 'managedObjects',
      objects: managed(['Slot_0', SlotMode.Proxy], ['Slot_10', SlotMode.Legacy]),
    });
    const path = slotPath(SlotMode.Legacy, 'Slot_9');
    const added = cache.apply({
      type: 'interfacesAdded',
      path,
      interfaces: slotObject('Slot_9', SlotMode.Legacy),
    });
    assert.deepEqual(
      added.map((slot) => slot.slotId),
      ['Slot_9'],
    );
    assert.deepEqual(ids(cache), ['Slot_0', 'Slot_9', 'Slot_10']);
    assert.equal(cache.slot('Slot_9')!.timeout, 90);

    const names = Object.keys(slotObject('Slot_9', SlotMode.Legacy));
    assert.deepEqual(cache.apply({ type: 'interfacesRemoved', path, interfaces: names }), []);
    assert.deepEqual(ids(cache), ['Slot_0', 'Slot_10']);
    assert.equal(cache.slotAt(path), undefined);
  });

  test('removing only MountPoint makes the object no slot; adding an interface merges', () => {
    const cache = new SlotCache();
    cache.apply({ type: 'managedObjects', objects: managed(['Slot_2', SlotMode.Legacy]) });
    const path = slotPath(SlotMode.Legacy, 'Slot_2');
    assert.deepEqual(
      cache.apply({ type: 'interfacesRemoved', path, interfaces: [Interface.MountPoint] }),
      [],
    );
    assert.deepEqual(ids(cache), []);
    const back = cache.apply({
      type: 'interfacesAdded',
      path,
      interfaces: { [Interface.MountPoint]: slotObject('Slot_2', SlotMode.Legacy)[Interface.MountPoint]! },
    });
    assert.equal(back.length, 1);
    assert.equal(back[0]!.exitCode, -1, 'the Process interface that stayed is still there');
    assert.deepEqual(cache.apply({ type: 'interfacesRemoved', path: '/nowhere', interfaces: ['x'] }), []);
  });

  test('ownerChanged drops everything until the new owner’s objects arrive, which replace the old', () => {
    const cache = new SlotCache();
    cache.apply({
      type: 'managedObjects',
      objects: managed(['Slot_0', SlotMode.Proxy], ['Slot_2', SlotMode.Legacy]),
    });
    assert.deepEqual(cache.apply({ type: 'ownerChanged' }), []);
    assert.equal(cache.available, false);
    assert.deepEqual(cache.slots(), []);
    assert.equal(cache.slot('Slot_0'), undefined);
    assert.equal(cache.slotAt(slotPath(SlotMode.Proxy, 'Slot_0')), undefined);

    cache.apply({ type: 'managedObjects', objects: managed(['Slot_1', SlotMode.Proxy]) });
    assert.equal(cache.available, true);
    assert.deepEqual(ids(cache), ['Slot_1']);
  });

  test('the cache keeps its own copies: the event objects can be reused or changed afterwards', () => {
    const cache = new SlotCache();
    const objects = managed(['Slot_0', SlotMode.Proxy]);
    cache.apply({ type: 'managedObjects', objects });
    const mountPoint = objects[slotPath(SlotMode.Proxy, 'Slot_0')]![Interface.MountPoint] as Record<
      string,
      unknown
    >;
    mountPoint.Timeout = 1;
    cache.apply({
      type: 'propertiesChanged',
      path: slotPath(SlotMode.Proxy, 'Slot_0'),
      interface: Interface.Process,
      changed: { Active: true },
      invalidated: [],
    });
    assert.equal(cache.slot('Slot_0')!.timeout, 30);
  });

  test('slotAt finds a slot by object path, for Completion signals', () => {
    const cache = new SlotCache();
    cache.apply({ type: 'managedObjects', objects: managed(['Slot_2', SlotMode.Legacy]) });
    assert.equal(cache.slotAt(slotPath(SlotMode.Legacy, 'Slot_2'))?.slotId, 'Slot_2');
    assert.equal(cache.slotAt(slotPath(SlotMode.Proxy, 'Slot_2')), undefined);
  });
});

test('slot ids sort naturally: digit runs as numbers, leading zeros and the rest as text', () => {
  const ids = [
    'Slot_10',
    'Slot_2',
    'cd',
    'Slot_02',
    'Slot_1a',
    'Slot_1',
    'Slot_',
    'Slot_100',
    'A9',
    'A10b',
    'A10',
  ];
  assert.deepEqual([...ids].sort(compareSlotIds), [
    'A9',
    'A10',
    'A10b',
    'Slot_',
    'Slot_1',
    'Slot_1a',
    'Slot_02',
    'Slot_2',
    'Slot_10',
    'Slot_100',
    'cd',
  ]);
  assert.equal(compareSlotIds('Slot_3', 'Slot_3'), 0);
});
