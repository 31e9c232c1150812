/** A weights problem (a file that is not what it should be, a failed download), with the fix. */
import { UserError } from "../errors.ts";

export class WeightsError extends UserError {
  override name = "WeightsError";
}
