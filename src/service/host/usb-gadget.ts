import { execFile } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { Errno } from '../../contract/dbus.ts';
import type { Logger } from '../../log.ts';
import { helperPidFile, processAlive, spawnChild } from '../child.ts';
import type { SlotConfig } from '../config.ts';
import { MountFailure } from '../errors.ts';
import type { MountContext } from '../slot.ts';
import type { AttachHost, AttachRequest, HostAttachment } from './attachment.ts';
import {
  ConfigfsWriter,
  type GadgetStep,
  gadgetCreateSteps,
  gadgetDir,
  gadgetTeardownSteps,
} from './gadget.ts';

const READY_POLL_MS = 100;
const DISCONNECT_TIMEOUT_MS = 10_000;
/** `/sys/block/<dev>/size` counts 512-byte sectors whatever the device's block size. */
const SYSFS_SECTOR = 512;
/**
 * The largest medium the gadget presents whole as a CD-ROM. f_mass_storage's `fsg_lun_open`
 * (drivers/usb/gadget/function/storage_common.c) uses 2048-byte blocks for a CD-ROM and, when the
 * file has `num_sectors >= 256*60*75` of them (256 minutes of 75 frames a second, what an MSF
 * address in READ TOC can express), logs "file too big" and keeps only the first 256*60*75 - 1:
 * the host would see a CD cut short at 2 359 293 952 bytes. So an image of at least
 * 256 * 60 * 75 * 2048 = 2 359 296 000 bytes (about 2.36 GB) is presented as a removable disk.
 */
export const CDROM_MAX_BYTES = 256 * 60 * 75 * 2048;

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
  const attach: AttachHost = (request, context) => attachUsbGadget(options, request, context);
  attach.recover = (slots, log) => recoverUsbGadget(options, slots, log);
  return attach;
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
  const nbdClient = spawnChild(options.nbdClient, nbdClientArgs(request), {
    ...context,
    pidFile: helperPidFile(config, 'nbd-client'),
  });
  context.cleanup.defer(`disconnect ${config.nbdDevice}`, () => disconnect(options, config.nbdDevice));
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

  // nbd-client sets the device read-only when the export has NBD_FLAG_READ_ONLY.
  const exportReadOnly = readFlag(blockDir, 'ro');
  const sizeBytes = readSize(blockDir) * SYSFS_SECTOR;
  const iso = /\.iso$/i.test(new URL(request.imageUrl, 'file:///').pathname);
  const cdrom = iso && sizeBytes < CDROM_MAX_BYTES;
  if (iso && !cdrom) {
    context.log.info(
      { sizeBytes, cdromMaxBytes: CDROM_MAX_BYTES },
      'ISO image too large for the gadget CD-ROM: presenting it as a removable disk',
    );
  }
  const writeProtected = request.writeProtected || exportReadOnly || cdrom;
  const configfs = new ConfigfsWriter(options.configfsRoot, context.log, options.onGadgetStep);
  const udc = await freeUdc(options);
  context.cleanup.defer('remove the USB gadget', () => configfs.undo(gadgetTeardownSteps(config.slotId)));
  await configfs.apply(
    gadgetCreateSteps({ slotId: config.slotId, nbdDevice: config.nbdDevice, writeProtected, cdrom, udc }),
  );
  return {
    writeProtected,
    stats: () => readBlockStats(blockDir),
    lost: nbdClient.exited.then(() => Errno.EIO),
  };
}

async function disconnect(options: UsbGadgetOptions, nbdDevice: string): Promise<void> {
  await promisify(execFile)(options.nbdClient, ['-d', nbdDevice], { timeout: DISCONNECT_TIMEOUT_MS });
}

/**
 * After a service died without its cleanup: its gadgets (`mass-storage-<SlotId>` of these slots) are
 * unbound and removed, which lets go of /dev/nbdN, then every slot device still connected to an
 * nbd-client that is gone (`/sys/block/nbdN/pid` names a dead process, or no pid but a size) is
 * disconnected with `nbd-client -d`. A device held by a live nbd-client is not ours to take: warned.
 */
async function recoverUsbGadget(options: UsbGadgetOptions, slots: SlotConfig[], log: Logger): Promise<void> {
  const configfs = new ConfigfsWriter(options.configfsRoot, log, options.onGadgetStep);
  for (const slot of slots) {
    const gadget = path.join(options.configfsRoot, gadgetDir(slot.slotId));
    if (!fs.existsSync(gadget)) continue;
    log.warn({ slot: slot.slotId, gadget }, 'removing a USB gadget left by a previous service');
    await configfs.undo(gadgetTeardownSteps(slot.slotId));
  }
  for (const slot of slots) {
    const blockDir = path.join(options.sysfsRoot, 'block', path.basename(slot.nbdDevice));
    const pid = Number(readText(path.join(blockDir, 'pid'))) || undefined;
    if (pid === undefined && readSize(blockDir) === 0) continue;
    if (pid !== undefined && processAlive(pid)) {
      log.warn({ device: slot.nbdDevice, pid }, 'NBD device is held by a running nbd-client: left alone');
      continue;
    }
    log.warn({ device: slot.nbdDevice, pid }, 'disconnecting an NBD device left by a previous service');
    await disconnect(options, slot.nbdDevice).catch((error: unknown) =>
      log.error({ err: error, device: slot.nbdDevice }, 'cannot disconnect a stale NBD device'),
    );
  }
}

function readText(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8').trim();
  } catch {
    return '';
  }
}

/** A sysfs boolean such as `/sys/block/nbdN/ro`; missing reads as false. */
function readFlag(blockDir: string, name: string): boolean {
  return readText(path.join(blockDir, name)) === '1';
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

/** The first UDC under `<sysfs>/class/udc` that no gadget in configfs is bound to: one UDC per mounted slot. */
async function freeUdc(options: UsbGadgetOptions): Promise<string> {
  const all = await fsp.readdir(path.join(options.sysfsRoot, 'class', 'udc')).catch(() => [] as string[]);
  const gadgets = path.join(options.configfsRoot, 'usb_gadget');
  const bound = new Set<string>();
  for (const gadget of await fsp.readdir(gadgets).catch(() => [] as string[])) {
    const udc = await fsp.readFile(path.join(gadgets, gadget, 'UDC'), 'utf8').catch(() => '');
    if (udc.trim()) bound.add(udc.trim());
  }
  const udc = all.sort().find((name) => !bound.has(name));
  // ENODEV, not EBUSY: EBUSY means the mount timed out, and InsertMedia would report OperationTimeout.
  if (!udc) {
    throw new MountFailure(
      Errno.ENODEV,
      all.length === 0
        ? 'no USB device controller to bind the gadget to'
        : `no free USB device controller: all ${all.length} are bound to other gadgets`,
    );
  }
  return udc;
}
