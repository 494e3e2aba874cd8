import { EventEmitter } from 'node:events';
import fs from 'node:fs/promises';
import { BootMode, type BootSettings, BootSource, defaultBootSettings } from '../contract/host.ts';

/**
 * The emulated host's boot override, kept in a file so that it survives a restart of the stack as a
 * BMC's settings daemon keeps it. Every change is written before it is announced.
 */
export class BootSettingsStore extends EventEmitter<{
  change: [settings: BootSettings, changed: (keyof BootSettings)[]];
}> {
  private writing: Promise<void> = Promise.resolve();

  private constructor(
    private readonly file: string,
    private current: BootSettings,
  ) {
    super();
  }

  static async open(file: string): Promise<BootSettingsStore> {
    const saved = await fs.readFile(file, 'utf8').then(JSON.parse, () => ({}));
    return new BootSettingsStore(file, { ...defaultBootSettings, ...pickSettings(saved) });
  }

  get settings(): BootSettings {
    return { ...this.current };
  }

  async update(change: Partial<BootSettings>): Promise<void> {
    const next = { ...this.current, ...change };
    const changed = (Object.keys(next) as (keyof BootSettings)[]).filter(
      (key) => next[key] !== this.current[key],
    );
    if (changed.length === 0) return;
    this.current = next;
    // Writes run one after another, each saving what is current when it runs: the file ends up current.
    const write = this.writing.then(() =>
      fs.writeFile(this.file, `${JSON.stringify(this.current)}\n`, { mode: 0o600 }),
    );
    this.writing = write.catch(() => undefined);
    await write;
    this.emit('change', this.settings, changed);
  }

  /** After the boot a one-time override applied to: back to the default, as Redfish's Once asks. */
  async consumeOnce(): Promise<void> {
    if (!this.current.enabled || !this.current.oneTime) return;
    await this.update({ source: BootSource.Default, mode: BootMode.Regular, enabled: false });
  }
}

function pickSettings(saved: Record<string, unknown>): Partial<BootSettings> {
  const picked: Partial<BootSettings> = {};
  for (const key of ['source', 'mode', 'type'] as const)
    if (typeof saved[key] === 'string') picked[key] = saved[key];
  for (const key of ['enabled', 'oneTime'] as const)
    if (typeof saved[key] === 'boolean') picked[key] = saved[key];
  return picked;
}
