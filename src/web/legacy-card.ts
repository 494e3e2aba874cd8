import { checkImageUrl } from '../contract/image-url.ts';
import type { VirtualMedia } from './api.ts';
import { h } from './dom.ts';
import { type CardContext, field, SlotCard, writeProtectToggle } from './slot-card.ts';

/** A Legacy slot: the BMC fetches an image from an HTTPS or SMB URL, with optional credentials. */
export class LegacySlotCard extends SlotCard {
  private readonly url = h('input', {
    type: 'url',
    name: 'image-url',
    placeholder: 'https://server/path/image.iso',
    autocomplete: 'off',
    spellcheck: false,
  });
  private readonly user = h('input', { type: 'text', name: 'image-user', autocomplete: 'off' });
  // new-password keeps the browser from filling in the BMC login password here.
  private readonly password = h('input', {
    type: 'password',
    name: 'image-password',
    autocomplete: 'new-password',
  });
  private readonly protect = writeProtectToggle();
  private readonly insertButton = h('button', { type: 'submit', className: 'primary' }, 'Insert');
  private readonly ejectButton = h('button', { type: 'button' }, 'Eject');
  private busy: 'Inserting' | 'Ejecting' | undefined;

  constructor(member: VirtualMedia, context: CardContext) {
    super(member, context, 'Legacy');
    const form = h(
      'form',
      { className: 'insert-form' },
      field('Image URL', this.url, 'An https:// URL, or smb://server/share/path/file.iso for a CIFS share.'),
      h(
        'details',
        { className: 'credentials' },
        h('summary', {}, 'Credentials (optional)'),
        h('div', { className: 'pair' }, field('User name', this.user), field('Password', this.password)),
      ),
      h(
        'div',
        { className: 'row' },
        this.protect.element,
        h('span', { className: 'buttons' }, this.insertButton, this.ejectButton),
      ),
    );
    form.noValidate = true;
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      void this.insert();
    });
    this.ejectButton.addEventListener('click', () => void this.eject());
    this.controls.append(form);
    this.update(member);
  }

  protected render(): void {
    const inserted = this.member.Inserted;
    if (this.busy) this.setState(`${this.busy}…`, 'busy');
    else this.setState(inserted ? 'Inserted' : 'Ready', inserted ? 'ok' : 'idle');
    const locked = inserted || this.busy !== undefined;
    for (const input of [this.url, this.user, this.password, this.protect.input, this.insertButton]) {
      input.disabled = locked;
    }
    this.ejectButton.disabled = !inserted || this.busy !== undefined;
  }

  private async insert(): Promise<void> {
    const image = this.url.value.trim();
    // The checks the server and the service apply too (src/contract/image-url.ts), said before asking.
    // http:// only where the integrator allowed it, which InsertMedia's allowable values say.
    const allowed =
      this.member.Actions?.['#VirtualMedia.InsertMedia']?.['TransferProtocolType@Redfish.AllowableValues'];
    const checked = checkImageUrl(image, { allowHttp: allowed?.includes('HTTP') ?? false });
    if (!checked.ok) {
      const why = checked.message;
      this.say(
        image && checked.problem !== 'not-a-url'
          ? `${why[0]!.toUpperCase()}${why.slice(1)}.`
          : 'Enter the image URL, starting with https://.',
        'error',
      );
      this.url.focus();
      return;
    }
    const body: Record<string, unknown> = { Image: image, WriteProtected: this.protect.input.checked };
    if (this.user.value) body.UserName = this.user.value;
    if (this.password.value) body.Password = this.password.value;
    await this.run('Inserting', async () => {
      if (await this.act('InsertMedia', body, (progress) => this.say(`Inserting: ${progress}`))) {
        this.password.value = '';
        this.say('Inserted.');
      }
    });
  }

  private async eject(): Promise<void> {
    await this.run('Ejecting', async () => {
      if (await this.act('EjectMedia', {})) this.say('Ejected.');
    });
  }

  private async run(busy: 'Inserting' | 'Ejecting', work: () => Promise<void>): Promise<void> {
    this.busy = busy;
    this.say(`${busy}…`);
    this.render();
    try {
      await work();
    } finally {
      this.busy = undefined;
      this.render();
    }
  }
}
