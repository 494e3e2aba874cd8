import { ApiError, runAction, type VirtualMedia } from './api.ts';
import { h, showMessage } from './dom.ts';

let nextId = 0;
/** A page-unique id, to tie labels and descriptions to their controls. */
export function uniqueId(prefix: string): string {
  return `${prefix}-${++nextId}`;
}

/** What a card needs from the page: a fresh look at every slot after it changed something. */
export interface CardContext {
  refresh(): Promise<void>;
  /** The session has ended: back to the login form. */
  sessionEnded(message: string): void;
}

type Tone = 'idle' | 'busy' | 'ok' | 'error';

/**
 * One slot: its name, mode and state, what is inserted, and (in subclasses) the controls for its mode.
 * Built once and updated in place on every refresh, so what the user is typing or choosing survives.
 */
export abstract class SlotCard {
  readonly element: HTMLElement;
  protected member: VirtualMedia;
  protected readonly controls = h('div', { className: 'controls' });
  private readonly state = h('span', { className: 'badge state' });
  protected readonly image = h('dd');
  private readonly connectedVia = h('dd');
  private readonly access = h('dd');
  private readonly message = h('p', { className: 'message', hidden: true });

  constructor(
    member: VirtualMedia,
    protected readonly context: CardContext,
    modeLabel: string,
  ) {
    this.member = member;
    const titleId = uniqueId('slot-title');
    this.element = h(
      'article',
      { className: 'slot', 'aria-labelledby': titleId, 'data-slot': member.Id },
      h(
        'header',
        {},
        h('h2', { id: titleId }, member.Id),
        h('span', { className: 'badge mode' }, modeLabel),
        this.state,
      ),
      h(
        'dl',
        { className: 'facts' },
        h('dt', {}, 'Image'),
        this.image,
        h('dt', {}, 'Connected via'),
        this.connectedVia,
        h('dt', {}, 'Access'),
        this.access,
      ),
      this.controls,
      this.message,
    );
    // The message region is announced when it changes, errors assertively.
    this.message.setAttribute('aria-live', 'polite');
  }

  update(member: VirtualMedia): void {
    this.member = member;
    this.image.textContent = member.ImageName ?? member.Image ?? '—';
    this.image.title = member.Image ?? '';
    this.connectedVia.textContent = connectedViaLabel(member.ConnectedVia);
    this.access.textContent = member.Inserted ? (member.WriteProtected ? 'Read-only' : 'Read-write') : '—';
    this.element.dataset.inserted = String(member.Inserted);
    this.render();
  }

  /** Brings the state badge and the controls in line with the slot and any local activity. */
  protected abstract render(): void;

  protected setState(label: string, tone: Tone): void {
    this.state.textContent = label;
    this.state.dataset.tone = tone;
  }

  protected say(text: string, tone: 'info' | 'error' = 'info'): void {
    showMessage(this.message, text, tone);
  }

  protected actionTarget(name: 'InsertMedia' | 'EjectMedia'): string | undefined {
    return this.member.Actions?.[`#VirtualMedia.${name}`]?.target;
  }

  /** Runs a Redfish action, reporting failure on the card (or ending the session on 401). */
  protected async act(
    name: 'InsertMedia' | 'EjectMedia',
    body: Record<string, unknown>,
    progress?: (text: string) => void,
  ): Promise<boolean> {
    const target = this.actionTarget(name);
    if (!target) {
      this.say(`This slot does not offer ${name}.`, 'error');
      return false;
    }
    try {
      await runAction(target, body, (task) => {
        const percent = task.PercentComplete === undefined ? '' : ` ${task.PercentComplete}%`;
        progress?.(`${task.TaskState ?? 'Running'}${percent}`);
      });
      return true;
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) this.context.sessionEnded(error.message);
      else this.say(error instanceof Error ? error.message : String(error), 'error');
      return false;
    } finally {
      await this.context.refresh();
    }
  }
}

function connectedViaLabel(value: string): string {
  if (value === 'Applet') return 'Browser or CLI (proxy)';
  if (value === 'URI') return 'Image URL';
  if (value === 'NotConnected') return 'Not connected';
  return value;
}

/** A labelled checkbox, ticked by default: write protection is the safe choice. */
export function writeProtectToggle(): { element: HTMLLabelElement; input: HTMLInputElement } {
  const input = h('input', { type: 'checkbox', checked: true, name: 'write-protected' });
  return { element: h('label', { className: 'check' }, input, 'Write protected'), input };
}

/** A label above its control, with optional hint text tied to the control for screen readers. */
export function field(label: string, control: HTMLInputElement, hint?: string): HTMLElement {
  control.id ||= uniqueId('field');
  const hintElement = hint ? h('small', { id: uniqueId('hint') }, hint) : undefined;
  if (hintElement) control.setAttribute('aria-describedby', hintElement.id);
  return h('div', { className: 'field' }, h('label', { htmlFor: control.id }, label), control, hintElement);
}
