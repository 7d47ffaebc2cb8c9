import { describe, expect, it } from 'vitest';
import { fileNameOf } from './download';

describe('download names', () => {
  it("takes the server's file name, never a path", () => {
    expect(fileNameOf('attachment; filename="aigentable-tenant-0193.tar.gz"', 'x')).toBe('aigentable-tenant-0193.tar.gz');
    expect(fileNameOf("attachment; filename*=UTF-8''caf%C3%A9.csv", 'x')).toBe('café.csv');
    expect(fileNameOf('attachment; filename="../../etc/passwd"', 'x')).toBe('.._.._etc_passwd');
  });
  it('falls back when there is none', () => {
    expect(fileNameOf(null, 'export.tar.gz')).toBe('export.tar.gz');
    expect(fileNameOf('attachment', 'export.tar.gz')).toBe('export.tar.gz');
  });
});
