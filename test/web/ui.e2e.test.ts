import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import type { Locator, Page } from 'playwright-core';
import { adminPassword } from '../helpers/server.ts';
import { startVmStack, type VmStack } from '../helpers/virtual-media-stack.ts';
import { launchBrowser, screenshot, type TestBrowser } from './browser.ts';

const execFileAsync = promisify(execFile);
/** A hung NBD tool fails the test instead of hanging it. */
const run = (command: string, args: string[]) => execFileAsync(command, args, { timeout: 60_000 });
const sha256 = (data: Uint8Array) => createHash('sha256').update(data).digest('hex');
const MiB = 1024 * 1024;
const collectionUri = '/redfish/v1/Managers/bmc/VirtualMedia';
const imageCredentials = { user: 'images', password: 'Image-päss-123' };
/** Generous: a slot change goes through the UI's poll (2 s), the bridge, the service and the host export. */
const SLOT_TIMEOUT_MS = 30_000;

/**
 * The state badge of a slot's card reaching `label`. An error shown on the card meanwhile fails at once,
 * with the card's own words, unless errors are expected.
 */
async function waitForState(card: Locator, label: string, { errorsExpected = false } = {}): Promise<void> {
  const reached = card
    .locator('.badge.state', { hasText: new RegExp(`^${label}$`) })
    .waitFor({ timeout: SLOT_TIMEOUT_MS });
  if (errorsExpected) return reached;
  const error = card.locator('.message[data-tone="error"]');
  // Settles only if an error shows up; on its own timeout it stays pending and `reached` decides.
  const failed = error.waitFor({ timeout: SLOT_TIMEOUT_MS }).then(
    () => error.textContent(),
    () => new Promise<never>(() => {}),
  );
  const shown = await Promise.race([reached.then(() => undefined), failed]);
  if (shown !== undefined) throw new Error(`waiting for ${label}, the card says: ${shown}`);
}

async function text(locator: Locator): Promise<string> {
  return (await locator.textContent()) ?? '';
}

async function pathExists(file: string): Promise<boolean> {
  return fs.access(file).then(
    () => true,
    () => false,
  );
}

describe('web UI in headless Chromium against the real server and service', () => {
  const legacyImage = randomBytes(2 * MiB);
  let stack: VmStack;
  let browser: TestBrowser;
  let page: Page;
  let dir: string;
  const slot = (id: string) => page.locator(`article[data-slot="${id}"]`);
  const hostExport = (id: string) => path.join(stack.harness.hostDir, `${id}.sock`);
  const nbdUri = (id: string) => `nbd+unix:///?socket=${hostExport(id)}`;
  const member = async (id: string) => (await stack.server.request('GET', `${collectionUri}/${id}`)).json;

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vmedia-web-e2e-'));
    stack = await startVmStack({ images: { '/images/disk.img': legacyImage }, imageCredentials });
    browser = await launchBrowser();
    page = browser.page;
  });

  after(async () => {
    await browser?.close();
    await stack?.stop();
    await fs.rm(dir, { recursive: true, force: true });
  });

  test('asks for a login, refuses a wrong password, then lists every slot', async () => {
    await page.goto(stack.server.url);
    await page.getByLabel('User name').fill('admin');
    await page.getByLabel('Password').fill('not the password');
    await page.getByRole('button', { name: 'Log in' }).click();
    const loginError = page.locator('#login-error');
    await loginError.waitFor();
    assert.match(await text(loginError), /not correct/);

    await page.getByLabel('Password').fill(adminPassword);
    await page.getByRole('button', { name: 'Log in' }).click();
    await slot('Slot_3').waitFor();
    // In the collection's order: Legacy slots first.
    assert.deepEqual(await page.locator('article.slot h2').allTextContents(), [
      'Slot_2',
      'Slot_3',
      'Slot_0',
      'Slot_1',
    ]);
    assert.deepEqual(await page.locator('article.slot .badge.mode').allTextContents(), [
      'Legacy',
      'Legacy',
      'Proxy',
      'Proxy',
    ]);
    for (const id of ['Slot_0', 'Slot_1', 'Slot_2', 'Slot_3']) await waitForState(slot(id), 'Ready');
    assert.equal(await text(page.locator('#user')), 'admin');
    await screenshot(page, 'idle');
  });

  test('mounts a chosen image into Slot_0 read-only: the host reads its exact bytes; Eject frees the slot', async () => {
    const image = path.join(dir, 'read-only.img');
    const content = randomBytes(24 * MiB + 3 * 512);
    await fs.writeFile(image, content);
    const card = slot('Slot_0');
    await card.getByLabel('Image file').setInputFiles(image);
    assert.equal(await card.getByLabel('Write protected').isChecked(), true);
    await card.getByRole('button', { name: 'Mount' }).click();
    await screenshot(page, 'mounting');
    await waitForState(card, 'Mounted');

    const { stdout } = await run('nbdinfo', ['--json', nbdUri('Slot_0')]);
    const info = JSON.parse(stdout) as { exports: { 'export-size': number; is_read_only: boolean }[] };
    assert.equal(info.exports[0]?.['export-size'], content.length);
    assert.equal(info.exports[0]?.is_read_only, true);
    const copy = path.join(dir, 'read-only.copy');
    await run('nbdcopy', [nbdUri('Slot_0'), copy]);
    assert.equal(sha256(await fs.readFile(copy)), sha256(content));

    const slotState = await member('Slot_0');
    assert.equal(slotState.Inserted, true);
    assert.equal(slotState.ConnectedVia, 'Applet');
    assert.equal(slotState.WriteProtected, true);
    // The page's counters saw the host's reads (at least the whole image once).
    await page.waitForTimeout(1100); // one refresh of the counters, which tick every second
    assert.match(await text(card.locator('.live')), /Served\s*\d+(\.\d+)? MiB/);
    await screenshot(page, 'mounted');

    await card.getByRole('button', { name: 'Eject' }).click();
    await waitForState(card, 'Ready');
    assert.equal(await text(card.locator('.message')), 'Ejected.');
    assert.equal((await member('Slot_0')).Inserted, false);
    assert.equal(await pathExists(hostExport('Slot_0')), false, 'the host export is gone');
  });

  test('read-write mount: bytes written through the host export read back, the file stays as it was', async () => {
    const image = path.join(dir, 'read-write.img');
    const content = randomBytes(4 * MiB);
    await fs.writeFile(image, content);
    const card = slot('Slot_0');
    await card.getByLabel('Image file').setInputFiles(image);
    await card.getByLabel('Write protected').uncheck();
    await card.getByRole('button', { name: 'Mount' }).click();
    await waitForState(card, 'Mounted');
    assert.equal((await member('Slot_0')).WriteProtected, false);

    const { stdout } = await run('qemu-io', [
      '-f',
      'raw',
      '-c',
      'write -P 0x5a 1000000 300000',
      '-c',
      'read -P 0x5a 1000000 300000',
      nbdUri('Slot_0'),
    ]);
    assert.doesNotMatch(stdout, /fail|error/i);
    const copy = path.join(dir, 'read-write.copy');
    await run('nbdcopy', [nbdUri('Slot_0'), copy]);
    const expected = Buffer.from(content);
    expected.fill(0x5a, 1000000, 1300000);
    assert.equal(sha256(await fs.readFile(copy)), sha256(expected));
    assert.equal(sha256(await fs.readFile(image)), sha256(content), 'the chosen file is never written');
    await page.waitForTimeout(1100);
    assert.match(await text(card.locator('.live')), /Written\s*29[23]\.\d KiB/);

    await card.getByRole('button', { name: 'Eject' }).click();
    await waitForState(card, 'Ready');
    assert.equal(await pathExists(hostExport('Slot_0')), false);
  });

  test('a sparse image beyond 4 GiB: the host sees its exact size and the bytes at its end', async () => {
    const image = path.join(dir, 'big.img');
    const size = 5 * 1024 * MiB + 3 * 512;
    const tail = Buffer.alloc(64 * 1024, 0x77);
    const handle = await fs.open(image, 'w');
    await handle.truncate(size);
    await handle.write(tail, 0, tail.length, size - tail.length);
    await handle.close();
    const card = slot('Slot_1');
    await card.getByLabel('Image file').setInputFiles(image);
    await card.getByRole('button', { name: 'Mount' }).click();
    await waitForState(card, 'Mounted');

    const { stdout: info } = await run('nbdinfo', ['--size', nbdUri('Slot_1')]);
    assert.equal(Number(info.trim()), size);
    const { stdout } = await run('qemu-io', [
      '-f',
      'raw',
      '-r',
      '-c',
      `read -P 0x77 ${size - tail.length} ${tail.length}`,
      '-c',
      `read -P 0 ${size - tail.length - 4096} 4096`,
      nbdUri('Slot_1'),
    ]);
    assert.doesNotMatch(stdout, /fail|error/i);
    assert.match(stdout, /read 65536\/65536 bytes/);

    await card.getByRole('button', { name: 'Eject' }).click();
    await waitForState(card, 'Ready');
  });

  test('Legacy slot: a failing URL shows the Redfish message and leaves the slot Ready', async () => {
    const card = slot('Slot_2');
    await card.getByLabel('Image URL').fill(`${stack.images.origin}/images/missing.img`);
    await card.locator('summary').click();
    await card.getByLabel('User name').fill(imageCredentials.user);
    await card.getByLabel('Password').fill(imageCredentials.password);
    await card.getByRole('button', { name: 'Insert' }).click();
    const message = card.locator('.message[data-tone="error"]');
    await message.waitFor({ timeout: SLOT_TIMEOUT_MS });
    const shown = await text(message);
    assert.ok(shown.length > 10 && !shown.includes(imageCredentials.password), shown);
    await waitForState(card, 'Ready', { errorsExpected: true });
    await screenshot(page, 'error');
  });

  test('Legacy slot: insert a URL with credentials, the host reads it, eject', async () => {
    const card = slot('Slot_2');
    await card.getByLabel('Image URL').fill(`${stack.images.origin}/images/disk.img`);
    await card.getByLabel('User name').fill(imageCredentials.user);
    await card.getByLabel('Password').fill(imageCredentials.password);
    await card.getByRole('button', { name: 'Insert' }).click();
    await waitForState(card, 'Inserted');
    assert.equal(await text(card.locator('.message')), 'Inserted.');
    assert.equal(await card.getByLabel('Password').inputValue(), '', 'the password is not kept in the form');
    const copy = path.join(dir, 'legacy.copy');
    await run('nbdcopy', [nbdUri('Slot_2'), copy]);
    assert.equal(sha256(await fs.readFile(copy)), sha256(legacyImage));

    await card.getByRole('button', { name: 'Eject' }).click();
    await waitForState(card, 'Ready');
    assert.equal((await member('Slot_2')).Inserted, false);
  });

  test('fits a narrow window without horizontal scrolling', async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `the page is ${overflow}px wider than the window`);
    await screenshot(page, 'narrow');
    await page.setViewportSize({ width: 1280, height: 800 });
  });

  test('logs out: back to the login form, and the session no longer works', async () => {
    await page.getByRole('button', { name: 'Log out' }).click();
    await page.locator('#login-view').waitFor();
    await page.reload();
    await page.locator('#login-view').waitFor();
    assert.equal(await page.locator('#console-view').isHidden(), true);
    assert.deepEqual(
      // 401/403: the wrong password and the logged-out reload; 404: the missing image, answered at once.
      browser.errors.filter((e) => !/status of 40[134]/.test(e)),
      [],
    );
  });
});
