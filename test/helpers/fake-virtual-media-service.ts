import fs from 'node:fs';
import dbus, { type Message, type MessageBus } from 'dbus-next';
import {
  DbusError,
  Interface,
  ROOT_PATH,
  SERVICE_NAME,
  SlotMode,
  slotPath,
} from '../../src/contract/dbus.ts';
import { connectBus } from '../../src/dbus/connection.ts';

const { Message: DbusMessage, Variant, MessageType } = dbus;

/** D-Bus signatures of the slot properties (docs/contract.md §2), so the fake marshals exactly what the real one does. */
const signatures: Record<string, Record<string, string>> = {
  [Interface.MountPoint]: {
    EndpointId: 's',
    Mode: 'y',
    Device: 's',
    Socket: 's',
    Timeout: 'q',
    BlockSize: 'q',
    RemainingInactivityTimeout: 'q',
    ImageURL: 's',
    WriteProtected: 'b',
  },
  [Interface.Process]: { Active: 'b', ExitCode: 'i' },
  [Interface.Stats]: { ReadIO: 't', WriteIO: 't' },
};

export interface MountCall {
  slotId: string;
  interface: string;
  member: string;
  signature: string;
  url?: string;
  readWrite?: boolean;
  /** What the credentials fd carried, read to EOF; null for the `sbv` -1 form. */
  secret?: Buffer | null;
}

/**
 * A small stand-in for the VirtualMedia service: just the D-Bus surface of docs/contract.md §2, driven by the
 * test (it decides when Completion comes and with which errno). Lets the client be tested alone.
 */
export class FakeVirtualMediaService {
  readonly calls: MountCall[] = [];
  /** Set to a D-Bus error name to make the next Mount fail its precheck. */
  failNextMount: string | undefined;
  private readonly objects = new Map<string, Record<string, Record<string, unknown>>>();

  private constructor(readonly bus: MessageBus) {}

  static async start(address: string, slots: Array<[string, SlotMode]>): Promise<FakeVirtualMediaService> {
    const bus = await connectBus(address);
    const fake = new FakeVirtualMediaService(bus);
    for (const [slotId, mode] of slots) fake.objects.set(slotPath(mode, slotId), fake.initial(slotId, mode));
    bus.addMethodHandler((message: Message) => fake.handle(message));
    await bus.requestName(SERVICE_NAME, 0);
    return fake;
  }

  stop(): void {
    this.bus.disconnect();
  }

  /** Changes properties the way the service does: cache and PropertiesChanged. */
  set(slotId: string, iface: string, changes: Record<string, unknown>): void {
    const objectPath = this.pathOf(slotId);
    Object.assign(this.objects.get(objectPath)![iface]!, changes);
    this.bus.send(
      DbusMessage.newSignal(objectPath, Interface.Properties, 'PropertiesChanged', 'sa{sv}as', [
        iface,
        this.variants(iface, changes),
        [],
      ]),
    );
  }

  complete(slotId: string, errno: number): void {
    const objectPath = this.pathOf(slotId);
    const iface = objectPath.includes('/Legacy/') ? Interface.Legacy : Interface.Proxy;
    this.bus.send(DbusMessage.newSignal(objectPath, iface, 'Completion', 'i', [errno]));
  }

  addSlot(slotId: string, mode: SlotMode): void {
    const objectPath = slotPath(mode, slotId);
    const interfaces = this.initial(slotId, mode);
    this.objects.set(objectPath, interfaces);
    this.bus.send(
      DbusMessage.newSignal(ROOT_PATH, Interface.ObjectManager, 'InterfacesAdded', 'oa{sa{sv}}', [
        objectPath,
        this.marshalObject(interfaces),
      ]),
    );
  }

  removeSlot(slotId: string): void {
    const objectPath = this.pathOf(slotId);
    const names = Object.keys(this.objects.get(objectPath)!);
    this.objects.delete(objectPath);
    this.bus.send(
      DbusMessage.newSignal(ROOT_PATH, Interface.ObjectManager, 'InterfacesRemoved', 'oas', [
        objectPath,
        names,
      ]),
    );
  }

  private initial(slotId: string, mode: SlotMode): Record<string, Record<string, unknown>> {
    const index = slotId.replace(/\D/g, '');
    return {
      [Interface.MountPoint]: {
        EndpointId: mode === SlotMode.Proxy ? `/nbd/${index}` : '',
        Mode: mode,
        Device: `/dev/nbd${index}`,
        Socket: `/run/vm/nbd${index}.sock`,
        Timeout: mode === SlotMode.Proxy ? 30 : 90,
        BlockSize: 512,
        RemainingInactivityTimeout: 0,
        ImageURL: '',
        WriteProtected: true,
      },
      [Interface.Process]: { Active: false, ExitCode: -1 },
      [Interface.Stats]: { ReadIO: 0n, WriteIO: 0n },
      [mode === SlotMode.Proxy ? Interface.Proxy : Interface.Legacy]: {},
    };
  }

  private pathOf(slotId: string): string {
    const found = [...this.objects.keys()].find((p) => p.endsWith(`/${slotId}`));
    if (!found) throw new Error(`no slot ${slotId}`);
    return found;
  }

  private variants(iface: string, properties: Record<string, unknown>): Record<string, unknown> {
    return Object.fromEntries(
      Object.entries(properties).map(([key, value]) => [key, new Variant(signatures[iface]![key]!, value)]),
    );
  }

  private marshalObject(interfaces: Record<string, Record<string, unknown>>): Record<string, unknown> {
    return Object.fromEntries(
      Object.entries(interfaces).map(([iface, properties]) => [iface, this.variants(iface, properties)]),
    );
  }

  private handle(message: Message): boolean {
    if (message.type !== MessageType.METHOD_CALL) return false;
    if (message.path === ROOT_PATH && message.member === 'GetManagedObjects') {
      const body = Object.fromEntries(
        [...this.objects].map(([objectPath, interfaces]) => [objectPath, this.marshalObject(interfaces)]),
      );
      this.bus.send(DbusMessage.newMethodReturn(message, 'a{oa{sa{sv}}}', [body]));
      return true;
    }
    const interfaces = this.objects.get(message.path);
    if (!interfaces || !(message.interface in interfaces)) return false;
    const call: MountCall = {
      slotId: message.path.slice(message.path.lastIndexOf('/') + 1),
      interface: message.interface,
      member: message.member,
      signature: message.signature ?? '',
    };
    if (message.member === 'Mount' && message.interface === Interface.Legacy) {
      const [url, readWrite, secret] = message.body as [string, boolean, unknown];
      call.url = url;
      call.readWrite = readWrite;
      call.secret = message.signature === 'sbh' ? readToEnd(secret as number) : null;
    }
    this.calls.push(call);
    if (this.failNextMount && message.member === 'Mount') {
      const name = this.failNextMount;
      this.failNextMount = undefined;
      this.bus.send(DbusMessage.newError(message as never, name, 'refused by the fake'));
      return true;
    }
    if (message.member === 'Mount' && interfaces[Interface.Process]!.Active) {
      this.bus.send(DbusMessage.newError(message as never, DbusError.Busy, 'already mounted'));
      return true;
    }
    this.bus.send(DbusMessage.newMethodReturn(message, 'b', [true]));
    return true;
  }
}

function readToEnd(fd: number): Buffer {
  const chunks: Buffer[] = [];
  const buffer = Buffer.alloc(2048);
  for (;;) {
    const n = fs.readSync(fd, buffer);
    if (n === 0) break;
    chunks.push(Buffer.from(buffer.subarray(0, n)));
  }
  fs.closeSync(fd);
  return Buffer.concat(chunks);
}

export { SlotMode };
