import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import dbus from 'dbus-next';
import { DbusError, Interface, ROOT_PATH, SlotMode, slotPath } from '../../src/contract/dbus.ts';
import { withCredentialsPipe } from '../../src/dbus/credentials-pipe.ts';
import { type ServiceHarness, startServiceHarness } from '../helpers/service-harness.ts';

type Members = Record<string, string>;
interface Introspected {
  properties: Members;
  methods: Members;
  signals: Members;
}

/** The contract of docs/contract.md §2: property → type, method → `in→out`, signal → args. */
const common: Record<string, Introspected> = {
  [Interface.MountPoint]: {
    properties: {
      EndpointId: 's read',
      Mode: 'y read',
      Device: 's read',
      Socket: 's read',
      Timeout: 'q read',
      BlockSize: 'q read',
      RemainingInactivityTimeout: 'q read',
      ImageURL: 's read',
      WriteProtected: 'b read',
    },
    methods: {},
    signals: {},
  },
  [Interface.Process]: { properties: { Active: 'b read', ExitCode: 'i read' }, methods: {}, signals: {} },
  [Interface.Stats]: { properties: { ReadIO: 't read', WriteIO: 't read' }, methods: {}, signals: {} },
};
const proxy = {
  properties: {},
  methods: { Mount: '→b', Unmount: '→b' },
  signals: { Completion: 'i' },
};
const legacy = { ...proxy, methods: { Mount: 'sbh→b', Unmount: '→b' } };
/** Ours, on Legacy slots only: the https:// source's trust (VerifyCertificate, Certificates). */
const trust = {
  properties: { VerifyCertificate: 'b read', Certificates: 'as read' },
  methods: { SetVerifyCertificate: 'b→b', AddCertificate: 's→b', RemoveCertificate: 's→b' },
  signals: {},
};

/** Our interfaces in introspection XML, reduced to names and signatures. */
function parseIntrospection(xml: string): Record<string, Introspected> {
  const result: Record<string, Introspected> = {};
  for (const [, name, body] of xml.matchAll(/<interface name="([^"]+)">([\s\S]*?)<\/interface>/g)) {
    if (!name!.startsWith('xyz.') && name !== Interface.ObjectManager) continue;
    const entry: Introspected = { properties: {}, methods: {}, signals: {} };
    for (const [, attrs] of body!.matchAll(/<property ([^>]*?)\/?>/g)) {
      entry.properties[attr(attrs!, 'name')] = `${attr(attrs!, 'type')} ${attr(attrs!, 'access')}`;
    }
    for (const [, kind, member, inner] of body!.matchAll(
      /<(method|signal) name="([^"]+)"(?:\/>|>([\s\S]*?)<\/\1>)/g,
    )) {
      const args = [...(inner ?? '').matchAll(/<arg ([^>]*?)\/?>/g)].map(([, a]) => a!);
      const types = (direction: string) =>
        args
          .filter((a) => (a.match(/direction="(\w+)"/)?.[1] ?? 'in') === direction)
          .map((a) => attr(a, 'type'))
          .join('');
      if (kind === 'method') entry.methods[member!] = `${types('in')}→${types('out')}`;
      else entry.signals[member!] = args.map((a) => attr(a, 'type')).join('');
    }
    result[name!] = entry;
  }
  return result;
}

function attr(attrs: string, name: string): string {
  return attrs.match(new RegExp(`${name}="([^"]*)"`))?.[1] ?? '';
}

describe('D-Bus objects of the VirtualMedia service', () => {
  let harness: ServiceHarness;
  before(async () => {
    harness = await startServiceHarness();
  });
  after(() => harness?.stop());

  const introspect = async (path: string) => {
    const [xml] = (await harness.call(path, 'org.freedesktop.DBus.Introspectable', 'Introspect')) as [string];
    return xml;
  };

  test('introspection of every object matches the D-Bus contract', async () => {
    const rootXml = await introspect(ROOT_PATH);
    assert.deepEqual(parseIntrospection(rootXml)[Interface.ObjectManager], {
      properties: {},
      methods: { GetManagedObjects: '→a{oa{sa{sv}}}' },
      signals: { InterfacesAdded: 'oa{sa{sv}}' },
    });
    assert.match(rootXml, /<node name="Proxy"\/>/);
    assert.match(rootXml, /<node name="Legacy"\/>/);
    for (const [mode, ids, modeInterfaces] of [
      [SlotMode.Proxy, ['Slot_0', 'Slot_1'], { [Interface.Proxy]: proxy }],
      [SlotMode.Legacy, ['Slot_2', 'Slot_3'], { [Interface.Legacy]: legacy, [Interface.Trust]: trust }],
    ] as const) {
      for (const id of ids) {
        const parsed = parseIntrospection(await introspect(slotPath(mode, id)));
        assert.deepEqual(parsed, { ...common, ...modeInterfaces }, `${id}`);
      }
    }
  });

  test('GetManagedObjects lists the default slots with typed properties', async () => {
    const [objects] = (await harness.call(ROOT_PATH, Interface.ObjectManager, 'GetManagedObjects')) as [
      Record<string, Record<string, Record<string, InstanceType<typeof dbus.Variant>>>>,
    ];
    assert.deepEqual(Object.keys(objects).sort(), [
      slotPath(SlotMode.Legacy, 'Slot_2'),
      slotPath(SlotMode.Legacy, 'Slot_3'),
      slotPath(SlotMode.Proxy, 'Slot_0'),
      slotPath(SlotMode.Proxy, 'Slot_1'),
    ]);
    const slot0 = objects[slotPath(SlotMode.Proxy, 'Slot_0')]!;
    const mountPoint = slot0[Interface.MountPoint]!;
    assert.deepEqual(
      Object.fromEntries(Object.entries(mountPoint).map(([k, v]) => [k, `${v.signature}:${v.value}`])),
      {
        EndpointId: 's:/nbd/0',
        Mode: 'y:0',
        Device: 's:/dev/nbd0',
        Socket: `s:${harness.runtimeDir}/nbd0.sock`,
        Timeout: 'q:30',
        BlockSize: 'q:512',
        RemainingInactivityTimeout: 'q:0',
        ImageURL: 's:',
        WriteProtected: 'b:true',
      },
    );
    assert.equal(objects[slotPath(SlotMode.Legacy, 'Slot_3')]![Interface.MountPoint]!.Timeout!.value, 90);
    assert.equal(objects[slotPath(SlotMode.Legacy, 'Slot_3')]![Interface.MountPoint]!.EndpointId!.value, '');
    assert.deepEqual(Object.keys(slot0).sort(), [
      Interface.MountPoint,
      Interface.Process,
      Interface.Proxy,
      Interface.Stats,
    ]);
  });

  const legacyPath = slotPath(SlotMode.Legacy, 'Slot_3');
  const rejectsWith = async (call: Promise<unknown>, name: string, message?: RegExp) =>
    assert.rejects(call, (error: InstanceType<typeof dbus.DBusError>) => {
      assert.equal(error.type, name);
      if (message) assert.match(error.text, message);
      return true;
    });

  test('Legacy.Mount refuses everything but https:// and smb:// with InvalidArgument, in both signatures', async () => {
    const since = harness.signals.length;
    for (const [url, message] of [
      ['http://127.0.0.1/a.iso'],
      ['ftp://h/a.iso'],
      ['file:///etc/passwd'],
      ['nfs://h/a'],
      ['not a url'],
      ['smb://h/share/../a.iso', /^the image URL must not contain \. or \.\. path segments$/],
      ['smb://h/share', /names a share and a file in it/],
      ['https://127.0.0.1/a b.iso', /spaces or control characters/],
      ['https://127.0.0.1/a\r\n.iso', /spaces or control characters/],
      ['https://user:pw@127.0.0.1/a.iso', /credentials/],
    ] as const) {
      await rejectsWith(
        harness.call(legacyPath, Interface.Legacy, 'Mount', 'sbv', [url, false, new dbus.Variant('i', -1)]),
        DbusError.InvalidArgument,
        message,
      );
    }
    await withCredentialsPipe({ user: 'u', password: 'p' }, (fd) =>
      rejectsWith(
        harness.call(legacyPath, Interface.Legacy, 'Mount', 'sbh', ['http://127.0.0.1/a.iso', false, fd]),
        DbusError.InvalidArgument,
      ),
    );
    await rejectsWith(
      harness.call(legacyPath, Interface.Legacy, 'Mount', 'sbv', [
        'https://127.0.0.1/a.iso',
        false,
        new dbus.Variant('i', 7),
      ]),
      DbusError.InvalidArgument,
    );
    assert.deepEqual(await harness.getAll(legacyPath, Interface.Process), { Active: false, ExitCode: 0 });
    assert.equal(harness.signals.slice(since).filter((s) => s.member === 'Completion').length, 0);
  });

  test('sbv with a variant fd: the secret arrives through fd passing', async () => {
    // Nothing listens on port 1: the mount starts (true) and fails later with ECONNREFUSED, which
    // proves the sbv+h form was accepted and the credentials fd was read.
    const since = harness.signals.length;
    const [started] = await withCredentialsPipe({ user: 'u', password: 'p' }, (fd) =>
      harness.call(legacyPath, Interface.Legacy, 'Mount', 'sbv', [
        'https://127.0.0.1:1/a.iso',
        true,
        new dbus.Variant('h', fd),
      ]),
    );
    assert.equal(started, true);
    assert.equal(await harness.completion(legacyPath, since), 111);
    assert.deepEqual(await harness.getAll(legacyPath, Interface.Process), { Active: false, ExitCode: 111 });
  });

  test('Unmount of an idle slot succeeds at once: true, Completion(0), nothing else changes', async () => {
    for (const [slot, iface] of [
      [legacyPath, Interface.Legacy],
      [slotPath(SlotMode.Proxy, 'Slot_1'), Interface.Proxy],
    ] as const) {
      const before = await harness.getAll(slot, Interface.Process);
      const since = harness.signals.length;
      assert.deepEqual(await harness.call(slot, iface, 'Unmount'), [true]);
      assert.equal(await harness.completion(slot, since), 0);
      const emitted = harness.signals.slice(since).filter((s) => s.path === slot);
      assert.deepEqual(
        emitted.map((s) => s.member),
        ['Completion'],
        'no PropertiesChanged',
      );
      assert.deepEqual(await harness.getAll(slot, Interface.Process), before);
    }
  });

  test('Process.ExitCode is -1 while running (Proxy slot, nothing to connect to: ECONNREFUSED)', async () => {
    const proxyPath = slotPath(SlotMode.Proxy, 'Slot_1');
    const since = harness.signals.length;
    assert.deepEqual(await harness.call(proxyPath, Interface.Proxy, 'Mount'), [true]);
    assert.equal(await harness.completion(proxyPath, since), 111);
    const exitCodes = harness.signals
      .slice(since)
      .filter(
        (s) => s.member === 'PropertiesChanged' && s.body[0] === Interface.Process && 'ExitCode' in s.body[1],
      )
      .map((s) => s.body[1].ExitCode.value);
    assert.deepEqual(exitCodes, [-1, 111]);
  });
});
