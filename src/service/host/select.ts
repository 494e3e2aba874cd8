import fs from 'node:fs';
import path from 'node:path';
import type { HostMode } from './attachment.ts';

/**
 * `auto` picks the real USB gadget only where the kernel offers both pieces it needs: an NBD device
 * and configfs's usb_gadget; elsewhere (dev machines, CI) the emulated host.
 */
export function chooseHostMode(
  requested: HostMode | 'auto',
  configfsRoot: string,
  nbdDevice = '/dev/nbd0',
): HostMode {
  if (requested !== 'auto') return requested;
  const kernelReady = fs.existsSync(nbdDevice) && fs.existsSync(path.join(configfsRoot, 'usb_gadget'));
  return kernelReady ? 'usb-gadget' : 'emulated';
}
