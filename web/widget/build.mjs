// Builds dist/widget.js (one minified IIFE, socket.io-client bundled in) and its precompressed
// twins dist/widget.js.gz and dist/widget.js.br, which the binary embeds and serves.
// Deterministic: same sources and lockfile -> byte-identical files (.ci/run checks that the
// committed dist/ matches a fresh build). No timestamps, no absolute paths, no source maps.
import { build } from "esbuild";
import { brotliCompressSync, constants, gzipSync } from "node:zlib";
import { mkdirSync, writeFileSync } from "node:fs";

const BUDGET_GZIP = 30 * 1024;

const result = await build({
  entryPoints: ["src/index.ts"],
  bundle: true,
  minify: true,
  format: "iife",
  platform: "browser",
  target: ["es2020"],
  charset: "ascii",
  legalComments: "none",
  sourcemap: false,
  write: false,
  logLevel: "warning",
});

const js = Buffer.from(result.outputFiles[0].contents);
// Licence notices of what the bundle contains (MIT requires they travel with copies).
const banner = Buffer.from(
  "/*! aigentable web widget | Apache-2.0. Bundles socket.io-client, engine.io-client, " +
    "socket.io-parser, engine.io-parser, @socket.io/component-emitter (MIT, (c) Guillermo Rauch et al.) */\n",
);
const out = Buffer.concat([banner, js]);
const gz = gzipSync(out, { level: 9 });
const br = brotliCompressSync(out, {
  params: {
    [constants.BROTLI_PARAM_QUALITY]: 11,
    [constants.BROTLI_PARAM_MODE]: constants.BROTLI_MODE_TEXT,
    [constants.BROTLI_PARAM_SIZE_HINT]: out.length,
  },
});

mkdirSync("dist", { recursive: true });
writeFileSync("dist/widget.js", out);
writeFileSync("dist/widget.js.gz", gz);
writeFileSync("dist/widget.js.br", br);

console.log(
  `dist/widget.js: ${out.length} bytes raw, ${gz.length} gzip, ${br.length} brotli (budget ${BUDGET_GZIP} gzip)`,
);
if (gz.length >= BUDGET_GZIP) {
  console.error(`widget.js is over its size budget: ${gz.length} >= ${BUDGET_GZIP} bytes gzipped`);
  process.exit(1);
}
