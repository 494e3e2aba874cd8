/**
 * The Redfish URIs that more than one side names: the server's resources declare their routes with them,
 * and the CLI and the web UI build their requests from them. Node-free, so the browser bundle can import it.
 */

export const serviceRootUri = '/redfish/v1/';
export const systemsUri = '/redfish/v1/Systems';
export const systemUri = `${systemsUri}/system`;
export const managersUri = '/redfish/v1/Managers';
export const managerUri = `${managersUri}/bmc`;
export const sessionServiceUri = '/redfish/v1/SessionService';
export const sessionsUri = `${sessionServiceUri}/Sessions`;
export const accountServiceUri = '/redfish/v1/AccountService';
export const taskServiceUri = '/redfish/v1/TaskService';

/** The slots' collection (under the Manager, as bmcweb serves it). */
export const virtualMediaUri = `${managerUri}/VirtualMedia`;

export function virtualMediaMemberUri(slotId: string): string {
  return `${virtualMediaUri}/${encodeURIComponent(slotId)}`;
}

export type VirtualMediaAction = 'InsertMedia' | 'EjectMedia';

export function virtualMediaActionUri(slotId: string, action: VirtualMediaAction): string {
  return `${virtualMediaMemberUri(slotId)}/Actions/VirtualMedia.${action}`;
}

/** Seconds a client should wait before retrying while the VirtualMedia service is unavailable (503). */
export const RETRY_AFTER_SECONDS = 5;
