import { execFile } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { Errno } from '../../contract/dbus.ts';
import { spawnChild } from '../child.ts';
import { MountFailure } from '../errors.ts';
import type { MountContext } from '../slot.ts';
import type { AttachHost, AttachRequest, HostAttachment } from './attachment.ts';
import { ConfigfsWriter, type GadgetStep, gadgetCreateSteps, gadgetTeardownSteps } from './gadget.ts';

const READY_POLL_MS = 100;
const DISCONNECT_TIMEOUT_MS = 10_000;

export interface UsbGadgetOptions {
  sysfsRoot: string;
  configfsRoot: string;
  nbdClient: string;
  /** Observes every configfs step as it is applied (logging, tests). */
  onGadgetStep?: (step: GadgetStep) => void;
}

/**
 * Real host attachment (docs/contract.md §2): kernel NBD through `nbd-client`, then a configfs USB mass-storage
 * gadget backed by /dev/nbdN, bound to a free UDC. Stats come from `/sys/block/nbdN/stat`.
 */
export function usbGadgetHost(options: UsbGadgetOptions): AttachHost {
  return (request, context) => attachUsbGadget(options, request, context);
}

/** `nbd-client` argv per docs/contract.md §2 (`-L`: no netlink, or nbd-client 3.24 hands off and exits). */
function nbdClientArgs(request: Pick<AttachRequest, 'config' | 'source'>): string[] {
  const { config, source } = request;
  return [
    '-t',
    String(config.timeout),
    '-b',
    String(config.blockSize),
    '-u',
    source.socketPath,
    config.nbdDevice,
    '-n',
    '-L',
  ];
}

async function attachUsbGadget(
  options: UsbGadgetOptions,
  request: AttachRequest,
  context: MountContext,
): Promise<HostAttachment> {
  const { config } = request;
  const blockDir = path.join(options.sysfsRoot, 'block', path.basename(config.nbdDevice));
  const nbdClient = spawnChild(options.nbdClient, nbdClientArgs(request), context);
  context.cleanup.defer(`disconnect ${config.nbdDevice}`, async () => {
    await promisify(execFile)(options.nbdClient, ['-d', config.nbdDevice], {
      timeout: DISCONNECT_TIMEOUT_MS,
    });
  });
  let exited = false;
  void nbdClient.exited.then(() => {
    exited = true;
  });
  while (readSize(blockDir) === 0) {
    if (exited)
      throw await request.source.explain(new Error(`nbd-client failed: ${nbdClient.stderr().trim()}`));
    if (context.signal.aborted) throw context.signal.reason;
    await sleep(READY_POLL_MS);
  }

  const configfs = new ConfigfsWriter(options.configfsRoot, context.log, options.onGadgetStep);
  const udc = await freeUdc(options);
  context.cleanup.defer('remove the USB gadget', () => configfs.undo(gadgetTeardownSteps(config.slotId)));
  const cdrom = /\.iso$/i.test(new URL(request.imageUrl, 'file:///').pathname);
  await configfs.apply(
    gadgetCreateSteps({
      slotId: config.slotId,
      nbdDevice: config.nbdDevice,
      writeProtected: request.writeProtected,
      cdrom,
      udc,
    }),
  );
  return {
    writeProtected: request.writeProtected || cdrom,
    stats: () => readBlockStats(blockDir),
    lost: nbdClient.exited.then(() => Errno.EIO),
  };
}

/** `/sys/block/nbdN/size` in sectors: > 0 once nbd-client has connected the device. */
function readSize(blockDir: string): number {
  try {
    return Number(fs.readFileSync(path.join(blockDir, 'size'), 'utf8').trim()) || 0;
  } catch {
    return 0;
  }
}

/** Fields 1 and 5 of `/sys/block/nbdN/stat`: reads and writes completed. */
function readBlockStats(blockDir: string): { readIO: bigint; writeIO: bigint } {
  const fields = fs.readFileSync(path.join(blockDir, 'stat'), 'utf8').trim().split(/\s+/);
  return { readIO: BigInt(fields[0] ?? 0), writeIO: BigInt(fields[4] ?? 0) };
}

/** The first UDC under `<sysfs>/class/udc` that no gadget in configfs is bound to. */
async function freeUdc(options: UsbGadgetOptions): Promise<string> {
  const all = await fsp.readdir(path.join(options.sysfsRoot, 'class', 'udc')).catch(() => [] as string[]);
  const gadgets = path.join(options.configfsRoot, 'usb_gadget');
  const bound = new Set<string>();
  for (const gadget of await fsp.readdir(gadgets).catch(() => [] as string[])) {
    const udc = await fsp.readFile(path.join(gadgets, gadget, 'UDC'), 'utf8').catch(() => '');
    if (udc.trim()) bound.add(udc.trim());
  }
  const udc = all.sort().find((name) => !bound.has(name));
  if (!udc) throw new MountFailure(Errno.EBUSY, 'no free USB device controller to bind the gadget to');
  return udc;
}
