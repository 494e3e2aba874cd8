import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, test } from 'node:test';
import { chooseHostMode } from '../../src/service/host/select.ts';
import { createFakeKernel, type FakeKernelOptions } from '../helpers/fake-kernel.ts';
import { startServiceHarness } from '../helpers/service-harness.ts';

const DEVICES = ['/dev/nbd0', '/dev/nbd1', '/dev/nbd2', '/dev/nbd3'];

/** `chooseHostMode` for a temporary tree with the given kernel pieces. */
async function choose(requested: Parameters<typeof chooseHostMode>[0], kernel: FakeKernelOptions) {
  const tree = await createFakeKernel(kernel);
  try {
    return chooseHostMode(requested, {
      sysfsRoot: path.join(tree.dir, 'sys'),
      configfsRoot: path.join(tree.dir, 'configfs'),
      nbdDevices: DEVICES,
    });
  } finally {
    await tree.remove();
  }
}

describe('host mode selection', () => {
  test('auto: usb-gadget only with every NBD device, configfs usb_gadget and a UDC', async () => {
    assert.equal(await choose('auto', {}), 'usb-gadget');
    assert.equal(await choose('auto', { configfs: false }), 'emulated', 'no configfs usb_gadget');
    assert.equal(await choose('auto', { nbdDevices: [] }), 'emulated', 'no nbd module');
    assert.equal(await choose('auto', { nbdDevices: [0, 1, 2] }), 'emulated', 'a slot device missing');
    assert.equal(await choose('auto', { udc: false }), 'emulated', 'no USB device controller');
  });

  test('an explicit mode is taken as given', async () => {
    assert.equal(await choose('usb-gadget', { configfs: false }), 'usb-gadget');
    assert.equal(await choose('emulated', {}), 'emulated');
  });

  test('the service started with --host-mode auto logs the mode it chose', async () => {
    for (const [kernelOptions, expected] of [
      [{ configfs: false }, 'emulated'],
      [{}, 'usb-gadget'],
    ] as const) {
      const kernel = await createFakeKernel(kernelOptions);
      const harness = await startServiceHarness({ hostMode: 'auto', args: kernel.args });
      try {
        const ready = harness
          .output()
          .split('\n')
          .map((line) =>
            line.startsWith('{') ? (JSON.parse(line) as { msg?: string; hostMode?: string }) : {},
          )
          .find((entry) => entry.msg?.endsWith(' ready'));
        assert.equal(ready?.hostMode, expected, harness.output());
      } finally {
        await harness.stop();
        await kernel.remove();
      }
    }
  });
});
