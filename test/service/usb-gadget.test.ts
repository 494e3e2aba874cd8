import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import dbus from 'dbus-next';
import { Errno, Interface, SlotMode, slotPath } from '../../src/contract/dbus.ts';
import { createFakeKernel, type FakeKernel } from '../helpers/fake-kernel.ts';
import { type ServiceHarness, startServiceHarness } from '../helpers/service-harness.ts';

const PROXY = slotPath(SlotMode.Proxy, 'Slot_0');
const LEGACY = slotPath(SlotMode.Legacy, 'Slot_2');
const noSecret = new dbus.Variant('i', -1);
const G = 'usb_gadget/mass-storage-Slot_0';
const F = `${G}/functions/mass_storage.usb0`;

/** Every file (with its content) and symlink (with its target) under `root`, relative paths. */
async function tree(root: string): Promise<Record<string, string>> {
  const result: Record<string, string> = {};
  for (const entry of await fs.readdir(root, { recursive: true, withFileTypes: true })) {
    const full = path.join(entry.parentPath ?? (entry as unknown as { path: string }).path, entry.name);
    const relative = path.relative(root, full);
    if (entry.isSymbolicLink()) result[relative] = `-> ${path.relative(root, await fs.readlink(full))}`;
    else if (entry.isFile()) result[relative] = await fs.readFile(full, 'utf8');
  }
  return result;
}

/** The configfs steps the service logged (debug level), in order. */
function loggedSteps(output: string): string[] {
  return output
    .split('\n')
    .filter((line) => line.includes('"msg":"configfs"'))
    .map((line) => {
      const { step } = JSON.parse(line) as { step: { op: string; path: string; value?: string } };
      return `${step.op} ${step.path}${step.value !== undefined ? ` = ${step.value}` : ''}`;
    });
}

describe('usb-gadget host attachment against a temporary sysfs/configfs tree', () => {
  let kernel: FakeKernel;
  let dir: string;
  let harness: ServiceHarness;

  before(async () => {
    kernel = await createFakeKernel();
    dir = kernel.dir;
    harness = await startServiceHarness({ hostMode: 'usb-gadget', args: kernel.args });
  });
  after(async () => {
    await harness?.stop();
    await kernel?.remove();
  });

  test('nbd-client argv, gadget files, values and order, stats from sysfs, teardown in reverse', async () => {
    const since = harness.signals.length;
    assert.deepEqual(await harness.call(PROXY, Interface.Proxy, 'Mount'), [true]);
    assert.equal(await harness.completion(PROXY, since), 0, harness.output());

    const socket = path.join(harness.runtimeDir, 'nbd0.sock');
    assert.equal(await kernel.nbdClientArgv(), `-t 30 -b 512 -u ${socket} /dev/nbd0 -n -L\n`);
    assert.deepEqual(await tree(path.join(dir, 'configfs')), {
      [`${G}/idVendor`]: '0x1d6b',
      [`${G}/idProduct`]: '0x0104',
      [`${G}/strings/0x409/manufacturer`]: 'OpenBMC',
      [`${G}/strings/0x409/product`]: 'Virtual Media Device',
      [`${G}/strings/0x409/serialnumber`]: 'Slot_0',
      [`${G}/configs/c.1/strings/0x409/configuration`]: 'config 1',
      [`${F}/lun.0/removable`]: '1',
      [`${F}/lun.0/ro`]: '0',
      [`${F}/lun.0/cdrom`]: '0',
      [`${F}/lun.0/file`]: '/dev/nbd0',
      [`${G}/configs/c.1/mass_storage.usb0`]: `-> ${F}`,
      [`${G}/UDC`]: 'dummy_udc.0',
    });
    assert.deepEqual(loggedSteps(harness.output()), [
      `mkdir ${G}`,
      `write ${G}/idVendor = 0x1d6b`,
      `write ${G}/idProduct = 0x0104`,
      `mkdir ${G}/strings/0x409`,
      `write ${G}/strings/0x409/manufacturer = OpenBMC`,
      `write ${G}/strings/0x409/product = Virtual Media Device`,
      `write ${G}/strings/0x409/serialnumber = Slot_0`,
      `mkdir ${G}/configs/c.1`,
      `mkdir ${G}/configs/c.1/strings/0x409`,
      `write ${G}/configs/c.1/strings/0x409/configuration = config 1`,
      `mkdir ${F}`,
      `write ${F}/lun.0/removable = 1`,
      `write ${F}/lun.0/ro = 0`,
      `write ${F}/lun.0/cdrom = 0`,
      `write ${F}/lun.0/file = /dev/nbd0`,
      `symlink ${G}/configs/c.1/mass_storage.usb0`,
      `write ${G}/UDC = dummy_udc.0`,
    ]);
    await harness.waitFor(async () => {
      const stats = await harness.getAll(PROXY, Interface.Stats);
      return stats.ReadIO === 5n && stats.WriteIO === 3n;
    }, 'ReadIO/WriteIO from fields 1 and 5 of sysfs stat');

    const createdSteps = loggedSteps(harness.output()).length;
    const beforeUnmount = harness.signals.length;
    assert.deepEqual(await harness.call(PROXY, Interface.Proxy, 'Unmount'), [true]);
    assert.equal(await harness.completion(PROXY, beforeUnmount), 0);
    assert.deepEqual(loggedSteps(harness.output()).slice(createdSteps), [
      `write ${G}/UDC = `,
      `unlink ${G}/configs/c.1/mass_storage.usb0`,
      `rmdir ${G}/configs/c.1/strings/0x409`,
      `rmdir ${G}/configs/c.1`,
      `rmdir ${F}`,
      `rmdir ${G}/strings/0x409`,
      `rmdir ${G}`,
    ]);
    assert.deepEqual(await kernel.gadgets(), []);
    assert.equal(
      await kernel.nbdClientArgv(),
      `-t 30 -b 512 -u ${socket} /dev/nbd0 -n -L\n-d /dev/nbd0\n`,
      'the device is disconnected after the gadget is gone',
    );
    assert.equal((await fs.readFile(path.join(dir, 'sys/block/nbd0/size'), 'utf8')).trim(), '0');
    assert.deepEqual(await harness.servicePids(), [], 'nbd-client reaped');
  });

  test('lun.0/cdrom is 1 exactly for an .iso image (any case); lun.0/ro follows WriteProtected', async () => {
    const lun = `configfs/usb_gadget/mass-storage-Slot_2/functions/mass_storage.usb0/lun.0`;
    // nbdkit-curl contacts the server only when a client connects; the fake nbd-client never does.
    const cases = [
      { url: 'https://127.0.0.1:1/images/x.iso', readWrite: false, cdrom: '1', writeProtected: true },
      { url: 'https://127.0.0.1:1/X.IsO?token=abc', readWrite: true, cdrom: '1', writeProtected: true },
      { url: 'https://127.0.0.1:1/disk.img', readWrite: true, cdrom: '0', writeProtected: false },
      { url: 'https://127.0.0.1:1/disk.img', readWrite: false, cdrom: '0', writeProtected: true },
      { url: 'https://127.0.0.1:1/get?file=x.iso', readWrite: true, cdrom: '0', writeProtected: false },
    ];
    for (const { url, readWrite, cdrom, writeProtected } of cases) {
      const since = harness.signals.length;
      assert.deepEqual(
        await harness.call(LEGACY, Interface.Legacy, 'Mount', 'sbv', [url, readWrite, noSecret]),
        [true],
      );
      assert.equal(await harness.completion(LEGACY, since), 0, harness.output());
      const published = (await harness.getAll(LEGACY, Interface.MountPoint)).WriteProtected;
      assert.equal(published, writeProtected, `WriteProtected for ${url} rw=${readWrite}`);
      assert.equal(await fs.readFile(path.join(dir, lun, 'cdrom'), 'utf8'), cdrom, `cdrom for ${url}`);
      const ro = await fs.readFile(path.join(dir, lun, 'ro'), 'utf8');
      assert.equal(ro, published ? '1' : '0', `ro for ${url} rw=${readWrite}`);
      const unmounted = harness.signals.length;
      assert.deepEqual(await harness.call(LEGACY, Interface.Legacy, 'Unmount'), [true]);
      assert.equal(await harness.completion(LEGACY, unmounted), 0);
    }
    assert.deepEqual(await kernel.gadgets(), []);
    assert.deepEqual(await harness.servicePids(), [], 'nbdkit and nbd-client reaped');
  });

  test('nbd-client failing to connect ends the mount with no gadget left', async () => {
    await fs.writeFile(
      kernel.nbdClient,
      '#!/bin/bash\necho "Socket failed: Connection refused" >&2\nexit 1\n',
    );
    const since = harness.signals.length;
    assert.deepEqual(await harness.call(PROXY, Interface.Proxy, 'Mount'), [true]);
    assert.equal(await harness.completion(PROXY, since), Errno.EIO);
    assert.deepEqual(await kernel.gadgets(), []);
    assert.equal((await harness.getAll(PROXY, Interface.Process)).Active, false);
  });
});
