import { parseArgs } from 'node:util';
import { HostControlDbusClient } from '../../dbus/host-control-client.ts';
import { VirtualMediaDbusClient } from '../../dbus/virtual-media-dbus-client.ts';
import { createLogger } from '../../log.ts';
import { startServer } from '../../server/app.ts';
import { daemonOptions, daemonSettings } from '../daemon-options.ts';
import { stopSignal } from '../stop-signal.ts';

/**
 * `vmedia server`: the HTTPS Redfish server on VMEDIA_HOST:VMEDIA_PORT. Prints one line containing
 * `ready` and the URL once it accepts requests, and the generated admin password the first time.
 * `--cert`/`--key` use the given certificate instead of the generated self-signed one.
 */
export async function run(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      ...daemonOptions,
      cert: { type: 'string' },
      key: { type: 'string' },
    },
  });
  if (Boolean(values.cert) !== Boolean(values.key)) throw new Error('--cert and --key go together');
  const { environment, paths, busAddress } = await daemonSettings(values);

  const logger = createLogger('server');
  const virtualMedia = await VirtualMediaDbusClient.connect({
    address: busAddress,
    logger,
  });
  const hostControl = new HostControlDbusClient({ address: busAddress, logger });
  const { app, url, generatedPassword } = await startServer({
    stateDir: environment.stateDir,
    adminPassword: environment.adminPassword,
    host: environment.host,
    port: environment.port,
    allowHttp: environment.allowHttp,
    logger,
    virtualMedia,
    hostControl,
    ...(values.cert && values.key ? { tls: { certFile: values.cert, keyFile: values.key } } : {}),
  });
  const stopRequested = stopSignal();
  if (generatedPassword) {
    process.stdout.write(
      `vmedia server: created user 'admin' with password ${generatedPassword} (also in ${paths.adminPassword})\n`,
    );
  }
  process.stdout.write(`vmedia server ready: ${url}\n`);

  await stopRequested;
  await app.close().catch(() => undefined);
  await virtualMedia.close().catch(() => undefined);
  await hostControl.close().catch(() => undefined);
}
