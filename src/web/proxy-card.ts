import { type VirtualMedia, xsrfToken } from './api.ts';
import { formatBytes, h } from './dom.ts';
import { type MountEnd, ProxyMount } from './proxy-mount.ts';
import { type CardContext, field, SlotCard, writeProtectToggle } from './slot-card.ts';

const STATS_INTERVAL_MS = 1000;

/**
 * A Proxy slot: the user picks a local image and this page serves it to the host over the slot's
 * WebSocket, showing what the host has read and how fast, until ejected.
 */
export class ProxySlotCard extends SlotCard {
  private readonly fileInput = h('input', { type: 'file', name: 'image' });
  private readonly protect = writeProtectToggle();
  private readonly mountButton = h('button', { type: 'submit', className: 'primary' }, 'Mount');
  private readonly ejectButton = h('button', { type: 'button' }, 'Eject');
  private readonly served = h('output');
  private readonly written = h('output');
  private readonly rate = h('output');
  private readonly live = h(
    'dl',
    { className: 'live', hidden: true },
    h('dt', {}, 'Served'),
    this.served,
    h('dt', {}, 'Written'),
    this.written,
    h('dt', {}, 'Throughput'),
    this.rate,
  );
  private mount: ProxyMount | undefined;
  /** The chosen file while this page serves it, and whether the host has attached it yet. */
  private serving: { file: File; attached: boolean } | undefined;
  private ejecting = false;
  private statsTimer: ReturnType<typeof setInterval> | undefined;

  constructor(member: VirtualMedia, context: CardContext) {
    super(member, context, 'Proxy');
    this.fileInput.required = true;
    const form = h(
      'form',
      { className: 'mount-form' },
      field('Image file', this.fileInput, 'Stays on this computer; the host reads it through this page.'),
      h(
        'div',
        { className: 'row' },
        this.protect.element,
        h('span', { className: 'buttons' }, this.mountButton, this.ejectButton),
      ),
    );
    form.noValidate = true;
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      void this.start();
    });
    this.ejectButton.addEventListener('click', () => void this.eject());
    this.controls.append(form, this.live);
    this.update(member);
  }

  /** True while this page serves a medium: leaving the page would pull it from the host. */
  get busy(): boolean {
    return this.mount !== undefined;
  }

  /** Ends this page's mount, if any, as the user leaves. */
  stop(): void {
    if (!this.mount) return;
    this.ejecting = true;
    this.mount.close();
  }

  protected render(): void {
    const inserted = this.member.Inserted;
    if (this.mount && this.serving) {
      // Redfish has no name for a proxied image; this page knows it.
      this.image.textContent = `${this.serving.file.name} (from this page)`;
      if (this.ejecting) this.setState('Ejecting…', 'busy');
      else if (inserted) this.setState('Mounted', 'ok');
      else this.setState('Connecting…', 'busy');
      if (inserted && !this.serving.attached) {
        this.serving.attached = true;
        const { file } = this.serving;
        const access = this.mount.device.readOnly ? 'read-only' : 'read-write; writes stay in this page';
        this.say(`Serving ${file.name} (${formatBytes(file.size)}, ${access}).`);
      }
    } else {
      this.setState(inserted ? 'In use' : 'Ready', inserted ? 'ok' : 'idle');
    }
    const locked = this.mount !== undefined || inserted;
    this.fileInput.disabled = locked;
    this.protect.input.disabled = locked;
    this.mountButton.disabled = locked;
    this.ejectButton.disabled = !locked || this.ejecting;
    this.live.hidden = this.mount === undefined;
  }

  private async start(): Promise<void> {
    const file = this.fileInput.files?.[0];
    if (!file) {
      this.say('Choose an image file to mount.', 'error');
      this.fileInput.focus();
      return;
    }
    const endpoint = this.member.Oem?.OpenBMC?.WebSocketEndpoint;
    const token = xsrfToken();
    if (!endpoint) return this.say('This slot has no WebSocket endpoint.', 'error');
    if (!token) return this.context.sessionEnded('Your session has ended. Please log in again.');

    const writable = !this.protect.input.checked;
    const mount = new ProxyMount(endpoint, file, { writable, xsrfToken: token });
    this.mount = mount;
    this.serving = { file, attached: false };
    this.say(`Connecting to ${endpoint}…`);
    this.startStats(mount);
    this.render();
    void mount.ended.then((end) => this.finished(mount, end));
    if ((await mount.connected) && this.serving && !this.serving.attached) {
      this.say(`Connected; waiting for the host to attach ${file.name}…`);
    }
    await this.context.refresh();
  }

  private async eject(): Promise<void> {
    if (!this.mount) {
      this.setState('Ejecting…', 'busy');
      if (await this.act('EjectMedia', {})) this.say('Ejected.');
      return;
    }
    // Closing our WebSocket ends the mount; `finished` reports it once the server has let go.
    this.ejecting = true;
    this.render();
    this.mount.close();
  }

  private async finished(mount: ProxyMount, end: MountEnd): Promise<void> {
    clearInterval(this.statsTimer);
    this.mount = undefined;
    this.serving = undefined;
    if (this.ejecting) this.say('Ejected.');
    else this.say(describeEnd(end, await mount.connected), 'error');
    this.ejecting = false;
    await this.context.refresh();
  }

  private startStats(mount: ProxyMount): void {
    let last = { at: performance.now(), bytes: 0 };
    const show = () => {
      const now = performance.now();
      const bytes = mount.stats.bytesRead + mount.stats.bytesWritten;
      const perSecond = ((bytes - last.bytes) * 1000) / Math.max(1, now - last.at);
      last = { at: now, bytes };
      this.served.textContent = formatBytes(mount.stats.bytesRead);
      this.written.textContent = mount.device.readOnly
        ? 'write protected'
        : formatBytes(mount.stats.bytesWritten);
      this.rate.textContent = `${(perSecond / 1024 ** 2).toFixed(1)} MiB/s`;
    };
    show();
    this.statsTimer = setInterval(show, STATS_INTERVAL_MS);
  }
}

/** Why a mount ended, in words: the server's close reason when it gave one. */
function describeEnd(end: MountEnd, connected: boolean): string {
  if (!connected) {
    return 'The server refused the connection: the slot may be in use, or your session may have ended.';
  }
  if (end.error)
    return `The NBD session failed: ${end.error instanceof Error ? end.error.message : String(end.error)}`;
  if (end.code === 1000)
    return end.reason ? `The medium was ejected: ${end.reason}.` : 'The medium was ejected.';
  if (end.code === 1006) return 'The connection to the server was lost.';
  return `The mount ended (WebSocket close ${end.code}${end.reason ? `: ${end.reason}` : ''}).`;
}
