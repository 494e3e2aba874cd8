import type { Logger } from '../../log.ts';
import type { SlotConfig } from '../config.ts';
import type { IoStats, MountContext } from '../slot.ts';
import type { MediumSource } from '../sources/source.ts';

/** How a medium reaches "the host": the kernel's USB gadget, or an NBD export standing in for it. */
export type HostMode = 'emulated' | 'usb-gadget';

export interface AttachRequest {
  config: SlotConfig;
  source: MediumSource;
  writeProtected: boolean;
  imageUrl: string;
}

export interface HostAttachment {
  /** What the host actually got: write-protected if asked or if the source is read-only. */
  writeProtected: boolean;
  stats(): IoStats;
  /** Settles with an errno if the attachment breaks on its own. */
  lost: Promise<number>;
}

/** Attaches the source to the host; everything it creates is registered on `context.cleanup`. */
export interface AttachHost {
  (request: AttachRequest, context: MountContext): Promise<HostAttachment>;
  /**
   * At service start, before any mount: removes what the attachments of a service that died without
   * its cleanup (SIGKILL, a crash) left behind for these slots.
   */
  recover?(slots: SlotConfig[], log: Logger): Promise<void>;
}
