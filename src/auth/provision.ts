import { randomBytes } from 'node:crypto';
import { access, writeFile } from 'node:fs/promises';
import { statePaths } from '../config/environment.ts';
import { AccountStore, defaultPolicy } from './accounts.ts';

export const adminUsername = 'admin';

/**
 * Creates `accounts.json` with the `admin` Administrator on first start (docs/contract.md §1): with the given password,
 * else a random one written to `<state>/admin-password` (0600) and returned so the caller can print it
 * once. Does nothing when the accounts exist: the password is an initial value, not a reset.
 */
export async function provisionAdmin(
  stateDir: string,
  password?: string,
): Promise<{ generatedPassword?: string }> {
  const paths = statePaths(stateDir);
  if (await exists(paths.accounts)) return {};
  if (password !== undefined && password.length < defaultPolicy.minPasswordLength) {
    throw new Error(`the admin password must have at least ${defaultPolicy.minPasswordLength} characters`);
  }
  const chosen = password ?? randomBytes(18).toString('base64url');
  try {
    await AccountStore.create(paths.accounts, { username: adminUsername, password: chosen });
  } catch (error) {
    // Another process provisioned the same state directory first; its admin stands.
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return {};
    throw error;
  }
  if (password !== undefined) return {};
  await writeFile(paths.adminPassword, `${chosen}\n`, { mode: 0o600 });
  return { generatedPassword: chosen };
}

async function exists(file: string): Promise<boolean> {
  return access(file).then(
    () => true,
    () => false,
  );
}
