// Uploads one file with progress (fetch cannot report upload progress; XHR can).
import { ApiError } from './api';

export interface Uploaded {
  data: { id: string; name: string; status: string }[];
}

export function uploadFile(
  file: File,
  token: string | null,
  agentIds: string[],
  onProgress: (fraction: number) => void,
  actingTenant: string | null = null,
): Promise<Uploaded> {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    form.append('file', file, file.name);
    if (agentIds.length) form.append('agentIds', agentIds.join(','));
    const xhr = new XMLHttpRequest();
    xhr.open('POST', '/api/documents');
    if (token) xhr.setRequestHeader('authorization', `Bearer ${token}`);
    if (actingTenant) xhr.setRequestHeader('x-tenant-id', actingTenant);
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) onProgress(e.loaded / e.total);
    };
    xhr.onload = () => {
      let body: { error?: { code: string; message: string; details?: unknown } } | null = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        /* not JSON */
      }
      if (xhr.status >= 200 && xhr.status < 300) {
        onProgress(1);
        resolve(body as Uploaded);
      } else {
        const e = body?.error;
        reject(new ApiError(xhr.status, e?.code ?? `http_${xhr.status}`, e?.message ?? `upload failed (${xhr.status})`, e?.details));
      }
    };
    xhr.onerror = () => reject(new ApiError(0, 'network', 'the upload could not reach the server'));
    xhr.send(form);
  });
}
