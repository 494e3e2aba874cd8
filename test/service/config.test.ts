import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { SlotMode } from '../../src/contract/dbus.ts';
import { ConfigError, defaultConfigDocument, loadConfig, parseConfig } from '../../src/service/config.ts';

const slot = (overrides: Record<string, unknown> = {}) => ({
  EndpointId: '/nbd/0',
  Mode: 0,
  NBDDevice: '/dev/nbd0',
  UnixSocket: '/run/vmedia/nbd0.sock',
  Timeout: 30,
  BlockSize: 512,
  ...overrides,
});

describe('slot config', () => {
  test('the default: Slot_0/1 Proxy on /nbd/0 and /nbd/1, Slot_2/3 Legacy with Timeout 90, sockets in the runtime dir', async () => {
    const config = await loadConfig(undefined, '/state/run');
    assert.equal(config.inactivityTimeout, 1800);
    assert.deepEqual(
      config.slots.map((s) => [
        s.slotId,
        s.mode,
        s.endpointId,
        s.nbdDevice,
        s.unixSocket,
        s.timeout,
        s.blockSize,
      ]),
      [
        ['Slot_0', SlotMode.Proxy, '/nbd/0', '/dev/nbd0', '/state/run/nbd0.sock', 30, 512],
        ['Slot_1', SlotMode.Proxy, '/nbd/1', '/dev/nbd1', '/state/run/nbd1.sock', 30, 512],
        ['Slot_2', SlotMode.Legacy, '', '/dev/nbd2', '/state/run/nbd2.sock', 90, 512],
        ['Slot_3', SlotMode.Legacy, '', '/dev/nbd3', '/state/run/nbd3.sock', 90, 512],
      ],
    );
    assert.deepEqual(parseConfig(defaultConfigDocument('/state/run')), config);
  });

  test('a seed-format file (VMEDIA_CONFIG) is read', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vmedia-config-'));
    try {
      const file = path.join(dir, 'slots.json');
      await fs.writeFile(
        file,
        JSON.stringify({ InactivityTimeout: 60, MountPoints: { ISO0: slot({ BlockSize: 4096 }) } }),
      );
      const config = await loadConfig(file, '/unused');
      assert.equal(config.inactivityTimeout, 60);
      assert.equal(config.slots[0]!.slotId, 'ISO0');
      assert.equal(config.slots[0]!.blockSize, 4096);
      await fs.writeFile(file, '{ not json');
      await assert.rejects(loadConfig(file, '/unused'), /not JSON/);
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });

  const rejects: [string, unknown, string][] = [
    ['unknown top-level key', { MountPoints: { S: slot() }, Extra: 1 }, 'Extra'],
    ['no MountPoints', { InactivityTimeout: 5 }, 'MountPoints'],
    [
      'negative InactivityTimeout',
      { InactivityTimeout: -1, MountPoints: { S: slot() } },
      'InactivityTimeout',
    ],
    ['Mode 2', { MountPoints: { S: slot({ Mode: 2 }) } }, 'MountPoints.S.Mode'],
    ['Timeout beyond uint16', { MountPoints: { S: slot({ Timeout: 70000 }) } }, 'MountPoints.S.Timeout'],
    ['BlockSize 1000', { MountPoints: { S: slot({ BlockSize: 1000 }) } }, 'MountPoints.S.BlockSize'],
    ['relative socket', { MountPoints: { S: slot({ UnixSocket: 'nbd.sock' }) } }, 'MountPoints.S.UnixSocket'],
    ['bad device', { MountPoints: { S: slot({ NBDDevice: '/dev/sda' }) } }, 'MountPoints.S.NBDDevice'],
    ['Proxy without endpoint', { MountPoints: { S: slot({ EndpointId: '' }) } }, 'MountPoints.S.EndpointId'],
    ['typo in a slot key', { MountPoints: { S: slot({ Timout: 3 }) } }, 'MountPoints.S.Timout'],
    ['slot id not a path element', { MountPoints: { 'a-b': slot() } }, 'MountPoints.a-b'],
    [
      'shared socket',
      { MountPoints: { A: slot(), B: slot({ EndpointId: '/nbd/1', NBDDevice: '/dev/nbd1' }) } },
      'UnixSocket',
    ],
  ];
  for (const [what, document, key] of rejects) {
    test(`refuses ${what}, naming ${key}`, () => {
      assert.throws(
        () => parseConfig(document),
        (error: unknown) => error instanceof ConfigError && error.message.includes(key),
      );
    });
  }
});
