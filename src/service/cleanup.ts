import type { Logger } from '../log.ts';

/**
 * Undo steps registered while a mount is brought up (kill nbdkit, remove a socket, tear down a
 * gadget), run in reverse order exactly once — on failure, timeout, cancel, unmount or shutdown.
 * A step deferred after the stack has run (a late step of a cancelled activation) runs at once, so
 * nothing an abandoned activation creates can outlive it.
 */
export class CleanupStack {
  private readonly steps: { what: string; undo: () => Promise<void> | void }[] = [];
  private done: Promise<void> | undefined;

  constructor(private readonly log: Logger) {}

  defer(what: string, undo: () => Promise<void> | void): void {
    if (this.done) {
      void this.done.then(() => this.runStep({ what, undo }));
      return;
    }
    this.steps.push({ what, undo });
  }

  run(): Promise<void> {
    this.done ??= (async () => {
      for (let step = this.steps.pop(); step; step = this.steps.pop()) await this.runStep(step);
    })();
    return this.done;
  }

  private async runStep(step: { what: string; undo: () => Promise<void> | void }): Promise<void> {
    try {
      await step.undo();
    } catch (error) {
      // One failed undo must not leave the later ones undone.
      this.log.error({ err: error }, `cleanup failed: ${step.what}`);
    }
  }
}
