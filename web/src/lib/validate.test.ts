import { describe, expect, it } from 'vitest';
import * as v from './validate';

describe('form validation', () => {
  it('emails', () => {
    expect(v.email('you@example.com')).toBeNull();
    expect(v.email('  you@example.com ')).toBeNull();
    expect(v.email('')).toMatch(/required/);
    expect(v.email('you@')).toMatch(/valid/);
    expect(v.email('a b@example.com')).toMatch(/valid/);
  });

  it('export passphrases: none, or 12 characters or more', () => {
    expect(v.passphrase('')).toBeNull();
    expect(v.passphrase('short pass')).toMatch(/12/);
    expect(v.passphrase('twelve chars')).toBeNull();
  });
  it('passwords: 8 to 256 characters, as the server', () => {
    expect(v.password('1234567')).toMatch(/8/);
    expect(v.password('12345678')).toBeNull();
    expect(v.password('x'.repeat(257))).toMatch(/256/);
  });

  it('telegram bot tokens, as the server checks them', () => {
    expect(v.botToken('123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw')).toBeNull();
    expect(v.botToken('  123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw ')).toBeNull();
    expect(v.botToken('')).toMatch(/BotFather/);
    expect(v.botToken('AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw')).toMatch(/123456789:/);
    expect(v.botToken('123:short')).toMatch(/123456789:/);
    expect(v.botToken('12a:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw')).toMatch(/123456789:/);
  });

  it('slugs and tool names', () => {
    expect(v.slug('')).toBeNull();
    expect(v.slug('support-bot-2')).toBeNull();
    expect(v.slug('-bot')).not.toBeNull();
    expect(v.slug('Bot')).not.toBeNull();
    expect(v.toolName('lookup_order')).toBeNull();
    expect(v.toolName('lookup order')).not.toBeNull();
    expect(v.toolName('x'.repeat(65))).not.toBeNull();
  });

  it('tool URLs must be absolute http(s)', () => {
    expect(v.httpUrl('https://crm.example.com/orders')).toBeNull();
    expect(v.httpUrl('ftp://example.com')).not.toBeNull();
    expect(v.httpUrl('/orders')).not.toBeNull();
  });

  it('a tool\'s parameters are empty or a JSON Schema of type object', () => {
    expect(v.jsonSchema('')).toEqual({ value: null, error: null });
    expect(v.jsonSchema('{"type":"object","properties":{}}').error).toBeNull();
    expect(v.jsonSchema('{"type":"string"}').error).toMatch(/object/);
    expect(v.jsonSchema('[1]').error).toMatch(/object/);
    expect(v.jsonSchema('{type: object}').error).toMatch(/JSON/);
  });

  it('numbers in a range; collect keeps only the failures', () => {
    expect(v.numberIn(2.5, 0, 2, 'Temperature')).toMatch(/between 0 and 2/);
    expect(v.numberIn('7', 1, 50, 'Top K')).toBeNull();
    expect(v.collect({ a: null, b: 'bad' })).toEqual({ b: 'bad' });
  });
});
