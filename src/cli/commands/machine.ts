import fs from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { connectBus } from '../../dbus/connection.ts';
import { VirtualMediaDbusClient } from '../../dbus/virtual-media-dbus-client.ts';
import { createLogger } from '../../log.ts';
import { BootSettingsStore } from '../../machine/boot-settings.ts';
import { exportHostObjects } from '../../machine/dbus-objects.ts';
import { QemuMachine } from '../../machine/machine.ts';
import { followSlots } from '../../machine/media.ts';
import { daemonOptions, daemonSettings } from '../daemon-options.ts';
import { stopSignal } from '../stop-signal.ts';

/**
 * `vmedia machine`: the emulated host (docs/contract.md §3a) — a QEMU PC whose USB devices are the slots'
 * emulated-host exports, on D-Bus as OpenBMC's host state and boot settings services. It powers on when
 * asked (Reset On), not when it starts.
 */
export async function run(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      ...daemonOptions,
      qemu: { type: 'string', default: 'qemu-system-x86_64' },
      memory: { type: 'string', default: '256' },
      'graceful-timeout': { type: 'string', default: '60' },
    },
  });
  const memoryMiB = Number(values.memory);
  const gracefulSeconds = Number(values['graceful-timeout']);
  if (!Number.isInteger(memoryMiB) || memoryMiB < 16) throw new Error('--memory takes MiB, at least 16');
  if (!(gracefulSeconds >= 0)) throw new Error('--graceful-timeout takes seconds');
  const { paths, busAddress } = await daemonSettings(values);
  const logger = createLogger('machine');

  await fs.mkdir(paths.machine, { recursive: true, mode: 0o700 });
  const boot = await BootSettingsStore.open(path.join(paths.machine, 'boot.json'));
  const machine = new QemuMachine({
    directory: paths.machine,
    boot,
    logger,
    qemu: values.qemu,
    memoryMiB,
    gracefulTimeoutMs: gracefulSeconds * 1000,
  });
  const bus = await connectBus(busAddress);
  await exportHostObjects(bus, machine, boot, logger);
  const virtualMedia = await VirtualMediaDbusClient.connect({ address: busAddress, logger });
  const unfollow = followSlots(virtualMedia, paths.host, (slotId, medium) =>
    machine.setMedium(slotId, medium),
  );

  const stopRequested = stopSignal();
  process.stdout.write(`vmedia machine ready: console ${machine.consoleLog}\n`);
  await Promise.race([
    stopRequested,
    new Promise<void>((resolve) =>
      bus.on('error', (error) => {
        logger.error({ err: error }, 'lost the D-Bus connection');
        resolve();
      }),
    ),
  ]);
  unfollow();
  await machine.close();
  await virtualMedia.close().catch(() => undefined);
  bus.disconnect();
}
