import { type ChildProcess, spawn } from 'node:child_process';
import { EventEmitter, once } from 'node:events';
import fs from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { type BootSettings, BootSource } from '../contract/host.ts';
import type { Logger } from '../log.ts';
import type { BootSettingsStore } from './boot-settings.ts';
import { QmpClient } from './qmp.ts';

/** The machine's power as its host state service reports it. */
export type PowerState = 'Off' | 'Starting' | 'Running' | 'Stopping';

/** A slot's medium as the machine plugs it: a USB CD-ROM or a USB stick, read from an NBD socket. */
export interface Medium {
  /** The NBD Unix socket of the slot's emulated-host export. */
  socket: string;
  kind: 'cd' | 'stick';
  readOnly: boolean;
}

export interface MachineOptions {
  /** Where the console log, the firmware log and the QMP socket live (`<state>/machine`). */
  directory: string;
  boot: BootSettingsStore;
  logger: Logger;
  qemu?: string;
  memoryMiB?: number;
  /** How long a graceful shutdown waits for the guest before the power is cut. */
  gracefulTimeoutMs?: number;
}

/** The size of the machine's own disk: blank, so a boot without an override finds nothing to boot. */
const DISK_BYTES = 64 * 1024 * 1024;
/** After the media's boot indexes (0, 1, …): an override puts media first, the disk follows. */
const DISK_BOOT_INDEX = 10;
const QMP_CONNECT_TIMEOUT_MS = 10_000;
const UNPLUG_TIMEOUT_MS = 5000;
const KILL_AFTER_MS = 5000;

/** The QEMU ids of a slot's medium: its block node, its SCSI device and the USB mass-storage device. */
function deviceIds(slotId: string) {
  return { node: `media-${slotId}`, device: `media-${slotId}`, bot: `bot-${slotId}` };
}

/**
 * The emulated host: a QEMU PC (TCG, SeaBIOS) with a blank internal disk and an xHCI controller, whose
 * USB devices are the slots' media. Power is the QEMU process: Off means none runs. Operations run one
 * at a time in the order requested.
 *
 * Every boot is a cold start of QEMU, restarts included (the guest's own resets are turned into pauses
 * by `-action reboot=shutdown` and handled here): the boot order the override asks for is given on
 * the command line, where the firmware reads it, and no boot order changes while a QEMU runs. A warm
 * reset could not honour a one-time override: QEMU hands the firmware the boot order as it stands at
 * each reset, and SeaBIOS resets the machine once more by itself when it starts warm.
 */
export class QemuMachine extends EventEmitter<{ state: [state: PowerState] }> {
  private current: PowerState = 'Off';
  private child: ChildProcess | undefined;
  private qmp: QmpClient | undefined;
  private queue: Promise<void> = Promise.resolve();
  /** What each slot should present, and what is plugged now. */
  private readonly wanted = new Map<string, Medium>();
  private readonly plugged = new Map<string, Medium>();
  private closed = false;

  constructor(private readonly options: MachineOptions) {
    super();
  }

  get state(): PowerState {
    return this.current;
  }

  get consoleLog(): string {
    return path.join(this.options.directory, 'console.log');
  }

  powerOn(): Promise<void> {
    return this.enqueue('power on', () => this.start());
  }

  forceOff(): Promise<void> {
    return this.enqueue('power off', () => this.stop(false));
  }

  shutdown(): Promise<void> {
    return this.enqueue('shut down', () => this.stop(true));
  }

  /** A restart of a running machine, with the boot order as it stands now; a machine that is off stays off. */
  reset(): Promise<void> {
    return this.enqueue('reset', () => this.restart());
  }

  /** Off (if on) and on again. */
  powerCycle(): Promise<void> {
    return this.enqueue('power cycle', async () => {
      await this.stop(false);
      await this.start();
    });
  }

  /** What a slot presents from now on: a medium, or none. Plugged or unplugged at once when running. */
  setMedium(slotId: string, medium: Medium | undefined): Promise<void> {
    const before = this.wanted.get(slotId);
    if (before === medium || (before && medium && sameMedium(before, medium))) return Promise.resolve();
    if (medium) this.wanted.set(slotId, medium);
    else this.wanted.delete(slotId);
    return this.enqueue(`media of ${slotId}`, () => this.reconcileMedia());
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.enqueue('close', () => this.stop(false));
  }

  private enqueue(what: string, operation: () => Promise<void>): Promise<void> {
    const run = this.queue.then(operation);
    this.queue = run.catch((error) => this.options.logger.error({ err: error }, `machine: ${what} failed`));
    return run;
  }

  private setState(state: PowerState): void {
    if (state === this.current) return;
    this.current = state;
    this.options.logger.info({ state }, 'machine power state');
    this.emit('state', state);
  }

  private async start(): Promise<void> {
    if (this.current !== 'Off' || this.closed) return;
    this.setState('Starting');
    await this.bootOrPowerOff();
  }

  /** The machine's restart: its QEMU stops and a new one boots, the power state staying on throughout. */
  private async restart(): Promise<void> {
    if (this.current !== 'Running') return;
    this.setState('Starting');
    const child = this.child;
    this.child = undefined;
    if (child) await quit(child, this.qmp);
    this.forgetProcess();
    await this.bootOrPowerOff();
  }

  /** Boots a new QEMU and reports Running; a boot that fails leaves the machine off. */
  private async bootOrPowerOff(): Promise<void> {
    try {
      await this.boot();
      this.setState('Running');
    } catch (error) {
      await this.stop(false);
      throw error;
    }
  }

  /** Starts QEMU with the media and boot order of now, lets the firmware run, and spends a one-time override. */
  private async boot(): Promise<void> {
    const qmpSocket = path.join(this.options.directory, 'qmp.sock');
    await fs.mkdir(this.options.directory, { recursive: true, mode: 0o700 });
    await fs.rm(qmpSocket, { force: true });
    const media = new Map(this.wanted);
    const settings = this.options.boot.settings;
    const args = [...this.machineArguments(qmpSocket), ...mediaArguments(media, settings)];
    const child = spawn(this.options.qemu ?? 'qemu-system-x86_64', args, {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    this.child = child;
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (text: string) => this.options.logger.warn({ qemu: text.trim() }, 'qemu says'));
    child.once('exit', (code, signal) => this.exited(child, code, signal));
    const qmp = await connectQmp(qmpSocket, child);
    this.qmp = qmp;
    qmp.on('event', (event, data) => this.qmpEvent(qmp, event, data));
    for (const [slotId, medium] of media) this.plugged.set(slotId, medium);
    this.options.logger.info(
      { bootOrder: bootOrderOf(media, settings), media: [...media.keys()] },
      'machine: boot',
    );
    await qmp.execute('cont');
    await this.options.boot.consumeOnce();
    // Media that changed while QEMU started go in (or out) now.
    await this.reconcileMedia();
  }

  private machineArguments(qmpSocket: string): string[] {
    const { directory } = this.options;
    return [
      ...['-accel', 'tcg', '-machine', 'pc', '-m', String(this.options.memoryMiB ?? 256)],
      ...['-nodefaults', '-display', 'none', '-nic', 'none', '-S', '-boot', 'strict=on'],
      // The guest's resets and power-offs pause it (a SHUTDOWN event) for qmpEvent to handle.
      ...['-action', 'reboot=shutdown,shutdown=pause'],
      ...['-chardev', `file,id=console,path=${path.join(directory, 'console.log')},append=on`],
      ...['-serial', 'chardev:console'],
      // SeaBIOS's own messages ("Booting from …", "No bootable device"), through its debug port.
      ...['-chardev', `file,id=firmware,path=${path.join(directory, 'firmware.log')},append=on`],
      ...['-device', 'isa-debugcon,iobase=0x402,chardev=firmware'],
      ...['-qmp', `unix:${qmpSocket},server=on,wait=off`],
      ...['-device', 'qemu-xhci,id=xhci'],
      ...['-blockdev', `driver=null-co,node-name=disk,size=${DISK_BYTES},read-zeroes=on`],
      ...['-device', `ide-hd,drive=disk,id=disk,bootindex=${DISK_BOOT_INDEX}`],
    ];
  }

  private qmpEvent(qmp: QmpClient, event: string, data: Record<string, unknown>): void {
    if (event !== 'SHUTDOWN' || data.guest !== true || qmp !== this.qmp) return;
    if (data.reason === 'guest-reset') {
      // The guest rebooted itself and is paused: it restarts as a reset from here would.
      void this.enqueue('guest reset', () => this.restart());
    } else {
      // The guest powered off (a graceful shutdown ends here too): the power goes, as on a real host.
      void qmp.execute('quit').catch(() => undefined);
    }
  }

  /** Stops QEMU: through the guest (ACPI power button) when graceful, else at once. */
  private async stop(graceful: boolean): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) {
      this.forgetProcess();
      this.setState('Off');
      return;
    }
    this.setState('Stopping');
    if (graceful) {
      await this.qmp?.execute('system_powerdown').catch(() => undefined);
      const timeout = this.options.gracefulTimeoutMs ?? 60_000;
      const exited = once(child, 'exit').then(() => true);
      if (!(await Promise.race([exited, sleep(timeout).then(() => false)]))) {
        this.options.logger.warn(
          { timeoutMs: timeout },
          'machine: the guest did not power off; cutting the power',
        );
      }
    }
    await quit(child, this.qmp);
    this.forgetProcess();
    this.setState('Off');
  }

  private exited(child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (child !== this.child) return;
    // The guest powered off, or QEMU failed: either way the host is off now.
    this.options.logger.info({ code, signal }, 'machine: QEMU exited');
    this.forgetProcess();
    this.setState('Off');
  }

  private forgetProcess(): void {
    this.qmp?.close();
    this.qmp = undefined;
    this.child = undefined;
    this.plugged.clear();
  }

  /** Plugs and unplugs until the running machine's USB devices are what the slots present. */
  private async reconcileMedia(): Promise<void> {
    const qmp = this.qmp;
    if (!qmp || this.current === 'Stopping') return;
    for (const [slotId, medium] of [...this.plugged]) {
      const wanted = this.wanted.get(slotId);
      if (wanted && sameMedium(wanted, medium)) continue;
      await unplug(qmp, slotId);
      this.plugged.delete(slotId);
      this.options.logger.info({ slotId }, 'machine: medium removed');
    }
    for (const [slotId, medium] of this.wanted) {
      if (this.plugged.has(slotId)) continue;
      await plug(qmp, slotId, medium);
      this.plugged.set(slotId, medium);
      this.options.logger.info({ slotId, kind: medium.kind }, 'machine: medium inserted');
    }
  }
}

/** The medium kind an enabled override boots first, if any (Disk and Default boot the machine's own disk). */
function overriddenKind(settings: BootSettings): Medium['kind'] | undefined {
  if (!settings.enabled) return undefined;
  if (settings.source === BootSource.ExternalMedia) return 'cd';
  if (settings.source === BootSource.RemovableMedia) return 'stick';
  return undefined;
}

/** Media of the overridden kind boot first, in slot order, then the disk; no other medium is tried. */
function bootOrderOf(media: Map<string, Medium>, settings: BootSettings): Map<string, number> {
  const first = overriddenKind(settings);
  const order = new Map<string, number>();
  for (const [slotId, medium] of media) if (medium.kind === first) order.set(slotId, order.size);
  return order;
}

/** The media as QEMU devices at start: each a SCSI device behind USB mass storage (bulk-only transport). */
function mediaArguments(media: Map<string, Medium>, settings: BootSettings): string[] {
  const order = bootOrderOf(media, settings);
  return [...media].flatMap(([slotId, medium]) => {
    const ids = deviceIds(slotId);
    const bootIndex = order.get(slotId);
    return [
      ...['-blockdev', blockdevJson(ids.node, medium)],
      ...['-device', `usb-bot,id=${ids.bot},bus=xhci.0`],
      ...[
        '-device',
        `${scsiDriver(medium)},id=${ids.device},drive=${ids.node},bus=${ids.bot}.0${medium.kind === 'stick' ? ',removable=on' : ''}${bootIndex === undefined ? '' : `,bootindex=${bootIndex}`}`,
      ],
    ];
  });
}

/** A CD-ROM, or a removable disk as a stick presents itself. */
function scsiDriver(medium: Medium): string {
  return medium.kind === 'cd' ? 'scsi-cd' : 'scsi-hd';
}

/** The NBD block node in QEMU's JSON syntax, which takes a socket path with any character in it. */
function blockdevJson(node: string, medium: Medium): string {
  return JSON.stringify({
    driver: 'nbd',
    'node-name': node,
    server: { type: 'unix', path: medium.socket },
    'read-only': medium.readOnly,
  });
}

function sameMedium(a: Medium, b: Medium): boolean {
  return a.socket === b.socket && a.kind === b.kind && a.readOnly === b.readOnly;
}

/** Plugs a medium into the running machine, as a USB plug would; it is not bootable until the next boot. */
async function plug(qmp: QmpClient, slotId: string, medium: Medium): Promise<void> {
  const ids = deviceIds(slotId);
  await qmp.execute('blockdev-add', JSON.parse(blockdevJson(ids.node, medium)));
  try {
    await qmp.execute('device_add', { driver: 'usb-bot', id: ids.bot, bus: 'xhci.0' });
    await qmp.execute('device_add', {
      driver: scsiDriver(medium),
      id: ids.device,
      drive: ids.node,
      bus: `${ids.bot}.0`,
      ...(medium.kind === 'stick' ? { removable: true } : {}),
    });
    // A hot-plugged usb-bot waits for its SCSI device before it shows itself to the guest.
    await qmp.execute('qom-set', { path: ids.bot, property: 'attached', value: true });
  } catch (error) {
    // Nothing half-plugged stays behind: the next reconcile starts from scratch.
    await qmp.execute('device_del', { id: ids.bot }).catch(() => undefined);
    await qmp.execute('blockdev-del', { 'node-name': ids.node }).catch(() => undefined);
    throw error;
  }
}

async function unplug(qmp: QmpClient, slotId: string): Promise<void> {
  const ids = deviceIds(slotId);
  const deleted = qmp.waitForEvent('DEVICE_DELETED', (data) => data.device === ids.bot, UNPLUG_TIMEOUT_MS);
  await qmp.execute('device_del', { id: ids.bot });
  await deleted;
  await qmp.execute('blockdev-del', { 'node-name': ids.node });
}

/** Ends a QEMU process: `quit` over QMP, SIGKILL if it lingers. */
async function quit(child: ChildProcess, qmp: QmpClient | undefined): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  await qmp?.execute('quit').catch(() => undefined);
  if (!qmp) child.kill('SIGTERM');
  const killTimer = setTimeout(() => child.kill('SIGKILL'), KILL_AFTER_MS);
  await exited;
  clearTimeout(killTimer);
}

/** QEMU creates the QMP socket after it starts; connects once it is there, or fails if QEMU exits first. */
async function connectQmp(socket: string, child: ChildProcess): Promise<QmpClient> {
  const deadline = Date.now() + QMP_CONNECT_TIMEOUT_MS;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null)
      throw new Error('QEMU exited before it was ready');
    try {
      return await QmpClient.connect(socket);
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await sleep(50);
    }
  }
}
