import fs from 'node:fs';
import path from 'node:path';
import type { HostMode } from './attachment.ts';

/** Where `auto` looks for the kernel pieces the real USB gadget needs. */
export interface HostProbe {
  sysfsRoot: string;
  configfsRoot: string;
  /** The slots' NBD devices (`/dev/nbdN`). */
  nbdDevices: string[];
}

/**
 * `auto` picks the real USB gadget only where the kernel offers everything it needs: the slots' NBD
 * devices, configfs's usb_gadget and a USB device controller to bind to; elsewhere (dev machines, CI)
 * the emulated host. The nbd module creates `<sysfs>/block/nbdN` along with `/dev/nbdN`; looking
 * there, under the configurable roots, lets a test or a dry run decide from a temporary tree.
 */
export function chooseHostMode(requested: HostMode | 'auto', probe: HostProbe): HostMode {
  if (requested !== 'auto') return requested;
  const nbd = probe.nbdDevices.every((device) =>
    fs.existsSync(path.join(probe.sysfsRoot, 'block', path.basename(device))),
  );
  const gadget = fs.existsSync(path.join(probe.configfsRoot, 'usb_gadget'));
  return nbd && gadget && hasUdc(probe.sysfsRoot) ? 'usb-gadget' : 'emulated';
}

function hasUdc(sysfsRoot: string): boolean {
  try {
    return fs.readdirSync(path.join(sysfsRoot, 'class', 'udc')).length > 0;
  } catch {
    return false;
  }
}
