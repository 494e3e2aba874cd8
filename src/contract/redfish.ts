/**
 * The Redfish URIs that more than one side names: the server's resources declare their routes with them,
 * and the CLI and the web UI build their requests from them. Node-free, so the browser bundle can import it.
 */

export const serviceRootUri = '/redfish/v1/';
export const systemsUri = '/redfish/v1/Systems';
export const systemUri = `${systemsUri}/system`;
/** `#ComputerSystem.Reset`: power the host on, off or through a restart (docs/contract.md §3a). */
export const systemResetUri = `${systemUri}/Actions/ComputerSystem.Reset`;
export const systemResetActionInfoUri = `${systemUri}/ResetActionInfo`;
export const managersUri = '/redfish/v1/Managers';
export const managerUri = `${managersUri}/bmc`;
export const sessionServiceUri = '/redfish/v1/SessionService';
export const sessionsUri = `${sessionServiceUri}/Sessions`;
export const accountServiceUri = '/redfish/v1/AccountService';
export const taskServiceUri = '/redfish/v1/TaskService';

/** The slots' collection under the Manager, as bmcweb serves it (and the CLI and web UI use). */
export const virtualMediaUri = `${managerUri}/VirtualMedia`;
/** The same slots under the ComputerSystem: DMTF's location since Manager v1_10 deprecated the other. */
export const systemVirtualMediaUri = `${systemUri}/VirtualMedia`;
/** Both collections serve the same members and actions; each member's URIs stay under its collection. */
export const virtualMediaCollectionUris = [systemVirtualMediaUri, virtualMediaUri] as const;
export type VirtualMediaCollectionUri = (typeof virtualMediaCollectionUris)[number];

export function virtualMediaMemberUri(
  slotId: string,
  collectionUri: VirtualMediaCollectionUri = virtualMediaUri,
): string {
  return `${collectionUri}/${encodeURIComponent(slotId)}`;
}

export type VirtualMediaAction = 'InsertMedia' | 'EjectMedia';

export function virtualMediaActionUri(slotId: string, action: VirtualMediaAction): string {
  return `${virtualMediaMemberUri(slotId)}/Actions/VirtualMedia.${action}`;
}

/** Seconds a client should wait before retrying while the VirtualMedia service is unavailable (503). */
export const RETRY_AFTER_SECONDS = 5;
