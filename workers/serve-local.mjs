// Serves the Worker in real workerd (through Miniflare) on loopback, the way
// the test suite and `npm run serve` need it: the config document from a
// file, a KV namespace and an R2 bucket (EDGEPROXY_BLOBS), rate-limit
// bindings, secrets from EDGEPROXY_SECRET_* variables and the original
// Workers' settings (REPLICATE_API_TOKEN, API_BASE_URL, TARGET_DOMAIN) from
// variables of those names. Prints the same
// start-up line as the wasmtime host.
//
//   node workers/serve-local.mjs --config FILE [--port 0] [--ratelimit NAME=LIMIT/PERIOD]... [--worker-dir DIR] [--r2-dir DIR]
//
// --r2-dir keeps the bucket's objects in files under DIR, as R2 keeps them
// off the Worker; without it Miniflare holds them in workerd's memory.
//
// --worker-dir serves another build laid out as workers/ is (worker.js and
// build/): the conformance probe's (target/probe/workers).

import { readFileSync, readdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";
import { Miniflare, Log, LogLevel } from "miniflare";

const args = process.argv.slice(2);
const flag = (name) => args.flatMap((a, i) => (a === name ? [args[i + 1]] : []));
const here = flag("--worker-dir")[0] ?? dirname(fileURLToPath(import.meta.url));

const ORIGINAL_SETTINGS = ["REPLICATE_API_TOKEN", "API_BASE_URL", "TARGET_DOMAIN"];
const bindings = { EDGEPROXY_CONFIG: flag("--config").length ? readFileSync(flag("--config")[0], "utf8") : "" };
for (const [name, value] of Object.entries(process.env)) {
  if (name.startsWith("EDGEPROXY_SECRET_") || ORIGINAL_SETTINGS.includes(name)) bindings[name] = value;
}
const ratelimits = {};
for (const spec of flag("--ratelimit")) {
  const [, name, limit, period] = spec.match(/^([^=]+)=(\d+)\/(\d+)$/) ?? [];
  if (!name) throw new Error(`--ratelimit ${spec}: expected NAME=LIMIT/PERIOD`);
  ratelimits[name] = { namespace_id: name, simple: { limit: Number(limit), period: Number(period) } };
}

const mf = new Miniflare({
  host: "127.0.0.1",
  port: Number(flag("--port")[0] ?? 0),
  log: new Log(LogLevel.WARN),
  // Listed, not discovered: Miniflare's import scanner cannot parse jco's output.
  modulesRoot: here,
  modules: [
    { type: "ESModule", path: join(here, "worker.js") },
    { type: "ESModule", path: join(here, "build/edgeproxy.js") },
    ...readdirSync(join(here, "build"))
      .filter((f) => f.endsWith(".wasm"))
      .map((f) => ({ type: "CompiledWasm", path: join(here, "build", f) })),
  ],
  // The newest date Miniflare 4's bundled workerd accepts; JSPI needs no flag.
  compatibilityDate: "2026-07-01",
  kvNamespaces: ["EDGEPROXY_KV"],
  r2Buckets: ["EDGEPROXY_BLOBS"],
  r2Persist: flag("--r2-dir")[0] ?? false,
  ratelimits,
  bindings,
});
const url = await mf.ready;
console.error(`edgeproxy: serving ${join(here, "worker.js")} (workerd) on ${url.origin}`);
const stop = async () => {
  await mf.dispose();
  process.exit(0);
};
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
