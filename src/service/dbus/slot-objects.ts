import fs from 'node:fs';
import dbus, { type Message, type MessageBus } from 'dbus-next';
import { DbusError, Interface, SlotMode, slotPath } from '../../contract/dbus.ts';
import { PrecheckError } from '../errors.ts';
import type { Slot, SlotStatus } from '../slot.ts';
import { MAX_CERTIFICATES, normalizeCertificate, type SlotTrust, type TrustStore } from '../trust.ts';
import type { ObjectManager } from './object-manager.ts';

const { Interface: DbusInterface } = dbus.interface;
const READ = 'read' as const;

/** What a Mount call asks for; Proxy.Mount carries nothing, Legacy.Mount the rest. */
export interface MountArguments {
  imageUrl?: string;
  readWrite?: boolean;
  /** Read end of the `user\0password\0` pipe; whoever receives it owns (closes) it. */
  credentialsFd?: number;
}

/** Starts a mount on a slot or throws PrecheckError; the service decides what mounting means. */
export type MountStarter = (slot: Slot, args: MountArguments) => void;

abstract class SlotInterface extends DbusInterface {
  constructor(
    name: string,
    protected readonly slot: Slot,
  ) {
    super(name);
  }
}

class MountPointInterface extends SlotInterface {
  get EndpointId() {
    return this.slot.config.endpointId;
  }
  get Mode() {
    return this.slot.config.mode;
  }
  get Device() {
    return this.slot.config.nbdDevice;
  }
  get Socket() {
    return this.slot.config.unixSocket;
  }
  get Timeout() {
    return this.slot.config.timeout;
  }
  get BlockSize() {
    return this.slot.config.blockSize;
  }
  get RemainingInactivityTimeout() {
    return this.slot.status.remainingInactivityTimeout;
  }
  get ImageURL() {
    return this.slot.status.imageUrl;
  }
  get WriteProtected() {
    return this.slot.status.writeProtected;
  }
}
MountPointInterface.configureMembers({
  properties: {
    EndpointId: { signature: 's', access: READ },
    Mode: { signature: 'y', access: READ },
    Device: { signature: 's', access: READ },
    Socket: { signature: 's', access: READ },
    Timeout: { signature: 'q', access: READ },
    BlockSize: { signature: 'q', access: READ },
    RemainingInactivityTimeout: { signature: 'q', access: READ },
    ImageURL: { signature: 's', access: READ },
    WriteProtected: { signature: 'b', access: READ },
  },
});

class ProcessInterface extends SlotInterface {
  get Active() {
    return this.slot.status.active;
  }
  get ExitCode() {
    return this.slot.status.exitCode;
  }
}
ProcessInterface.configureMembers({
  properties: { Active: { signature: 'b', access: READ }, ExitCode: { signature: 'i', access: READ } },
});

class StatsInterface extends SlotInterface {
  get ReadIO() {
    return this.slot.status.readIO;
  }
  get WriteIO() {
    return this.slot.status.writeIO;
  }
}
StatsInterface.configureMembers({
  properties: { ReadIO: { signature: 't', access: READ }, WriteIO: { signature: 't', access: READ } },
});

/** Proxy and Legacy share Unmount and Completion; only Mount differs. */
abstract class ModeInterface extends SlotInterface {
  constructor(
    name: string,
    slot: Slot,
    protected readonly startMount: MountStarter,
  ) {
    super(name, slot);
  }

  Unmount(): boolean {
    return asDbusCall(() => this.slot.unmount());
  }

  Completion(errno: number): number {
    return errno;
  }
}

class ProxyInterface extends ModeInterface {
  Mount(): boolean {
    return asDbusCall(() => this.startMount(this.slot, {}));
  }
}
ProxyInterface.configureMembers({
  methods: { Mount: { outSignature: 'b' }, Unmount: { outSignature: 'b' } },
  signals: { Completion: { signature: 'i' } },
});

class LegacyInterface extends ModeInterface {
  /** `sbh`; the `sbv` form arrives through `legacyMountVariantHandler` and ends here too. */
  Mount(imageUrl: string, readWrite: boolean, credentialsFd: number | undefined): boolean {
    return asDbusCall(() => {
      try {
        this.startMount(this.slot, { imageUrl, readWrite, credentialsFd });
      } catch (error) {
        if (credentialsFd !== undefined) fs.closeSync(credentialsFd);
        throw error;
      }
    });
  }
}
LegacyInterface.configureMembers({
  methods: { Mount: { inSignature: 'sbh', outSignature: 'b' }, Unmount: { outSignature: 'b' } },
  signals: { Completion: { signature: 'i' } },
});

/**
 * What a Legacy slot's https:// source trusts (src/service/trust.ts): read as properties, changed through
 * methods whose refusals are D-Bus errors (InvalidArgument, ResourceNotFound). Each change is saved
 * before it is published and applies from the next mount on.
 */
class TrustInterface extends SlotInterface {
  constructor(
    name: string,
    slot: Slot,
    private readonly store: TrustStore,
  ) {
    super(name, slot);
  }

  private get trust(): SlotTrust {
    return this.store.get(this.slot.config.slotId);
  }

  get VerifyCertificate() {
    return this.trust.verifyCertificate;
  }
  get Certificates() {
    return [...this.trust.certificates];
  }

  SetVerifyCertificate(verify: boolean): Promise<boolean> {
    return this.change(() => ({ ...this.trust, verifyCertificate: verify }));
  }

  /** Adds a CA certificate (PEM); adding one already there changes nothing. */
  AddCertificate(pem: string): Promise<boolean> {
    return this.change(() => {
      const certificate = normalizeCertificate(pem);
      const { certificates } = this.trust;
      if (certificates.includes(certificate)) return this.trust;
      if (certificates.length >= MAX_CERTIFICATES) {
        throw PrecheckError.invalid(`a slot trusts at most ${MAX_CERTIFICATES} certificates`);
      }
      return { ...this.trust, certificates: [...certificates, certificate] };
    });
  }

  RemoveCertificate(pem: string): Promise<boolean> {
    return this.change(() => {
      const certificate = normalizeCertificate(pem);
      if (!this.trust.certificates.includes(certificate)) {
        throw new PrecheckError(DbusError.ResourceNotFound, 'the slot does not trust that certificate');
      }
      return { ...this.trust, certificates: this.trust.certificates.filter((c) => c !== certificate) };
    });
  }

  private async change(next: () => SlotTrust): Promise<boolean> {
    let trust: SlotTrust;
    asDbusCall(() => {
      trust = next();
    });
    await this.store.set(this.slot.config.slotId, trust!);
    DbusInterface.emitPropertiesChanged(
      this,
      { VerifyCertificate: this.VerifyCertificate, Certificates: this.Certificates },
      [],
    );
    return true;
  }
}
TrustInterface.configureMembers({
  properties: {
    VerifyCertificate: { signature: 'b', access: READ },
    Certificates: { signature: 'as', access: READ },
  },
  methods: {
    SetVerifyCertificate: { inSignature: 'b', outSignature: 'b' },
    AddCertificate: { inSignature: 's', outSignature: 'b' },
    RemoveCertificate: { inSignature: 's', outSignature: 'b' },
  },
});

/** Runs a Mount/Unmount precheck; its PrecheckError becomes the D-Bus error the caller sees. */
function asDbusCall(start: () => void): boolean {
  try {
    start();
    return true;
  } catch (error) {
    if (error instanceof PrecheckError) throw new dbus.DBusError(error.dbusName, error.message);
    throw new dbus.DBusError(DbusError.InternalFailure, (error as Error).message);
  }
}

/** Which interface publishes each SlotStatus field, under which property name. */
const statusProperties: Record<keyof SlotStatus, ['mountPoint' | 'process' | 'stats', string]> = {
  imageUrl: ['mountPoint', 'ImageURL'],
  writeProtected: ['mountPoint', 'WriteProtected'],
  remainingInactivityTimeout: ['mountPoint', 'RemainingInactivityTimeout'],
  active: ['process', 'Active'],
  exitCode: ['process', 'ExitCode'],
  readIO: ['stats', 'ReadIO'],
  writeIO: ['stats', 'WriteIO'],
};

/**
 * Exports one slot's object (MountPoint, Process, Stats, its mode interface and on a Legacy slot Trust) through the
 * ObjectManager, and turns the slot's events into PropertiesChanged and Completion signals.
 */
export function exportSlot(
  objectManager: ObjectManager,
  slot: Slot,
  startMount: MountStarter,
  trust: TrustStore,
): { path: string; legacyMount?: LegacyMount } {
  const path = slotPath(slot.config.mode, slot.config.slotId);
  const mountPoint = new MountPointInterface(Interface.MountPoint, slot);
  const process = new ProcessInterface(Interface.Process, slot);
  const stats = new StatsInterface(Interface.Stats, slot);
  const mode =
    slot.config.mode === SlotMode.Proxy
      ? new ProxyInterface(Interface.Proxy, slot, startMount)
      : new LegacyInterface(Interface.Legacy, slot, startMount);
  const published = { mountPoint, process, stats };
  const legacyOnly =
    mode instanceof LegacyInterface ? [new TrustInterface(Interface.Trust, slot, trust)] : [];
  objectManager.add(path, [mountPoint, process, stats, mode, ...legacyOnly]);

  slot.on('changed', (changes) => {
    const perInterface = new Map<SlotInterface, Record<string, unknown>>();
    for (const [field, value] of Object.entries(changes)) {
      const [name, property] = statusProperties[field as keyof SlotStatus];
      const iface = published[name];
      perInterface.set(iface, { ...perInterface.get(iface), [property]: value });
    }
    for (const [iface, properties] of perInterface) {
      DbusInterface.emitPropertiesChanged(iface, properties, []);
    }
  });
  slot.on('completion', (errno) => mode.Completion(errno));
  if (mode instanceof LegacyInterface) return { path, legacyMount: mode.Mount.bind(mode) };
  return { path };
}

/** Legacy.Mount of one exported slot, as the `sbv` handler calls it. */
export type LegacyMount = (
  imageUrl: string,
  readWrite: boolean,
  credentialsFd: number | undefined,
) => boolean;

/**
 * dbus-next dispatches a method by its exact input signature, so the `sbv` form of Legacy.Mount
 * (variant holding `h`, or `i` = -1 for no secret — the design doc's and older daemon's form) is
 * caught here, before that dispatch, and handed to the same Mount as `sbh`.
 */
export function legacyMountVariantHandler(bus: MessageBus, legacyMounts: Map<string, LegacyMount>) {
  return (message: Message): boolean => {
    const legacyMount = legacyMounts.get(message.path);
    if (
      !legacyMount ||
      message.interface !== Interface.Legacy ||
      message.member !== 'Mount' ||
      message.signature !== 'sbv'
    ) {
      return false;
    }
    const [imageUrl, readWrite, secret] = message.body as [
      string,
      boolean,
      InstanceType<typeof dbus.Variant>,
    ];
    let reply: Message;
    try {
      const started = legacyMount(imageUrl, readWrite, credentialsFdFromVariant(secret));
      reply = dbus.Message.newMethodReturn(message, 'b', [started]);
    } catch (error) {
      const { type, text } = error as InstanceType<typeof dbus.DBusError>;
      // dbus-next's typings declare the first argument as string; it is the message being answered.
      reply = dbus.Message.newError(message as unknown as string, type, text);
    }
    bus.send(reply);
    return true;
  };
}

function credentialsFdFromVariant(secret: InstanceType<typeof dbus.Variant>): number | undefined {
  if (secret.signature === 'h') return secret.value as number;
  if (secret.signature === 'i' && secret.value === -1) return undefined;
  throw new dbus.DBusError(
    DbusError.InvalidArgument,
    'the secret must be a variant holding a Unix fd (h) or the integer -1 for none',
  );
}
