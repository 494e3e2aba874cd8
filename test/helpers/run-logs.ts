import { appendFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

/**
 * The whole test run's logs and secrets, when `npm test` asks for them (scripts/test.sh sets
 * VMEDIA_TEST_LOG_DIR): every daemon a test starts leaves its output there, every secret a test uses is
 * recorded, and scripts/check-test-logs.ts looks for each secret in each log once the run is over.
 */
const logDir = process.env.VMEDIA_TEST_LOG_DIR;

/** Notes a value that must appear in no log of the run (a password, a token). */
export function recordSecret(value: string): void {
  if (!logDir || value.length < 6) return;
  appendFileSync(path.join(logDir, 'secrets'), `${Buffer.from(value).toString('base64')}\n`, { mode: 0o600 });
}

/** Keeps a daemon's captured output with the run's logs. */
export function keepLog(name: string, output: string): void {
  if (!logDir) return;
  writeFileSync(path.join(logDir, `${name}-${process.pid}-${Date.now()}.log`), output, { mode: 0o600 });
}

/** Where a test server writes its log in the run, or undefined outside `npm test`. */
export function runLogFile(name: string): string | undefined {
  return logDir ? path.join(logDir, `${name}-${process.pid}-${Date.now()}.log`) : undefined;
}
