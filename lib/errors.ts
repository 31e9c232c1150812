/**
 * Errors a user can act on: bad input, a missing file, a wrong flag. Task scripts print the
 * message of a {@link UserError} as one line and exit non-zero; anything else is a bug and keeps
 * its stack trace.
 */

/** A problem the user can fix; the message names the file or setting and the fix. */
export class UserError extends Error {
  override name = "UserError";
}
