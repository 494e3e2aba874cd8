import type { MountFailure } from '../errors.ts';

/** Where the medium comes from, as an NBD server on a Unix socket the host attachment connects to. */
export interface MediumSource {
  socketPath: string;
  /** Settles with an errno if the source dies on its own (nbdkit killed); never settles otherwise. */
  lost: Promise<number>;
  /** Turns a failed NBD connection to the source into the reason, e.g. nbdkit's curl error. */
  explain(error: unknown): Promise<MountFailure>;
}
