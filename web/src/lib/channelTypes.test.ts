import { describe, expect, it } from 'vitest';
import { channelType, checkFields, deliveryPreview, deliveryText, filled, segments, templateRequest } from './channelTypes';

describe('messaging channel forms', () => {
  const tg = channelType('telegram')!;
  const wa = channelType('whatsapp')!;

  it('creating needs every required field, named as the API names them', () => {
    expect(checkFields(wa, {}, {}, true)).toEqual({
      'credentials.accessToken': 'Access token is required',
      'credentials.appSecret': 'App secret is required',
      'settings.phoneNumberId': 'Phone number ID is required',
    });
    expect(checkFields(wa, { accessToken: 'EAAG1', appSecret: 's' }, { phoneNumberId: '123' }, true)).toEqual({});
  });

  it('updating leaves empty fields alone but still checks what was typed', () => {
    expect(checkFields(tg, {}, {}, false)).toEqual({});
    expect(checkFields(tg, { botToken: 'nope' }, {}, false)['credentials.botToken']).toMatch(/123456789:/);
    expect(checkFields(tg, { botToken: '123:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw' }, {}, true)).toEqual({});
  });

  it('sends only typed values, trimmed', () => {
    expect(filled({ accessToken: ' EAAG ', appSecret: '', x: '   ' })).toEqual({ accessToken: 'EAAG' });
  });

  it('guide lines keep code and https links apart from the text', () => {
    expect(segments('open [@BotFather](https://t.me/BotFather), send `/newbot`.')).toEqual([
      { text: 'open ' }, { text: '@BotFather', href: 'https://t.me/BotFather' }, { text: ', send ' }, { text: '/newbot', code: true }, { text: '.' },
    ]);
    // Only https links become links.
    expect(segments('[x](javascript:alert(1))')).toEqual([{ text: '[x](javascript:alert(1))' }]);
  });

  it('the test result in words', () => {
    expect(tg.testOk({ botUsername: 'shop_bot', botName: 'Shop' })).toBe('Telegram knows the bot: @shop_bot (Shop).');
    expect(wa.testOk({ displayPhoneNumber: '+1 555 0100', verifiedName: 'Shop' })).toBe('Meta knows the number: +1 555 0100 (Shop).');
  });
});

describe('dead letters in one line', () => {
  it('Telegram, WhatsApp, Messenger and Instagram payloads', () => {
    expect(deliveryPreview(JSON.stringify({ update_id: 1, message: { text: 'Hi', from: { first_name: 'Tomás' } } }))).toBe('Tomás: Hi');
    expect(deliveryPreview(JSON.stringify({ update_id: 1, message: { photo: [], from: {} } }))).toBe('(not text)');
    const wa = { entry: [{ changes: [{ value: { contacts: [{ profile: { name: 'Ana' } }], messages: [{ from: '351910000000', type: 'text', text: { body: 'Olá' } }] } }] }] };
    expect(deliveryPreview(JSON.stringify(wa))).toBe('Ana: Olá');
    const waImage = { entry: [{ changes: [{ value: { messages: [{ from: '351910000000', type: 'image' }] } }] }] };
    expect(deliveryPreview(JSON.stringify(waImage))).toBe('351910000000: (image)');
    const status = { entry: [{ changes: [{ value: { statuses: [{}, {}] } }] }] };
    expect(deliveryPreview(JSON.stringify(status))).toBe('(2 status updates)');
    expect(deliveryPreview(JSON.stringify({ entry: [{ messaging: [{ message: { text: 'hey' } }] }] }))).toBe('hey');
    expect(deliveryPreview(JSON.stringify({ entry: [{ messaging: [{ read: {} }] }] }))).toBe('(a receipt)');
    expect(deliveryPreview('not json')).toBe('not json');
  });
});

describe('WhatsApp templates', () => {
  it('name, language and one value per line', () => {
    const r = templateRequest(' order_update ', 'en_US', 'Dana\n\n  #1042 \n');
    expect(r.errors).toEqual({});
    expect(r.body).toEqual({ name: 'order_update', language: 'en_US', parameters: ['Dana', '#1042'] });
    expect(templateRequest('hello_world', 'pt', '').body.parameters).toEqual([]);
  });
  it('says what is wrong per field', () => {
    const r = templateRequest('', 'english', Array.from({ length: 21 }, (_, i) => `v${i}`).join('\n'));
    expect(Object.keys(r.errors).sort()).toEqual(['language', 'name', 'parameters']);
    expect(templateRequest('order update', 'en_US', '').errors.name).toMatch(/no spaces/);
  });
  it('delivery in words, only once it left', () => {
    expect(['pending', 'sending', 'sent', 'delivered', 'read', 'failed'].map(deliveryText)).toEqual([null, null, 'sent', 'delivered', 'read', null]);
  });
});
