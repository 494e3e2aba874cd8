import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/**
 * A bootable ISO made here with GRUB's BIOS image (Debian grub-pc-bin + xorriso): El Torito for a CD and
 * an MBR for a stick (a hybrid image), whose grub.cfg prints `marker` on the first serial port and then
 * waits for good, so the console log shows that this very medium booted.
 */
export async function makeBootIso(directory: string, marker: string): Promise<string> {
  const tree = path.join(directory, 'iso-tree');
  await fs.mkdir(path.join(tree, 'boot', 'grub'), { recursive: true });
  await fs.writeFile(
    path.join(tree, 'boot', 'grub', 'grub.cfg'),
    [
      'serial --unit=0 --speed=115200',
      'terminal_input serial',
      'terminal_output serial',
      'set timeout=0',
      `echo "${marker}"`,
      'sleep 100000',
      '',
    ].join('\n'),
  );
  const iso = path.join(directory, 'boot.iso');
  await run('grub-mkrescue', [
    '--locales=',
    '--fonts=',
    '--themes=',
    '--install-modules=normal serial echo sleep terminal configfile iso9660 test',
    '-o',
    iso,
    tree,
  ]);
  return iso;
}
