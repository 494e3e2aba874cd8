import { randomUUID } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';

const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** The service root's UUID: generated once, then read back, so clients recognise the service after restarts. */
export async function loadServiceUuid(file: string): Promise<string> {
  try {
    const stored = (await readFile(file, 'utf8')).trim();
    if (uuidPattern.test(stored)) return stored;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  const uuid = randomUUID();
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(file, `${uuid}\n`, { mode: 0o600 });
  return uuid;
}
