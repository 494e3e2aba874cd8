import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, beforeEach, describe, test } from 'node:test';
import dbus, { type MessageBus } from 'dbus-next';
import { HostInterface, HostPath, HostService } from '../../src/contract/host.ts';
import { connectBus } from '../../src/dbus/connection.ts';
import { HostControlDbusClient } from '../../src/dbus/host-control-client.ts';
import { type PrivateBus, startPrivateBus } from '../../src/dbus/private-bus.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { messageIds } from '../helpers/virtual-media-stack.ts';

const { Interface } = dbus.interface;
const systemUri = '/redfish/v1/Systems/system';
const resetUri = `${systemUri}/Actions/ComputerSystem.Reset`;
const S = 'xyz.openbmc_project';

/** One property write as the recording host saw it: object path, interface, property, value. */
type Write = [path: string, iface: string, property: string, value: string | boolean];

/**
 * OpenBMC's host state and settings objects as phosphor-state-manager and phosphor-settingsd publish
 * them, recording every property write in order: what the server sends over D-Bus is asserted exactly.
 */
class RecordingHost {
  readonly writes: Write[] = [];
  values: Record<string, string | boolean> = {};
  refuse: string | undefined;

  constructor(private readonly bus: MessageBus) {}

  static async start(address: string): Promise<RecordingHost> {
    const host = new RecordingHost(await connectBus(address));
    host.reset();
    host.object(HostPath.host, HostInterface.host, {
      CurrentHostState: 's',
      RequestedHostTransition: 's',
      AllowedHostTransitions: 'as',
    });
    host.object(HostPath.chassis, HostInterface.chassis, {
      CurrentPowerState: 's',
      RequestedPowerTransition: 's',
    });
    host.object(HostPath.boot, HostInterface.bootSource, { BootSource: 's' });
    host.object(HostPath.boot, HostInterface.bootMode, { BootMode: 's' });
    host.object(HostPath.boot, HostInterface.bootType, { BootType: 's' });
    host.object(HostPath.boot, HostInterface.enable, { Enabled: 'b' }, 'boot');
    host.object(HostPath.bootOneTime, HostInterface.enable, { Enabled: 'b' }, 'oneTime');
    for (const name of Object.values(HostService))
      await host.bus.requestName(name, dbus.NameFlag.DO_NOT_QUEUE);
    return host;
  }

  reset(): void {
    this.writes.length = 0;
    this.refuse = undefined;
    this.values = {
      CurrentHostState: `${S}.State.Host.HostState.Off`,
      RequestedHostTransition: `${S}.State.Host.Transition.Off`,
      CurrentPowerState: `${S}.State.Chassis.PowerState.Off`,
      RequestedPowerTransition: `${S}.State.Chassis.Transition.Off`,
      BootSource: `${S}.Control.Boot.Source.Sources.Default`,
      BootMode: `${S}.Control.Boot.Mode.Modes.Regular`,
      BootType: `${S}.Control.Boot.Type.Types.EFI`,
      'boot.Enabled': false,
      'oneTime.Enabled': true,
    };
  }

  private object(
    objectPath: string,
    name: string,
    properties: Record<string, string>,
    prefix?: string,
  ): void {
    const recorder = this;
    class Recorded extends Interface {}
    for (const property of Object.keys(properties)) {
      const key = prefix ? `${prefix}.${property}` : property;
      Object.defineProperty(Recorded.prototype, property, {
        get: () =>
          property === 'AllowedHostTransitions'
            ? ['On', 'Off', 'Reboot', 'GracefulWarmReboot', 'ForceWarmReboot'].map(
                (t) => `${S}.State.Host.Transition.${t}`,
              )
            : recorder.values[key],
        set(value: string | boolean) {
          if (recorder.refuse) throw new dbus.DBusError(recorder.refuse, 'refused by the test');
          recorder.writes.push([objectPath, name, property, value]);
          recorder.values[key] = value;
        },
      });
    }
    Recorded.configureMembers({
      properties: Object.fromEntries(
        Object.entries(properties).map(([property, signature]) => [
          property,
          { signature, access: 'readwrite' },
        ]),
      ),
    });
    this.bus.export(objectPath, new Recorded(name));
  }

  close(): void {
    this.bus.disconnect();
  }
}

describe('Systems/system maps power and the boot override to OpenBMC D-Bus as bmcweb does', () => {
  let dir: string;
  let bus: PrivateBus;
  let host: RecordingHost;
  let hostControl: HostControlDbusClient;
  let server: TestServer;

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vmedia-systems-'));
    bus = await startPrivateBus(dir);
    host = await RecordingHost.start(bus.address);
    hostControl = new HostControlDbusClient({ address: bus.address });
    server = await startTestServer({ hostControl });
  });

  after(async () => {
    await server?.close();
    await hostControl?.close();
    host?.close();
    await bus?.stop();
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  beforeEach(() => host.reset());

  const hostWrite = (value: string): Write => [
    HostPath.host,
    HostInterface.host,
    'RequestedHostTransition',
    value,
  ];

  test('every ResetType is one write of the transition bmcweb sends, answered 204', async () => {
    const expected: Record<string, Write> = {
      On: hostWrite(`${S}.State.Host.Transition.On`),
      ForceOn: hostWrite(`${S}.State.Host.Transition.On`),
      ForceOff: [
        HostPath.chassis,
        HostInterface.chassis,
        'RequestedPowerTransition',
        `${S}.State.Chassis.Transition.Off`,
      ],
      ForceRestart: hostWrite(`${S}.State.Host.Transition.ForceWarmReboot`),
      GracefulShutdown: hostWrite(`${S}.State.Host.Transition.Off`),
      GracefulRestart: hostWrite(`${S}.State.Host.Transition.GracefulWarmReboot`),
      PowerCycle: hostWrite(`${S}.State.Host.Transition.Reboot`),
    };
    const system = await server.request('GET', systemUri);
    assert.deepEqual(
      system.json.Actions['#ComputerSystem.Reset']['ResetType@Redfish.AllowableValues'],
      Object.keys(expected),
    );
    const info = await server.request(
      'GET',
      system.json.Actions['#ComputerSystem.Reset']['@Redfish.ActionInfo'],
    );
    assert.equal(info.status, 200);
    assert.deepEqual(info.json.Parameters, [
      { Name: 'ResetType', Required: true, DataType: 'String', AllowableValues: Object.keys(expected) },
    ]);
    for (const [resetType, write] of Object.entries(expected)) {
      host.writes.length = 0;
      const response = await server.request('POST', resetUri, { body: { ResetType: resetType } });
      assert.equal(response.status, 204, resetType);
      assert.deepEqual(host.writes, [write], resetType);
    }
  });

  test('PowerState and Status follow CurrentHostState', async () => {
    const cases: [string, string, string][] = [
      ['Running', 'On', 'Enabled'],
      ['Quiesced', 'On', 'Quiesced'],
      ['DiagnosticMode', 'On', 'InTest'],
      ['TransitioningToRunning', 'PoweringOn', 'Starting'],
      ['TransitioningToOff', 'PoweringOff', 'Disabled'],
      ['Off', 'Off', 'Disabled'],
    ];
    for (const [state, powerState, status] of cases) {
      host.values.CurrentHostState = `${S}.State.Host.HostState.${state}`;
      const { json } = await server.request('GET', systemUri);
      assert.equal(json.PowerState, powerState, state);
      assert.equal(json.Status.State, status, state);
    }
  });

  test('the override reads back from Source, Mode, Type and the two Enabled objects', async () => {
    const cases: [string, string, string][] = [
      ['Default', 'Regular', 'None'],
      ['Network', 'Regular', 'Pxe'],
      ['Disk', 'Regular', 'Hdd'],
      ['ExternalMedia', 'Regular', 'Cd'],
      ['RemovableMedia', 'Regular', 'Usb'],
      ['Default', 'Safe', 'Diags'],
      ['Default', 'Setup', 'BiosSetup'],
      ['HTTP', 'Regular', 'UefiHttp'],
    ];
    for (const [source, mode, target] of cases) {
      host.values.BootSource = `${S}.Control.Boot.Source.Sources.${source}`;
      host.values.BootMode = `${S}.Control.Boot.Mode.Modes.${mode}`;
      const { json } = await server.request('GET', systemUri);
      assert.equal(json.Boot.BootSourceOverrideTarget, target, `${source}/${mode}`);
    }
    const enabled = async (boot: boolean, oneTime: boolean) => {
      host.values['boot.Enabled'] = boot;
      host.values['oneTime.Enabled'] = oneTime;
      return (await server.request('GET', systemUri)).json.Boot.BootSourceOverrideEnabled;
    };
    assert.equal(await enabled(false, true), 'Disabled');
    assert.equal(await enabled(true, true), 'Once');
    assert.equal(await enabled(true, false), 'Continuous');
    const { json } = await server.request('GET', systemUri);
    assert.equal(json.Boot.BootSourceOverrideMode, 'UEFI');
    assert.deepEqual(json.Boot['BootSourceOverrideTarget@Redfish.AllowableValues'], [
      'None',
      'Pxe',
      'Hdd',
      'Cd',
      'Diags',
      'BiosSetup',
      'Usb',
    ]);
    assert.deepEqual(json.Boot['BootSourceOverrideEnabled@Redfish.AllowableValues'], [
      'Disabled',
      'Once',
      'Continuous',
    ]);
    assert.deepEqual(json.Boot['BootSourceOverrideMode@Redfish.AllowableValues'], ['Legacy', 'UEFI']);
  });

  test('a Boot PATCH writes Source, Mode, Type, Enabled and one_time in that order, and answers the system', async () => {
    const response = await server.request('PATCH', systemUri, {
      body: {
        Boot: {
          BootSourceOverrideTarget: 'Cd',
          BootSourceOverrideEnabled: 'Once',
          BootSourceOverrideMode: 'Legacy',
        },
      },
    });
    assert.equal(response.status, 200);
    assert.deepEqual(host.writes, [
      [
        HostPath.boot,
        HostInterface.bootSource,
        'BootSource',
        `${S}.Control.Boot.Source.Sources.ExternalMedia`,
      ],
      [HostPath.boot, HostInterface.bootMode, 'BootMode', `${S}.Control.Boot.Mode.Modes.Regular`],
      [HostPath.boot, HostInterface.bootType, 'BootType', `${S}.Control.Boot.Type.Types.Legacy`],
      [HostPath.boot, HostInterface.enable, 'Enabled', true],
      [HostPath.bootOneTime, HostInterface.enable, 'Enabled', true],
    ]);
    assert.deepEqual(
      [response.json.Boot.BootSourceOverrideTarget, response.json.Boot.BootSourceOverrideEnabled],
      ['Cd', 'Once'],
    );

    const targets: Record<string, [string, string]> = {
      None: ['Default', 'Regular'],
      Pxe: ['Network', 'Regular'],
      Hdd: ['Disk', 'Regular'],
      Usb: ['RemovableMedia', 'Regular'],
      Diags: ['Default', 'Safe'],
      BiosSetup: ['Default', 'Setup'],
    };
    for (const [target, [source, mode]] of Object.entries(targets)) {
      host.writes.length = 0;
      const patched = await server.request('PATCH', systemUri, {
        body: { Boot: { BootSourceOverrideTarget: target } },
      });
      assert.equal(patched.status, 200, target);
      assert.deepEqual(
        host.writes,
        [
          [
            HostPath.boot,
            HostInterface.bootSource,
            'BootSource',
            `${S}.Control.Boot.Source.Sources.${source}`,
          ],
          [HostPath.boot, HostInterface.bootMode, 'BootMode', `${S}.Control.Boot.Mode.Modes.${mode}`],
        ],
        target,
      );
    }

    const frequencies: Record<string, Write[]> = {
      Disabled: [[HostPath.boot, HostInterface.enable, 'Enabled', false]],
      Continuous: [
        [HostPath.boot, HostInterface.enable, 'Enabled', true],
        [HostPath.bootOneTime, HostInterface.enable, 'Enabled', false],
      ],
    };
    for (const [enabled, writes] of Object.entries(frequencies)) {
      host.writes.length = 0;
      const patched = await server.request('PATCH', systemUri, {
        body: { Boot: { BootSourceOverrideEnabled: enabled } },
      });
      assert.equal(patched.status, 200, enabled);
      assert.deepEqual(host.writes, writes, enabled);
    }
    host.writes.length = 0;
    await server.request('PATCH', systemUri, { body: { Boot: { BootSourceOverrideMode: 'UEFI' } } });
    assert.deepEqual(host.writes, [
      [HostPath.boot, HostInterface.bootType, 'BootType', `${S}.Control.Boot.Type.Types.EFI`],
    ]);
  });

  test('If-Match: the current ETag goes through, a stale one is 412 and writes nothing', async () => {
    const current = await server.request('GET', systemUri);
    const etag = String(current.headers.etag);
    assert.match(etag, /^W\/"/);
    const ok = await server.request('PATCH', systemUri, {
      headers: { 'If-Match': etag },
      body: { Boot: { BootSourceOverrideTarget: 'Usb' } },
    });
    assert.equal(ok.status, 200);
    host.writes.length = 0;
    const stale = await server.request('PATCH', systemUri, {
      headers: { 'If-Match': etag },
      body: { Boot: { BootSourceOverrideTarget: 'Hdd' } },
    });
    assert.equal(stale.status, 412);
    assert.deepEqual(messageIds(stale), ['PreconditionFailed']);
    assert.deepEqual(host.writes, []);
  });

  test('bad input is refused with the Base message naming it, and nothing reaches D-Bus', async () => {
    const cases: [string, string, unknown, string[]][] = [
      ['POST', resetUri, { ResetType: 'Nmi' }, ['ActionParameterValueFormatError']],
      ['POST', resetUri, {}, ['ActionParameterMissing']],
      ['POST', resetUri, { ResetType: 'On', Force: true }, ['ActionParameterUnknown']],
      ['PATCH', systemUri, { Boot: { BootSourceOverrideTarget: 'Floppy' } }, ['PropertyValueNotInList']],
      ['PATCH', systemUri, { Boot: { BootSourceOverrideEnabled: true } }, ['PropertyValueNotInList']],
      ['PATCH', systemUri, { Boot: { BootOrder: ['Cd'] } }, ['PropertyUnknown']],
      ['PATCH', systemUri, { PowerState: 'On' }, ['PropertyNotWritable']],
      ['PATCH', systemUri, {}, ['NoOperation']],
      ['PATCH', systemUri, { Boot: {} }, ['NoOperation']],
    ];
    for (const [method, uri, body, ids] of cases) {
      const response = await server.request(method, uri, { body });
      assert.equal(response.status, 400, JSON.stringify(body));
      assert.deepEqual(messageIds(response), ids, JSON.stringify(body));
    }
    assert.deepEqual(host.writes, []);
  });

  test('a host service that is not ready answers 503 with Retry-After', async () => {
    host.refuse = 'xyz.openbmc_project.State.Host.Error.BMCNotReady';
    const response = await server.request('POST', resetUri, { body: { ResetType: 'On' } });
    assert.equal(response.status, 503);
    assert.equal(response.headers['retry-after'], '5');
  });

  test('changing power or the override needs ConfigureComponents; reading needs Login', async () => {
    await server.request('POST', '/redfish/v1/AccountService/Accounts', {
      body: { UserName: 'watcher', Password: 'watcher-Passw0rd!', RoleId: 'ReadOnly' },
    });
    const auth = { basic: ['watcher', 'watcher-Passw0rd!'] as [string, string] };
    assert.equal((await server.request('GET', systemUri, { auth })).status, 200);
    const reset = await server.request('POST', resetUri, { auth, body: { ResetType: 'On' } });
    assert.equal(reset.status, 403);
    const patch = await server.request('PATCH', systemUri, {
      auth,
      body: { Boot: { BootSourceOverrideTarget: 'Cd' } },
    });
    assert.equal(patch.status, 403);
    assert.deepEqual(host.writes, []);
  });
});

describe('Systems/system without host services on the bus', () => {
  let dir: string;
  let bus: PrivateBus;
  let hostControl: HostControlDbusClient;
  let server: TestServer;

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vmedia-systems-absent-'));
    bus = await startPrivateBus(dir);
    hostControl = new HostControlDbusClient({ address: bus.address });
    server = await startTestServer({ hostControl });
  });

  after(async () => {
    await server?.close();
    await hostControl?.close();
    await bus?.stop();
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  test('shows neither power nor override, and refuses both with 503', async () => {
    const { json } = await server.request('GET', systemUri);
    assert.equal(json.PowerState, undefined);
    assert.equal(json.Boot, undefined);
    assert.equal(json.Actions, undefined);
    assert.equal(json.Status.State, 'Enabled');
    assert.deepEqual(json.Links.ManagedBy, [{ '@odata.id': '/redfish/v1/Managers/bmc' }]);
    const reset = await server.request('POST', resetUri, { body: { ResetType: 'On' } });
    assert.equal(reset.status, 503);
    assert.deepEqual(messageIds(reset), ['ServiceTemporarilyUnavailable']);
    const patch = await server.request('PATCH', systemUri, {
      body: { Boot: { BootSourceOverrideTarget: 'Cd' } },
    });
    assert.equal(patch.status, 503);
  });
});
