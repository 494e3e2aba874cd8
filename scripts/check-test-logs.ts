/**
 * After `npm test`: looks for every secret the run recorded (test/helpers/run-logs.ts) in every log the
 * run kept — the test servers' at debug level, the services', the machines'. Exits 1 naming the log and
 * the secret's first characters when one is found, and also when there is nothing to look at (a check
 * that read no log or knew no secret would prove nothing).
 */
import fs from 'node:fs/promises';
import path from 'node:path';

const dir = process.argv[2];
if (!dir) throw new Error('usage: check-test-logs.ts <log dir>');
const secrets = [
  ...new Set(
    (await fs.readFile(path.join(dir, 'secrets'), 'utf8').catch(() => ''))
      .split('\n')
      .filter(Boolean)
      .map((line) => Buffer.from(line, 'base64').toString('utf8')),
  ),
];
const logs = (await fs.readdir(dir)).filter((name) => name.endsWith('.log'));
let bytes = 0;
const found: string[] = [];
for (const name of logs) {
  const text = await fs.readFile(path.join(dir, name), 'utf8');
  bytes += text.length;
  for (const secret of secrets) if (text.includes(secret)) found.push(`${name}: ${secret.slice(0, 3)}…`);
}
process.stdout.write(
  `test logs: ${secrets.length} secrets looked for in ${logs.length} logs (${(bytes / 1024 / 1024).toFixed(1)} MiB): ${found.length} found\n`,
);
for (const line of found) process.stdout.write(`  secret in ${line}\n`);
process.exitCode = found.length > 0 || secrets.length < 3 || logs.length < 10 ? 1 : 0;
