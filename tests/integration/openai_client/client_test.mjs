// The official openai npm client against a real `ifw serve`: every response format, word
// timestamps, translation, streaming and an error. Usage: node client_test.mjs BASE_URL AUDIO
// API_KEY. Prints one line per check; exits 1 on the first failure.
import fs from 'node:fs';
import OpenAI from 'openai';

const [baseURL, audioPath, apiKey] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 120_000 });
const file = () => fs.createReadStream(audioPath);

function check(condition, what, value) {
  if (!condition) {
    console.error(`FAIL ${what}: ${JSON.stringify(value)?.slice(0, 400)}`);
    process.exit(1);
  }
  console.log(`ok ${what}`);
}

const json = await client.audio.transcriptions.create({ file: file(), model: 'whisper-1' });
check(typeof json.text === 'string' && json.text.length > 0, 'json has text', json);

const text = await client.audio.transcriptions.create({
  file: file(), model: 'whisper-1', response_format: 'text',
});
check(typeof text === 'string' && text.trim() === json.text, 'text equals the json text', text);

const srt = await client.audio.transcriptions.create({
  file: file(), model: 'whisper-1', response_format: 'srt',
});
check(typeof srt === 'string' && /^1\r?\n\d\d:\d\d:\d\d,\d\d\d --> \d\d:\d\d:\d\d,\d\d\d/.test(srt),
  'srt has numbered cues', srt);

const vtt = await client.audio.transcriptions.create({
  file: file(), model: 'whisper-1', response_format: 'vtt',
});
check(typeof vtt === 'string' && vtt.startsWith('WEBVTT') && vtt.includes(' --> '),
  'vtt has a header and cues', vtt);

const verbose = await client.audio.transcriptions.create({
  file: file(), model: 'whisper-1', response_format: 'verbose_json',
  timestamp_granularities: ['word', 'segment'], language: 'en', temperature: 0,
});
check(verbose.task === 'transcribe' && verbose.language === 'english' && verbose.duration > 10,
  'verbose_json task, language, duration', verbose);
check(Array.isArray(verbose.segments) && verbose.segments.length > 0 &&
  verbose.segments.every((s) => Array.isArray(s.tokens) && s.end >= s.start),
  'verbose_json segments', verbose.segments);
check(Array.isArray(verbose.words) && verbose.words.length > 0 &&
  verbose.words.every((w) => typeof w.word === 'string' && w.end >= w.start),
  'verbose_json words', verbose.words);

const wordsOnly = await client.audio.transcriptions.create({
  file: file(), model: 'whisper-1', response_format: 'verbose_json',
  timestamp_granularities: ['word'], language: 'en',
});
check(wordsOnly.segments === undefined && wordsOnly.words.length === verbose.words.length,
  'words without segments', wordsOnly);

const translation = await client.audio.translations.create({ file: file(), model: 'whisper-1' });
check(typeof translation.text === 'string', 'translation has text', translation);

const stream = await client.audio.transcriptions.create({
  file: file(), model: 'whisper-1', stream: true,
});
let deltas = '';
let done = null;
for await (const event of stream) {
  if (event.type === 'transcript.text.delta') deltas += event.delta;
  if (event.type === 'transcript.text.done') done = event.text;
}
check(done === json.text, 'stream ends with the whole text', done);
check(deltas.trim() === done, 'stream deltas add up to the text', deltas);

try {
  await client.audio.transcriptions.create({ file: file(), model: 'no-such-model' });
  check(false, 'unknown model refused', 'accepted');
} catch (e) {
  check(e instanceof OpenAI.NotFoundError && e.code === 'model_not_found' && e.param === 'model',
    'unknown model is a NotFoundError naming the model', e.error);
}

const models = await client.models.list();
check(models.data.some((m) => m.id === 'whisper-1'), 'models list whisper-1', models.data);
console.log('all checks passed');
