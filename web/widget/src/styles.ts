// The widget's styles. Applied through a constructable stylesheet (adoptedStyleSheets), which
// a host page's CSP does not block (no <style> element, no style attributes), inside a shadow
// root, so the host's CSS cannot reach in and ours cannot leak out.

export const CSS = `
:host{all:initial;position:fixed;bottom:20px;right:20px;z-index:2147483000;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:#1f2328;--ag-c:#2563eb;--ag-fg:#fff}
:host([data-position=left]){right:auto;left:20px}
*{box-sizing:border-box}
button,input,textarea{font:inherit;color:inherit}
[hidden]{display:none!important}
.launcher{position:relative;width:56px;height:56px;border-radius:50%;border:0;cursor:pointer;background:var(--ag-c);color:var(--ag-fg);box-shadow:0 4px 14px rgba(0,0,0,.25);display:flex;align-items:center;justify-content:center;padding:0;transition:transform .15s}
.launcher:hover{transform:scale(1.05)}
.launcher:focus-visible,.win button:focus-visible,.win input:focus-visible,.win textarea:focus-visible,.win a:focus-visible{outline:2px solid var(--ag-c);outline-offset:2px}
.launcher svg{width:28px;height:28px;fill:currentColor}
.badge{position:absolute;top:-4px;right:-4px;min-width:20px;height:20px;padding:0 5px;border-radius:10px;background:#d1242f;color:#fff;font-size:12px;font-weight:600;line-height:20px;text-align:center}
.win{position:absolute;bottom:72px;right:0;width:370px;height:560px;max-height:calc(100vh - 110px);background:#fff;border-radius:14px;box-shadow:0 8px 32px rgba(0,0,0,.22);display:flex;flex-direction:column;overflow:hidden}
:host([data-position=left]) .win{right:auto;left:0}
.head{background:var(--ag-c);color:var(--ag-fg);padding:12px 14px;display:flex;align-items:center;gap:10px}
.head img{width:34px;height:34px;border-radius:50%;object-fit:cover;background:rgba(255,255,255,.3)}
.head .t{flex:1;min-width:0}
.head h2{margin:0;font-size:16px;font-weight:600;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.head p{margin:0;font-size:12px;opacity:.85}
.x{background:transparent;border:0;color:inherit;cursor:pointer;width:32px;height:32px;border-radius:6px;display:flex;align-items:center;justify-content:center}
.x svg{width:20px;height:20px;fill:currentColor}
.x:hover{background:rgba(255,255,255,.15)}
.banner{background:#fff8c5;color:#4d2d00;font-size:12px;padding:6px 12px}
.log{flex:1;overflow-y:auto;padding:14px;display:flex;flex-direction:column;gap:8px;background:#f6f8fa}
.m{max-width:85%;padding:8px 12px;border-radius:14px;white-space:pre-wrap;word-wrap:break-word;overflow-wrap:anywhere}
.m a{color:inherit}
.m.in{align-self:flex-start;background:#fff;border:1px solid #e5e7eb;border-bottom-left-radius:4px}
.m.out{align-self:flex-end;background:var(--ag-c);color:var(--ag-fg);border-bottom-right-radius:4px}
.m.pending{opacity:.6}
.m.failed{background:#ffebe9;color:#82071e;border:1px solid #ff818266}
.m.streaming::after{content:"\\258D";animation:ag-b 1s steps(2) infinite}
.who{display:block;font-size:11px;opacity:.7;margin-bottom:2px}
.st{display:block;font-size:11px;opacity:.8;text-align:right;margin-top:2px}
.cites{display:flex;flex-wrap:wrap;gap:4px;margin-top:6px;white-space:normal}
.cite{font-size:11px;padding:2px 7px;border-radius:10px;background:#eef2ff;color:#3730a3;text-decoration:none;max-width:100%;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.note{align-self:center;font-size:12px;color:#57606a;background:#eaeef2;padding:4px 10px;border-radius:10px;text-align:center}
.typing{align-self:flex-start;font-size:12px;color:#57606a;padding:0 4px}
.typing i{display:inline-block;width:6px;height:6px;margin-right:3px;border-radius:50%;background:#8c959f;animation:ag-t 1.2s infinite}
.typing i:nth-child(2){animation-delay:.2s}.typing i:nth-child(3){animation-delay:.4s}
.form{padding:14px;display:flex;flex-direction:column;gap:10px;background:#fff;border-top:1px solid #e5e7eb}
.form label{display:flex;flex-direction:column;gap:3px;font-size:12px;color:#57606a}
.form input,.form textarea{border:1px solid #d0d7de;border-radius:8px;padding:8px 10px;background:#fff;color:#1f2328}
.btn{background:var(--ag-c);color:var(--ag-fg);border:0;border-radius:8px;padding:8px 14px;cursor:pointer;font-weight:600}
.btn:disabled{opacity:.5;cursor:default}
.compose{display:flex;gap:8px;padding:10px;border-top:1px solid #e5e7eb;background:#fff;align-items:flex-end}
.compose textarea{flex:1;resize:none;border:1px solid #d0d7de;border-radius:10px;padding:8px 10px;max-height:120px;min-height:38px;background:#fff;color:#1f2328}
.send{width:38px;height:38px;padding:0;border-radius:50%;display:flex;align-items:center;justify-content:center}
.send svg{width:18px;height:18px;fill:currentColor}
.csat{align-self:stretch;background:#fff;border:1px solid #e5e7eb;border-radius:10px;padding:10px;text-align:center;font-size:13px}
.csat div{display:flex;justify-content:center;gap:6px;margin-top:6px}
.csat button{width:36px;height:36px;border-radius:50%;border:1px solid #d0d7de;background:#fff;cursor:pointer;font-weight:600}
.csat button:hover{background:var(--ag-c);color:var(--ag-fg)}
.sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
@keyframes ag-t{0%,60%,100%{opacity:.3}30%{opacity:1}}
@keyframes ag-b{50%{opacity:0}}
@media (max-width:480px){
.win{position:fixed;inset:0;width:100%;height:100%;max-height:none;border-radius:0}
:host([data-open]) .launcher{display:none}
}
@media (prefers-reduced-motion:reduce){*{animation:none!important;transition:none!important}}
`;

/** Puts `css` into `root`: a constructable stylesheet where the browser has them, else a
 *  <style> element (older browsers; a strict host CSP may then block it). */
export function adopt(root: ShadowRoot, css: string): CSSStyleSheet | HTMLStyleElement {
  try {
    const sheet = new CSSStyleSheet();
    sheet.replaceSync(css);
    root.adoptedStyleSheets = [...root.adoptedStyleSheets, sheet];
    return sheet;
  } catch {
    const el = document.createElement("style");
    el.textContent = css;
    root.appendChild(el);
    return el;
  }
}

/** Replaces the text of a sheet made by [`adopt`]. */
export function restyle(sheet: CSSStyleSheet | HTMLStyleElement, css: string): void {
  if (sheet instanceof HTMLStyleElement) sheet.textContent = css;
  else sheet.replaceSync(css);
}

/** Black or white, whichever reads better on a `#rgb`/`#rrggbb` background. */
export function foreground(hex: string): string {
  let h = hex.replace("#", "");
  if (h.length === 3 || h.length === 4) h = h.split("").map((c) => c + c).join("");
  if (h.length < 6) return "#fff";
  const [r, g, b] = [0, 2, 4].map((i) => {
    const v = parseInt(h.slice(i, i + 2), 16) / 255;
    return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
  });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.45 ? "#111" : "#fff";
}
