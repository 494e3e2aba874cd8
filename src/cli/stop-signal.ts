/**
 * Resolves with the name of the first SIGINT or SIGTERM. Call it before printing a ready line: until a
 * listener exists the signal's default action kills the process, and a launcher that stops the daemon
 * as soon as it reads the line (a test, systemd) would see it die by the signal instead of exiting 0.
 */
export function stopSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const stop = (signal: NodeJS.Signals) => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      resolve(signal);
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
}
