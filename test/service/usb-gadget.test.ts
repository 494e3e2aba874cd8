import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Errno, Interface, SlotMode, slotPath } from '../../src/dbus/names.ts';
import { type ServiceHarness, startServiceHarness } from '../helpers/service-harness.ts';

const PROXY = slotPath(SlotMode.Proxy, 'Slot_0');
const G = 'usb_gadget/mass-storage-Slot_0';
const F = `${G}/functions/mass_storage.usb0`;

/**
 * A stand-in for nbd-client: records its argv, "connects" /dev/nbd0 by writing a size into the fake
 * sysfs, and on `-d` (or SIGTERM) sets it back to 0 and ends the attached instance.
 */
function fakeNbdClient(dir: string): string {
  return `#!/bin/bash
printf '%s\\n' "$*" >> ${dir}/nbd-client.argv
if [ "$1" = "-d" ]; then
  dev=$(basename "$2"); echo 0 > ${dir}/sys/block/$dev/size
  [ -f ${dir}/$dev.pid ] && kill $(cat ${dir}/$dev.pid) 2>/dev/null
  exit 0
fi
dev=$(basename "$7")
echo $$ > ${dir}/$dev.pid
trap 'echo 0 > ${dir}/sys/block/'$dev'/size; rm -f ${dir}/'$dev'.pid; exit 0' TERM
echo 2048 > ${dir}/sys/block/$dev/size
while true; do sleep 0.1; done
`;
}

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
  let dir: string;
  let harness: ServiceHarness;

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vmedia-gadget-'));
    await fs.mkdir(path.join(dir, 'sys/block/nbd0'), { recursive: true });
    await fs.writeFile(path.join(dir, 'sys/block/nbd0/size'), '0\n');
    await fs.writeFile(
      path.join(dir, 'sys/block/nbd0/stat'),
      '     5        0       40        2        3        0       24        1        0        4        3\n',
    );
    await fs.mkdir(path.join(dir, 'sys/class/udc/dummy_udc.0'), { recursive: true });
    await fs.mkdir(path.join(dir, 'configfs/usb_gadget'), { recursive: true });
    await fs.writeFile(path.join(dir, 'nbd-client'), fakeNbdClient(dir), { mode: 0o755 });
    harness = await startServiceHarness({
      hostMode: 'usb-gadget',
      args: [
        '--sysfs-root',
        path.join(dir, 'sys'),
        '--configfs-root',
        path.join(dir, 'configfs'),
        '--nbd-client',
        path.join(dir, 'nbd-client'),
      ],
    });
  });
  after(async () => {
    await harness?.stop();
    await fs.rm(dir, { recursive: true, force: true });
  });

  test('nbd-client argv, gadget files, values and order, stats from sysfs, teardown in reverse', async () => {
    const since = harness.signals.length;
    assert.deepEqual(await harness.call(PROXY, Interface.Proxy, 'Mount'), [true]);
    assert.equal(await harness.completion(PROXY, since), 0, harness.output());

    const socket = path.join(harness.runtimeDir, 'nbd0.sock');
    assert.equal(
      await fs.readFile(path.join(dir, 'nbd-client.argv'), 'utf8'),
      `-t 30 -b 512 -u ${socket} /dev/nbd0 -n -L\n`,
    );
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
    assert.deepEqual(await fs.readdir(path.join(dir, 'configfs/usb_gadget')), []);
    assert.equal(
      await fs.readFile(path.join(dir, 'nbd-client.argv'), 'utf8'),
      `-t 30 -b 512 -u ${socket} /dev/nbd0 -n -L\n-d /dev/nbd0\n`,
      'the device is disconnected after the gadget is gone',
    );
    assert.equal((await fs.readFile(path.join(dir, 'sys/block/nbd0/size'), 'utf8')).trim(), '0');
    assert.deepEqual(await harness.servicePids(), [], 'nbd-client reaped');
  });

  test('nbd-client failing to connect ends the mount with no gadget left', async () => {
    await fs.writeFile(
      path.join(dir, 'nbd-client'),
      '#!/bin/bash\necho "Socket failed: Connection refused" >&2\nexit 1\n',
    );
    const since = harness.signals.length;
    assert.deepEqual(await harness.call(PROXY, Interface.Proxy, 'Mount'), [true]);
    assert.equal(await harness.completion(PROXY, since), Errno.EIO);
    assert.deepEqual(await fs.readdir(path.join(dir, 'configfs/usb_gadget')), []);
    assert.equal((await harness.getAll(PROXY, Interface.Process)).Active, false);
  });
});
