// The messaging channel types as the channel pages show them: which credentials and settings
// each needs, what the provider test tells, the setup guide, and how to read a stored
// delivery (a dead letter) in one line. Only types whose API exists are AVAILABLE.
import * as v from './validate';

export interface Field {
  key: string;
  label: string;
  placeholder?: string;
  /** Needed when creating the channel. */
  required?: boolean;
  /** Extra check beyond "not empty" (the server checks again). */
  check?: (s: string) => string | null;
  secret?: boolean;
}

export interface ChannelType {
  value: string;
  label: string;
  defaultName: string;
  credentials: Field[];
  settings: Field[];
  /** Settings the provider test fills in (read-only). */
  info: { key: string; label: string }[];
  /** The webhook URL (and verify token) must be pasted at the provider. */
  paste: boolean;
  guide: string[];
  /** The provider test's success in words. */
  testOk: (details: Record<string, unknown> | null | undefined) => string;
}

export const MESSAGING: ChannelType[] = [
  {
    value: 'telegram',
    label: 'Telegram bot',
    defaultName: 'Telegram',
    credentials: [{ key: 'botToken', label: 'Bot token', placeholder: '123456789:AA…', required: true, check: v.botToken, secret: true }],
    settings: [],
    info: [{ key: 'botUsername', label: 'Bot' }, { key: 'botName', label: 'Name' }],
    paste: false,
    guide: [
      'In Telegram, open [@BotFather](https://t.me/BotFather), send `/newbot`, pick a name and a username.',
      'Copy the token it answers (it looks like `123456789:AA…`) into the bot token field.',
      'This server must be reachable from the internet over HTTPS (Telegram only delivers to public `https://` addresses): set `PUBLIC_URL` to that address. The server registers its webhook with Telegram itself.',
    ],
    testOk: (d) => `Telegram knows the bot: @${d?.botUsername ?? '?'}${d?.botName ? ` (${d.botName})` : ''}.`,
  },
  {
    value: 'whatsapp',
    label: 'WhatsApp',
    defaultName: 'WhatsApp',
    credentials: [
      { key: 'accessToken', label: 'Access token', placeholder: 'EAAG…', required: true, secret: true },
      { key: 'appSecret', label: 'App secret', required: true, secret: true },
    ],
    settings: [{ key: 'phoneNumberId', label: 'Phone number ID', placeholder: '1234567890', required: true }],
    info: [{ key: 'displayPhoneNumber', label: 'Number' }, { key: 'verifiedName', label: 'Name' }, { key: 'qualityRating', label: 'Quality' }],
    paste: true,
    guide: [
      'At [developers.facebook.com](https://developers.facebook.com/apps), create an app (type Business) and add the WhatsApp product.',
      'WhatsApp > API Setup shows the phone number ID. Create a permanent access token for a system user (Business settings > System users) with whatsapp_business_messaging.',
      'App settings > Basic shows the app secret.',
      'After creating the channel, paste its webhook URL and verify token in WhatsApp > Configuration and subscribe to messages.',
    ],
    testOk: (d) => `Meta knows the number: ${d?.displayPhoneNumber ?? '?'}${d?.verifiedName ? ` (${d.verifiedName})` : ''}.`,
  },
  {
    value: 'messenger',
    label: 'Facebook Messenger',
    defaultName: 'Messenger',
    credentials: [
      { key: 'pageAccessToken', label: 'Page access token', placeholder: 'EAAG…', required: true, secret: true },
      { key: 'appSecret', label: 'App secret', required: true, secret: true },
    ],
    settings: [{ key: 'pageId', label: 'Page ID', required: true }],
    info: [{ key: 'pageName', label: 'Page' }],
    paste: true,
    guide: [
      'At [developers.facebook.com](https://developers.facebook.com/apps), create an app and add the Messenger product; connect your Facebook Page.',
      'Messenger > Settings: generate a page access token for the page; the page ID is in the page\'s About section.',
      'App settings > Basic shows the app secret.',
      'After creating the channel, paste its webhook URL and verify token in the Messenger webhook settings and subscribe to messages, message_deliveries and message_reads.',
    ],
    testOk: (d) => `Meta knows the page: ${d?.pageName ?? '?'}.`,
  },
  {
    value: 'instagram',
    label: 'Instagram',
    defaultName: 'Instagram',
    credentials: [
      { key: 'pageAccessToken', label: 'Page access token', placeholder: 'EAAG…', required: true, secret: true },
      { key: 'appSecret', label: 'App secret', required: true, secret: true },
    ],
    settings: [{ key: 'instagramAccountId', label: 'Instagram account ID', required: true }],
    info: [{ key: 'username', label: 'Account' }, { key: 'name', label: 'Name' }],
    paste: true,
    guide: [
      'Your Instagram professional account must be connected to a Facebook Page.',
      'At [developers.facebook.com](https://developers.facebook.com/apps), add Instagram (Messenger API for Instagram) to your app; generate the page access token and read the Instagram account ID.',
      'App settings > Basic shows the app secret.',
      'After creating the channel, paste its webhook URL and verify token in the Instagram webhook settings and subscribe to messages.',
    ],
    testOk: (d) => `Meta knows the account: @${d?.username ?? '?'}${d?.name ? ` (${d.name})` : ''}.`,
  },
];

/** The messaging types this server's API offers now. */
export const AVAILABLE = new Set(['telegram', 'whatsapp', 'messenger', 'instagram']);

export function channelType(value: string): ChannelType | undefined {
  return MESSAGING.find((t) => t.value === value);
}

/** What is wrong with a new channel's fields (keys as the API names them), or nothing. */
export function checkFields(t: ChannelType, credentials: Record<string, string>, settings: Record<string, string>, creating: boolean): v.Errors {
  const out: Record<string, string | null> = {};
  for (const [group, fields, values] of [['credentials', t.credentials, credentials], ['settings', t.settings, settings]] as const) {
    for (const f of fields) {
      const s = (values[f.key] ?? '').trim();
      out[`${group}.${f.key}`] = !s ? (creating && f.required ? `${f.label} is required` : null) : (f.check?.(s) ?? null);
    }
  }
  return v.collect(out);
}

/** Only the typed values, trimmed (absent keys keep their stored value on update). */
export function filled(values: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, s] of Object.entries(values)) if (s.trim()) out[k] = s.trim();
  return out;
}

/** A guide line as text, `code` and [links](https://...) to show. */
export type Segment = { text: string; code?: boolean; href?: string };
export function segments(line: string): Segment[] {
  const out: Segment[] = [];
  const re = /`([^`]+)`|\[([^\]]+)\]\((https:\/\/[^)\s]+)\)/g;
  let at = 0;
  for (let m = re.exec(line); m; m = re.exec(line)) {
    if (m.index > at) out.push({ text: line.slice(at, m.index) });
    out.push(m[1] !== undefined ? { text: m[1], code: true } : { text: m[2], href: m[3] });
    at = m.index + m[0].length;
  }
  if (at < line.length) out.push({ text: line.slice(at) });
  return out;
}

/** A stored delivery in one line: who wrote what (Telegram, WhatsApp, Messenger/Instagram). */
export function deliveryPreview(payload: string): string {
  let u: any; // eslint-disable-line @typescript-eslint/no-explicit-any
  try {
    u = JSON.parse(payload);
  } catch {
    return payload.slice(0, 80);
  }
  // Telegram: {update_id, message: {from, text | caption}}
  const tg = u?.message ?? u?.edited_message;
  if (tg) return `${tg.from?.first_name ? tg.from.first_name + ': ' : ''}${tg.text ?? tg.caption ?? '(not text)'}`;
  const entry = u?.entry?.[0];
  // WhatsApp: entry[].changes[].value.{contacts, messages, statuses}
  const value = entry?.changes?.[0]?.value;
  if (value) {
    const m = value.messages?.[0];
    if (!m) return value.statuses?.length ? `(${value.statuses.length} status update${value.statuses.length === 1 ? '' : 's'})` : '(no message)';
    const who = value.contacts?.[0]?.profile?.name ?? m.from ?? '';
    return `${who ? who + ': ' : ''}${m.text?.body ?? `(${m.type ?? 'not text'})`}`;
  }
  // Messenger / Instagram: entry[].messaging[].message.text
  const ev = entry?.messaging?.[0];
  if (ev) return ev.message ? (ev.message.text ?? '(not text)') : '(a receipt)';
  return '(no message)';
}

/** A WhatsApp template message (POST /api/conversations/{id}/whatsapp-template) from the
 * form: the template's name and language as approved at Meta, its `{{1}}`, `{{2}}` ...
 * values one per line. */
export function templateRequest(name: string, language: string, parameters: string): { body: { name: string; language: string; parameters: string[] }; errors: v.Errors } {
  const n = name.trim();
  const l = language.trim();
  const params = parameters.split('\n').map((p) => p.trim()).filter(Boolean);
  const errors = v.collect({
    name: !n ? 'The template name is required' : n.length > 512 ? 'At most 512 characters' : /\s/.test(n) ? 'Template names have no spaces (order_update)' : null,
    language: !/^[A-Za-z]{2,3}([_-][A-Za-z0-9]{2,8})?$/.test(l) ? 'A language code such as en_US or pt_BR' : null,
    parameters: params.length > 20 ? 'At most 20 values' : null,
  });
  return { body: { name: n, language: l, parameters: params }, errors };
}

/** How far an outgoing message got on a messaging channel, in words (nothing while sending or failed). */
export function deliveryText(status: string): string | null {
  return ({ sent: 'sent', delivered: 'delivered', read: 'read' } as Record<string, string>)[status] ?? null;
}
