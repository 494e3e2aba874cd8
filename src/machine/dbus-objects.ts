import dbus, { type MessageBus } from 'dbus-next';
import {
  BootMode,
  type BootSettings,
  BootSource,
  BootType,
  ChassisPowerState,
  ChassisTransition,
  HostInterface,
  HostPath,
  HostService,
  HostState,
  HostTransition,
} from '../contract/host.ts';
import type { Logger } from '../log.ts';
import type { BootSettingsStore } from './boot-settings.ts';
import type { PowerState } from './machine.ts';

const { Interface } = dbus.interface;
const { DBusError } = dbus;
const READ = 'read' as const;
const READ_WRITE = 'readwrite' as const;
const INVALID_ARGUMENT = 'xyz.openbmc_project.Common.Error.InvalidArgument';

/** What the host's D-Bus objects drive: the machine's power. */
export interface PowerControl {
  readonly state: PowerState;
  powerOn(): Promise<void>;
  forceOff(): Promise<void>;
  shutdown(): Promise<void>;
  reset(): Promise<void>;
  powerCycle(): Promise<void>;
  on(event: 'state', listener: (state: PowerState) => void): unknown;
}

const hostStates: Record<PowerState, string> = {
  Off: HostState.Off,
  Starting: HostState.TransitioningToRunning,
  Running: HostState.Running,
  Stopping: HostState.TransitioningToOff,
};

function refuseUnknown(value: string, allowed: Record<string, string>, property: string): void {
  if (!Object.values(allowed).includes(value)) throw new DBusError(INVALID_ARGUMENT, `${property}: ${value}`);
}

/**
 * Starts the power request a transition names, in the background as phosphor-state-manager does: the
 * property write returns at once and CurrentHostState follows. A value no transition has is refused.
 */
function startTransition(
  value: string,
  transitions: Record<string, () => Promise<void>>,
  property: string,
  logger: Logger,
): void {
  const start = transitions[value];
  if (!start) throw new DBusError(INVALID_ARGUMENT, `${property}: ${value}`);
  start().catch((error) => logger.error({ err: error }, `host: ${value} failed`));
}

class HostStateInterface extends Interface {
  private requested = HostTransition.Off;

  constructor(
    private readonly power: PowerControl,
    private readonly logger: Logger,
  ) {
    super(HostInterface.host);
  }

  get CurrentHostState(): string {
    return hostStates[this.power.state];
  }

  get RequestedHostTransition(): string {
    return this.requested;
  }

  set RequestedHostTransition(value: string) {
    const { power } = this;
    startTransition(
      value,
      {
        [HostTransition.On]: () => power.powerOn(),
        [HostTransition.Off]: () => power.shutdown(),
        [HostTransition.Reboot]: () => power.powerCycle(),
        [HostTransition.GracefulWarmReboot]: () => power.reset(),
        [HostTransition.ForceWarmReboot]: () => power.reset(),
      },
      'RequestedHostTransition',
      this.logger,
    );
    this.requested = value;
  }

  get AllowedHostTransitions(): string[] {
    return Object.values(HostTransition);
  }
}
HostStateInterface.configureMembers({
  properties: {
    CurrentHostState: { signature: 's', access: READ },
    RequestedHostTransition: { signature: 's', access: READ_WRITE },
    AllowedHostTransitions: { signature: 'as', access: READ },
  },
});

class ChassisStateInterface extends Interface {
  private requested = ChassisTransition.Off;

  constructor(
    private readonly power: PowerControl,
    private readonly logger: Logger,
  ) {
    super(HostInterface.chassis);
  }

  get CurrentPowerState(): string {
    return this.power.state === 'Off' ? ChassisPowerState.Off : ChassisPowerState.On;
  }

  get RequestedPowerTransition(): string {
    return this.requested;
  }

  set RequestedPowerTransition(value: string) {
    const { power } = this;
    startTransition(
      value,
      {
        [ChassisTransition.On]: () => power.powerOn(),
        [ChassisTransition.Off]: () => power.forceOff(),
        [ChassisTransition.PowerCycle]: () => power.powerCycle(),
      },
      'RequestedPowerTransition',
      this.logger,
    );
    this.requested = value;
  }
}
ChassisStateInterface.configureMembers({
  properties: {
    CurrentPowerState: { signature: 's', access: READ },
    RequestedPowerTransition: { signature: 's', access: READ_WRITE },
  },
});

/**
 * One boot setting as its own D-Bus interface: a string enumeration or an Object.Enable boolean, read
 * from and written to the store. A write the store has not saved yet reads back as written.
 */
function settingInterface<Key extends keyof BootSettings>(
  name: string,
  property: string,
  key: Key,
  store: BootSettingsStore,
  logger: Logger,
  allowed?: Record<string, string>,
) {
  const signature = typeof store.settings[key] === 'boolean' ? 'b' : 's';
  class Setting extends Interface {
    constructor() {
      super(name);
    }
  }
  Object.defineProperty(Setting.prototype, property, {
    get: () => store.settings[key],
    set: (value: BootSettings[Key]) => {
      if (allowed) refuseUnknown(String(value), allowed, property);
      store
        .update({ [key]: value })
        .catch((error) => logger.error({ err: error }, 'boot settings not saved'));
    },
  });
  Setting.configureMembers({ properties: { [property]: { signature, access: READ_WRITE } } });
  return new Setting();
}

/**
 * The emulated host on D-Bus: the objects and well-known names phosphor-state-manager and
 * phosphor-settingsd have on a BMC (docs/contract.md §3a), so the server drives this machine exactly as
 * it would drive a real one. Owns all three names or fails.
 */
export async function exportHostObjects(
  bus: MessageBus,
  power: PowerControl,
  store: BootSettingsStore,
  logger: Logger,
): Promise<void> {
  const host = new HostStateInterface(power, logger);
  const chassis = new ChassisStateInterface(power, logger);
  bus.export(HostPath.host, host);
  bus.export(HostPath.chassis, chassis);

  const bootInterfaces = {
    source: settingInterface(HostInterface.bootSource, 'BootSource', 'source', store, logger, BootSource),
    mode: settingInterface(HostInterface.bootMode, 'BootMode', 'mode', store, logger, BootMode),
    type: settingInterface(HostInterface.bootType, 'BootType', 'type', store, logger, BootType),
    enabled: settingInterface(HostInterface.enable, 'Enabled', 'enabled', store, logger),
  };
  for (const iface of Object.values(bootInterfaces)) bus.export(HostPath.boot, iface);
  const oneTime = settingInterface(HostInterface.enable, 'Enabled', 'oneTime', store, logger);
  bus.export(HostPath.bootOneTime, oneTime);

  power.on('state', () => {
    Interface.emitPropertiesChanged(host, { CurrentHostState: host.CurrentHostState }, []);
    Interface.emitPropertiesChanged(chassis, { CurrentPowerState: chassis.CurrentPowerState }, []);
  });
  store.on('change', (settings, changed) => {
    const property = {
      source: 'BootSource',
      mode: 'BootMode',
      type: 'BootType',
      enabled: 'Enabled',
    } as const;
    for (const key of changed) {
      if (key === 'oneTime') Interface.emitPropertiesChanged(oneTime, { Enabled: settings.oneTime }, []);
      else Interface.emitPropertiesChanged(bootInterfaces[key], { [property[key]]: settings[key] }, []);
    }
  });

  for (const name of Object.values(HostService)) {
    const reply = await bus.requestName(name, dbus.NameFlag.DO_NOT_QUEUE);
    if (reply !== dbus.RequestNameReply.PRIMARY_OWNER)
      throw new Error(`${name} is already owned on this bus`);
  }
}
