import fs from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../../log.ts';

/** One configfs operation; paths are relative to the configfs root. */
export type GadgetStep =
  | { op: 'mkdir'; path: string }
  | { op: 'write'; path: string; value: string }
  | { op: 'symlink'; target: string; path: string }
  | { op: 'unlink'; path: string }
  | { op: 'rmdir'; path: string };

export interface GadgetSpec {
  slotId: string;
  nbdDevice: string;
  writeProtected: boolean;
  /** Present the medium as a CD-ROM (an ISO image). */
  cdrom: boolean;
  /** The USB device controller to bind, from `<sysfs>/class/udc`. */
  udc: string;
}

const CONFIGFS_MAGIC = 0x62656570;
const FUNCTION = 'functions/mass_storage.usb0';
const CONFIG = 'configs/c.1';

/** A slot's gadget, relative to the configfs root; the name tells a later service which gadgets are its own. */
export function gadgetDir(slotId: string): string {
  return `usb_gadget/mass-storage-${slotId}`;
}

/** The mass-storage gadget of docs/contract.md §2, in the order configfs needs: describe, configure, bind. */
export function gadgetCreateSteps(spec: GadgetSpec): GadgetStep[] {
  const g = gadgetDir(spec.slotId);
  const lun = `${g}/${FUNCTION}/lun.0`;
  return [
    { op: 'mkdir', path: g },
    { op: 'write', path: `${g}/idVendor`, value: '0x1d6b' },
    { op: 'write', path: `${g}/idProduct`, value: '0x0104' },
    { op: 'mkdir', path: `${g}/strings/0x409` },
    { op: 'write', path: `${g}/strings/0x409/manufacturer`, value: 'OpenBMC' },
    { op: 'write', path: `${g}/strings/0x409/product`, value: 'Virtual Media Device' },
    { op: 'write', path: `${g}/strings/0x409/serialnumber`, value: spec.slotId },
    { op: 'mkdir', path: `${g}/${CONFIG}` },
    { op: 'mkdir', path: `${g}/${CONFIG}/strings/0x409` },
    { op: 'write', path: `${g}/${CONFIG}/strings/0x409/configuration`, value: 'config 1' },
    { op: 'mkdir', path: `${g}/${FUNCTION}` },
    { op: 'write', path: `${lun}/removable`, value: '1' },
    // The kernel forces a CD-ROM read-only; say so rather than let it differ from WriteProtected.
    { op: 'write', path: `${lun}/ro`, value: spec.writeProtected || spec.cdrom ? '1' : '0' },
    { op: 'write', path: `${lun}/cdrom`, value: spec.cdrom ? '1' : '0' },
    { op: 'write', path: `${lun}/file`, value: spec.nbdDevice },
    { op: 'symlink', target: `${g}/${FUNCTION}`, path: `${g}/${CONFIG}/mass_storage.usb0` },
    { op: 'write', path: `${g}/UDC`, value: spec.udc },
  ];
}

/** Teardown in reverse: unbind, unlink the function, then remove directories innermost first. */
export function gadgetTeardownSteps(slotId: string): GadgetStep[] {
  const g = gadgetDir(slotId);
  return [
    { op: 'write', path: `${g}/UDC`, value: '' },
    { op: 'unlink', path: `${g}/${CONFIG}/mass_storage.usb0` },
    { op: 'rmdir', path: `${g}/${CONFIG}/strings/0x409` },
    { op: 'rmdir', path: `${g}/${CONFIG}` },
    { op: 'rmdir', path: `${g}/${FUNCTION}` },
    { op: 'rmdir', path: `${g}/strings/0x409` },
    { op: 'rmdir', path: g },
  ];
}

/**
 * Applies steps under `root`. In configfs, mkdir creates a directory's attribute files and default
 * groups, and rmdir removes them; in an ordinary directory tree (tests, dry runs) they are plain
 * files, so there parents are created on write and rmdir removes what is inside.
 */
export class ConfigfsWriter {
  private isConfigfs: Promise<boolean> | undefined;

  constructor(
    readonly root: string,
    private readonly log: Logger,
    private readonly onStep?: (step: GadgetStep) => void,
  ) {}

  async apply(steps: GadgetStep[]): Promise<void> {
    for (const step of steps) await this.run(step);
  }

  /** Teardown: a missing entry (creation stopped halfway) is skipped, other failures are logged. */
  async undo(steps: GadgetStep[]): Promise<void> {
    for (const step of steps) {
      try {
        await this.run(step);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') {
          this.log.error({ err: error, step }, 'USB gadget teardown step failed');
        }
      }
    }
  }

  private async run(step: GadgetStep): Promise<void> {
    const at = path.join(this.root, step.path);
    this.log.debug({ step }, 'configfs');
    switch (step.op) {
      case 'mkdir':
        await fs.mkdir(at, { recursive: true });
        break;
      case 'write':
        if (!(await this.configfs())) await fs.mkdir(path.dirname(at), { recursive: true });
        else await fs.access(at); // configfs attributes exist; writing a missing one must fail, not create it
        await fs.writeFile(at, step.value);
        break;
      case 'symlink':
        await fs.symlink(path.join(this.root, step.target), at);
        break;
      case 'unlink':
        await fs.unlink(at);
        break;
      case 'rmdir':
        if (await this.configfs()) await fs.rmdir(at);
        else await fs.rm(at, { recursive: true });
        break;
    }
    this.onStep?.(step);
  }

  private configfs(): Promise<boolean> {
    this.isConfigfs ??= fs.statfs(this.root).then(
      (stats) => stats.type === CONFIGFS_MAGIC,
      () => false,
    );
    return this.isConfigfs;
  }
}
