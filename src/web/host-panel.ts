import { ApiError, type ComputerSystem, getSystem, runAction, setBootOverride } from './api.ts';
import { h, showMessage } from './dom.ts';
import type { CardContext } from './slot-card.ts';

const powerLabels: Record<string, string> = {
  On: 'On',
  Off: 'Off',
  PoweringOn: 'Powering on…',
  PoweringOff: 'Powering off…',
};

const bootTargets = { Cd: 'virtual CD', Usb: 'virtual USB stick' } as const;

/**
 * The host the BMC manages: its power, buttons to power it on, off and restart it, and "boot once from
 * virtual media" (a one-time boot override). Hidden when no host services answer (Systems/system has
 * no PowerState), so the page shows only what works.
 */
export class HostPanel {
  readonly element: HTMLElement;
  private readonly power = h('span', { className: 'badge state' });
  private readonly nextBoot = h('dd');
  private readonly onButton = h('button', { type: 'button', className: 'primary' }, 'Power on');
  private readonly offButton = h('button', { type: 'button' }, 'Power off');
  private readonly restartButton = h('button', { type: 'button' }, 'Restart');
  private readonly target = h(
    'select',
    { name: 'boot-target', 'aria-label': 'Virtual medium to boot from' },
    ...Object.entries(bootTargets).map(([value, label]) => h('option', { value }, label)),
  );
  private readonly bootOnceButton = h('button', { type: 'button' }, 'Boot once from virtual media');
  private readonly message = h('p', { className: 'message', hidden: true });
  private system: ComputerSystem = {};
  private busy = false;

  constructor(private readonly context: CardContext) {
    this.element = h(
      'article',
      { className: 'host', 'aria-labelledby': 'host-title', hidden: true },
      h('header', {}, h('h2', { id: 'host-title' }, 'Host'), this.power),
      h('dl', { className: 'facts' }, h('dt', {}, 'Next boot'), this.nextBoot),
      h(
        'div',
        { className: 'controls' },
        h(
          'div',
          { className: 'row' },
          h('span', { className: 'buttons' }, this.onButton, this.offButton, this.restartButton),
        ),
        h('div', { className: 'row' }, this.target, this.bootOnceButton),
      ),
      this.message,
    );
    this.message.setAttribute('aria-live', 'polite');
    this.onButton.addEventListener('click', () => void this.reset('On'));
    this.offButton.addEventListener('click', () => void this.reset('ForceOff'));
    this.restartButton.addEventListener('click', () => void this.reset('ForceRestart'));
    this.bootOnceButton.addEventListener('click', () => void this.bootOnce());
  }

  /** Reads Systems/system again; a failure other than the session's is shown, not thrown. */
  async load(): Promise<void> {
    try {
      this.system = await getSystem();
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) throw error;
      this.system = {};
    }
    this.render();
  }

  private render(): void {
    const { PowerState: powerState, Boot: boot } = this.system;
    this.element.hidden = powerState === undefined;
    this.power.textContent = powerLabels[powerState ?? ''] ?? powerState ?? '';
    this.power.dataset.tone =
      powerState === 'On' ? 'ok' : powerState?.startsWith('Powering') ? 'busy' : 'idle';
    const enabled = boot?.BootSourceOverrideEnabled ?? 'Disabled';
    const target = boot?.BootSourceOverrideTarget ?? 'None';
    this.nextBoot.textContent =
      enabled === 'Disabled' || target === 'None'
        ? 'The host’s own boot order'
        : `${bootTargets[target as keyof typeof bootTargets] ?? target}${enabled === 'Once' ? ', once' : ''}`;
    const on = powerState === 'On';
    this.onButton.disabled = this.busy || powerState !== 'Off';
    this.offButton.disabled = this.busy || powerState === 'Off';
    this.restartButton.disabled = this.busy || !on;
    this.bootOnceButton.disabled = this.busy || !boot;
  }

  private async reset(resetType: 'On' | 'ForceOff' | 'ForceRestart'): Promise<void> {
    const target = this.system.Actions?.['#ComputerSystem.Reset']?.target;
    if (!target) return;
    await this.run(() => runAction(target, { ResetType: resetType }));
  }

  /** Sets the one-time override; a running host is restarted so that it boots the medium now. */
  private async bootOnce(): Promise<void> {
    const target = this.target.value;
    await this.run(async () => {
      await setBootOverride(target, 'Once');
      const reset = this.system.Actions?.['#ComputerSystem.Reset']?.target;
      if (reset)
        await runAction(reset, { ResetType: this.system.PowerState === 'Off' ? 'On' : 'ForceRestart' });
      this.say(`Booting from the ${bootTargets[target as keyof typeof bootTargets]}.`);
    });
  }

  private async run(operation: () => Promise<void>): Promise<void> {
    this.busy = true;
    this.say('');
    this.render();
    try {
      await operation();
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) this.context.sessionEnded(error.message);
      else this.say(error instanceof Error ? error.message : String(error), 'error');
    } finally {
      this.busy = false;
      await this.context.refresh();
    }
  }

  private say(text: string, tone: 'info' | 'error' = 'info'): void {
    showMessage(this.message, text, tone);
  }
}
