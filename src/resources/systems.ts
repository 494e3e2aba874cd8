import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import computerSystemPatch from '../../schemas/requests/ComputerSystemPatch.json' with { type: 'json' };
import {
  BootMode,
  type BootSettings,
  BootSource,
  BootType,
  ChassisTransition,
  HostState,
  HostTransition,
} from '../contract/host.ts';
import {
  managerUri,
  RETRY_AFTER_SECONDS,
  systemResetActionInfoUri,
  systemResetUri,
  systemsUri,
  systemUri,
  systemVirtualMediaUri,
} from '../contract/redfish.ts';
import {
  HostCallError,
  type HostControl,
  HostUnavailable,
  type HostView,
} from '../dbus/host-control-client.ts';
import { errors } from '../redfish/errors.ts';
import { assertIfMatch } from '../redfish/etag.ts';
import { collection, link, odataType } from '../redfish/odata.ts';
import { patchChanges, readOnlyProperties } from '../redfish/patch.ts';
import { schemaRef } from '../redfish/schemas.ts';

const RESET_ACTION = 'ComputerSystem.Reset';

/** Redfish ResetType → the D-Bus request that performs it, as bmcweb's systems.hpp maps them. */
const resetRequests = {
  On: { host: HostTransition.On },
  ForceOn: { host: HostTransition.On },
  ForceOff: { chassis: ChassisTransition.Off },
  ForceRestart: { host: HostTransition.ForceWarmReboot },
  GracefulShutdown: { host: HostTransition.Off },
  GracefulRestart: { host: HostTransition.GracefulWarmReboot },
  PowerCycle: { host: HostTransition.Reboot },
} as const satisfies Record<string, { host: string } | { chassis: string }>;
type ResetType = keyof typeof resetRequests;
const resetTypes = Object.keys(resetRequests) as ResetType[];

/** BootSourceOverrideTarget → the (Source, Mode) pair that means it on D-Bus. */
const bootTargets = {
  None: { source: BootSource.Default, mode: BootMode.Regular },
  Pxe: { source: BootSource.Network, mode: BootMode.Regular },
  Hdd: { source: BootSource.Disk, mode: BootMode.Regular },
  Cd: { source: BootSource.ExternalMedia, mode: BootMode.Regular },
  Diags: { source: BootSource.Default, mode: BootMode.Safe },
  BiosSetup: { source: BootSource.Default, mode: BootMode.Setup },
  Usb: { source: BootSource.RemovableMedia, mode: BootMode.Regular },
} as const;
type BootTarget = keyof typeof bootTargets;
const bootOverrideEnabledValues = ['Disabled', 'Once', 'Continuous'] as const;
type BootOverrideEnabled = (typeof bootOverrideEnabledValues)[number];
const bootModes = { Legacy: BootType.Legacy, UEFI: BootType.EFI } as const;
type BootOverrideMode = keyof typeof bootModes;

interface BootPatch {
  BootSourceOverrideTarget?: BootTarget;
  BootSourceOverrideEnabled?: BootOverrideEnabled;
  BootSourceOverrideMode?: BootOverrideMode;
}
interface SystemPatch {
  Boot?: BootPatch;
}

const systemReadOnly = readOnlyProperties(computerSystemPatch);

/**
 * The host the BMC manages: its power (PowerState, #ComputerSystem.Reset) and boot override (Boot), which
 * map to OpenBMC's host-state and settings objects on D-Bus as bmcweb maps them (docs/contract.md §3a).
 * Clients find its virtual media here (ComputerSystem.VirtualMedia, DMTF's location) or, through
 * `Links.ManagedBy`, under the manager (bmcweb's).
 */
export async function systemRoutes(app: FastifyInstance, options: { host: HostControl }) {
  const { host } = options;
  const tags = ['Systems'];
  const configureComponents = { privileges: ['ConfigureComponents'] } as const;

  const resource = async () => systemResource(await host.read(), hasSystemVirtualMedia(app));

  app.get(
    systemsUri,
    { config: { privileges: ['Login'] }, schema: { tags, response: { 200: schemaRef('Collection.json') } } },
    async () => collection('ComputerSystemCollection', systemsUri, 'Computer System Collection', [systemUri]),
  );

  app.get(
    systemUri,
    {
      config: { privileges: ['Login'] },
      schema: { tags, response: { 200: schemaRef('ComputerSystem.json') } },
    },
    resource,
  );

  app.patch<{ Body: SystemPatch }>(
    systemUri,
    {
      config: configureComponents,
      schema: {
        tags,
        summary:
          'Set the boot override: Boot.BootSourceOverrideTarget, …Enabled (Once reverts after one boot), …Mode',
        body: schemaRef('requests/ComputerSystemPatch.json'),
        response: { 200: schemaRef('ComputerSystem.json') },
      },
    },
    async (request, reply) => {
      const current = await resource();
      assertIfMatch(request, reply, current, 'ComputerSystem.json');
      const { Boot: boot } = patchChanges(request.body, systemReadOnly);
      const change = bootChange(boot ?? {});
      if (Object.keys(change).length === 0) throw errors.noOperation();
      if (!current.Boot) throw unavailable();
      await host.setBoot(change).catch(hostRefusal);
      return resource();
    },
  );

  app.get(
    systemResetActionInfoUri,
    {
      config: { privileges: ['Login'] },
      schema: {
        tags,
        summary: 'The ResetType values Reset takes',
        response: { 200: schemaRef('ActionInfo.json') },
      },
    },
    async () => ({
      '@odata.id': systemResetActionInfoUri,
      '@odata.type': odataType('ActionInfo'),
      Id: 'ResetActionInfo',
      Name: 'Reset Action Info',
      Parameters: [{ Name: 'ResetType', Required: true, DataType: 'String', AllowableValues: resetTypes }],
    }),
  );

  app.post<{ Body: { ResetType: ResetType } }>(
    systemResetUri,
    {
      config: { ...configureComponents, action: RESET_ACTION },
      schema: {
        tags,
        summary: 'Power the host on or off, or restart it: 204 once the host state service took the request',
        body: schemaRef('requests/ComputerSystemReset.json'),
      },
    },
    async (request: FastifyRequest<{ Body: { ResetType: ResetType } }>, reply: FastifyReply) => {
      const requested: { host?: string; chassis?: string } = resetRequests[request.body.ResetType];
      if (requested.host) await host.requestHostTransition(requested.host).catch(hostRefusal);
      if (requested.chassis) await host.requestChassisTransition(requested.chassis).catch(hostRefusal);
      return reply.code(204).send();
    },
  );
}

function hasSystemVirtualMedia(app: FastifyInstance): boolean {
  // Linked only once the VirtualMedia routes are registered, so the link never leads to a 404.
  return app.hasRoute({ method: 'GET', url: systemVirtualMediaUri });
}

/** Systems/system as the host's services describe it now; power and boot only where a service answers. */
function systemResource(view: HostView, virtualMedia: boolean): Record<string, unknown> & { Boot?: unknown } {
  return {
    '@odata.id': systemUri,
    '@odata.type': odataType('ComputerSystem'),
    Id: 'system',
    Name: 'system',
    Description: 'Computer System',
    SystemType: 'Physical',
    ...(view.hostState === undefined
      ? { Status: { State: 'Enabled' } }
      : { ...powerOf(view.hostState), Actions: resetAction() }),
    ...(view.boot ? { Boot: bootOf(view.boot) } : {}),
    ...(virtualMedia ? { VirtualMedia: link(systemVirtualMediaUri) } : {}),
    Links: { ManagedBy: [link(managerUri)], 'ManagedBy@odata.count': 1 },
  };
}

/** PowerState and Status from CurrentHostState, as bmcweb derives them. */
function powerOf(hostState: string): { PowerState: string; Status: { State: string } } {
  switch (hostState) {
    case HostState.Running:
      return { PowerState: 'On', Status: { State: 'Enabled' } };
    case HostState.Quiesced:
      return { PowerState: 'On', Status: { State: 'Quiesced' } };
    case HostState.DiagnosticMode:
      return { PowerState: 'On', Status: { State: 'InTest' } };
    case HostState.TransitioningToRunning:
      return { PowerState: 'PoweringOn', Status: { State: 'Starting' } };
    case HostState.TransitioningToOff:
      return { PowerState: 'PoweringOff', Status: { State: 'Disabled' } };
    default:
      return { PowerState: 'Off', Status: { State: 'Disabled' } };
  }
}

function resetAction() {
  return {
    [`#${RESET_ACTION}`]: {
      target: systemResetUri,
      'ResetType@Redfish.AllowableValues': resetTypes,
      '@Redfish.ActionInfo': systemResetActionInfoUri,
    },
  };
}

function bootOf(settings: BootSettings) {
  const mode = Object.entries(bootModes).find(([, type]) => type === settings.type)?.[0];
  return {
    BootSourceOverrideTarget: targetOf(settings),
    'BootSourceOverrideTarget@Redfish.AllowableValues': Object.keys(bootTargets),
    BootSourceOverrideEnabled: !settings.enabled ? 'Disabled' : settings.oneTime ? 'Once' : 'Continuous',
    'BootSourceOverrideEnabled@Redfish.AllowableValues': bootOverrideEnabledValues,
    ...(mode ? { BootSourceOverrideMode: mode } : {}),
    'BootSourceOverrideMode@Redfish.AllowableValues': Object.keys(bootModes),
  };
}

/** The Redfish target of a Source and Mode: a Mode other than Regular wins over a Default source. */
function targetOf({ source, mode }: BootSettings): BootTarget | 'UefiHttp' {
  // Shown, not offered: an HTTP boot needs a URI this service does not take.
  if (source === BootSource.HTTP) return 'UefiHttp';
  if (source === BootSource.Default) {
    if (mode === BootMode.Safe) return 'Diags';
    if (mode === BootMode.Setup) return 'BiosSetup';
    return 'None';
  }
  const found = Object.entries(bootTargets).find(([, pair]) => pair.source === source);
  return (found?.[0] as BootTarget | undefined) ?? 'None';
}

/** The settings a Boot PATCH changes, in the D-Bus terms HostControl.setBoot writes. */
function bootChange(boot: BootPatch): Partial<BootSettings> {
  const change: Partial<BootSettings> = {};
  if (boot.BootSourceOverrideTarget) Object.assign(change, bootTargets[boot.BootSourceOverrideTarget]);
  if (boot.BootSourceOverrideMode) change.type = bootModes[boot.BootSourceOverrideMode];
  switch (boot.BootSourceOverrideEnabled) {
    case 'Disabled':
      change.enabled = false;
      break;
    case 'Once':
      Object.assign(change, { enabled: true, oneTime: true });
      break;
    case 'Continuous':
      Object.assign(change, { enabled: true, oneTime: false });
      break;
  }
  return change;
}

function unavailable() {
  return errors.serviceTemporarilyUnavailable(RETRY_AFTER_SECONDS);
}

/**
 * A failed host request as the client sees it: 503 when no service answers or the host's service is not
 * ready for it (as bmcweb answers BMCNotReady); anything else is the service's fault (500, logged).
 */
function hostRefusal(error: unknown): never {
  if (error instanceof HostUnavailable) throw unavailable();
  if (error instanceof HostCallError && /\.(NotAllowed|Unavailable|BMCNotReady)$/.test(error.dbusName)) {
    throw unavailable();
  }
  throw error;
}
