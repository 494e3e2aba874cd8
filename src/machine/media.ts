import path from 'node:path';
import { SlotMode } from '../contract/dbus.ts';
import type { SlotState, VirtualMediaClient } from '../dbus/virtual-media-client.ts';
import type { Medium } from './machine.ts';

/**
 * What a slot presents to the emulated host: nothing until its medium is mounted, then its emulated-host
 * export (`<hostDir>/<SlotId>.sock`). An ISO image is a CD-ROM, as a BMC's virtual CD presents it;
 * anything else, and every Proxy medium (the browser's or the CLI's file), is a USB stick.
 */
export function mediumOf(slot: SlotState, hostDir: string): Medium | undefined {
  if (!slot.active) return undefined;
  const isIso = slot.mode === SlotMode.Legacy && /\.iso$/i.test(new URL(slot.imageUrl, 'file:').pathname);
  return {
    socket: path.join(hostDir, `${slot.slotId}.sock`),
    kind: isIso ? 'cd' : 'stick',
    readOnly: slot.writeProtected,
  };
}

/** Keeps the machine's USB devices in step with the slots: plugged on mount, unplugged on eject. */
export function followSlots(
  client: VirtualMediaClient,
  hostDir: string,
  setMedium: (slotId: string, medium: Medium | undefined) => Promise<void>,
): () => void {
  const apply = (slot: SlotState) =>
    void setMedium(slot.slotId, mediumOf(slot, hostDir)).catch(() => undefined);
  for (const slot of client.slots()) apply(slot);
  return client.onChange(apply);
}
