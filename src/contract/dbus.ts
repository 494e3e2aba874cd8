/** The D-Bus contract shared by the service and its clients (docs/contract.md §2). */
export const SERVICE_NAME = 'xyz.openbmc_project.VirtualMedia';
export const ROOT_PATH = '/xyz/openbmc_project/VirtualMedia';

export const Interface = {
  MountPoint: 'xyz.openbmc_project.VirtualMedia.MountPoint',
  Process: 'xyz.openbmc_project.VirtualMedia.Process',
  Stats: 'xyz.openbmc_project.VirtualMedia.Stats',
  Proxy: 'xyz.openbmc_project.VirtualMedia.Proxy',
  Legacy: 'xyz.openbmc_project.VirtualMedia.Legacy',
  /** Our extension on Legacy slots: what their https:// source trusts (docs/contract.md §2). */
  Trust: 'xyz.openbmc_project.VirtualMedia.Trust',
  ObjectManager: 'org.freedesktop.DBus.ObjectManager',
  Properties: 'org.freedesktop.DBus.Properties',
} as const;

export enum SlotMode {
  Proxy = 0,
  Legacy = 1,
}

export function slotPath(mode: SlotMode, slotId: string): string {
  return `${ROOT_PATH}/${mode === SlotMode.Proxy ? 'Proxy' : 'Legacy'}/${slotId}`;
}

/** errno values carried by the Completion signal. */
export const Errno = {
  OK: 0,
  EPERM: 1,
  ENOENT: 2,
  EIO: 5,
  EACCES: 13,
  EBUSY: 16,
  /** No USB device controller is free to bind a slot's gadget to (usb-gadget host). */
  ENODEV: 19,
  EINVAL: 22,
  /** The SMB server does not offer SMB3 encryption, which the service requires. */
  EPROTONOSUPPORT: 93,
  ENOTSUP: 95,
  ECONNREFUSED: 111,
  EHOSTUNREACH: 113,
  ECANCELED: 125,
} as const;

/** D-Bus error names returned when a Mount/Unmount precheck fails. */
export const DbusError = {
  InvalidArgument: 'xyz.openbmc_project.Common.Error.InvalidArgument',
  Unavailable: 'xyz.openbmc_project.Common.Error.Unavailable',
  NotAllowed: 'xyz.openbmc_project.Common.Error.NotAllowed',
  ResourceNotFound: 'xyz.openbmc_project.Common.Error.ResourceNotFound',
  InternalFailure: 'xyz.openbmc_project.Common.Error.InternalFailure',
  /** Mount while the slot is not Ready (busy or already mounted). */
  Busy: 'System.Error.EBUSY',
} as const;
