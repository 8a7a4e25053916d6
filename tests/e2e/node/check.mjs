// Drives the gateway with the official `openai` npm package; prints one JSON line of results.
import OpenAI from 'openai';

const client = new OpenAI({ apiKey: process.env.CG_KEY, baseURL: process.env.CG_BASE_URL, maxRetries: 0 });
const out = {};

const r = await client.chat.completions.create({
  model: 'gpt-5.1',
  messages: [{ role: 'system', content: 'You are a helpful assistant.' }, { role: 'user', content: 'Hello!' }],
});
out.text = { id: r.id, model: r.model, content: r.choices[0].message.content, finish: r.choices[0].finish_reason, usage: r.usage };

const stream = await client.chat.completions.create({
  model: 'claude-sonnet-4-6',
  messages: [{ role: 'user', content: 'Tell me a story' }],
  stream: true,
  stream_options: { include_usage: true },
});
let text = '', chunks = 0, ids = new Set(), usage = null, finish = null;
for await (const chunk of stream) {
  chunks++; ids.add(chunk.id);
  text += chunk.choices[0]?.delta?.content || '';
  finish = chunk.choices[0]?.finish_reason || finish;
  if (chunk.usage) usage = chunk.usage;
}
out.stream = { chunks, ids: ids.size, text, finish, usage };

const tools = [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } } }];
const t = await client.chat.completions.create({
  model: 'gemini-2.5-flash', messages: [{ role: 'user', content: 'weather in Rome' }], tools, tool_choice: 'required',
});
out.tool = { finish: t.choices[0].finish_reason, name: t.choices[0].message.tool_calls?.[0]?.function?.name, args: t.choices[0].message.tool_calls?.[0]?.function?.arguments };

try {
  await client.chat.completions.create({ model: 'gpt-5.1', messages: [], });
  out.error = null;
} catch (e) {
  out.error = { status: e.status, type: e.type, param: e.param, code: e.code, cls: e.constructor.name };
}
const models = await client.models.list();
out.models = models.data.length;
console.log(JSON.stringify(out));
