/**
 * `deno task export --model DIR --to model.pt`: a checkpoint trained here as a PyTorch state_dict
 * for torchvision's mobilenet_v3_large (with the fine-tuned classifier), plus model.pt.json.
 */
import * as path from "node:path";
import {
  exportToPytorch,
  initBackend,
  outputsRoot,
  parseFlags,
  pytorchLoadingSnippet,
  runMain,
  UsageError,
  userPath,
} from "../lib/mod.ts";

const USAGE = `Usage: deno task export [--model DIR] --to FILE.pt

  --model DIR   a checkpoint folder trained with torchvision's conventions (default:
                outputs/latest/best)
  --to FILE     the PyTorch file to write (zip format, as torch.save writes), and FILE.json beside
                it with the class names, input size and normalisation`;

async function main() {
  const { values: v, positionals } = parseFlags(Deno.args, {
    model: { type: "string" },
    to: { type: "string" },
    help: { type: "boolean" },
  });
  if (v.help) return console.log(USAGE);
  if (positionals.length > 0) {
    throw new UsageError(`unexpected argument(s): ${positionals.join(" ")}`);
  }
  if (!v.to) throw new UsageError("--to FILE.pt is required");
  await initBackend();
  const dir = v.model ? userPath(v.model) : path.join(outputsRoot(), "latest", "best");
  const result = await exportToPytorch(dir, userPath(v.to));
  console.log(
    `Wrote ${result.file} (${result.tensors} tensors; classes ${result.classNames.join(", ")}) ` +
      `and ${result.description}. In Python:\n\n` +
      pytorchLoadingSnippet(result.file, result.classNames.length),
  );
}

await runMain(main, USAGE);
