/**
 * The host's power and boot override as OpenBMC exposes them on D-Bus (docs/contract.md §3a): the
 * interfaces phosphor-state-manager and phosphor-settingsd implement on a BMC, and the emulated host
 * machine in the embedded stack. bmcweb uses these well-known names directly (no mapper lookup), so
 * do we. Enumerated values are D-Bus strings `<interface>.<Enum>.<Value>`.
 */
export const HostService = {
  host: 'xyz.openbmc_project.State.Host',
  chassis: 'xyz.openbmc_project.State.Chassis',
  settings: 'xyz.openbmc_project.Settings',
} as const;

export const HostPath = {
  host: '/xyz/openbmc_project/state/host0',
  chassis: '/xyz/openbmc_project/state/chassis0',
  /** The boot override: Source, Mode, Type and whether it is enabled at all. */
  boot: '/xyz/openbmc_project/control/host0/boot',
  /** Its Object.Enable says whether the override applies to the next boot only. */
  bootOneTime: '/xyz/openbmc_project/control/host0/boot/one_time',
} as const;

export const HostInterface = {
  host: 'xyz.openbmc_project.State.Host',
  chassis: 'xyz.openbmc_project.State.Chassis',
  bootSource: 'xyz.openbmc_project.Control.Boot.Source',
  bootMode: 'xyz.openbmc_project.Control.Boot.Mode',
  bootType: 'xyz.openbmc_project.Control.Boot.Type',
  enable: 'xyz.openbmc_project.Object.Enable',
} as const;

const values = <const Names extends readonly string[]>(prefix: string, names: Names) =>
  Object.fromEntries(names.map((name) => [name, `${prefix}.${name}`])) as { [N in Names[number]]: string };

/** `CurrentHostState`. */
export const HostState = values('xyz.openbmc_project.State.Host.HostState', [
  'Off',
  'Running',
  'TransitioningToRunning',
  'TransitioningToOff',
  'Quiesced',
  'DiagnosticMode',
  'Standby',
] as const);

/** `RequestedHostTransition`, and the members of `AllowedHostTransitions`. */
export const HostTransition = values('xyz.openbmc_project.State.Host.Transition', [
  'On',
  'Off',
  'Reboot',
  'GracefulWarmReboot',
  'ForceWarmReboot',
] as const);

/** `RequestedPowerTransition` of the chassis. */
export const ChassisTransition = values('xyz.openbmc_project.State.Chassis.Transition', [
  'On',
  'Off',
  'PowerCycle',
] as const);

/** `CurrentPowerState` of the chassis. */
export const ChassisPowerState = values('xyz.openbmc_project.State.Chassis.PowerState', [
  'On',
  'Off',
] as const);

export const BootSource = values('xyz.openbmc_project.Control.Boot.Source.Sources', [
  'Default',
  'Disk',
  'ExternalMedia',
  'Network',
  'RemovableMedia',
  'HTTP',
] as const);

export const BootMode = values('xyz.openbmc_project.Control.Boot.Mode.Modes', [
  'Regular',
  'Safe',
  'Setup',
] as const);

export const BootType = values('xyz.openbmc_project.Control.Boot.Type.Types', ['Legacy', 'EFI'] as const);

/** The boot override as the settings objects hold it. */
export interface BootSettings {
  source: string;
  mode: string;
  type: string;
  /** `boot` Object.Enable: an override applies at all. */
  enabled: boolean;
  /** `boot/one_time` Object.Enable: it applies to the next boot only. */
  oneTime: boolean;
}

export const defaultBootSettings: BootSettings = {
  source: BootSource.Default,
  mode: BootMode.Regular,
  type: BootType.Legacy,
  enabled: false,
  oneTime: true,
};
