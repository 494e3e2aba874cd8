/**
 * The UI's calls to the server: a cookie session as bmcweb's web UI uses it (POST /login sets an HttpOnly
 * session cookie and a readable XSRF-TOKEN cookie; every request that changes something echoes the token
 * in X-XSRF-TOKEN) and the Redfish VirtualMedia resources.
 */

import { systemUri, virtualMediaUri } from '../contract/redfish.ts';

/** A failed request, with the human-readable messages the server gave (Redfish error or task messages). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** The parts of a VirtualMedia.v1_6 member the UI shows or acts on. */
export interface VirtualMedia {
  '@odata.id': string;
  Id: string;
  Name?: string;
  Inserted: boolean;
  Image: string | null;
  ImageName: string | null;
  ConnectedVia: 'Applet' | 'URI' | 'NotConnected' | string;
  TransferProtocolType: string | null;
  WriteProtected: boolean;
  Oem?: { OpenBMC?: { WebSocketEndpoint?: string } };
  Actions?: Record<string, { target: string; 'TransferProtocolType@Redfish.AllowableValues'?: string[] }>;
}

/** The parts of Systems/system the host panel shows: absent PowerState means no host services answer. */
export interface ComputerSystem {
  PowerState?: 'On' | 'Off' | 'PoweringOn' | 'PoweringOff' | string;
  Boot?: { BootSourceOverrideTarget: string; BootSourceOverrideEnabled: string };
  Actions?: { '#ComputerSystem.Reset'?: { target: string; 'ResetType@Redfish.AllowableValues'?: string[] } };
}

interface RedfishMessage {
  Message?: string;
  MessageId?: string;
}

interface Task {
  '@odata.id'?: string;
  TaskState?: string;
  TaskStatus?: string;
  PercentComplete?: number;
  Messages?: RedfishMessage[];
}

const finishedTaskStates = new Set(['Completed', 'Exception', 'Killed', 'Cancelled']);
const TASK_POLL_MS = 500;

/** The current XSRF token, readable by this page's scripts only (the cookie is same-origin). */
export function xsrfToken(): string | undefined {
  for (const part of document.cookie.split(';')) {
    const [name, ...value] = part.trim().split('=');
    if (name === 'XSRF-TOKEN') return decodeURIComponent(value.join('='));
  }
  return undefined;
}

async function call(method: string, path: string, body?: unknown): Promise<Response> {
  const headers: Record<string, string> = {
    Accept: 'application/json',
    // Asks the server not to send a Basic challenge on 401, which would make the browser pop up a dialog.
    'X-Requested-With': 'XMLHttpRequest',
  };
  if (method !== 'GET') headers['X-XSRF-TOKEN'] = xsrfToken() ?? '';
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(path, {
    method,
    headers,
    credentials: 'same-origin',
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  if (!response.ok) throw new ApiError(response.status, await errorMessage(response));
  return response;
}

/** The most specific text a Redfish error body offers: its extended messages, else its summary. */
async function errorMessage(response: Response): Promise<string> {
  const body = (await response.json().catch(() => undefined)) as
    | { error?: { message?: string; '@Message.ExtendedInfo'?: RedfishMessage[] } }
    | undefined;
  const extended = (body?.error?.['@Message.ExtendedInfo'] ?? []).map((m) => m.Message).filter(Boolean);
  if (extended.length > 0) return extended.join(' ');
  if (response.status === 401) return 'Your session has ended. Please log in again.';
  return body?.error?.message ?? `The server answered ${response.status} ${response.statusText}.`;
}

async function getJson<T>(path: string): Promise<T> {
  return (await (await call('GET', path)).json()) as T;
}

export async function login(username: string, password: string): Promise<void> {
  try {
    await call('POST', '/login', { username, password });
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      throw new ApiError(401, 'The user name or password is not correct.');
    }
    throw error;
  }
}

export async function logout(): Promise<void> {
  await call('POST', '/logout');
}

/** Every slot, in the collection's order; rejects with status 401 when there is no session. */
export async function listVirtualMedia(): Promise<VirtualMedia[]> {
  const collection = await getJson<{ Members: { '@odata.id': string }[] }>(virtualMediaUri);
  return Promise.all(collection.Members.map((member) => getJson<VirtualMedia>(member['@odata.id'])));
}

/**
 * Runs a Redfish action to its end: a 2xx answer is the result, a 202 is followed through its task
 * (docs/contract.md §3) until the task finishes; a failed task becomes an ApiError with the task's messages.
 */
export async function runAction(
  target: string,
  body: Record<string, unknown>,
  onProgress?: (task: Task) => void,
): Promise<void> {
  const response = await call('POST', target, body);
  if (response.status !== 202) return;
  let task = (await response.json().catch(() => ({}))) as Task;
  const monitor = task['@odata.id'] ?? response.headers.get('Location');
  if (!monitor) return;
  while (!finishedTaskStates.has(task.TaskState ?? '')) {
    onProgress?.(task);
    await new Promise((resolve) => setTimeout(resolve, TASK_POLL_MS));
    task = await getJson<Task>(monitor);
  }
  if (task.TaskState !== 'Completed' || (task.TaskStatus && task.TaskStatus !== 'OK')) {
    const messages = (task.Messages ?? []).map((m) => m.Message).filter(Boolean);
    throw new ApiError(500, messages.join(' ') || `The task ended in state ${task.TaskState}.`);
  }
}

export function getSystem(): Promise<ComputerSystem> {
  return getJson<ComputerSystem>(systemUri);
}

/** Sets the boot override (docs/contract.md §3a); Once reverts to None after the boot it applies to. */
export async function setBootOverride(
  target: string,
  enabled: 'Once' | 'Continuous' | 'Disabled',
): Promise<void> {
  await call('PATCH', systemUri, {
    Boot: { BootSourceOverrideTarget: target, BootSourceOverrideEnabled: enabled },
  });
}
