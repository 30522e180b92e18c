// Recording from the microphone with the Web Audio API, encoded as 16-bit mono WAV (the server reads wav/flac/ogg,
// not the webm/opus of MediaRecorder).
"use strict";

function encodeWav(chunks, sampleRate) {
  const length = chunks.reduce((n, c) => n + c.length, 0);
  const view = new DataView(new ArrayBuffer(44 + 2 * length));
  const text = (offset, s) => { for (let i = 0; i < s.length; i++) view.setUint8(offset + i, s.charCodeAt(i)); };
  text(0, "RIFF"); view.setUint32(4, 36 + 2 * length, true); text(8, "WAVE");
  text(12, "fmt "); view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, 1, true);
  view.setUint32(24, sampleRate, true); view.setUint32(28, 2 * sampleRate, true);
  view.setUint16(32, 2, true); view.setUint16(34, 16, true);
  text(36, "data"); view.setUint32(40, 2 * length, true);
  let offset = 44;
  for (const chunk of chunks) {
    for (let i = 0; i < chunk.length; i++, offset += 2) {
      const x = Math.max(-1, Math.min(1, chunk[i]));
      view.setInt16(offset, x < 0 ? x * 0x8000 : x * 0x7fff, true);
    }
  }
  return new Blob([view], { type: "audio/wav" });
}

// Linear interpolation to a lower rate: enough for a recording that is about to be captioned at 16-32 kHz.
function resample(chunks, from, to) {
  const input = new Float32Array(chunks.reduce((n, c) => n + c.length, 0));
  let offset = 0;
  for (const c of chunks) { input.set(c, offset); offset += c.length; }
  const output = new Float32Array(Math.floor(input.length * to / from));
  for (let i = 0; i < output.length; i++) {
    const x = i * from / to, j = Math.floor(x), frac = x - j;
    output[i] = input[j] * (1 - frac) + (j + 1 < input.length ? input[j + 1] : input[j]) * frac;
  }
  return output;
}

// startRecording() -> a recorder whose stop() resolves to a WAV Blob.
async function startRecording() {
  const stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1 } });
  const context = new AudioContext();
  const source = context.createMediaStreamSource(stream);
  // ScriptProcessor is deprecated but needs no separate worklet file and works everywhere
  const processor = context.createScriptProcessor(4096, 1, 1);
  const chunks = [];
  processor.onaudioprocess = (e) => chunks.push(new Float32Array(e.inputBuffer.getChannelData(0)));
  source.connect(processor);
  processor.connect(context.destination);
  return {
    async stop() {
      processor.disconnect(); source.disconnect();
      stream.getTracks().forEach((t) => t.stop());
      const rate = context.sampleRate;
      await context.close();
      // the server takes at most 48 kHz: a 96 kHz sound card is brought down to it
      return rate > 48000 ? encodeWav([resample(chunks, rate, 48000)], 48000) : encodeWav(chunks, rate);
    },
  };
}
