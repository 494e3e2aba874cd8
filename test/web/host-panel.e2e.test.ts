import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Page } from 'playwright-core';
import { makeBootIso } from '../helpers/boot-iso.ts';
import { adminPassword } from '../helpers/server.ts';
import { startVmStack, type VmStack } from '../helpers/virtual-media-stack.ts';
import { waitFor } from '../helpers/wait.ts';
import { launchBrowser, screenshot, type TestBrowser } from './browser.ts';

const MARKER = 'VMEDIA-WEB-BOOT-MARKER';
const TIMEOUT_MS = 60_000;

/**
 * The web UI's host panel in headless Chromium, against the stack with the emulated host: a user
 * inserts an ISO URL into a Legacy slot, presses "Boot once from virtual media", and the host boots it.
 */
describe('web UI host panel: power and boot once from virtual media', () => {
  let stack: VmStack;
  let browser: TestBrowser;
  let page: Page;
  let dir: string;

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vmedia-web-host-'));
    const iso = await fs.readFile(await makeBootIso(dir, MARKER));
    stack = await startVmStack({ images: { '/images/boot.iso': iso }, machine: true });
    browser = await launchBrowser();
    page = browser.page;
  });

  after(async () => {
    await browser?.close();
    await stack?.stop();
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  const panel = () => page.locator('article.host');
  const power = () => panel().locator('.badge.state');
  const consoleLog = () => fs.readFile(path.join(stack.machineDir, 'console.log'), 'utf8').catch(() => '');

  test('shows the host off; inserting an ISO and "Boot once" boots it; Power off turns it off', async () => {
    await page.goto(stack.server.url);
    await page.getByLabel('User name').fill('admin');
    await page.getByLabel('Password').fill(adminPassword);
    await page.getByRole('button', { name: 'Log in' }).click();
    await panel().waitFor();
    await power().filter({ hasText: /^Off$/ }).waitFor({ timeout: TIMEOUT_MS });
    assert.equal(await panel().locator('dd').textContent(), 'The host’s own boot order');
    assert.equal(await panel().getByRole('button', { name: 'Power on' }).isEnabled(), true);

    const card = page.locator('article[data-slot="Slot_2"]');
    await card.getByLabel('Image URL').fill(`${stack.images.origin}/images/boot.iso`);
    await card.getByRole('button', { name: 'Insert' }).click();
    await card.locator('.badge.state', { hasText: /^Inserted$/ }).waitFor({ timeout: TIMEOUT_MS });

    await panel().getByLabel('Virtual medium to boot from').selectOption('Cd');
    await panel().getByRole('button', { name: 'Boot once from virtual media' }).click();
    await waitFor(async () => (await consoleLog()).includes(MARKER), {
      what: `${MARKER} on the host's console after "Boot once"`,
      timeoutMs: TIMEOUT_MS,
    });
    await power().filter({ hasText: /^On$/ }).waitFor({ timeout: TIMEOUT_MS });
    assert.match((await panel().locator('.message').textContent()) ?? '', /Booting from the virtual CD/);
    // Spent by the boot: the next one is the host's own again.
    await panel().locator('dd', { hasText: 'The host’s own boot order' }).waitFor({ timeout: TIMEOUT_MS });
    await screenshot(page, 'host-panel-on');

    await panel().getByRole('button', { name: 'Power off' }).click();
    await power().filter({ hasText: /^Off$/ }).waitFor({ timeout: TIMEOUT_MS });
    await card.getByRole('button', { name: 'Eject' }).click();
    await card.locator('.badge.state', { hasText: /^Ready$/ }).waitFor({ timeout: TIMEOUT_MS });
    // 401: the page's first look, before the login.
    assert.deepEqual(
      browser.errors.filter((e) => !/status of 401/.test(e)),
      [],
    );
  });
});
