import { EventEmitter } from 'node:events';
import { readFile } from 'node:fs/promises';
import dbus, { type Message, type MessageBus, Variant } from 'dbus-next';
import { Interface, ROOT_PATH, SERVICE_NAME, SlotMode } from '../contract/dbus.ts';
import type { Logger } from '../log.ts';
import { connectBus } from './connection.ts';
import { withCredentialsPipe } from './credentials-pipe.ts';
import {
  type LegacyCredentials,
  type SlotState,
  VirtualMediaCallError,
  type VirtualMediaClient,
  VirtualMediaUnavailable,
} from './virtual-media-client.ts';

const { Message: DbusMessage, MessageType } = dbus;

const BUS_NAME = 'org.freedesktop.DBus';
const BUS_PATH = '/org/freedesktop/DBus';
/** A call the service does not answer within this bound is treated as the service being gone. */
const CALL_TIMEOUT_MS = 10_000;
const RECONNECT_DELAY_MS = 1000;

/** D-Bus errors that mean "nobody is there to answer", as opposed to a refusal by the service. */
const ABSENT_ERRORS = new Set([
  'org.freedesktop.DBus.Error.ServiceUnknown',
  'org.freedesktop.DBus.Error.NameHasNoOwner',
  'org.freedesktop.DBus.Error.NoReply',
  'org.freedesktop.DBus.Error.Disconnected',
  'org.freedesktop.DBus.Error.UnknownObject',
]);

type Properties = Record<string, unknown>;
type ObjectInterfaces = Map<string, Properties>;

export interface DbusClientOptions {
  /** A bus address (`unix:path=…`); the system bus when absent. */
  address?: string;
  logger?: Logger;
}

/**
 * The VirtualMediaClient over a real bus. One GetManagedObjects per service owner, then the cache
 * follows InterfacesAdded/InterfacesRemoved/PropertiesChanged; NameOwnerChanged tells when the
 * service leaves (cache dropped, `available` false) or comes back (cache reloaded). A lost bus
 * connection is re-established in the background.
 */
export class VirtualMediaDbusClient implements VirtualMediaClient {
  private bus: MessageBus | undefined;
  private owner = '';
  private loaded = false;
  private closed = false;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private readonly objects = new Map<string, ObjectInterfaces>();
  /** `objects` mapped to slots, rebuilt on the first read after a change: requests read far more often. */
  private view: SlotView | undefined;
  private readonly events = new EventEmitter();

  private constructor(private readonly options: DbusClientOptions) {
    this.events.setMaxListeners(0);
  }

  /**
   * Connects and loads the cache if the service is there. Neither a missing service nor an unreachable
   * bus is an error: the client reports itself unavailable (Redfish answers 503) and keeps trying.
   */
  static async connect(options: DbusClientOptions = {}): Promise<VirtualMediaDbusClient> {
    const client = new VirtualMediaDbusClient(options);
    await client.open().catch(() => undefined);
    return client;
  }

  get available(): boolean {
    return this.loaded && this.owner !== '';
  }

  slots(): readonly SlotState[] {
    return this.currentView().list;
  }

  slot(slotId: string): SlotState | undefined {
    return this.currentView().byId.get(slotId);
  }

  slotByEndpoint(endpointId: string): SlotState | undefined {
    return endpointId ? this.currentView().byEndpoint.get(endpointId) : undefined;
  }

  private currentView(): SlotView {
    if (!this.available) return emptyView;
    this.view ??= slotView(this.objects);
    return this.view;
  }

  async proxyMount(slotId: string): Promise<void> {
    await this.invoke(slotId, Interface.Proxy, 'Mount');
  }

  async proxyUnmount(slotId: string): Promise<void> {
    await this.invoke(slotId, Interface.Proxy, 'Unmount');
  }

  async legacyMount(
    slotId: string,
    url: string,
    readWrite: boolean,
    credentials?: LegacyCredentials,
  ): Promise<void> {
    if (!credentials) {
      // docs/contract.md §2: the `sbv` form with -1 means "no secret"; no pipe to create for nothing.
      await this.invoke(slotId, Interface.Legacy, 'Mount', 'sbv', [url, readWrite, new Variant('i', -1)]);
      return;
    }
    await withCredentialsPipe(credentials, (fd) =>
      this.invoke(slotId, Interface.Legacy, 'Mount', 'sbh', [url, readWrite, fd]),
    );
  }

  async legacyUnmount(slotId: string): Promise<void> {
    await this.invoke(slotId, Interface.Legacy, 'Unmount');
  }

  nextCompletion(slotId: string, signal?: AbortSignal): Promise<number> {
    return new Promise((resolve, reject) => {
      const finish = () => {
        this.events.off('completion', onCompletion);
        this.events.off('lost', onLost);
        signal?.removeEventListener('abort', onAbort);
      };
      const onCompletion = (id: string, errno: number) => {
        if (id !== slotId) return;
        finish();
        resolve(errno);
      };
      // The service leaving means no Completion will ever come for work it had started.
      const onLost = () => {
        finish();
        reject(new VirtualMediaUnavailable());
      };
      const onAbort = () => {
        finish();
        reject(signal!.reason);
      };
      if (signal?.aborted) return reject(signal.reason);
      this.events.on('completion', onCompletion);
      this.events.on('lost', onLost);
      signal?.addEventListener('abort', onAbort);
    });
  }

  onCompletion(listener: (slotId: string, errno: number) => void): () => void {
    this.events.on('completion', listener);
    return () => this.events.off('completion', listener);
  }

  onChange(listener: (slot: SlotState) => void): () => void {
    this.events.on('change', listener);
    return () => this.events.off('change', listener);
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.reconnectTimer);
    this.dropService();
    const bus = this.bus;
    this.bus = undefined;
    bus?.disconnect();
  }

  private async open(): Promise<void> {
    let bus: MessageBus;
    try {
      bus = await connectBus(this.options.address);
    } catch (error) {
      this.retryLater(error);
      throw error;
    }
    if (this.closed) return bus.disconnect();
    this.bus = bus;
    bus.on('error', (error) => this.connectionLost(bus, error));
    // dbus-next does not forward the end of the stream (the bus daemon went away) from its connection.
    (bus as unknown as { _connection: EventEmitter })._connection.on('end', () =>
      this.connectionLost(bus, new Error('the bus closed the connection')),
    );
    bus.on('message', (message: Message) => this.dispatch(message));
    try {
      await this.call(
        busMessage('AddMatch', 's', [
          `type='signal',sender='${BUS_NAME}',member='NameOwnerChanged',arg0='${SERVICE_NAME}'`,
        ]),
      );
      await this.call(
        busMessage('AddMatch', 's', [`type='signal',sender='${SERVICE_NAME}',path_namespace='${ROOT_PATH}'`]),
      );
      const reply = await this.call(busMessage('NameHasOwner', 's', [SERVICE_NAME]));
      if (reply.body[0] === true) {
        const ownerReply = await this.call(busMessage('GetNameOwner', 's', [SERVICE_NAME]));
        await this.serviceAppeared(ownerReply.body[0] as string);
      }
    } catch (error) {
      this.connectionLost(bus, error);
      throw error;
    }
  }

  private retryLater(error: unknown): void {
    if (this.closed) return;
    this.options.logger?.warn({ err: error }, 'D-Bus connection failed; retrying');
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      this.open().catch(() => undefined);
    }, RECONNECT_DELAY_MS);
  }

  private connectionLost(bus: MessageBus, error: unknown): void {
    if (this.bus !== bus || this.closed) return;
    this.bus = undefined;
    this.dropService();
    try {
      bus.disconnect();
    } catch {
      // Already torn down by the failure itself.
    }
    this.retryLater(error);
  }

  private dispatch(message: Message): void {
    if (message.type !== MessageType.SIGNAL) return;
    if (message.sender === BUS_NAME && message.member === 'NameOwnerChanged') {
      const [name, , newOwner] = message.body as [string, string, string];
      if (name !== SERVICE_NAME) return;
      this.dropService();
      if (newOwner) void this.serviceAppeared(newOwner);
      return;
    }
    // Only the current owner speaks for the service; a late signal from a dying one is ignored.
    if (!this.owner || message.sender !== this.owner || !message.path.startsWith(ROOT_PATH)) return;
    if (message.interface === Interface.ObjectManager) this.objectManagerSignal(message);
    else if (message.interface === Interface.Properties && message.member === 'PropertiesChanged')
      this.propertiesChanged(message);
    else if (
      message.member === 'Completion' &&
      (message.interface === Interface.Proxy || message.interface === Interface.Legacy)
    ) {
      const slot = this.slotAt(message.path);
      if (slot) this.events.emit('completion', slot.slotId, Number(message.body[0]));
    }
  }

  /**
   * Signals sent before the GetManagedObjects reply arrive before it (one sender, one ordered
   * stream), so replacing the cache with the reply and applying later signals on top is exact.
   */
  private async serviceAppeared(owner: string): Promise<void> {
    this.owner = owner;
    try {
      const reply = await this.call(
        new DbusMessage({
          destination: owner,
          path: ROOT_PATH,
          interface: Interface.ObjectManager,
          member: 'GetManagedObjects',
        }),
      );
      if (this.owner !== owner) return;
      this.objects.clear();
      this.view = undefined;
      const managed = reply.body[0] as Record<string, Record<string, Record<string, Variant>>>;
      for (const [objectPath, interfaces] of Object.entries(managed)) {
        this.objects.set(objectPath, toInterfaces(interfaces));
      }
      this.loaded = true;
      this.options.logger?.info({ owner, objects: this.objects.size }, 'VirtualMedia service found');
      for (const slot of this.slots()) this.events.emit('change', slot);
    } catch (error) {
      if (this.owner === owner) {
        this.options.logger?.warn({ err: error }, 'VirtualMedia service did not answer GetManagedObjects');
        this.dropService();
      }
    }
  }

  private dropService(): void {
    const wasThere = this.owner !== '';
    this.owner = '';
    this.loaded = false;
    this.objects.clear();
    this.view = undefined;
    if (wasThere) this.events.emit('lost');
  }

  private objectManagerSignal(message: Message): void {
    if (message.member === 'InterfacesAdded') {
      const [objectPath, added] = message.body as [string, Record<string, Record<string, Variant>>];
      const interfaces = this.objects.get(objectPath) ?? new Map();
      for (const [name, properties] of toInterfaces(added)) interfaces.set(name, properties);
      this.objects.set(objectPath, interfaces);
      this.changed(objectPath);
    } else if (message.member === 'InterfacesRemoved') {
      const [objectPath, removed] = message.body as [string, string[]];
      const interfaces = this.objects.get(objectPath);
      if (!interfaces) return;
      for (const name of removed) interfaces.delete(name);
      this.view = undefined;
      if (interfaces.size === 0) this.objects.delete(objectPath);
      else this.changed(objectPath);
    }
  }

  private propertiesChanged(message: Message): void {
    const [name, changed, invalidated] = message.body as [string, Record<string, Variant>, string[]];
    const interfaces = this.objects.get(message.path);
    if (!interfaces) return;
    const properties = interfaces.get(name) ?? {};
    for (const [key, value] of Object.entries(changed)) properties[key] = value.value;
    for (const key of invalidated) delete properties[key];
    interfaces.set(name, properties);
    this.changed(message.path);
  }

  private changed(objectPath: string): void {
    this.view = undefined;
    const slot = this.slotAt(objectPath);
    if (slot) this.events.emit('change', slot);
  }

  private slotAt(objectPath: string): SlotState | undefined {
    const interfaces = this.objects.get(objectPath);
    return interfaces ? toSlotState(objectPath, interfaces) : undefined;
  }

  private async invoke(
    slotId: string,
    iface: string,
    member: string,
    signature?: string,
    body?: unknown[],
  ): Promise<void> {
    const slot = this.slot(slotId);
    if (!slot || !this.available) throw new VirtualMediaUnavailable();
    let reply: Message;
    try {
      reply = await this.call(
        new DbusMessage({
          destination: SERVICE_NAME,
          path: slot.objectPath,
          interface: iface,
          member,
          ...(signature ? { signature, body } : {}),
        }),
      );
    } catch (error) {
      if (error instanceof dbus.DBusError) {
        if (ABSENT_ERRORS.has(error.type)) throw new VirtualMediaUnavailable(error);
        throw new VirtualMediaCallError(error.type, error.text);
      }
      throw error;
    }
    if (reply.body[0] !== true) {
      throw new VirtualMediaCallError(
        'xyz.openbmc_project.Common.Error.InternalFailure',
        `${member} on ${slotId} returned false`,
      );
    }
  }

  /** A method call bounded in time: dbus-next never fails a call whose peer vanished. */
  private async call(message: Message): Promise<Message> {
    const bus = this.bus;
    if (!bus) throw new VirtualMediaUnavailable();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new VirtualMediaUnavailable(new Error(`${message.member}: no reply`))),
        CALL_TIMEOUT_MS,
      );
    });
    try {
      const reply = await Promise.race([bus.call(message), timeout]);
      if (!reply) throw new VirtualMediaUnavailable(new Error(`${message.member}: empty reply`));
      return reply;
    } finally {
      clearTimeout(timer);
    }
  }
}

function busMessage(member: string, signature: string, body: unknown[]): Message {
  return new DbusMessage({
    destination: BUS_NAME,
    path: BUS_PATH,
    interface: BUS_NAME,
    member,
    signature,
    body,
  });
}

interface SlotView {
  /** Sorted by slot id, numbers in ids compared as numbers (Slot_2 before Slot_10). */
  list: readonly SlotState[];
  byId: ReadonlyMap<string, SlotState>;
  byEndpoint: ReadonlyMap<string, SlotState>;
}

const emptyView: SlotView = { list: [], byId: new Map(), byEndpoint: new Map() };
const slotIdOrder = new Intl.Collator('en', { numeric: true });

/** Frozen: every caller shares these objects until the next change. */
function slotView(objects: Map<string, ObjectInterfaces>): SlotView {
  const list: SlotState[] = [];
  for (const [objectPath, interfaces] of objects) {
    const slot = toSlotState(objectPath, interfaces);
    if (slot) list.push(Object.freeze(slot));
  }
  list.sort((a, b) => slotIdOrder.compare(a.slotId, b.slotId));
  const byEndpoint = new Map<string, SlotState>();
  for (const slot of list) {
    if (slot.endpointId && !byEndpoint.has(slot.endpointId)) byEndpoint.set(slot.endpointId, slot);
  }
  return { list: Object.freeze(list), byId: new Map(list.map((slot) => [slot.slotId, slot])), byEndpoint };
}

function toInterfaces(raw: Record<string, Record<string, Variant>>): ObjectInterfaces {
  const interfaces: ObjectInterfaces = new Map();
  for (const [name, properties] of Object.entries(raw)) {
    interfaces.set(
      name,
      Object.fromEntries(Object.entries(properties).map(([key, variant]) => [key, variant.value])),
    );
  }
  return interfaces;
}

/** Typed view of a slot object; undefined for objects that are not slots (no MountPoint). */
function toSlotState(objectPath: string, interfaces: ObjectInterfaces): SlotState | undefined {
  const mountPoint = interfaces.get(Interface.MountPoint);
  if (!mountPoint) return undefined;
  const process = interfaces.get(Interface.Process) ?? {};
  const stats = interfaces.get(Interface.Stats) ?? {};
  const mode =
    Number(mountPoint.Mode ?? (objectPath.includes('/Legacy/') ? 1 : 0)) === 1
      ? SlotMode.Legacy
      : SlotMode.Proxy;
  return {
    slotId: objectPath.slice(objectPath.lastIndexOf('/') + 1),
    objectPath,
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
  };
}

/** `--bus-address` if given, else the embedded stack's `<state>/dbus-address`, else none (the system bus). */
export async function chooseBusAddress(
  flag: string | undefined,
  addressFile: string,
): Promise<string | undefined> {
  if (flag) return flag;
  const text = await readFile(addressFile, 'utf8').catch(() => '');
  return text.trim() || undefined;
}
