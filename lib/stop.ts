/**
 * A polite stop: Ctrl-C asks the work in progress to stop at the next point where it can save
 * what it has (training: after the current step), instead of killing it mid-write or waiting for
 * the end of an epoch. The task script installs the signal listener; lib code polls.
 */
import { UserError } from "./errors.ts";

let requested = false;
let stoppable = 0;

/** Run `work` as a stretch where a requested stop is honoured (the training loop). */
export async function stoppableWork<T>(work: () => Promise<T>): Promise<T> {
  stoppable++;
  try {
    return await work();
  } finally {
    stoppable--;
  }
}

/** True while work that honours a stop request is running. */
export function canStopPolitely(): boolean {
  return stoppable > 0;
}

/** Ask the work in progress to stop at its next safe point. */
export function requestStop(): void {
  requested = true;
}

/** True once a stop was asked for (and until {@link clearStop}). */
export function stopRequested(): boolean {
  return requested;
}

/**
 * Let the event loop run once: a signal listener (Ctrl-C) only runs between tasks, and a loop of
 * steps whose awaits all resolve at once (pixels from memory, a synchronous session call) would
 * otherwise never give it the chance.
 */
export function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/** Forget a stop request (a new piece of work in the same process). */
export function clearStop(): void {
  requested = false;
}

/** The work stopped where asked, with everything needed to continue saved. Exit code 130. */
export class Interrupted extends UserError {
  override name = "Interrupted";
  readonly exitCode = 130;
}
