import fs from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import dbus, { type MessageBus } from 'dbus-next';
import { Errno, ROOT_PATH, SERVICE_NAME, SlotMode } from '../contract/dbus.ts';
import type { ImageUrlPolicy } from '../contract/image-url.ts';
import type { Logger } from '../log.ts';
import { prepareCaBundle } from './ca-bundle.ts';
import type { ServiceConfig } from './config.ts';
import { CredentialsError, readCredentials } from './credentials.ts';
import { ObjectManager } from './dbus/object-manager.ts';
import {
  exportSlot,
  type LegacyMount,
  legacyMountVariantHandler,
  type MountArguments,
} from './dbus/slot-objects.ts';
import { MountFailure } from './errors.ts';
import type { AttachHost } from './host/attachment.ts';
import { nameOwner, recoverLeftovers } from './recovery.ts';
import { type MountContext, type MountedMedium, Slot, type SlotTiming } from './slot.ts';
import { type CifsClient, checkLegacyUrl, startLegacySource } from './sources/legacy.ts';
import { proxySource } from './sources/proxy.ts';
import type { MediumSource } from './sources/source.ts';
import { TrustStore } from './trust.ts';

export interface ServiceOptions {
  bus: MessageBus;
  config: ServiceConfig;
  /** 0700 directory for slot sockets and nbdkit pidfiles. */
  runtimeDir: string;
  /** Where each Legacy slot's trust (VerifyCertificate, added CAs) is kept across restarts. */
  trustDir: string;
  attachHost: AttachHost;
  /** Extra CAs for Legacy HTTPS (VMEDIA_CA_BUNDLE). */
  caBundle: string | undefined;
  /** Which image URLs Legacy.Mount accepts beyond the defaults (VMEDIA_ALLOW_HTTP). */
  imagePolicy?: ImageUrlPolicy;
  nbdkit: string;
  /** How smb:// images are read (src/service/sources/legacy.ts chooseCifsClient). */
  cifsClient: CifsClient;
  log: Logger;
  timing?: Partial<SlotTiming>;
}

export interface VirtualMediaService {
  slots: Slot[];
  /** Unmounts everything (children reaped, sockets and gadgets removed), then leaves the bus. */
  stop(): Promise<void>;
}

const DEFAULT_TIMING: Omit<SlotTiming, 'inactivityTimeout'> = { completionMarginSeconds: 2, tickMs: 1000 };

/** Exports every configured slot on D-Bus and owns `xyz.openbmc_project.VirtualMedia`. */
export async function startVirtualMediaService(options: ServiceOptions): Promise<VirtualMediaService> {
  const { bus, config, log } = options;
  await fs.mkdir(options.runtimeDir, { recursive: true, mode: 0o700 });
  await fs.chmod(options.runtimeDir, 0o700);
  const caBundle = await prepareCaBundle(options.caBundle, options.runtimeDir);
  const trust = await TrustStore.open(
    options.trustDir,
    config.slots.filter((slot) => slot.mode === SlotMode.Legacy).map((slot) => slot.slotId),
  );
  const timing: SlotTiming = {
    inactivityTimeout: config.inactivityTimeout,
    ...DEFAULT_TIMING,
    ...options.timing,
  };

  const objectManager = new ObjectManager(bus, ROOT_PATH);
  const legacyMounts = new Map<string, LegacyMount>();
  const startMount = (slot: Slot, args: MountArguments) => {
    if (slot.config.mode === SlotMode.Proxy) {
      slot.mount({
        imageUrl: '',
        writeProtected: false,
        procedure: (context) =>
          mountMedium(options.attachHost, slot, proxySource(slot.config), '', false, context),
      });
      return;
    }
    const url = checkLegacyUrl(args.imageUrl ?? '', options.imagePolicy);
    const writeProtected = !args.readWrite;
    slot.mount({
      imageUrl: url.href,
      writeProtected,
      procedure: async (context) => {
        const credentials =
          args.credentialsFd === undefined ? undefined : await readSecret(args.credentialsFd, context.signal);
        let source: MediumSource;
        try {
          source = await startLegacySource(
            {
              config: slot.config,
              url,
              readOnly: writeProtected,
              credentials,
              caBundle,
              trust: trust.get(slot.config.slotId),
              runtimeDir: options.runtimeDir,
              cifsClient: options.cifsClient,
              nbdkit: options.nbdkit,
            },
            context,
          );
        } finally {
          credentials?.wipe(); // nbdkit read the password before it wrote its pidfile
        }
        return mountMedium(options.attachHost, slot, source, url.href, writeProtected, context);
      },
    });
  };

  const slots = config.slots.map((slotConfig) => {
    const slot = new Slot(slotConfig, timing, log.child({ slot: slotConfig.slotId }));
    const exported = exportSlot(objectManager, slot, startMount, trust);
    if (exported.legacyMount) legacyMounts.set(exported.path, exported.legacyMount);
    return slot;
  });
  const variantHandler = legacyMountVariantHandler(bus, legacyMounts);
  bus.addMethodHandler(variantHandler);

  await claimName(bus, config, options.attachHost, log);
  return {
    slots,
    async stop() {
      await Promise.all(slots.map((slot) => slot.shutdown()));
      bus.removeMethodHandler(variantHandler);
      await bus.releaseName(SERVICE_NAME).catch(() => undefined);
    },
  };
}

const NAME_RETRY_MS = 5000;
const NAME_RETRY_INTERVAL_MS = 100;

/**
 * Takes the bus name, first cleaning up after a predecessor that died without its own cleanup. A
 * running owner is another service: nothing is touched and the start fails. An owner whose process
 * is gone is a killed service whose connection something still holds (a helper that inherited its
 * socket): its leftovers are removed, which also closes that connection, so the name is retried
 * until the bus daemon has noticed.
 */
async function claimName(bus: MessageBus, config: ServiceConfig, attachHost: AttachHost, log: Logger) {
  const owner = await nameOwner(bus);
  if (owner.state === 'alive') {
    throw new Error(`${SERVICE_NAME} is already owned on this bus (by running process ${owner.pid})`);
  }
  const killed = await recoverLeftovers(config.slots, attachHost, log);
  const deadline = Date.now() + (owner.state === 'dead' || killed > 0 ? NAME_RETRY_MS : 0);
  for (;;) {
    const reply = await bus.requestName(SERVICE_NAME, dbus.NameFlag.DO_NOT_QUEUE);
    if (reply === dbus.RequestNameReply.PRIMARY_OWNER) return;
    if (Date.now() >= deadline) throw new Error(`${SERVICE_NAME} is already owned on this bus`);
    await sleep(NAME_RETRY_INTERVAL_MS);
  }
}

async function readSecret(fd: number, signal: AbortSignal) {
  try {
    return await readCredentials(fd, signal);
  } catch (error) {
    if (error instanceof CredentialsError) throw new MountFailure(Errno.EINVAL, error.message);
    throw error;
  }
}

/** Source and host together; the medium is lost when either goes. */
async function mountMedium(
  attachHost: AttachHost,
  slot: Slot,
  source: MediumSource,
  imageUrl: string,
  writeProtected: boolean,
  context: MountContext,
): Promise<MountedMedium> {
  const attachment = await attachHost({ config: slot.config, source, writeProtected, imageUrl }, context);
  return {
    writeProtected: attachment.writeProtected,
    stats: attachment.stats,
    lost: Promise.race([source.lost, attachment.lost]),
  };
}
