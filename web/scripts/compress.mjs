// Precompresses the built files (gzip and brotli, best levels) next to them in dist/, so the
// binary serves `file.br` / `file.gz` by the request's Accept-Encoding without compressing at
// run time. Deterministic: node's zlib writes no timestamp or file name into the gzip header.
import { readdirSync, readFileSync, writeFileSync, statSync } from 'node:fs';
import { join, extname } from 'node:path';
import { gzipSync, brotliCompressSync, constants } from 'node:zlib';

const dist = new URL('../dist/', import.meta.url).pathname;
const TEXT = new Set(['.js', '.css', '.html', '.svg', '.json', '.txt', '.map', '.webmanifest']);

function walk(dir) {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? walk(p) : [p];
  });
}

let raw = 0, gz = 0, br = 0;
for (const file of walk(dist).sort()) {
  if (!TEXT.has(extname(file))) continue;
  const bytes = readFileSync(file);
  const g = gzipSync(bytes, { level: 9 });
  const b = brotliCompressSync(bytes, {
    params: {
      [constants.BROTLI_PARAM_QUALITY]: 11,
      [constants.BROTLI_PARAM_SIZE_HINT]: bytes.length,
    },
  });
  writeFileSync(file + '.gz', g);
  writeFileSync(file + '.br', b);
  raw += bytes.length; gz += g.length; br += b.length;
}
console.log(`precompressed: ${raw} bytes -> gzip ${gz}, brotli ${br}`);
