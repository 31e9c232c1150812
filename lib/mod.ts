/**
 * COVID-19 chest X-ray classification with an ImageNet-pretrained MobileNetV3-Large, reproduced
 * in TF.js on Deno. This module is the public surface: notebooks and task scripts import from here.
 *
 * @example
 * ```ts
 * import { initBackend } from "./lib/mod.ts";
 * const info = await initBackend();
 * console.log(info.backend); // "tensorflow"
 * ```
 * @module
 */
export { type BackendInfo, initBackend, tf } from "./backend.ts";
export { PROJECT_ROOT, projectCacheDir, projectPath, userCacheDir } from "./paths.ts";
