import { DbusError, Errno } from '../contract/dbus.ts';

/** A Mount/Unmount refused before any work starts: answered with a D-Bus error of this name. */
export class PrecheckError extends Error {
  override name = 'PrecheckError';
  constructor(
    readonly dbusName: string,
    message: string,
  ) {
    super(message);
  }

  static busy(slotId: string, state: string): PrecheckError {
    return new PrecheckError(DbusError.Busy, `${slotId} is busy (${state})`);
  }

  static invalid(message: string): PrecheckError {
    return new PrecheckError(DbusError.InvalidArgument, message);
  }
}

/** Why a mount failed or a mounted medium was lost; `errno` goes out in `Completion`. */
export class MountFailure extends Error {
  override name = 'MountFailure';
  constructor(
    readonly errno: number,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** The errno for any error thrown while mounting: MountFailure's own, EIO for everything unexpected. */
export function errnoOf(error: unknown): number {
  return error instanceof MountFailure ? error.errno : Errno.EIO;
}
