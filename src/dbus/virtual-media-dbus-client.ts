import { EventEmitter } from 'node:events';
import dbus, { type Message, type MessageBus, Variant } from 'dbus-next';
import { DbusError, Interface, ROOT_PATH, SERVICE_NAME } from '../contract/dbus.ts';
import type { Logger } from '../log.ts';
import { boundedCall, connectBus, isAbsentPeer } from './connection.ts';
import { withCredentialsPipe } from './credentials-pipe.ts';
import { type CacheEvent, type ManagedObjects, type ObjectInterfaces, SlotCache } from './slot-cache.ts';
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

/** How D-Bus carries an object's interfaces: variants, unwrapped before they reach the cache. */
type WireInterfaces = Record<string, Record<string, Variant>>;

export interface DbusClientOptions {
  /** A bus address (`unix:path=…`); the system bus when absent. */
  address?: string;
  logger?: Logger;
}

/**
 * The VirtualMediaClient over a real bus: the bus and owner watcher in front of a SlotCache. It
 * subscribes to the service's signals, follows its owner through NameOwnerChanged, asks each new owner
 * for GetManagedObjects once, and feeds all of that to the cache (which holds no bus and decides what
 * the slots are); it also makes the method calls. When the service leaves the cache is dropped
 * (`available` false) until it comes back. A lost bus connection is re-established in the background.
 */
export class VirtualMediaDbusClient implements VirtualMediaClient {
  private bus: MessageBus | undefined;
  /** The unique name of the service's current owner; '' while nobody owns it. */
  private owner = '';
  private closed = false;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private readonly cache = new SlotCache();
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
    return this.owner !== '' && this.cache.available;
  }

  slots(): readonly SlotState[] {
    return this.cache.slots();
  }

  slot(slotId: string): SlotState | undefined {
    return this.cache.slot(slotId);
  }

  slotByEndpoint(endpointId: string): SlotState | undefined {
    return this.cache.slotByEndpoint(endpointId);
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

  async setVerifyCertificate(slotId: string, verify: boolean): Promise<void> {
    await this.invoke(slotId, Interface.Trust, 'SetVerifyCertificate', 'b', [verify]);
  }

  async addCertificate(slotId: string, pem: string): Promise<void> {
    await this.invoke(slotId, Interface.Trust, 'AddCertificate', 's', [pem]);
  }

  async removeCertificate(slotId: string, pem: string): Promise<void> {
    await this.invoke(slotId, Interface.Trust, 'RemoveCertificate', 's', [pem]);
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
    if (
      message.member === 'Completion' &&
      (message.interface === Interface.Proxy || message.interface === Interface.Legacy)
    ) {
      const slot = this.cache.slotAt(message.path);
      if (slot) this.events.emit('completion', slot.slotId, Number(message.body[0]));
      return;
    }
    const event = cacheEventOf(message);
    if (event) this.update(event);
  }

  /** Applies an event to the cache and announces the slots it changed. */
  private update(event: CacheEvent): void {
    for (const slot of this.cache.apply(event)) this.events.emit('change', slot);
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
      const managed = reply.body[0] as Record<string, WireInterfaces>;
      const objects: ManagedObjects = Object.fromEntries(
        Object.entries(managed).map(([objectPath, interfaces]) => [objectPath, unwrap(interfaces)]),
      );
      this.options.logger?.info(
        { owner, objects: Object.keys(objects).length },
        'VirtualMedia service found',
      );
      this.update({ type: 'managedObjects', objects });
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
    this.update({ type: 'ownerChanged' });
    if (wasThere) this.events.emit('lost');
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
        if (isAbsentPeer(error)) throw new VirtualMediaUnavailable(error);
        throw new VirtualMediaCallError(error.type, error.text);
      }
      throw error;
    }
    if (reply.body[0] !== true) {
      throw new VirtualMediaCallError(DbusError.InternalFailure, `${member} on ${slotId} returned false`);
    }
  }

  private async call(message: Message): Promise<Message> {
    if (!this.bus) throw new VirtualMediaUnavailable();
    return boundedCall(this.bus, message, CALL_TIMEOUT_MS, (reason) => new VirtualMediaUnavailable(reason));
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

/** The cache's view of an ObjectManager or Properties signal; undefined for any other signal. */
function cacheEventOf(message: Message): CacheEvent | undefined {
  if (message.interface === Interface.ObjectManager && message.member === 'InterfacesAdded') {
    const [path, added] = message.body as [string, WireInterfaces];
    return { type: 'interfacesAdded', path, interfaces: unwrap(added) };
  }
  if (message.interface === Interface.ObjectManager && message.member === 'InterfacesRemoved') {
    const [path, removed] = message.body as [string, string[]];
    return { type: 'interfacesRemoved', path, interfaces: removed };
  }
  if (message.interface === Interface.Properties && message.member === 'PropertiesChanged') {
    const [name, changed, invalidated] = message.body as [string, Record<string, Variant>, string[]];
    return {
      type: 'propertiesChanged',
      path: message.path,
      interface: name,
      changed: Object.fromEntries(Object.entries(changed).map(([key, variant]) => [key, variant.value])),
      invalidated,
    };
  }
  return undefined;
}

function unwrap(interfaces: WireInterfaces): ObjectInterfaces {
  return Object.fromEntries(
    Object.entries(interfaces).map(([name, properties]) => [
      name,
      Object.fromEntries(Object.entries(properties).map(([key, variant]) => [key, variant.value])),
    ]),
  );
}
