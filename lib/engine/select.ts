/**
 * Which engine runs: the fallback policy in one place.
 *
 * The graph engines (one TensorFlow session call per step or prediction) are used whenever they
 * can run: the native backend is live and TensorFlow's C API can be opened (Linux). If building or
 * running them then fails, that is a bug and the error stops the run; nothing falls back quietly.
 * Only when they cannot run at all does work go to the eager engines, with one line saying why.
 * `COVID_CXR_TRAIN_ENGINE` / `COVID_CXR_INFER_ENGINE` = `eager` choose the eager engines on
 * purpose (for comparison); `graph` makes their absence an error.
 */
import { envChoiceGiven } from "../env.ts";
import { UserError } from "../errors.ts";
import { graphEnginesUnavailable } from "./tf_c.ts";

export type EngineKind = "graph" | "eager";
export type Purpose = "training" | "inference";

const ENV: Record<Purpose, "COVID_CXR_TRAIN_ENGINE" | "COVID_CXR_INFER_ENGINE"> = {
  training: "COVID_CXR_TRAIN_ENGINE",
  inference: "COVID_CXR_INFER_ENGINE",
};

/** An engine asked for that cannot run here, or an unknown engine name. */
export class EngineError extends UserError {
  override name = "EngineError";
}

const warned = new Set<Purpose>();

/** The engine asked for by its environment variable, if any. */
export function requestedEngine(purpose: Purpose): EngineKind | undefined {
  return envChoiceGiven(ENV[purpose]) as EngineKind | undefined;
}

/**
 * The engine for `purpose`: `requested` (else the environment variable) when given, else the graph
 * engine where it can run, else the eager one (saying so once per process).
 */
export function chooseEngine(purpose: Purpose, requested?: EngineKind): EngineKind {
  const wanted = requested ?? requestedEngine(purpose);
  const why = graphEnginesUnavailable();
  if (wanted === "eager") return "eager";
  if (wanted === "graph" && why) {
    throw new EngineError(`The graph ${purpose} engine was asked for, but ${why}`);
  }
  if (!why) return "graph";
  if (!warned.has(purpose)) {
    warned.add(purpose);
    console.error(
      `Note: ${purpose} runs op by op (eager engine), slower than one TensorFlow graph: ${why}.`,
    );
  }
  return "eager";
}
