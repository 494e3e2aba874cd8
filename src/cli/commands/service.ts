import fs from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { SERVICE_NAME } from '../../contract/dbus.ts';
import { connectBus } from '../../dbus/connection.ts';
import { createLogger } from '../../log.ts';
import { loadConfig } from '../../service/config.ts';
import type { HostMode } from '../../service/host/attachment.ts';
import { emulatedHost } from '../../service/host/emulated.ts';
import { chooseHostMode } from '../../service/host/select.ts';
import { usbGadgetHost } from '../../service/host/usb-gadget.ts';
import { startVirtualMediaService } from '../../service/service.ts';
import { type CifsClient, chooseCifsClient } from '../../service/sources/legacy.ts';
import { daemonOptions, daemonSettings } from '../daemon-options.ts';
import { stopSignal } from '../stop-signal.ts';

const HOST_MODES = ['auto', 'emulated', 'usb-gadget'] as const;
const CIFS_CLIENTS = ['auto', 'kernel', 'userspace'] as const;

/**
 * `vmedia service`: the xyz.openbmc_project.VirtualMedia D-Bus daemon (docs/contract.md §2). Bus: --bus-address,
 * else `<state>/dbus-address` (the embedded stack's private bus), else the system bus.
 */
export async function run(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      ...daemonOptions,
      config: { type: 'string' },
      'host-mode': { type: 'string', default: 'auto' },
      'sysfs-root': { type: 'string', default: '/sys' },
      'configfs-root': { type: 'string', default: '/sys/kernel/config' },
      'nbd-client': { type: 'string', default: 'nbd-client' },
      nbdkit: { type: 'string', default: 'nbdkit' },
      'cifs-client': { type: 'string', default: 'auto' },
    },
  });
  const requestedMode = values['host-mode'] as (typeof HOST_MODES)[number];
  if (!HOST_MODES.includes(requestedMode)) throw new Error(`--host-mode takes ${HOST_MODES.join(', ')}`);
  const requestedCifs = values['cifs-client'] as (typeof CIFS_CLIENTS)[number];
  if (!CIFS_CLIENTS.includes(requestedCifs))
    throw new Error(`--cifs-client takes ${CIFS_CLIENTS.join(', ')}`);
  const { environment, paths, busAddress } = await daemonSettings(values);
  const { stateDir } = environment;
  const log = createLogger('vmedia-service');

  const config = await loadConfig(values.config ?? environment.slotConfig, paths.runtime);
  const hostMode: HostMode = chooseHostMode(requestedMode, {
    sysfsRoot: values['sysfs-root'],
    configfsRoot: values['configfs-root'],
    nbdDevices: config.slots.map((slot) => slot.nbdDevice),
  });
  await fs.mkdir(paths.host, { recursive: true, mode: 0o700 });
  const attachHost =
    hostMode === 'emulated'
      ? emulatedHost(paths.host)
      : usbGadgetHost({
          sysfsRoot: values['sysfs-root'],
          configfsRoot: values['configfs-root'],
          nbdClient: values['nbd-client'],
        });

  const cifsClient: CifsClient = await chooseCifsClient(requestedCifs);

  const bus = await connectBus(busAddress);
  const service = await startVirtualMediaService({
    bus,
    config,
    runtimeDir: paths.runtime,
    trustDir: paths.trust,
    attachHost,
    caBundle: environment.caBundle,
    imagePolicy: { allowHttp: environment.allowHttp },
    nbdkit: values.nbdkit,
    cifsClient,
    log,
  });
  log.info(
    {
      busName: SERVICE_NAME,
      hostMode,
      cifsClient,
      allowHttp: environment.allowHttp,
      slots: config.slots.map((s) => s.slotId),
      stateDir,
    },
    `${SERVICE_NAME} ready`,
  );
  const stopRequested = stopSignal();
  // The readiness line launchers wait for, whatever the log level.
  process.stdout.write(`vmedia service ready: ${SERVICE_NAME} (host mode ${hostMode})\n`);

  await Promise.race([
    stopRequested.then((signal) => log.info({ signal }, 'stopping: releasing every slot')),
    new Promise<void>((resolve) =>
      bus.on('error', (error) => {
        log.error({ err: error }, 'lost the D-Bus connection');
        resolve();
      }),
    ),
  ]);
  await service.stop();
  bus.disconnect();
  log.info('stopped');
}
