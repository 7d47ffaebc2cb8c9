// Files the API answers (CSV figures, workspace exports) saved by the browser: fetched with
// the session's token (a plain link could not send it), then handed to a download link.

/** The file name a Content-Disposition header gives, else `fallback`. */
export function fileNameOf(disposition: string | null, fallback: string): string {
  const m = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(disposition ?? '');
  const name = m ? decodeURIComponent(m[1]).replace(/[/\\]/g, '_').trim() : '';
  return name || fallback;
}

/** Saves `blob` as `name` through a temporary link. */
export function saveBlob(blob: Blob, name: string): void {
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
