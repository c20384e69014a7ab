// probs.mjs - llama.cpp's next-token probabilities of one sequence, for
// tests/test_llama.sh: node probs.mjs MODEL.gguf ID... prints one JSON array
// of T rows of V probabilities. The prebuilt CPU binary only (never builds or
// downloads), F32 KV cache, flash attention off (their defaults add ~1e-3).
import { getLlama } from "node-llama-cpp";

// node probs.mjs MODEL.gguf --tokenize TEXT prints llama.cpp's token ids of TEXT and its detokenization.
const [path, ...rest] = process.argv.slice(2);
const llama = await getLlama({ gpu: false, build: "never", logLevel: "error" });
const model = await llama.loadModel({ modelPath: path });
if (rest[0] === "--tokenize") {
  const toks = model.tokenize(rest[1], false);
  process.stdout.write(JSON.stringify({ ids: Array.from(toks), text: model.detokenize(toks) }) + "\n");
  await model.dispose();
  process.exit(0);
}
const ids = rest.map(Number);
const ctx = await model.createContext({
  contextSize: 256, batchSize: ids.length, threads: 1, flashAttention: false,
  experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32",
});
const seq = ctx.getSequence();
const res = await seq.controlledEvaluate(ids.map((t) => [t, { generateNext: { probabilities: true } }]));
const rows = res.map((r) => {
  const p = r?.next?.probabilities;
  if (!p) throw new Error("llama.cpp returned no probabilities");
  const row = [];
  for (const [tok, pr] of p) row[tok] = pr;
  return row;
});
const n = Math.max(...rows.map((r) => r.length));
process.stdout.write(JSON.stringify(rows.map((r) => Array.from({ length: n }, (_, i) => r[i] ?? 0))) + "\n");
await ctx.dispose();
await model.dispose();
