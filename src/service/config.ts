import fs from 'node:fs/promises';
import path from 'node:path';
import { SlotMode } from '../contract/dbus.ts';

/** One mount point of the upstream config format (docs/contract.md §2). */
export interface SlotConfig {
  slotId: string;
  endpointId: string;
  mode: SlotMode;
  nbdDevice: string;
  unixSocket: string;
  /** Seconds; passed to nbd-client and the base of the slot's completion timer. */
  timeout: number;
  blockSize: number;
}

export interface ServiceConfig {
  /** Seconds without I/O after which an active slot unmounts itself; 0 disables. */
  inactivityTimeout: number;
  slots: SlotConfig[];
}

export class ConfigError extends Error {
  constructor(
    readonly key: string,
    problem: string,
  ) {
    super(`invalid slot config: ${key} ${problem}`);
    this.name = 'ConfigError';
  }
}

const UINT16_MAX = 0xffff;
const BLOCK_SIZES = [512, 1024, 2048, 4096];
const SLOT_ID = /^[A-Za-z0-9_]+$/;

/** The built-in config: two Proxy and two Legacy slots, sockets in the 0700 runtime directory. */
export function defaultConfigDocument(runtimeDir: string): unknown {
  const slot = (n: number, mode: SlotMode, timeout: number) => ({
    EndpointId: mode === SlotMode.Proxy ? `/nbd/${n}` : '',
    Mode: mode,
    NBDDevice: `/dev/nbd${n}`,
    UnixSocket: path.join(runtimeDir, `nbd${n}.sock`),
    Timeout: timeout,
    BlockSize: 512,
  });
  return {
    InactivityTimeout: 1800,
    MountPoints: {
      Slot_0: slot(0, SlotMode.Proxy, 30),
      Slot_1: slot(1, SlotMode.Proxy, 30),
      Slot_2: slot(2, SlotMode.Legacy, 90),
      Slot_3: slot(3, SlotMode.Legacy, 90),
    },
  };
}

/** Reads `file` (VMEDIA_CONFIG) or returns the default; throws ConfigError naming the bad key. */
export async function loadConfig(file: string | undefined, runtimeDir: string): Promise<ServiceConfig> {
  if (!file) return parseConfig(defaultConfigDocument(runtimeDir));
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (error) {
    throw new Error(`cannot read slot config ${file}: ${(error as Error).message}`);
  }
  let document: unknown;
  try {
    document = JSON.parse(text);
  } catch (error) {
    throw new Error(`slot config ${file} is not JSON: ${(error as Error).message}`);
  }
  return parseConfig(document);
}

export function parseConfig(document: unknown): ServiceConfig {
  const root = asObject(document, '(root)');
  for (const key of Object.keys(root)) {
    if (key !== 'InactivityTimeout' && key !== 'MountPoints')
      throw new ConfigError(key, 'is not a known key');
  }
  const inactivityTimeout =
    root.InactivityTimeout === undefined
      ? 0
      : integer(root.InactivityTimeout, 'InactivityTimeout', 0, UINT16_MAX);
  const mountPoints = asObject(root.MountPoints, 'MountPoints');
  const slots = Object.entries(mountPoints).map(([slotId, value]) => parseSlot(slotId, value));
  if (slots.length === 0) throw new ConfigError('MountPoints', 'must define at least one slot');
  unique(slots, (s) => s.unixSocket, 'UnixSocket');
  unique(
    slots.filter((s) => s.mode === SlotMode.Proxy),
    (s) => s.endpointId,
    'EndpointId',
  );
  unique(slots, (s) => s.nbdDevice, 'NBDDevice');
  return { inactivityTimeout, slots };
}

function parseSlot(slotId: string, value: unknown): SlotConfig {
  const at = `MountPoints.${slotId}`;
  if (!SLOT_ID.test(slotId)) throw new ConfigError(at, 'must be a D-Bus path element ([A-Za-z0-9_]+)');
  const entry = asObject(value, at);
  const known = ['EndpointId', 'Mode', 'NBDDevice', 'UnixSocket', 'Timeout', 'BlockSize'];
  for (const key of Object.keys(entry)) {
    if (!known.includes(key)) throw new ConfigError(`${at}.${key}`, 'is not a known key');
  }
  const mode = integer(entry.Mode, `${at}.Mode`, 0, 1) as SlotMode;
  const endpointId = entry.EndpointId ?? '';
  if (typeof endpointId !== 'string') throw new ConfigError(`${at}.EndpointId`, 'must be a string');
  if (mode === SlotMode.Proxy && !/^\/[\w/.-]+$/.test(endpointId)) {
    throw new ConfigError(`${at}.EndpointId`, 'must be a URL path such as /nbd/0 for a Proxy slot');
  }
  const nbdDevice = string(entry.NBDDevice, `${at}.NBDDevice`);
  if (!/^\/dev\/nbd\d+$/.test(nbdDevice)) throw new ConfigError(`${at}.NBDDevice`, 'must be /dev/nbd<N>');
  const unixSocket = string(entry.UnixSocket, `${at}.UnixSocket`);
  if (!path.isAbsolute(unixSocket)) throw new ConfigError(`${at}.UnixSocket`, 'must be an absolute path');
  const blockSize =
    entry.BlockSize === undefined ? 512 : integer(entry.BlockSize, `${at}.BlockSize`, 512, 4096);
  if (!BLOCK_SIZES.includes(blockSize)) {
    throw new ConfigError(`${at}.BlockSize`, `must be one of ${BLOCK_SIZES.join(', ')}`);
  }
  return {
    slotId,
    endpointId: mode === SlotMode.Proxy ? endpointId : '',
    mode,
    nbdDevice,
    unixSocket,
    timeout: integer(entry.Timeout ?? 30, `${at}.Timeout`, 1, UINT16_MAX),
    blockSize,
  };
}

function asObject(value: unknown, key: string): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ConfigError(key, 'must be a JSON object');
  }
  return value as Record<string, unknown>;
}

function string(value: unknown, key: string): string {
  if (typeof value !== 'string' || value === '') throw new ConfigError(key, 'must be a non-empty string');
  return value;
}

function integer(value: unknown, key: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new ConfigError(key, `must be an integer from ${min} to ${max}`);
  }
  return value;
}

function unique<T>(items: T[], keyOf: (item: T) => string, name: string): void {
  const seen = new Set<string>();
  for (const item of items) {
    const key = keyOf(item);
    if (seen.has(key)) throw new ConfigError(`MountPoints.*.${name}`, `${JSON.stringify(key)} is used twice`);
    seen.add(key);
  }
}
