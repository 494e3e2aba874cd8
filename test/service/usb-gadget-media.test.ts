import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import dbus from 'dbus-next';
import { Errno, Interface, SlotMode, slotPath } from '../../src/contract/dbus.ts';
import { CDROM_MAX_BYTES } from '../../src/service/host/usb-gadget.ts';
import { createFakeKernel, type FakeKernel } from '../helpers/fake-kernel.ts';
import { type ServiceHarness, startServiceHarness } from '../helpers/service-harness.ts';

const PROXY = slotPath(SlotMode.Proxy, 'Slot_0');
const LEGACY = slotPath(SlotMode.Legacy, 'Slot_2');
const noSecret = new dbus.Variant('i', -1);
const lun = (slotId: string) =>
  `configfs/usb_gadget/mass-storage-${slotId}/functions/mass_storage.usb0/lun.0`;

async function mount(harness: ServiceHarness, slot: string, body?: unknown[]): Promise<number> {
  const since = harness.signals.length;
  const started = body
    ? await harness.call(slot, Interface.Legacy, 'Mount', 'sbv', body)
    : await harness.call(slot, Interface.Proxy, 'Mount');
  assert.deepEqual(started, [true]);
  return harness.completion(slot, since);
}

async function unmount(harness: ServiceHarness, slot: string): Promise<void> {
  const since = harness.signals.length;
  const iface = slot === PROXY ? Interface.Proxy : Interface.Legacy;
  assert.deepEqual(await harness.call(slot, iface, 'Unmount'), [true]);
  assert.equal(await harness.completion(slot, since), 0);
}

/** nbdkit serving 1 MiB of memory on `socket`, read-only or not: the NBD server a Proxy slot relays. */
async function nbdServer(socket: string, readOnly: boolean): Promise<ChildProcess> {
  const pidFile = `${socket}.pid`;
  // nbdkit leaves both behind when it is stopped.
  await Promise.all([fs.rm(socket, { force: true }), fs.rm(pidFile, { force: true })]);
  const args = ['--foreground', '--unix', socket, '--pidfile', pidFile, ...(readOnly ? ['--readonly'] : [])];
  const child = spawn('nbdkit', [...args, 'memory', '1M'], { stdio: 'ignore' });
  while (
    !(await fs.access(pidFile).then(
      () => true,
      () => false,
    ))
  ) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error('nbdkit did not start');
    await sleep(20);
  }
  return child;
}

describe('usb-gadget host: the medium the gadget presents (fake kernel tree)', () => {
  let kernel: FakeKernel;
  let harness: ServiceHarness;
  let server: ChildProcess | undefined;

  before(async () => {
    kernel = await createFakeKernel();
    harness = await startServiceHarness({ hostMode: 'usb-gadget', args: kernel.args });
  });
  afterEach(async () => {
    if (server && server.exitCode === null && server.signalCode === null) {
      server.kill();
      await once(server, 'exit');
    }
    server = undefined;
  });
  after(async () => {
    await harness?.stop();
    await kernel?.remove();
  });

  test('a read-only Proxy export gives lun.0/ro=1 and WriteProtected true; a writable one ro=0', async () => {
    await kernel.probeExports();
    const socket = path.join(harness.runtimeDir, 'nbd0.sock');
    for (const readOnly of [true, false]) {
      server = await nbdServer(socket, readOnly);
      assert.equal(await mount(harness, PROXY), 0, harness.output());
      const ro = await fs.readFile(path.join(kernel.dir, lun('Slot_0'), 'ro'), 'utf8');
      assert.equal(ro, readOnly ? '1' : '0', `lun.0/ro for a ${readOnly ? 'read-only' : 'writable'} export`);
      const { WriteProtected } = await harness.getAll(PROXY, Interface.MountPoint);
      assert.equal(WriteProtected, readOnly, 'WriteProtected follows the export');
      await unmount(harness, PROXY);
      server.kill();
      await once(server, 'exit');
    }
    await fs.rm(path.join(kernel.dir, 'probe-exports'));
  });

  test('no free USB device controller: Completion(ENODEV), no gadget of ours left, the other untouched', async () => {
    const other = path.join(kernel.dir, 'configfs/usb_gadget/other');
    await fs.mkdir(other);
    await fs.writeFile(path.join(other, 'UDC'), 'dummy_udc.0\n');
    try {
      assert.equal(await mount(harness, PROXY), Errno.ENODEV, harness.output());
      assert.deepEqual(await kernel.gadgets(), ['other']);
      assert.equal(await fs.readFile(path.join(other, 'UDC'), 'utf8'), 'dummy_udc.0\n');
      assert.equal((await harness.getAll(PROXY, Interface.Process)).ExitCode, Errno.ENODEV);
      assert.match(harness.output(), /no free USB device controller/);
      assert.deepEqual(await harness.servicePids(), [], 'nbd-client reaped');
    } finally {
      await fs.rm(other, { recursive: true });
    }
  });

  test('an .iso at or above the CD-ROM limit is a removable disk (cdrom=0), one just below stays a CD-ROM', async () => {
    const url = 'https://127.0.0.1:1/images/big.iso';
    const cases = [
      { bytes: CDROM_MAX_BYTES, cdrom: '0', ro: '0', writeProtected: false },
      { bytes: CDROM_MAX_BYTES + 1024 * 1024 * 1024, cdrom: '0', ro: '0', writeProtected: false },
      { bytes: CDROM_MAX_BYTES - 2048, cdrom: '1', ro: '1', writeProtected: true },
    ];
    for (const { bytes, cdrom, ro, writeProtected } of cases) {
      await kernel.setMediumSize(2, bytes); // sparse: the fake nbd-client reports its size in sysfs
      const logged = harness.output().length;
      assert.equal(await mount(harness, LEGACY, [url, true, noSecret]), 0, harness.output());
      const dir = path.join(kernel.dir, lun('Slot_2'));
      assert.equal(await fs.readFile(path.join(dir, 'cdrom'), 'utf8'), cdrom, `cdrom for ${bytes} bytes`);
      assert.equal(await fs.readFile(path.join(dir, 'removable'), 'utf8'), '1');
      assert.equal(await fs.readFile(path.join(dir, 'ro'), 'utf8'), ro, `ro for ${bytes} bytes`);
      assert.equal((await harness.getAll(LEGACY, Interface.MountPoint)).WriteProtected, writeProtected);
      const line = harness
        .output()
        .slice(logged)
        .split('\n')
        .find((l) => l.includes('too large for the gadget CD-ROM'));
      if (cdrom === '0')
        assert.equal((JSON.parse(line ?? '{}') as { level?: number }).level, 30, 'logged at info');
      else assert.equal(line, undefined);
      await unmount(harness, LEGACY);
    }
  });
});
