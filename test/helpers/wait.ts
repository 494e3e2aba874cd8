import type { ChildProcess } from 'node:child_process';

/** What a probe answers while the condition does not hold yet. */
export type NotYet = undefined | null | false;

export interface WaitOptions {
  /** What is awaited, for the error message: "timed out after 500ms waiting for <what>". */
  what: string;
  /**
   * Give up after this long (default 10 000). The deadline bounds the whole wait: a probe that is still
   * pending when it passes is abandoned (left to settle on its own), not awaited.
   */
  timeoutMs?: number;
  /** Pause between the end of one probe and the start of the next (default 20). */
  intervalMs?: number;
  /** Stop waiting at once when this aborts (a process exited, the test was cancelled…). */
  signal?: AbortSignal;
}

/**
 * Calls `probe` until it answers a truthy value, and resolves with that value. The one polling loop
 * of the tests: prefer awaiting an event where there is one, and poll only what has no event.
 *
 * - `probe` may be synchronous or return a promise. `undefined`, `null` and `false` mean "not yet".
 *   Other falsy values (`0`, `''`) also count as "not yet"; a probe looking for a value that may be
 *   0 (an errno, a count) should answer a boolean and keep the value in a closure.
 * - A probe that throws (or rejects) counts as "not yet" too: the wait goes on, and the timeout
 *   error names the last error thrown (also its `cause`). So a probe may be a request to a server
 *   that is not up yet. A probe whose errors should fail the test at once belongs outside waitFor.
 * - Rejects with `Error("timed out after <timeoutMs>ms waiting for <what>")` once the deadline
 *   passes, or with `Error("gave up waiting for <what>: <reason>")` (cause: the reason) as soon as
 *   `signal` aborts; see {@link abortOnExit} for a child process that should not die meanwhile.
 *
 * @example
 *   await waitFor(() => client.slot('Slot_0')?.active, { what: 'Slot_0 to be active' });
 *   const response = await waitFor(async () => {
 *     const r = await server.request('GET', monitor);
 *     return r.status !== 202 && r;
 *   }, { what: 'the task to finish', timeoutMs: 60_000, intervalMs: 100 });
 */
export async function waitFor<T>(
  probe: () => T | NotYet | PromiseLike<T | NotYet>,
  { what, timeoutMs = 10_000, intervalMs = 20, signal }: WaitOptions,
): Promise<T> {
  let lastError: { error: unknown } | undefined;
  let probing = false;
  const timedOut = () => {
    const details = [
      lastError && `the probe last threw: ${messageOf(lastError.error)}`,
      probing && 'the last probe had not settled',
    ].filter(Boolean);
    const suffix = details.length > 0 ? ` (${details.join('; ')})` : '';
    return new Error(`timed out after ${timeoutMs}ms waiting for ${what}${suffix}`, {
      cause: lastError?.error,
    });
  };
  const aborted = () =>
    new Error(`gave up waiting for ${what}: ${messageOf(signal!.reason)}`, { cause: signal!.reason });

  if (signal?.aborted) throw aborted();
  let timer: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  // Rejects when the wait is over; every await below races it.
  const over = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(timedOut()), timeoutMs);
    onAbort = () => reject(aborted());
    signal?.addEventListener('abort', onAbort, { once: true });
  });
  over.catch(() => {});
  try {
    for (;;) {
      probing = true;
      const attempt = Promise.resolve()
        .then(probe)
        .then(
          (value) => ({ value }),
          (error: unknown) => ({ error }),
        );
      const outcome = await Promise.race([attempt, over]);
      probing = false;
      if ('error' in outcome) lastError = outcome;
      else if (outcome.value) return outcome.value as T;
      await Promise.race([new Promise((resolve) => setTimeout(resolve, intervalMs)), over]);
    }
  } finally {
    clearTimeout(timer);
    if (onAbort) signal?.removeEventListener('abort', onAbort);
  }
}

/**
 * An AbortSignal (for {@link waitFor}'s `signal`) that aborts when `child` exits, at once if it
 * already has. `reason` words the abort reason, e.g. with the output the process wrote.
 */
export function abortOnExit(
  child: ChildProcess,
  reason: (code: number | null, signal: NodeJS.Signals | null) => string = (code, signal) =>
    `the process exited with ${code ?? signal}`,
): AbortSignal {
  const controller = new AbortController();
  const abort = () => controller.abort(new Error(reason(child.exitCode, child.signalCode)));
  if (child.exitCode !== null || child.signalCode !== null) abort();
  else child.once('exit', abort);
  return controller.signal;
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
