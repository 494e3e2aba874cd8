import { Interface, SlotMode } from '../contract/dbus.ts';
import type { SlotState } from './virtual-media-client.ts';

/** One D-Bus interface's properties, as plain values (variants already unwrapped). */
export type Properties = Readonly<Record<string, unknown>>;
/** An object's interfaces and their properties, as GetManagedObjects and InterfacesAdded carry them. */
export type ObjectInterfaces = Readonly<Record<string, Properties>>;
/** GetManagedObjects' answer: every object below the root, by path. */
export type ManagedObjects = Readonly<Record<string, ObjectInterfaces>>;

/**
 * What happens to the service's objects, as the bus watcher sees it: the service's owner changed (it
 * left, or another process took the name), the current owner's GetManagedObjects answer, and its
 * ObjectManager and Properties signals.
 */
export type CacheEvent =
  | { type: 'ownerChanged' }
  | { type: 'managedObjects'; objects: ManagedObjects }
  | { type: 'interfacesAdded'; path: string; interfaces: ObjectInterfaces }
  | { type: 'interfacesRemoved'; path: string; interfaces: readonly string[] }
  | {
      type: 'propertiesChanged';
      path: string;
      interface: string;
      changed: Properties;
      invalidated: readonly string[];
    };

interface SlotView {
  /** Sorted by slot id, numbers in ids compared as numbers (Slot_2 before Slot_10). */
  list: readonly SlotState[];
  byId: ReadonlyMap<string, SlotState>;
  byEndpoint: ReadonlyMap<string, SlotState>;
}

const emptyView: SlotView = { list: Object.freeze([]), byId: new Map(), byEndpoint: new Map() };

/**
 * Slot ids in natural order: runs of digits compared as numbers (Slot_2 before Slot_10), the rest by
 * code unit. Written out rather than an `Intl.Collator`, whose collation data cost the server ~3 MiB of
 * RSS for good (`npm run bench`).
 */
export function compareSlotIds(a: string, b: string): number {
  const runs = /\d+|\D+/g;
  const left = a.match(runs) ?? [];
  const right = b.match(runs) ?? [];
  for (let i = 0; i < Math.min(left.length, right.length); i++) {
    const [x, y] = [left[i]!, right[i]!];
    if (x === y) continue;
    const numeric = /^\d/.test(x) && /^\d/.test(y);
    if (numeric && Number(x) !== Number(y)) return Number(x) - Number(y);
    return x < y ? -1 : 1;
  }
  return left.length - right.length;
}

/**
 * The server's cache of the VirtualMedia service's slots, without a bus: events go in (`apply`), frozen
 * SlotStates come out. Empty and unavailable until the first `managedObjects`; an `ownerChanged` empties
 * it again until the new owner's `managedObjects`. The sorted view is rebuilt on the first read after a
 * change, since requests read far more often than the service changes.
 */
export class SlotCache {
  private readonly objects = new Map<string, Map<string, Record<string, unknown>>>();
  private loaded = false;
  private view: SlotView | undefined;

  /** True once the current owner's objects are loaded. */
  get available(): boolean {
    return this.loaded;
  }

  /**
   * Applies one event; answers the slots it changed (each as it now is), for change notifications.
   * A removed slot is not in the answer: it no longer is anything.
   */
  apply(event: CacheEvent): readonly SlotState[] {
    switch (event.type) {
      case 'ownerChanged':
        this.loaded = false;
        this.objects.clear();
        this.view = undefined;
        return [];
      case 'managedObjects':
        this.objects.clear();
        for (const [path, interfaces] of Object.entries(event.objects)) {
          this.objects.set(path, copyInterfaces(interfaces));
        }
        this.loaded = true;
        this.view = undefined;
        return this.slots();
      case 'interfacesAdded': {
        const interfaces = this.objects.get(event.path) ?? new Map();
        for (const [name, properties] of copyInterfaces(event.interfaces)) interfaces.set(name, properties);
        this.objects.set(event.path, interfaces);
        return this.changed(event.path);
      }
      case 'interfacesRemoved': {
        const interfaces = this.objects.get(event.path);
        if (!interfaces) return [];
        for (const name of event.interfaces) interfaces.delete(name);
        if (interfaces.size > 0) return this.changed(event.path);
        this.objects.delete(event.path);
        this.view = undefined;
        return [];
      }
      case 'propertiesChanged': {
        const interfaces = this.objects.get(event.path);
        if (!interfaces) return [];
        const properties = interfaces.get(event.interface) ?? {};
        Object.assign(properties, event.changed);
        for (const key of event.invalidated) delete properties[key];
        interfaces.set(event.interface, properties);
        return this.changed(event.path);
      }
    }
  }

  /** Shared and frozen: the same array and objects until the next change. */
  slots(): readonly SlotState[] {
    return this.currentView().list;
  }

  slot(slotId: string): SlotState | undefined {
    return this.currentView().byId.get(slotId);
  }

  slotByEndpoint(endpointId: string): SlotState | undefined {
    return endpointId ? this.currentView().byEndpoint.get(endpointId) : undefined;
  }

  /** The slot whose object is at `path`; undefined for objects that are not slots (no MountPoint). */
  slotAt(path: string): SlotState | undefined {
    const interfaces = this.objects.get(path);
    return interfaces ? toSlotState(path, interfaces) : undefined;
  }

  private changed(path: string): readonly SlotState[] {
    this.view = undefined;
    const slot = this.slotAt(path);
    return slot ? [slot] : [];
  }

  private currentView(): SlotView {
    if (!this.loaded) return emptyView;
    this.view ??= slotView(this.objects);
    return this.view;
  }
}

function copyInterfaces(interfaces: ObjectInterfaces): Map<string, Record<string, unknown>> {
  return new Map(Object.entries(interfaces).map(([name, properties]) => [name, { ...properties }]));
}

function slotView(objects: ReadonlyMap<string, ReadonlyMap<string, Properties>>): SlotView {
  const list: SlotState[] = [];
  for (const [path, interfaces] of objects) {
    const slot = toSlotState(path, interfaces);
    if (slot) list.push(slot);
  }
  list.sort((a, b) => compareSlotIds(a.slotId, b.slotId));
  const byEndpoint = new Map<string, SlotState>();
  for (const slot of list) {
    if (slot.endpointId && !byEndpoint.has(slot.endpointId)) byEndpoint.set(slot.endpointId, slot);
  }
  return { list: Object.freeze(list), byId: new Map(list.map((slot) => [slot.slotId, slot])), byEndpoint };
}

/** Typed, frozen view of a slot object; undefined for objects that are not slots (no MountPoint). */
function toSlotState(path: string, interfaces: ReadonlyMap<string, Properties>): SlotState | undefined {
  const mountPoint = interfaces.get(Interface.MountPoint);
  if (!mountPoint) return undefined;
  const process = interfaces.get(Interface.Process) ?? {};
  const stats = interfaces.get(Interface.Stats) ?? {};
  const trust = interfaces.get(Interface.Trust) ?? {};
  const mode =
    Number(mountPoint.Mode ?? (path.includes('/Legacy/') ? 1 : 0)) === 1 ? SlotMode.Legacy : SlotMode.Proxy;
  return Object.freeze({
    slotId: path.slice(path.lastIndexOf('/') + 1),
    objectPath: path,
    mode,
    endpointId: String(mountPoint.EndpointId ?? ''),
    device: String(mountPoint.Device ?? ''),
    socket: String(mountPoint.Socket ?? ''),
    timeout: Number(mountPoint.Timeout ?? 0),
    blockSize: Number(mountPoint.BlockSize ?? 0),
    remainingInactivityTimeout: Number(mountPoint.RemainingInactivityTimeout ?? 0),
    imageUrl: String(mountPoint.ImageURL ?? ''),
    writeProtected: mountPoint.WriteProtected !== false,
    active: process.Active === true,
    exitCode: Number(process.ExitCode ?? -1),
    readIO: BigInt((stats.ReadIO as bigint | number | undefined) ?? 0),
    writeIO: BigInt((stats.WriteIO as bigint | number | undefined) ?? 0),
    verifyCertificate: trust.VerifyCertificate !== false,
    certificates: Object.freeze(Array.isArray(trust.Certificates) ? trust.Certificates.map(String) : []),
  });
}
