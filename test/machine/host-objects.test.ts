import assert from 'node:assert/strict';
import { once } from 'node:events';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import dbus, { type MessageBus, Variant } from 'dbus-next';
import { HostInterface, HostPath, HostService } from '../../src/contract/host.ts';
import { connectBus } from '../../src/dbus/connection.ts';
import { startMachine, startVmStack, type VmStack } from '../helpers/virtual-media-stack.ts';
import { waitFor } from '../helpers/wait.ts';

const S = 'xyz.openbmc_project';

/**
 * `vmedia machine` on D-Bus, called as bmcweb (or any other client on a BMC's bus) would call
 * phosphor-state-manager and phosphor-settingsd: values outside the enumerations are refused, power
 * requests drive a real QEMU, and the boot override outlives a restart of the machine.
 */
describe('the emulated host on D-Bus', () => {
  let stack: VmStack;
  let bus: MessageBus;

  before(async () => {
    stack = await startVmStack({ images: {}, machine: true });
    bus = await connectBus(stack.harness.bus.address);
  });

  after(async () => {
    bus?.disconnect();
    await stack?.stop();
  });

  const call = (service: string, objectPath: string, member: string, signature: string, body: unknown[]) =>
    bus.call(
      new dbus.Message({
        destination: service,
        path: objectPath,
        interface: 'org.freedesktop.DBus.Properties',
        member,
        signature,
        body,
      }),
    );
  const get = async (service: string, objectPath: string, iface: string, name: string) =>
    ((await call(service, objectPath, 'Get', 'ss', [iface, name]))!.body[0] as Variant).value;
  const set = (service: string, objectPath: string, iface: string, name: string, value: Variant) =>
    call(service, objectPath, 'Set', 'ssv', [iface, name, value]);
  const hostState = () => get(HostService.host, HostPath.host, HostInterface.host, 'CurrentHostState');
  const qemuRuns = async () => {
    for (const entry of await fs.readdir('/proc')) {
      const commandLine = await fs.readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
      if (commandLine.startsWith('qemu-system') && commandLine.includes(stack.machineDir)) return true;
    }
    return false;
  };

  test('a value outside the enumeration is InvalidArgument, and changes nothing', async () => {
    await assert.rejects(
      set(
        HostService.host,
        HostPath.host,
        HostInterface.host,
        'RequestedHostTransition',
        new Variant('s', 'On'),
      ),
      (error: Error & { type?: string }) => error.type === `${S}.Common.Error.InvalidArgument`,
    );
    await assert.rejects(
      set(
        HostService.settings,
        HostPath.boot,
        HostInterface.bootSource,
        'BootSource',
        new Variant('s', 'Cd'),
      ),
      (error: Error & { type?: string }) => error.type === `${S}.Common.Error.InvalidArgument`,
    );
    assert.equal(await hostState(), `${S}.State.Host.HostState.Off`);
    assert.equal(
      await get(HostService.settings, HostPath.boot, HostInterface.bootSource, 'BootSource'),
      `${S}.Control.Boot.Source.Sources.Default`,
    );
  });

  test('Transition.On starts QEMU (Running); the chassis Off stops it (Off, no process)', async () => {
    await set(
      HostService.host,
      HostPath.host,
      HostInterface.host,
      'RequestedHostTransition',
      new Variant('s', `${S}.State.Host.Transition.On`),
    );
    await waitFor(async () => (await hostState()) === `${S}.State.Host.HostState.Running`, {
      what: 'the host to run',
      timeoutMs: 30_000,
    });
    assert.equal(await qemuRuns(), true);
    assert.equal(
      await get(HostService.chassis, HostPath.chassis, HostInterface.chassis, 'CurrentPowerState'),
      `${S}.State.Chassis.PowerState.On`,
    );
    await set(
      HostService.chassis,
      HostPath.chassis,
      HostInterface.chassis,
      'RequestedPowerTransition',
      new Variant('s', `${S}.State.Chassis.Transition.Off`),
    );
    await waitFor(async () => (await hostState()) === `${S}.State.Host.HostState.Off`, {
      what: 'the host to be off',
      timeoutMs: 30_000,
    });
    assert.equal(await qemuRuns(), false);
  });

  test('the boot override is saved and read back by the next machine', async () => {
    await set(
      HostService.settings,
      HostPath.boot,
      HostInterface.bootSource,
      'BootSource',
      new Variant('s', `${S}.Control.Boot.Source.Sources.RemovableMedia`),
    );
    await set(
      HostService.settings,
      HostPath.bootOneTime,
      HostInterface.enable,
      'Enabled',
      new Variant('b', false),
    );
    // Saved as soon as it is set (the write goes to disk right after the reply).
    const saved = await waitFor(
      async () => {
        const text = await fs.readFile(path.join(stack.machineDir, 'boot.json'), 'utf8').catch(() => '{}');
        const settings = JSON.parse(text);
        return settings.oneTime === false && settings;
      },
      { what: 'boot.json to hold the new settings', timeoutMs: 5000, intervalMs: 20 },
    );
    assert.equal(saved.source, `${S}.Control.Boot.Source.Sources.RemovableMedia`);

    const first = stack.machine!;
    first.kill('SIGTERM');
    await once(first, 'exit');
    const second = await startMachine(stack.harness);
    try {
      assert.equal(
        await get(HostService.settings, HostPath.boot, HostInterface.bootSource, 'BootSource'),
        `${S}.Control.Boot.Source.Sources.RemovableMedia`,
      );
      assert.equal(
        await get(HostService.settings, HostPath.bootOneTime, HostInterface.enable, 'Enabled'),
        false,
      );
    } finally {
      second.kill('SIGTERM');
      await once(second, 'exit');
    }
  });
});
