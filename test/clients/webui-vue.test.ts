/**
 * OpenBMC's web UI, webui-vue (https://github.com/openbmc/webui-vue at commit
 * 11d1e040453b9494c0447ee70ae13c45bd5b4202), against the real server and service: its own in-browser NBD
 * server, `src/utilities/NBDServer.js`, read unmodified from the snapshot, runs in headless Chromium on
 * the server's origin, after a login done the way webui-vue does it.
 *
 * The page-side steps below follow webui-vue's code at that commit:
 * - `src/store/api.js`: axios with `withCredentials`, `Accept: application/json` and
 *   `X-Requested-With: XMLHttpRequest`; axios (1.13) adds `X-XSRF-TOKEN` from the `XSRF-TOKEN` cookie to
 *   same-origin requests.
 * - `src/store/modules/Authentication/AuthenticanStore.js`: login is `POST /redfish/v1/SessionService/Sessions`
 *   `{UserName, Password}`, remembering the `Location`; the WebSocket token is the `XSRF-TOKEN` cookie;
 *   logout is `DELETE` of that `Location`.
 * - `src/store/modules/GlobalStore.js` `getBmcPath` and `src/store/modules/Operations/VirtualMediaStore.js`
 *   `getData`: the manager's VirtualMedia members, Proxy devices being those with `TransferProtocolType`
 *   `OEM`, their endpoint `Oem.OpenBMC.WebSocketEndpoint`.
 * - `src/views/Operations/VirtualMedia/VirtualMedia.vue` `startVM`/`stopVM`: `new NbdServer('wss://' +
 *   host + endpoint, file, id, token)`, `socketClosed(code)` counting 1000 as success, `stop()`.
 *
 * The snapshot is not part of the repository (see test/clients/snapshots.ts); without it this group is
 * skipped with one line saying so.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import type { Page } from 'playwright-core';
import { adminPassword } from '../helpers/server.ts';
import { startVmStack, type VmStack } from '../helpers/virtual-media-stack.ts';
import { waitFor } from '../helpers/wait.ts';
import { launchBrowser, type TestBrowser } from '../web/browser.ts';
import { snapshotMissing, snapshotPath } from './snapshots.ts';

const execFileAsync = promisify(execFile);
const sha256 = (data: Uint8Array) => createHash('sha256').update(data).digest('hex');
const MiB = 1024 * 1024;
const collectionUri = '/redfish/v1/Managers/bmc/VirtualMedia';
const SLOT_TIMEOUT_MS = 30_000;

/** What webui-vue's api answers to the page: axios' `status`, `headers`, `data`. */
interface ApiResponse {
  status: number;
  headers: Record<string, string>;
  // biome-ignore lint/suspicious/noExplicitAny: Redfish bodies, inspected freely.
  data: any;
}

interface Device {
  id: string;
  transferProtocolType: string | null;
  websocket: string | undefined;
  isActive: boolean;
}

/** The steps `stepsModule` puts on `window.webui`. */
interface WebuiSteps {
  api(method: string, url: string, body?: unknown): Promise<ApiResponse>;
  login(username: string, password: string): Promise<ApiResponse>;
  getData(): Promise<{ proxyDevices: Device[]; legacyDevices: Device[] }>;
  startVM(id: string, imageUrl: string): Promise<{ size: number }>;
  stopVM(id: string): void;
  logout(): Promise<{ status: number; cookiesAfterDelete: string }>;
  cookie(name: string): string | undefined;
  /** socketStarted / socketClosed(code) as startVM's callbacks saw them, in order. */
  events: { id: string; event: 'started' | 'closed'; code?: number }[];
}

declare global {
  interface Window {
    webui: WebuiSteps;
  }
}

/** Where the page loads the client's files from: same origin, answered by `page.route`, not the server. */
const clientPrefix = '/__client__';

/**
 * webui-vue's store and view logic that the test drives, reduced to plain browser code (no Vue, no
 * axios): the same requests, headers, cookies and NBDServer calls. Served as a module next to the
 * upstream NBDServer.js, so no test code is passed through page.evaluate's function serialisation.
 */
const stepsModule = `
import NbdServer from '${clientPrefix}/NBDServer.js';

// js-cookie's Cookies.get
const cookie = (name) => {
  for (const part of document.cookie.split('; ')) {
    const at = part.indexOf('=');
    if (at > 0 && part.slice(0, at) === name) return decodeURIComponent(part.slice(at + 1));
  }
  return undefined;
};

// src/store/api.js: axios, withCredentials, Accept and X-Requested-With on every request; axios adds
// X-XSRF-TOKEN (its xsrfHeaderName) from the XSRF-TOKEN cookie (its xsrfCookieName) on same-origin requests.
const api = async (method, url, body) => {
  const headers = { Accept: 'application/json', 'X-Requested-With': 'XMLHttpRequest' };
  const xsrf = cookie('XSRF-TOKEN');
  if (xsrf !== undefined) headers['X-XSRF-TOKEN'] = xsrf;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(url, {
    method,
    headers,
    credentials: 'include',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let data = text;
  try { data = JSON.parse(text); } catch {}
  return { status: response.status, headers: Object.fromEntries(response.headers), data };
};

const store = { sessionURI: null, proxyDevices: [], legacyDevices: [] };
const events = [];

// AuthenticanStore.js actions.login + mutations.authSuccess
const login = async (username, password) => {
  const response = await api('POST', '/redfish/v1/SessionService/Sessions', { UserName: username, Password: password });
  if (response.status < 300) store.sessionURI = response.headers['location'];
  return response;
};

// GlobalStore.js getBmcPath
const getBmcPath = async () => {
  const serviceRoot = await api('GET', '/redfish/v1');
  let bmcPath = serviceRoot.data?.ManagerProvidingService?.['@odata.id'];
  if (!bmcPath) {
    const managers = await api('GET', '/redfish/v1/Managers');
    bmcPath = managers.data?.Members?.[0]?.['@odata.id'];
  }
  return bmcPath;
};

// VirtualMediaStore.js getData (VITE_VIRTUAL_MEDIA_LIST_ENABLED=true: the list from Redfish)
const getData = async () => {
  const collection = await api('GET', (await getBmcPath()) + '/VirtualMedia');
  if (collection.status !== 200) throw new Error('GET VirtualMedia: ' + collection.status);
  const devices = await Promise.all(collection.data.Members.map((m) => api('GET', m['@odata.id'])));
  const deviceData = devices.map((device) => ({
    id: device.data?.Id,
    transferProtocolType: device.data?.TransferProtocolType,
    websocket: device.data?.Oem?.OpenBMC?.WebSocketEndpoint,
    isActive: device.data?.Inserted === true,
  }));
  store.proxyDevices = deviceData.filter((d) => d.transferProtocolType === 'OEM').map((d) => ({ ...d, file: null, nbd: null }));
  store.legacyDevices = deviceData.filter((d) => d.transferProtocolType !== 'OEM');
  return {
    proxyDevices: store.proxyDevices.map(({ file, nbd, ...d }) => d),
    legacyDevices: store.legacyDevices,
  };
};

// VirtualMedia.vue startVM, with the file the user would have chosen
const startVM = async (id, imageUrl) => {
  const device = store.proxyDevices.find((d) => d.id === id);
  if (!device) throw new Error('no Proxy device ' + id);
  const blob = await (await fetch(imageUrl)).blob();
  device.file = new File([blob], 'image.img', { type: 'application/octet-stream' });
  const token = cookie('XSRF-TOKEN'); // getters['authentication/token']
  device.nbd = new NbdServer('wss://' + window.location.host + device.websocket, device.file, device.id, token);
  device.nbd.socketStarted = () => {
    events.push({ id: device.id, event: 'started' });
    device.isActive = true;
  };
  device.nbd.socketClosed = (code) => {
    events.push({ id: device.id, event: 'closed', code });
    device.file = null;
    device.nbd = null;
    device.isActive = false;
  };
  device.nbd.start();
  return { size: device.file.size };
};

// VirtualMedia.vue stopVM
const stopVM = (id) => {
  const device = store.proxyDevices.find((d) => d.id === id);
  if (!device?.nbd) return;
  device.nbd.stop();
};

// AuthenticanStore.js actions.logout: DELETE the session, then mutations.logout removes the readable cookies
const logout = async () => {
  const response = await api('DELETE', store.sessionURI);
  const cookiesAfterDelete = document.cookie;
  document.cookie = 'XSRF-TOKEN=; expires=Thu, 01 Jan 1970 00:00:00 GMT; path=/';
  document.cookie = 'IsAuthenticated=; expires=Thu, 01 Jan 1970 00:00:00 GMT; path=/';
  store.sessionURI = null;
  return { status: response.status, cookiesAfterDelete };
};

window.webui = { api, login, getData, startVM, stopVM, logout, cookie, events };
`;

describe('webui-vue: its NBDServer.js in Chromium, logged in as webui-vue does', {
  skip: snapshotMissing('webui-vue') ?? false,
}, () => {
  const image = randomBytes(2 * MiB + 3 * 512);
  let stack: VmStack;
  let browser: TestBrowser;
  let page: Page;
  let dir: string;
  let origin: string;
  /** Everything the page logged (NBDServer.js logs its open and close), for failure messages. */
  const consoleLines: string[] = [];
  const pageErrors: string[] = [];
  const hostExport = (id: string) => path.join(stack.harness.hostDir, `${id}.sock`);
  const member = async (id: string) => (await stack.server.request('GET', `${collectionUri}/${id}`)).json;
  const pageLog = () => `\npage console:\n  ${consoleLines.join('\n  ')}`;

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vmedia-webui-vue-'));
    const nbdServerJs = await fs.readFile(snapshotPath('webui-vue', 'src/utilities/NBDServer.js'), 'utf8');
    stack = await startVmStack({ images: {} });
    origin = new URL(stack.server.url).origin;
    browser = await launchBrowser();
    page = browser.page;
    page.on('console', (message) => consoleLines.push(`${message.type()}: ${message.text()}`));
    page.on('pageerror', (error) => pageErrors.push(error.message));
    // The client's files come from the test, on the server's origin; the server is not changed.
    const files: Record<string, { body: string | Buffer; contentType: string }> = {
      'NBDServer.js': { body: nbdServerJs, contentType: 'text/javascript' },
      'webui-vue-steps.js': { body: stepsModule, contentType: 'text/javascript' },
      'image.img': { body: image, contentType: 'application/octet-stream' },
    };
    for (const [name, file] of Object.entries(files)) {
      await page.route(`${origin}${clientPrefix}/${name}`, (route) =>
        route.fulfill({ status: 200, ...file }),
      );
    }
    const document = await page.goto(`${origin}/`);
    assert.equal(document?.status(), 200);
    // The server's own CSP governs the page: the module must load under it (script-src falls back to 'self').
    await page.evaluate(`import('${clientPrefix}/webui-vue-steps.js')`);
    await page.waitForFunction(() => window.webui !== undefined);
  });

  after(async () => {
    await browser?.close();
    await stack?.stop();
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  test('login: POST Sessions with X-Requested-With gives a cookie session (HttpOnly SESSION, readable XSRF-TOKEN)', async () => {
    const response = await page.evaluate(([user, password]) => window.webui.login(user, password), [
      'admin',
      adminPassword,
    ] as const);
    assert.equal(response.status, 201, JSON.stringify(response.data));
    assert.match(response.headers.location ?? '', /^\/redfish\/v1\/SessionService\/Sessions\/[^/]+$/);
    assert.equal(response.headers['x-auth-token'], undefined, 'a cookie session, not a token');
    const cookies = await browser.context.cookies(origin);
    const session = cookies.find((c) => c.name === 'SESSION');
    assert.ok(session, `no SESSION cookie among ${cookies.map((c) => c.name).join(', ')}`);
    assert.equal(session.httpOnly, true);
    assert.equal(session.secure, true);
    // What webui-vue's store reads: the XSRF token (also its WebSocket token) and IsAuthenticated.
    const xsrf = await page.evaluate(() => window.webui.cookie('XSRF-TOKEN'));
    assert.ok(xsrf, 'XSRF-TOKEN is readable by the page');
    assert.equal(await page.evaluate(() => window.webui.cookie('IsAuthenticated')), 'true');
    assert.equal(await page.evaluate(() => window.webui.cookie('SESSION')), undefined, 'SESSION is HttpOnly');
    const manager = await page.evaluate(() => window.webui.api('GET', '/redfish/v1/Managers/bmc'));
    assert.equal(manager.status, 200, 'the cookie authenticates');
  });

  test('getData lists the Proxy devices with their WebSocket endpoints', async () => {
    const { proxyDevices, legacyDevices } = await page.evaluate(() => window.webui.getData());
    assert.deepEqual(
      proxyDevices.map((d) => [d.id, d.websocket, d.isActive]),
      [
        ['Slot_0', '/nbd/0', false],
        ['Slot_1', '/nbd/1', false],
      ],
    );
    assert.deepEqual(legacyDevices.map((d) => d.id).sort(), ['Slot_2', 'Slot_3']);
  });

  test('startVM on Slot_0: the host reads the exact file; stopVM closes with 1000 and frees the slot', async () => {
    const imageUrl = `${clientPrefix}/image.img`;
    const started = await page.evaluate(([id, url]) => window.webui.startVM(id, url), [
      'Slot_0',
      imageUrl,
    ] as const);
    assert.equal(started.size, image.length);

    // Either the slot is inserted, or the socket closed first (which fails at once, with its code).
    const outcome = await waitFor(
      async () => {
        const closed = (await page.evaluate(() => window.webui.events)).find((e) => e.event === 'closed');
        if (closed) return closed;
        return (await member('Slot_0')).Inserted === true && 'inserted';
      },
      { what: 'Slot_0 to be Inserted', timeoutMs: SLOT_TIMEOUT_MS, intervalMs: 100 },
    ).catch((error: Error) => {
      throw new Error(`${error.message}${pageLog()}`, { cause: error });
    });
    assert.equal(outcome, 'inserted', `the socket closed before the slot was inserted${pageLog()}`);
    const inserted = await member('Slot_0');
    assert.equal(inserted.ConnectedVia, 'Applet');
    assert.equal(inserted.WriteProtected, true);

    const copy = path.join(dir, 'Slot_0.copy');
    await execFileAsync('nbdcopy', [`nbd+unix:///?socket=${hostExport('Slot_0')}`, copy], {
      timeout: 60_000,
    });
    assert.equal(sha256(await fs.readFile(copy)), sha256(image), 'the host read the file byte for byte');

    await page.evaluate(() => window.webui.stopVM('Slot_0'));
    const closed = await waitFor(
      async () => (await page.evaluate(() => window.webui.events)).find((e) => e.event === 'closed'),
      { what: 'socketClosed', timeoutMs: SLOT_TIMEOUT_MS, intervalMs: 50 },
    );
    assert.deepEqual(
      await page.evaluate(() => window.webui.events),
      [
        { id: 'Slot_0', event: 'started' },
        { id: 'Slot_0', event: 'closed', code: 1000 },
      ],
      `webui-vue counts only 1000 as a successful close (got ${closed.code})${pageLog()}`,
    );
    await waitFor(async () => (await member('Slot_0')).Inserted === false, {
      what: 'Slot_0 to be free again',
      timeoutMs: SLOT_TIMEOUT_MS,
      intervalMs: 100,
    });
    await waitFor(
      () =>
        fs.access(hostExport('Slot_0')).then(
          () => false,
          () => true,
        ),
      { what: 'the host export to be gone', timeoutMs: SLOT_TIMEOUT_MS, intervalMs: 100 },
    );
    assert.deepEqual(pageErrors, []);
  });

  test('logout: DELETE of the session URI ends the session and clears its cookies', async () => {
    const before = await browser.context.cookies(origin);
    const { status, cookiesAfterDelete } = await page.evaluate(() => window.webui.logout());
    assert.ok(status >= 200 && status < 300, `DELETE of the session answered ${status}`);
    assert.doesNotMatch(
      cookiesAfterDelete,
      /XSRF-TOKEN|IsAuthenticated/,
      'the server cleared the readable cookies',
    );
    const after = await browser.context.cookies(origin);
    assert.deepEqual(
      after.map((c) => c.name),
      [],
      'the server cleared SESSION, XSRF-TOKEN and IsAuthenticated',
    );

    // The old cookies, put back, no longer authenticate: the session itself is gone.
    await browser.context.addCookies(before);
    const manager = await page.evaluate(() => window.webui.api('GET', '/redfish/v1/Managers/bmc'));
    assert.equal(manager.status, 401);
    await browser.context.clearCookies();
    const again = await page.evaluate(() => window.webui.api('GET', '/redfish/v1/Managers/bmc'));
    assert.equal(again.status, 401);
  });
});
