// The Cloudflare Workers adapter: runs dist/edgeproxy.wasm (transpiled by jco
// into workers/build/, see `cargo xtask workers`) and implements the WIT imports
// of wit/edgeproxy.wit with the platform. No proxy logic lives here.
//
// - An instance serves one request at a time, and many in turn: JSPI lets a
//   second request enter a suspended instance, and Workers I/O objects are
//   bound to their request, so a request takes an idle instance (or makes
//   one when every instance is inside a request) and the imports reach its
//   env through the instance's slot, set for the call. An instance is made
//   and set up (the core's `init`: the config document parsed, its routes
//   built) once, not per request. One that trapped or whose memory grew past
//   MAX_REUSED_MEMORY is dropped, not reused.
// - A body the core passes on stays a ReadableStream; bytes never cross into
//   wasm unless the core reads them.

import { instantiate } from "./build/edgeproxy.js";
import core from "./build/edgeproxy.core.wasm";
import core2 from "./build/edgeproxy.core2.wasm";
import core3 from "./build/edgeproxy.core3.wasm";

const CORE_MODULES = { "edgeproxy.core.wasm": core, "edgeproxy.core2.wasm": core2, "edgeproxy.core3.wasm": core3 };

// Workers KV: https://developers.cloudflare.com/kv/platform/limits/
const KV_MAX_KEY_BYTES = 512;
const KV_MAX_VALUE_BYTES = 25 * 1024 * 1024;
const KV_MIN_TTL_SECONDS = 60;

// The blob store is an R2 bucket bound as EDGEPROXY_BLOBS:
// https://developers.cloudflare.com/r2/platform/limits/ (one put of a
// stream: at most 5 GiB less 5 MiB).
const BLOB_MAX_KEY_BYTES = 512;
const BLOB_MAX_PUT_BYTES = 5 * 1024 ** 3 - 5 * 1024 ** 2;

/** A WIT error result: jco turns a thrown `{ payload }` into `err(payload)`. */
function err(tag, val) {
  return Object.assign(new Error(`${tag}: ${val ?? ""}`), { payload: val === undefined ? { tag } : { tag, val } });
}

/** The WIT `body` resource: bytes the guest made, or a stream from the platform. */
class Body {
  #head; // Uint8Array not yet handed out
  #stream; // ReadableStream after the head, or null
  #reader; // its reader once the guest has read from it
  #length; // exact remaining length if known, else undefined

  constructor(bytes) {
    this.#head = bytes ?? new Uint8Array(0);
    this.#stream = null;
    this.#length = this.#head.length;
  }

  static fromStream(stream, length) {
    const body = new Body(new Uint8Array(0));
    body.#stream = stream;
    body.#length = length;
    return body;
  }

  async read(max) {
    max = Math.max(1, max);
    for (;;) {
      if (this.#head.length > 0) {
        const chunk = this.#head.subarray(0, max);
        this.#head = this.#head.subarray(chunk.length);
        if (this.#length !== undefined) this.#length -= chunk.length;
        return chunk;
      }
      if (!this.#stream) return undefined;
      this.#reader ??= this.#stream.getReader();
      let next;
      try {
        next = await this.#reader.read();
      } catch (e) {
        throw err("broken", String(e?.message ?? e));
      }
      if (next.done) {
        this.#stream = null;
        return undefined;
      }
      this.#head = next.value instanceof Uint8Array ? next.value : new Uint8Array(next.value);
    }
  }

  knownLength() {
    return this.#length === undefined ? undefined : BigInt(this.#length);
  }

  static prepend(head, tail) {
    const body = new Body(concat(head, tail.#head));
    body.#stream = tail.#stream;
    body.#reader = tail.#reader;
    body.#length = tail.#length === undefined ? undefined : head.length + tail.#length;
    tail.#stream = null;
    tail.#reader = undefined;
    return body;
  }

  /** What to hand to fetch() or new Response(): the original stream if untouched. */
  toPlatform() {
    if (!this.#stream) return this.#head;
    if (!this.#reader && this.#head.length === 0) return this.#stream;
    const head = this.#head;
    const reader = this.#reader ?? this.#stream.getReader();
    this.#stream = null;
    let sentHead = head.length === 0;
    return new ReadableStream({
      async pull(controller) {
        if (!sentHead) {
          sentHead = true;
          controller.enqueue(head);
          return;
        }
        const { done, value } = await reader.read();
        if (done) controller.close();
        else controller.enqueue(value);
      },
      cancel(reason) {
        return reader.cancel(reason);
      },
    });
  }
}

function concat(a, b) {
  if (b.length === 0) return a;
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

function contentLength(headers) {
  const value = headers.get("content-length");
  return value !== null && /^\d+$/.test(value) ? Number(value) : undefined;
}

/** The request/response header list of the WIT, from a Headers object. */
function headerList(headers) {
  const out = [];
  for (const [name, value] of headers) out.push([name, value]);
  return out;
}

/** Keys this isolate has claimed with setIfAbsent, and until when (ms). */
const CLAIMS = new Map();

/** The last document this isolate was given, and its version (config.get's
 * `document-version`, under which the core keeps its set-up). */
let lastDocument;
let lastDocumentVersion = 0;

/** A version per document: a new one whenever the document changes. The same
 * string from env compares at pointer speed, not byte by byte. */
function documentVersion(text) {
  if (typeof text !== "string") return undefined;
  if (text !== lastDocument) {
    lastDocument = text;
    lastDocumentVersion += 1;
  }
  return String(lastDocumentVersion);
}

/** The secret variable for a config key, as on every host. */
function secretName(key) {
  return "EDGEPROXY_SECRET_" + key.toUpperCase().replace(/[^A-Z0-9]/g, "_");
}

/** A key in capitals is an original Worker's setting (`API_BASE_URL`, ...),
 * also read under its own name: a Worker moved over keeps its variables. */
function originalSetting(env, key) {
  return /^[A-Z][A-Z0-9_]*$/.test(key) ? env[key] : undefined;
}

/** `http-client.send`: the WIT's upstream request on fetch(). Failures
 * are thrown as the WIT's `http-error` (a payload). */
async function sendUpstream(request, options) {
  let url;
  try {
    url = new URL(request.url);
  } catch (e) {
    throw err("invalid-url", String(e.message));
  }
  const timeoutMs = options.timeoutMs ?? 30000;
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), timeoutMs);
  let response;
  try {
    response = await fetch(url, {
      method: request.method,
      headers: request.headers,
      body: request.body ? request.body.toPlatform() : undefined,
      redirect: "manual",
      signal: abort.signal,
    });
  } catch (e) {
    if (abort.signal.aborted) throw err("timeout");
    throw err("connection-failed", String(e?.message ?? e));
  } finally {
    clearTimeout(timer);
  }
  return {
    status: response.status,
    headers: headerList(response.headers),
    body: response.body ? Body.fromStream(response.body, encodedLength(response.headers)) : undefined,
  };
}

/** An upstream body's length as the guest will read it. Workers decode a
 * compressed body that is read (and pass one that is not through as sent),
 * so a `content-length` beside a `content-encoding` is not what a read gives. */
function encodedLength(headers) {
  const encoding = headers.get("content-encoding");
  return encoding === null || encoding === "identity" ? contentLength(headers) : undefined;
}

/** The WIT imports of one instance, reaching the env of the request it serves through `slot`. */
function imports(slot) {
  return {
    "edgeproxy:platform/body": { Body },
    "edgeproxy:platform/types": {},
    "edgeproxy:platform/clock": {
      nowMs: () => BigInt(Date.now()),
      sleepMs: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
    },
    "edgeproxy:platform/config": {
      get(key) {
        const env = slot.env;
        if (key === "document-version") return documentVersion(env.EDGEPROXY_CONFIG);
        const value = key === "document" ? env.EDGEPROXY_CONFIG : env[secretName(key)] ?? originalSetting(env, key);
        return typeof value === "string" ? value : undefined;
      },
    },
    "edgeproxy:platform/http-client": { send: sendUpstream },
    "edgeproxy:platform/blob": {
      limits: () => ({ maxObjectBytes: BigInt(BLOB_MAX_PUT_BYTES), maxKeyBytes: BLOB_MAX_KEY_BYTES }),
      put: (key, content, size, sha256, metadata) => blobPut(blobBucket(slot.env, key), key, content, Number(size), sha256, metadata),
      putThrough: (key, content, size, sha256, metadata) => {
        try {
          return blobPutThrough(blobBucket(slot.env, key), slot.ctx, key, content, Number(size), sha256, metadata);
        } catch {
          return content; // a store that cannot take it: the body passes on all the same
        }
      },
      get: (key, range) => blobGet(blobBucket(slot.env, key), key, range),
      head: async (key) => {
        const object = await r2(() => blobBucket(slot.env, key).head(key));
        return object === null ? undefined : blobObject(object);
      },
      delete: (key) => r2(() => blobBucket(slot.env, key).delete(key)),
      // R2 lists by key; when an object was put is all it knows of its use.
      list: async (prefix, cursor, limit) => {
        const options = { prefix, cursor: cursor ?? undefined, limit: Math.max(1, Math.min(limit, 1000)) };
        const page = await r2(() => blobs(slot.env).list(options));
        const objects = page.objects.map((o) => ({ key: o.key, size: BigInt(o.size), usedMs: BigInt(o.uploaded.getTime()) }));
        return { objects, cursor: page.truncated ? page.cursor : undefined };
      },
    },
    "edgeproxy:platform/kv": {
      limits: () => ({ maxKeyBytes: KV_MAX_KEY_BYTES, maxValueBytes: BigInt(KV_MAX_VALUE_BYTES), minTtlSeconds: KV_MIN_TTL_SECONDS }),
      get: (key) => kvGet(slot.env.EDGEPROXY_KV, key),
      set: (key, value, ttlSeconds) => kvSet(slot.env.EDGEPROXY_KV, key, value, ttlSeconds),
      // KV has no atomic operations. Concurrent requests in this isolate
      // are serialised by a claim taken before the first await; across
      // isolates and locations it is read-then-write on an eventually
      // consistent store (up to 60 s), so two may both win
      // (docs/image-cache.md, "Generation").
      async setIfAbsent(key, value, ttlSeconds) {
        const kv = slot.env.EDGEPROXY_KV;
        const now = Date.now();
        if ((CLAIMS.get(key) ?? 0) > now) return false;
        CLAIMS.set(key, now + (ttlSeconds ?? 60) * 1000);
        try {
          if ((await kvGet(kv, key)) !== undefined) {
            CLAIMS.delete(key);
            return false;
          }
          await kvSet(kv, key, value, ttlSeconds);
          return true;
        } catch (e) {
          CLAIMS.delete(key);
          throw e;
        }
      },
      async delete(key) {
        const kv = slot.env.EDGEPROXY_KV;
        checkKey(key);
        if (!kv) throw err("unavailable", "no EDGEPROXY_KV binding");
        CLAIMS.delete(key);
        await kv.delete(key);
      },
    },
    "edgeproxy:platform/limiter": {
      // The policy name is the binding's name ([[ratelimits]] in wrangler.toml);
      // its limit and period are the binding's, set there. A policy with no
      // binding (the bindings only count per 10 or 60 s; a daily generation
      // quota needs more) is a fixed-window counter in KV: approximate, as KV
      // is eventually consistent, but it never forgets a whole day.
      async check(policy, key, limit, periodSeconds) {
        const env = slot.env;
        const kv = env.EDGEPROXY_KV;
        const limiter = env[policy];
        if (limiter && typeof limiter.limit === "function") {
          const { success } = await limiter.limit({ key });
          return { allowed: success, retryAfterSeconds: success ? 0 : periodSeconds };
        }
        if (!kv) throw err("unknown-policy", policy);
        const now = Date.now();
        const window = Math.floor(now / (periodSeconds * 1000));
        const counter = `edgeproxy:window:${policy}:${window}:${key}`.slice(0, KV_MAX_KEY_BYTES);
        const seen = await kvGet(kv, counter);
        const count = seen ? Number(new TextDecoder().decode(seen)) || 0 : 0;
        const retryAfterSeconds = Math.max(1, Math.ceil(((window + 1) * periodSeconds * 1000 - now) / 1000));
        if (count >= limit) return { allowed: false, retryAfterSeconds };
        await kvSet(kv, counter, new TextEncoder().encode(String(count + 1)), retryAfterSeconds);
        return { allowed: true, retryAfterSeconds: 0 };
      },
    },
    // The wasmtime host labels its metrics with the route; Workers has its
    // own analytics, so the name is not needed here.
    "edgeproxy:platform/telemetry": {
      routed() {},
      answered() {},
    },
  };
}

async function kvGet(kv, key) {
  checkKey(key);
  if (!kv) throw err("unavailable", "no EDGEPROXY_KV binding");
  const { value, metadata } = await kv.getWithMetadata(key, { type: "arrayBuffer" });
  // KV keeps entries at least 60 s; shorter TTLs expire here.
  if (value === null || (metadata?.expiresAt && metadata.expiresAt <= Date.now())) return undefined;
  return new Uint8Array(value);
}

async function kvSet(kv, key, value, ttlSeconds) {
  checkKey(key);
  if (!kv) throw err("unavailable", "no EDGEPROXY_KV binding");
  if (value.length > KV_MAX_VALUE_BYTES) throw err("too-large", BigInt(KV_MAX_VALUE_BYTES));
  const options = {};
  if (ttlSeconds !== undefined) {
    options.expirationTtl = Math.max(KV_MIN_TTL_SECONDS, ttlSeconds);
    options.metadata = { expiresAt: Date.now() + ttlSeconds * 1000 };
  }
  try {
    await kv.put(key, value, options);
  } catch (e) {
    throw err("unavailable", String(e?.message ?? e));
  }
}

function blobBucket(env, key) {
  const bytes = new TextEncoder().encode(key).length;
  if (bytes === 0 || bytes > BLOB_MAX_KEY_BYTES || !/^[A-Za-z0-9._\/-]+$/.test(key)) {
    throw err("invalid-key", `a blob key is 1 to ${BLOB_MAX_KEY_BYTES} bytes of a-z, A-Z, 0-9 and ._/-`);
  }
  return blobs(env);
}

function blobs(env) {
  if (!env.EDGEPROXY_BLOBS) throw err("unavailable", "no EDGEPROXY_BLOBS binding (an R2 bucket)");
  return env.EDGEPROXY_BLOBS;
}

/** An R2 call whose failure is the store's. */
async function r2(call) {
  try {
    return await call();
  } catch (e) {
    throw err("unavailable", String(e?.message ?? e));
  }
}

function blobObject(object) {
  const metadata = object.customMetadata?.edgeproxy;
  return { size: BigInt(object.size), metadata: metadata ? JSON.parse(metadata) : [] };
}

/** R2 stores nothing from a put that fails, so the body goes to it as it
 * comes, through a count (a body that breaks off, or is shorter or longer
 * than `size`, fails the put) and, when `sha256` is given, R2's own check of
 * it; a failed put is the body's fault (`mismatch`) when the count or our
 * own digest of what passed says so, the store's otherwise. */
async function blobPut(bucket, key, content, size, sha256, metadata) {
  if (size > BLOB_MAX_PUT_BYTES) throw err("too-large", BigInt(BLOB_MAX_PUT_BYTES));
  const reader = platformStream(content).getReader();
  let passed = 0;
  let problem = null; // what was wrong with the body, if anything
  const refuse = (controller, why) => {
    problem = why;
    controller.error(new Error(why));
  };
  const counted = new ReadableStream({
    async pull(controller) {
      let next;
      try {
        next = await reader.read();
      } catch (e) {
        return refuse(controller, `the body broke off after ${passed} bytes: ${e?.message ?? e}`);
      }
      if (next.done) {
        if (passed < size) refuse(controller, `the body has ${passed} bytes, not ${size}`);
        else controller.close();
        return;
      }
      passed += next.value.byteLength;
      if (passed > size) {
        reader.cancel().catch(() => {});
        return refuse(controller, `the body is longer than ${size} bytes`);
      }
      controller.enqueue(next.value);
    },
    cancel: (reason) => reader.cancel(reason),
  });
  let toR2 = counted;
  let digest = null;
  if (sha256) {
    const [a, b] = counted.tee();
    toR2 = a;
    const hashing = new crypto.DigestStream("SHA-256");
    digest = b.pipeTo(hashing).then(() => hashing.digest, () => null);
  }
  const fixed = new FixedLengthStream(size);
  const copied = toR2.pipeTo(fixed.writable).catch(() => {});
  const options = { customMetadata: { edgeproxy: JSON.stringify(metadata) } };
  if (sha256) options.sha256 = sha256;
  try {
    await bucket.put(key, fixed.readable, options);
  } catch (e) {
    await copied;
    if (problem) throw err("mismatch", problem);
    const actual = digest ? hex(await digest) : null;
    if (actual && actual !== sha256.toLowerCase()) throw err("mismatch", `the body's sha256 is ${actual}, not ${sha256}`);
    throw err("unavailable", String(e?.message ?? e));
  }
}

/** `put-through`: the content passed on at its reader's pace, each chunk
 * handed to R2's put before it is passed on, so neither side buffers more
 * than a chunk (a tee would hold what the slower side has not taken).
 * R2 stores nothing unless the put's stream ends at `size` bytes with the
 * given sha256; the last read waits for the put, so the object is there
 * once the end was read. A failing store does not fail the body. */
function blobPutThrough(bucket, ctx, key, content, size, sha256, metadata) {
  if (size > BLOB_MAX_PUT_BYTES) throw err("too-large", BigInt(BLOB_MAX_PUT_BYTES));
  const length = content.knownLength();
  const reader = platformStream(content).getReader();
  const fixed = new FixedLengthStream(size);
  const writer = fixed.writable.getWriter();
  const options = { customMetadata: { edgeproxy: JSON.stringify(metadata) } };
  if (sha256) options.sha256 = sha256;
  const stored = bucket.put(key, fixed.readable, options).catch(() => null);
  ctx?.waitUntil(stored);
  let storing = true;
  let passed = 0;
  const abandon = (reason) => {
    if (storing) writer.abort(reason).catch(() => {});
    storing = false;
  };
  const through = new ReadableStream({
    async pull(controller) {
      let next;
      try {
        next = await reader.read();
      } catch (e) {
        abandon(e);
        controller.error(e);
        return;
      }
      if (next.done) {
        // A stream that ends short of its known length broke off (workerd's
        // reader may say done where the connection closed early).
        if (length !== undefined && passed < Number(length)) {
          const broken = new Error(`the body ended after ${passed} of ${length} bytes`);
          abandon(broken);
          controller.error(broken);
          return;
        }
        if (storing) await writer.close().then(() => stored, () => null);
        controller.close();
        return;
      }
      if (storing) await writer.write(next.value).catch(() => (storing = false));
      passed += next.value.byteLength;
      // Placed with its last byte: the response may not be read past it.
      if (storing && passed === size) {
        storing = false;
        await writer.close().then(() => stored, () => null);
      }
      controller.enqueue(next.value);
    },
    cancel(reason) {
      abandon(reason);
      return reader.cancel(reason);
    },
  });
  if (length === undefined) return Body.fromStream(through, undefined);
  // A stream of known length, so that the client is sent a Content-Length
  // and sees a body that breaks off as broken.
  const sized = new FixedLengthStream(Number(length));
  through.pipeTo(sized.writable).catch(() => {});
  return Body.fromStream(sized.readable, Number(length));
}

/** A body's bytes as a ReadableStream. */
function platformStream(content) {
  const source = content.toPlatform();
  return source instanceof Uint8Array ? new Blob([source]).stream() : source;
}

/** `range`: the first byte and the number of bytes, clamped to the object's end. */
async function blobGet(bucket, key, range) {
  let options;
  if (range) {
    const head = await r2(() => bucket.head(key));
    if (head === null) return undefined;
    const first = Math.min(Number(range[0]), head.size);
    const length = Math.min(Number(range[1]), head.size - first);
    if (length === 0) return [blobObject(head), new Body(new Uint8Array(0))];
    options = { range: { offset: first, length } };
  }
  const object = await r2(() => bucket.get(key, options));
  if (object === null) return undefined;
  const length = object.range ? object.range.length ?? object.size - (object.range.offset ?? 0) : object.size;
  return [blobObject(object), Body.fromStream(object.body, length)];
}

function hex(buffer) {
  return [...new Uint8Array(buffer)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

function checkKey(key) {
  const bytes = new TextEncoder().encode(key).length;
  if (bytes === 0 || bytes > KV_MAX_KEY_BYTES) throw err("invalid-key", `keys are 1 to ${KV_MAX_KEY_BYTES} bytes; this one has ${bytes}`);
}

/** Instances with no request in them, most recently used last. */
const IDLE = [];
/** The memory the idle instances hold between them. Idle instances are kept
 * up to IDLE_MEMORY_BUDGET, so that a burst of concurrent requests finds
 * instances ready the next time (a proxied request's instance has 512 KiB; a
 * count of 16 made new instances, each set up again, whenever more than 16
 * requests were in flight), and the isolate's 128 MB is not spent on them. */
let idleMemory = 0;
const IDLE_MEMORY_BUDGET = 32 * 1024 * 1024;
/** An instance whose memory grew past this (an image transform: a 2048x2048
 * image leaves 14 MB) is dropped: its pages would stay with the isolate. */
const MAX_REUSED_MEMORY = 4 * 1024 * 1024;

/** An idle instance, or undefined. */
function takeIdle() {
  const instance = IDLE.pop();
  if (instance) idleMemory -= memoryOf(instance);
  return instance;
}

/** Its memory's size now; an idle instance's does not change (no code runs in it). */
function memoryOf(instance) {
  return instance.memory?.buffer.byteLength ?? 0;
}

/** Keeps `instance` for the next request, unless it grew too large or the idle ones hold the budget. */
function release(instance) {
  const bytes = memoryOf(instance);
  if (bytes > MAX_REUSED_MEMORY || idleMemory + bytes > IDLE_MEMORY_BUDGET) return;
  idleMemory += bytes;
  IDLE.push(instance);
}

/** A new instance, set up for the document in `env` (the core's `init`). */
async function newInstance(env) {
  const slot = { env };
  const instance = { slot, memory: undefined, component: undefined };
  instance.component = await instantiate((name) => CORE_MODULES[name], imports(slot), async (module, moduleImports) => {
    const core = await WebAssembly.instantiate(module, moduleImports);
    if (core.exports.memory instanceof WebAssembly.Memory) instance.memory ??= core.exports.memory;
    return core;
  });
  instance.component.init();
  return instance;
}

/** One request through the core, in steps where it can (the WIT's
 * `stepwise`): `begin` and `resume` never suspend, so they cost no JSPI
 * stack, and the upstream request goes out from here between them. Where
 * the core needs an import that waits, it says so having done nothing,
 * and the same arguments go to the export that may suspend. */
async function serve(component, request, clientIp) {
  const step = component.stepwise.begin(request, clientIp);
  if (step.tag === "respond") return step.val;
  if (step.tag === "wait") return component.handler.handle(request, clientIp);
  const [upstream, options] = step.val;
  let sent;
  try {
    sent = { tag: "ok", val: await sendUpstream(upstream, options) };
  } catch (e) {
    if (e?.payload === undefined) throw e;
    sent = { tag: "err", val: e.payload };
  }
  return component.stepwise.resume(sent) ?? (await component.stepwise.resumeWaiting(sent));
}

export default {
  async fetch(request, env, ctx) {
    const instance = takeIdle() ?? (await newInstance(env));
    instance.slot.env = env;
    instance.slot.ctx = ctx;
    const wasmRequest = {
      method: request.method,
      url: request.url,
      headers: headerList(request.headers),
      body: request.body ? Body.fromStream(request.body, contentLength(request.headers)) : undefined,
    };
    const clientIp = request.headers.get("cf-connecting-ip") ?? undefined;
    let response;
    try {
      response = await serve(instance.component, wasmRequest, clientIp);
    } catch (e) {
      // A trapped instance is not reused.
      console.error("edgeproxy: the component failed:", e?.stack ?? e);
      return Response.json({ error: "internal_error", message: "the proxy failed on this request" }, { status: 500 });
    }
    // The core runs no code for this request after `handle` returns: every
    // body it passed on is the platform's stream, and one it rewrote was read
    // whole and handed back as bytes. So the instance is free now.
    instance.slot.env = undefined;
    instance.slot.ctx = undefined;
    release(instance);
    const nullBody = request.method === "HEAD" || [101, 204, 205, 304].includes(response.status);
    return new Response(nullBody || !response.body ? null : response.body.toPlatform(), {
      status: response.status,
      headers: response.headers,
    });
  },
};
