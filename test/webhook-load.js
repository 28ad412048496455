#!/usr/bin/env node
/*
 * test/webhook-load.js — post a campaign's worth of status webhooks to the
 * wasend webhook endpoint, the way Meta would: 3 statuses per message
 * (sent, delivered, read), shuffled so that order is not guaranteed, in
 * signed payloads of --per-payload statuses each, --concurrency at a time.
 *
 * Usage: node webhook-load.js --url http://127.0.0.1:PORT/ --secret S
 *          --wamids file (one wamid per line) [--per-payload 20]
 *          [--concurrency 32] [--local-address 127.0.0.3]
 * Prints one JSON line: payloads, statuses, seconds, statuses_per_sec,
 * latency_ms {median, p99, max}, http status counts.  With --started-file
 * F it writes F when the first answer arrives (a test's sign that the
 * load is on).
 *
 * With --emit-sql FILE it posts nothing and writes instead one
 * SELECT wasend.wasend_ingest_webhook(body, signature) per payload, to measure the
 * SQL function on the same payloads.
 */
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const http = require('http');

const args = {};
for (let i = 2; i < process.argv.length; i += 2)
	args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];

const url = args.url ? new URL(args.url) : null;
const secret = args.secret;
const perPayload = parseInt(args['per-payload'] || '20', 10);
const concurrency = parseInt(args.concurrency || '32', 10);
const wamids = fs.readFileSync(args.wamids, 'utf8').split('\n').filter(Boolean);

/* all statuses, shuffled (Fisher-Yates with a fixed seed for repeatability) */
let seed = 42;
function rand()
{
	seed = (seed * 1103515245 + 12345) & 0x7fffffff;
	return seed / 0x7fffffff;
}
const statuses = [];
const base = 1700000000;
for (const id of wamids)
	for (const [k, st] of ['sent', 'delivered', 'read'].entries())
		statuses.push({ id: id, status: st, timestamp: String(base + k),
						recipient_id: '0' });
for (let i = statuses.length - 1; i > 0; i--)
{
	const j = Math.floor(rand() * (i + 1));
	[statuses[i], statuses[j]] = [statuses[j], statuses[i]];
}

const payloads = [];
for (let i = 0; i < statuses.length; i += perPayload)
	payloads.push(JSON.stringify({
		object: 'whatsapp_business_account',
		entry: [{ id: '1', changes: [{ field: 'messages', value: {
			messaging_product: 'whatsapp',
			metadata: { phone_number_id: '1' },
			statuses: statuses.slice(i, i + perPayload),
		} }] }],
	}));

function sign(body)
{
	return 'sha256=' + crypto.createHmac('sha256', secret).update(body).digest('hex');
}

if (args['emit-sql'])
{
	const q = (t) => "'" + t.replace(/'/g, "''") + "'";
	fs.writeFileSync(args['emit-sql'], payloads.map(
		(b) => 'SELECT wasend.wasend_ingest_webhook(' + q(b) + ', ' + q(sign(b)) + ');').join('\n') + '\n');
	console.log(JSON.stringify({ payloads: payloads.length, statuses: statuses.length }));
	process.exit(0);
}

const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
const latencies = [];
const codes = {};
let next = 0;
let started = false;

function post(body)
{
	const sig = sign(body);
	return new Promise((resolve) => {
		const t0 = process.hrtime.bigint();
		const req = http.request({
			host: url.hostname, port: url.port, path: url.pathname, method: 'POST',
			agent: agent, localAddress: args['local-address'],
			headers: { 'Content-Type': 'application/json',
					   'Content-Length': Buffer.byteLength(body),
					   'X-Hub-Signature-256': sig },
		}, (res) => {
			res.resume();
			res.on('end', () => {
				if (args['started-file'] && !started)
				{
					started = true;
					fs.writeFileSync(args['started-file'], '');
				}
				latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
				codes[res.statusCode] = (codes[res.statusCode] || 0) + 1;
				resolve(res.statusCode);
			});
		});
		req.on('error', () => { codes.error = (codes.error || 0) + 1; resolve(0); });
		req.end(body);
	});
}

async function worker()
{
	while (next < payloads.length)
	{
		const body = payloads[next++];
		/* Meta retries anything but a 200 */
		for (let attempt = 0; attempt < 5; attempt++)
			if (await post(body) === 200)
				break;
	}
}

(async () => {
	const t0 = process.hrtime.bigint();
	await Promise.all(Array.from({ length: concurrency }, worker));
	const secs = Number(process.hrtime.bigint() - t0) / 1e9;
	latencies.sort((a, b) => a - b);
	const pct = (p) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))];
	console.log(JSON.stringify({
		payloads: payloads.length,
		statuses: statuses.length,
		seconds: Number(secs.toFixed(3)),
		statuses_per_sec: Math.round(statuses.length / secs),
		latency_ms: { median: Number(pct(0.5).toFixed(1)), p99: Number(pct(0.99).toFixed(1)),
					  max: Number(latencies[latencies.length - 1].toFixed(1)) },
		http: codes,
	}));
	agent.destroy();
})();
