import './style.css';
import { ApiError, listVirtualMedia, login, logout } from './api.ts';
import { HostPanel } from './host-panel.ts';
import { LegacySlotCard } from './legacy-card.ts';
import { ProxySlotCard } from './proxy-card.ts';
import type { CardContext, SlotCard } from './slot-card.ts';

/** Slot state is polled this often; actions also refresh at once. */
const POLL_INTERVAL_MS = 2000;
const userKey = 'vmedia-user';

function byId<T extends HTMLElement>(id: string): T {
  const element = document.getElementById(id);
  if (!element) throw new Error(`index.html lacks #${id}`);
  return element as T;
}

const loginView = byId('login-view');
const loginForm = byId<HTMLFormElement>('login-form');
const loginError = byId('login-error');
const username = byId<HTMLInputElement>('username');
const password = byId<HTMLInputElement>('password');
const consoleView = byId('console-view');
const session = byId('session');
const userLabel = byId('user');
const notice = byId('notice');
const slots = byId('slots');

const cards = new Map<string, SlotCard>();
let pollTimer: ReturnType<typeof setInterval> | undefined;
let running: Promise<void> = Promise.resolve();
let queued: Promise<void> | undefined;

const context: CardContext = { refresh, sessionEnded: showLogin };
const host = new HostPanel(context);
slots.before(host.element);

/** Loads every slot. Calls made while a load runs share one follow-up load instead of piling up. */
function refresh(): Promise<void> {
  if (!queued) {
    queued = running.then(() => {
      queued = undefined;
      return load();
    });
    running = queued.catch(() => {});
  }
  return queued;
}

async function load(): Promise<void> {
  let members: Awaited<ReturnType<typeof listVirtualMedia>>;
  try {
    [members] = await Promise.all([listVirtualMedia(), host.load()]);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return showLogin(cards.size ? error.message : '');
    notice.textContent = `Cannot read the slots: ${error instanceof Error ? error.message : String(error)}`;
    notice.hidden = false;
    return;
  }
  notice.hidden = true;
  if (consoleView.hidden) showConsole();
  for (const member of members) {
    const card = cards.get(member.Id);
    if (card) card.update(member);
    else {
      const isProxy = member.Oem?.OpenBMC?.WebSocketEndpoint !== undefined;
      cards.set(
        member.Id,
        isProxy ? new ProxySlotCard(member, context) : new LegacySlotCard(member, context),
      );
    }
  }
  slots.replaceChildren(...members.map((member) => cards.get(member.Id)!.element));
}

function showConsole(): void {
  loginView.hidden = true;
  consoleView.hidden = false;
  session.hidden = false;
  userLabel.textContent = sessionStorage.getItem(userKey) ?? '';
  clearInterval(pollTimer);
  pollTimer = setInterval(() => void refresh(), POLL_INTERVAL_MS);
}

function showLogin(message = ''): void {
  clearInterval(pollTimer);
  consoleView.hidden = true;
  session.hidden = true;
  loginView.hidden = false;
  loginError.textContent = message;
  loginError.hidden = message === '';
  username.focus();
}

loginForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  const submit = loginForm.querySelector('button')!;
  submit.disabled = true;
  loginError.hidden = true;
  try {
    await login(username.value, password.value);
    sessionStorage.setItem(userKey, username.value);
    password.value = '';
    await refresh();
  } catch (error) {
    showLogin(error instanceof Error ? error.message : String(error));
  } finally {
    submit.disabled = false;
  }
});

byId('logout').addEventListener('click', async () => {
  // A medium served by this page goes with the session.
  for (const card of cards.values()) if (card instanceof ProxySlotCard) card.stop();
  cards.clear();
  slots.replaceChildren();
  sessionStorage.removeItem(userKey);
  await logout().catch(() => {});
  showLogin();
});

window.addEventListener('beforeunload', (event) => {
  const serving = [...cards.values()].some((card) => card instanceof ProxySlotCard && card.busy);
  if (serving) event.preventDefault();
});

void refresh();
