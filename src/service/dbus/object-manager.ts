import dbus, { type MessageBus } from 'dbus-next';

type Interface = InstanceType<typeof dbus.interface.Interface>;
type PropertyTable = Record<string, { name: string; signature: string; access: string }>;
type ManagedObjects = Record<string, Record<string, Record<string, InstanceType<typeof dbus.Variant>>>>;

/**
 * `org.freedesktop.DBus.ObjectManager` (dbus-next has none): exports objects below its root and
 * answers GetManagedObjects with every interface's current properties.
 */
export class ObjectManager extends dbus.interface.Interface {
  private readonly objects = new Map<string, Interface[]>();

  constructor(
    private readonly bus: MessageBus,
    readonly root: string,
  ) {
    super('org.freedesktop.DBus.ObjectManager');
    bus.export(root, this);
  }

  /** Exports `interfaces` at `path` and announces them. */
  add(path: string, interfaces: Interface[]): void {
    for (const iface of interfaces) this.bus.export(path, iface);
    this.objects.set(path, interfaces);
    this.InterfacesAdded(path, propertiesOf(interfaces));
  }

  GetManagedObjects(): ManagedObjects {
    const result: ManagedObjects = {};
    for (const [path, interfaces] of this.objects) result[path] = propertiesOf(interfaces);
    return result;
  }

  InterfacesAdded(path: string, interfaces: ManagedObjects[string]): [string, ManagedObjects[string]] {
    return [path, interfaces];
  }
}

ObjectManager.configureMembers({
  methods: { GetManagedObjects: { inSignature: '', outSignature: 'a{oa{sa{sv}}}' } },
  signals: { InterfacesAdded: { signature: 'oa{sa{sv}}' } },
});

/** Every readable property of `interfaces`, as variants keyed by interface name. */
function propertiesOf(interfaces: Interface[]): ManagedObjects[string] {
  const result: ManagedObjects[string] = {};
  for (const iface of interfaces) {
    const { $name, $properties } = iface as unknown as { $name: string; $properties?: PropertyTable };
    const values: Record<string, InstanceType<typeof dbus.Variant>> = {};
    for (const [key, property] of Object.entries($properties ?? {})) {
      const value = (iface as unknown as Record<string, unknown>)[key];
      values[property.name] = new dbus.Variant(property.signature, value);
    }
    result[$name] = values;
  }
  return result;
}
