import dbus, { type Message, type MessageBus, Variant } from 'dbus-next';
import { type BootSettings, HostInterface, HostPath, HostService } from '../contract/host.ts';
import type { Logger } from '../log.ts';
import { boundedCall, connectBus, isAbsentPeer } from './connection.ts';

const { Message: DbusMessage } = dbus;
const PROPERTIES = 'org.freedesktop.DBus.Properties';
const CALL_TIMEOUT_MS = 10_000;

/** What the server reads of the host for `Systems/system`; each part is absent if no service answers. */
export interface HostView {
  /** `CurrentHostState`; undefined when no host state service is on the bus. */
  hostState?: string;
  /** The boot override; undefined when no settings service is on the bus. */
  boot?: BootSettings;
}

/** The host's power and boot override over D-Bus (docs/contract.md §3a), as bmcweb drives them. */
export interface HostControl {
  read(): Promise<HostView>;
  requestHostTransition(transition: string): Promise<void>;
  requestChassisTransition(transition: string): Promise<void>;
  /** Writes the changed settings in bmcweb's order: Source, Mode, Type, then Enabled and one_time. */
  setBoot(change: Partial<BootSettings>): Promise<void>;
  close(): Promise<void>;
}

/** Nobody on the bus answers for the host (or the bus itself is gone). */
export class HostUnavailable extends Error {
  constructor(cause?: unknown) {
    super('no host state service on D-Bus', { cause });
    this.name = 'HostUnavailable';
  }
}

/** The host's service refused a write; `dbusName` says why (InvalidArgument, NotAllowed, …). */
export class HostCallError extends Error {
  constructor(
    readonly dbusName: string,
    message: string,
  ) {
    super(message);
    this.name = 'HostCallError';
  }
}

/** The HostControl of a server without a bus: every part of the host is absent. */
export const absentHost: HostControl = Object.freeze({
  read: async () => ({}),
  requestHostTransition: () => Promise.reject(new HostUnavailable()),
  requestChassisTransition: () => Promise.reject(new HostUnavailable()),
  setBoot: () => Promise.reject(new HostUnavailable()),
  close: () => Promise.resolve(),
});

/**
 * HostControl over a real bus. It keeps no cache: Systems/system is read rarely and must show what the
 * host's services say now. A lost connection is opened again on the next call.
 */
export class HostControlDbusClient implements HostControl {
  private bus: Promise<MessageBus> | undefined;

  constructor(private readonly options: { address?: string; logger?: Logger } = {}) {}

  async read(): Promise<HostView> {
    const [host, source, mode, type, enabled, oneTime] = await Promise.all([
      this.getAll(HostService.host, HostPath.host, HostInterface.host),
      this.get(HostService.settings, HostPath.boot, HostInterface.bootSource, 'BootSource'),
      this.get(HostService.settings, HostPath.boot, HostInterface.bootMode, 'BootMode'),
      this.get(HostService.settings, HostPath.boot, HostInterface.bootType, 'BootType'),
      this.get(HostService.settings, HostPath.boot, HostInterface.enable, 'Enabled'),
      this.get(HostService.settings, HostPath.bootOneTime, HostInterface.enable, 'Enabled'),
    ]);
    const view: HostView = {};
    if (typeof host?.CurrentHostState === 'string') view.hostState = host.CurrentHostState;
    if (typeof source === 'string' && typeof enabled === 'boolean') {
      view.boot = {
        source,
        mode: typeof mode === 'string' ? mode : '',
        type: typeof type === 'string' ? type : '',
        enabled,
        oneTime: oneTime === true,
      };
    }
    return view;
  }

  requestHostTransition(transition: string): Promise<void> {
    return this.set(
      HostService.host,
      HostPath.host,
      HostInterface.host,
      'RequestedHostTransition',
      's',
      transition,
    );
  }

  requestChassisTransition(transition: string): Promise<void> {
    return this.set(
      HostService.chassis,
      HostPath.chassis,
      HostInterface.chassis,
      'RequestedPowerTransition',
      's',
      transition,
    );
  }

  async setBoot(change: Partial<BootSettings>): Promise<void> {
    const { settings } = HostService;
    if (change.source !== undefined)
      await this.set(settings, HostPath.boot, HostInterface.bootSource, 'BootSource', 's', change.source);
    if (change.mode !== undefined)
      await this.set(settings, HostPath.boot, HostInterface.bootMode, 'BootMode', 's', change.mode);
    if (change.type !== undefined)
      await this.set(settings, HostPath.boot, HostInterface.bootType, 'BootType', 's', change.type);
    if (change.enabled !== undefined)
      await this.set(settings, HostPath.boot, HostInterface.enable, 'Enabled', 'b', change.enabled);
    if (change.oneTime !== undefined)
      await this.set(settings, HostPath.bootOneTime, HostInterface.enable, 'Enabled', 'b', change.oneTime);
  }

  async close(): Promise<void> {
    const bus = this.bus;
    this.bus = undefined;
    (await bus?.catch(() => undefined))?.disconnect();
  }

  /** A property, or undefined when its service or object is not there. */
  private async get(service: string, path: string, iface: string, name: string): Promise<unknown> {
    const reply = await this.call(service, path, 'Get', 'ss', [iface, name]).catch(absentAsUndefined);
    return (reply?.body[0] as Variant | undefined)?.value;
  }

  private async getAll(
    service: string,
    path: string,
    iface: string,
  ): Promise<Record<string, unknown> | undefined> {
    const reply = await this.call(service, path, 'GetAll', 's', [iface]).catch(absentAsUndefined);
    if (!reply) return undefined;
    const properties = reply.body[0] as Record<string, Variant>;
    return Object.fromEntries(Object.entries(properties).map(([key, variant]) => [key, variant.value]));
  }

  private async set(
    service: string,
    path: string,
    iface: string,
    name: string,
    signature: 's' | 'b',
    value: string | boolean,
  ): Promise<void> {
    await this.call(service, path, 'Set', 'ssv', [iface, name, new Variant(signature, value)]);
  }

  private async call(
    destination: string,
    path: string,
    member: string,
    signature: string,
    body: unknown[],
  ): Promise<Message> {
    const bus = await this.connection();
    const message = new DbusMessage({ destination, path, interface: PROPERTIES, member, signature, body });
    try {
      return await boundedCall(bus, message, CALL_TIMEOUT_MS, (reason) => new HostUnavailable(reason));
    } catch (error) {
      if (error instanceof dbus.DBusError) {
        if (isAbsentPeer(error)) throw new HostUnavailable(error);
        throw new HostCallError(error.type, error.text);
      }
      throw error;
    }
  }

  private connection(): Promise<MessageBus> {
    if (!this.bus) {
      const opening = connectBus(this.options.address);
      this.bus = opening;
      opening.then(
        (bus) =>
          bus.on('error', (error) => {
            this.options.logger?.warn({ err: error }, 'host D-Bus connection lost');
            if (this.bus === opening) this.bus = undefined;
          }),
        () => {
          if (this.bus === opening) this.bus = undefined;
        },
      );
    }
    return this.bus.catch((error) => {
      throw new HostUnavailable(error);
    });
  }
}

function absentAsUndefined(error: unknown): undefined {
  if (error instanceof HostUnavailable) return undefined;
  // A service that is there but lacks the property or interface (an older settings daemon).
  if (error instanceof HostCallError) return undefined;
  throw error;
}
