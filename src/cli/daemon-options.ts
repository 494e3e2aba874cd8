import path from 'node:path';
import { readEnvironment, statePaths } from '../config/environment.ts';
import { chooseBusAddress } from '../dbus/connection.ts';

/** The flags both daemons (`vmedia server`, `vmedia service`) take, spelled and resolved the same way. */
export const daemonOptions = {
  // The bus the service owns its name on and the server calls it over; else <state>/dbus-address
  // (the embedded stack's private bus), else the system bus.
  'bus-address': { type: 'string' },
  // Overrides VMEDIA_STATE_DIR.
  'state-dir': { type: 'string' },
} as const;

/** The environment with the flags applied, the state paths, and the bus to use. */
export async function daemonSettings(values: { 'bus-address'?: string; 'state-dir'?: string }) {
  const environment = readEnvironment();
  const stateDir = path.resolve(values['state-dir'] ?? environment.stateDir);
  const paths = statePaths(stateDir);
  const busAddress = await chooseBusAddress(values['bus-address'], paths.dbusAddress);
  return { environment: { ...environment, stateDir }, paths, busAddress };
}
