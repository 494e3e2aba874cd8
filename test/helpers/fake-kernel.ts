import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

/**
 * A stand-in for nbd-client: records its argv, "connects" /dev/nbdN by writing into the fake sysfs
 * what the kernel shows for a connected device (`size` in 512-byte sectors, `pid` of the nbd-client,
 * `ro` from the export's read-only flag), and on `-d` (or SIGTERM) resets them and ends the attached
 * instance. The size is that of `media/nbdN` when a test put a (sparse) file there, else 1 MiB. The
 * export is asked for its read-only flag with nbdinfo only when `probe-exports` exists (a Proxy
 * test with a real NBD server on the socket); elsewhere nothing may connect to the source.
 */
function fakeNbdClient(dir: string): string {
  return `#!/bin/bash
printf '%s\\n' "$*" >> ${dir}/nbd-client.argv
if [ "$1" = "-d" ]; then
  dev=$(basename "$2"); echo 0 > ${dir}/sys/block/$dev/size; rm -f ${dir}/sys/block/$dev/pid
  [ -f ${dir}/$dev.pid ] && kill $(cat ${dir}/$dev.pid) 2>/dev/null
  exit 0
fi
sock="$6"; dev=$(basename "$7")
echo $$ > ${dir}/$dev.pid
trap 'echo 0 > ${dir}/sys/block/'$dev'/size; rm -f ${dir}/'$dev'.pid ${dir}/sys/block/'$dev'/pid; exit 0' TERM
ro=0
if [ -f ${dir}/probe-exports ]; then
  nbdinfo --can write "nbd+unix:///?socket=$sock"; [ $? -eq 2 ] && ro=1
fi
echo $ro > ${dir}/sys/block/$dev/ro
echo $$ > ${dir}/sys/block/$dev/pid
if [ -f ${dir}/media/$dev ]; then
  echo $(( $(stat -c %s ${dir}/media/$dev) / 512 )) > ${dir}/sys/block/$dev/size
else
  echo 2048 > ${dir}/sys/block/$dev/size
fi
while true; do sleep 0.1; done
`;
}

export interface FakeKernel {
  dir: string;
  /** `vmedia service` arguments pointing it at this tree and the fake nbd-client. */
  args: string[];
  /** The fake nbd-client script (tests may overwrite it to make it fail). */
  nbdClient: string;
  /** Every nbd-client invocation so far, one argv per line. */
  nbdClientArgv(): Promise<string>;
  /** Gadget directories present under `<configfs>/usb_gadget`. */
  gadgets(): Promise<string[]>;
  /** The medium nbd-client will find on /dev/nbd<n> from its next connect: a sparse file of `bytes`. */
  setMediumSize(n: number, bytes: number): Promise<void>;
  /** Have nbd-client take `ro` from the export on the slot socket (nbdinfo), as the real one does. */
  probeExports(): Promise<void>;
  remove(): Promise<void>;
}

export interface FakeKernelOptions {
  /** Which parts exist; all by default. */
  nbdDevices?: number[];
  configfs?: boolean;
  udc?: boolean;
}

/**
 * A temporary sysfs/configfs tree for the usb-gadget host: `sys/block/nbdN/{size,stat}`, one UDC
 * (`dummy_udc.0`), an empty `configfs/usb_gadget`, and a fake nbd-client. Only the kernel is faked;
 * the service runs as it would on a BMC.
 */
export async function createFakeKernel(options: FakeKernelOptions = {}): Promise<FakeKernel> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vmedia-kernel-'));
  await fs.mkdir(path.join(dir, 'sys'));
  for (const n of options.nbdDevices ?? [0, 1, 2, 3]) {
    const block = path.join(dir, `sys/block/nbd${n}`);
    await fs.mkdir(block, { recursive: true });
    await fs.writeFile(path.join(block, 'size'), '0\n');
    await fs.writeFile(
      path.join(block, 'stat'),
      '     5        0       40        2        3        0       24        1        0        4        3\n',
    );
  }
  if (options.udc ?? true) await fs.mkdir(path.join(dir, 'sys/class/udc/dummy_udc.0'), { recursive: true });
  await fs.mkdir(path.join(dir, 'configfs'));
  if (options.configfs ?? true) await fs.mkdir(path.join(dir, 'configfs/usb_gadget'));
  const nbdClient = path.join(dir, 'nbd-client');
  await fs.writeFile(nbdClient, fakeNbdClient(dir), { mode: 0o755 });
  return {
    dir,
    args: [
      '--sysfs-root',
      path.join(dir, 'sys'),
      '--configfs-root',
      path.join(dir, 'configfs'),
      '--nbd-client',
      nbdClient,
    ],
    nbdClient,
    nbdClientArgv: () => fs.readFile(path.join(dir, 'nbd-client.argv'), 'utf8'),
    gadgets: () => fs.readdir(path.join(dir, 'configfs/usb_gadget')),
    async setMediumSize(n, bytes) {
      await fs.mkdir(path.join(dir, 'media'), { recursive: true });
      const file = path.join(dir, 'media', `nbd${n}`);
      await fs.writeFile(file, '');
      await fs.truncate(file, bytes);
    },
    probeExports: () => fs.writeFile(path.join(dir, 'probe-exports'), ''),
    remove: () => fs.rm(dir, { recursive: true, force: true }),
  };
}
