#!/usr/bin/env node
/*
 * test/mock/graph-api.js — a mock of the WhatsApp Cloud API send endpoint.
 *
 *   POST /{version}/{phone_number_id}/messages
 *
 * Used by wasend's tests, `make demo` and the benchmarks.  It behaves like
 * Meta's endpoint where that matters to a sender:
 *
 *   - validates the bearer token of each number and the body
 *     (messaging_product = "whatsapp", a 7-15 digit `to`, a `type`);
 *   - answers 200 with a unique wamid, or an error body with error.code;
 *   - enforces each number's throughput limit over a sliding 1-second
 *     window and answers 130429 when a request would exceed it;
 *   - can add latency (mean ± jitter) and answer scripted faults;
 *   - logs every request so tests can assert on exactly what was sent.
 *
 * Configuration is a JSON file given with --config (see README in this
 * directory); control endpoints live under /__mock/.
 *
 * Usage: node graph-api.js --port 18080 [--config cfg.json]
 *        [--tls-cert c.pem --tls-key k.pem] [--ready-file path]
 *        [--log-file requests.csv]
 */
'use strict';

const http = require('http');
const https = require('https');
const fs = require('fs');

function parseArgs(argv)
{
	const args = {};
	for (let i = 2; i < argv.length; i++)
	{
		const a = argv[i];
		if (!a.startsWith('--'))
			throw new Error('unexpected argument ' + a);
		args[a.slice(2)] = argv[++i];
	}
	return args;
}

const args = parseArgs(process.argv);
const port = parseInt(args.port || '18080', 10);

/*
 * config:
 * {
 *   "numbers": { "<phone_number_id>": { "token": "...", "rate": 80 } },
 *   "default_rate": 80,          // for numbers not listed (token not checked)
 *   "strict_numbers": false,     // true: unknown phone_number_id -> 100
 *   "latency_ms": 0, "jitter_ms": 0,
 *   "rules": [ { "to": "regex", "code": 131026, "http": 400,
 *                "after": n (optional: let the first n matches through),
 *                "times": n (optional: then apply to n matches only),
 *                "action": "error" | "drop" | "hang" | "http500" | "garbage"
 *                          | "nul" | "bigcode" | "deep" | "echo_token" | "hold" } ]
 *
 * "hold" keeps the request unanswered until POST /__mock/release, which
 * answers every held request 200 (GET /__mock/held counts them).
 *
 * The hostile answers: "nul" is an error whose message holds \u0000 (valid
 * JSON that PostgreSQL's jsonb refuses), "bigcode" an error.code above
 * 2^31, "deep" a 200 whose body is 200,000 nested arrays, "echo_token" a
 * 190 whose message repeats the request's bearer token (as Meta's text for
 * a malformed token can).
 * }
 */
let config = {
	numbers: {},
	default_rate: 80,
	strict_numbers: false,
	latency_ms: 0,
	jitter_ms: 0,
	rules: [],
};

function loadConfig(obj)
{
	config = Object.assign({}, config, obj);
	config.rules = (config.rules || []).map(r => Object.assign({}, r, {
		re: new RegExp(r.to || '.*'),
		hits: 0,
	}));
}

if (args.config)
	loadConfig(JSON.parse(fs.readFileSync(args.config, 'utf8')));

/* Request log: one array per field keeps 1M entries cheap. */
let log = [];
let seq = 0;
const windows = new Map();	/* phone_number_id -> ring of accept times */
const { performance } = require('perf_hooks');
let connections = 0;
let held = [];		/* answers of "hold" rules, waiting for /__mock/release */

/* Wall-clock time in ms since the epoch, with sub-ms resolution. */
function nowMs()
{
	return performance.timeOrigin + performance.now();
}

/*
 * Sliding-window limiter: a request is accepted when fewer than `rate`
 * requests of this number were accepted in (now - 1000 ms, now].
 */
function admit(pnid, rate, t)
{
	let w = windows.get(pnid);
	if (!w)
	{
		w = { times: [], head: 0 };
		windows.set(pnid, w);
	}
	while (w.head < w.times.length && w.times[w.head] <= t - 1000)
		w.head++;
	if (w.head > 4096)
	{
		w.times = w.times.slice(w.head);
		w.head = 0;
	}
	if (w.times.length - w.head >= rate)
		return false;
	w.times.push(t);
	return true;
}

function errorBody(code, message, type)
{
	return JSON.stringify({
		error: {
			message: '(#' + code + ') ' + message,
			type: type || 'OAuthException',
			code: code,
			error_data: { messaging_product: 'whatsapp', details: message },
			fbtrace_id: 'Mock' + seq,
		},
	});
}

const messages = {
	100: 'Invalid parameter',
	130429: 'Rate limit hit',
	131026: 'Message undeliverable',
	131056: '(Business Account, Consumer Account) pair rate limit hit',
	131048: 'Spam rate limit hit',
	131050: 'User has opted out of marketing messages',
	190: 'Error validating access token: Session has expired',
	131000: 'Something went wrong',
	130403: 'Recipient blocked by the business',
};

const logFd = args['log-file'] ? fs.openSync(args['log-file'], 'a') : null;

function csvLine(e)
{
	return [e.t.toFixed(3), e.pnid, e.to, e.type, e.status, e.code, e.wamid].join(',');
}

/*
 * Keep the entry for /__mock/log; with --log-file also append it to the
 * file before answering, so that the log survives the mock being killed.
 */
function record(entry)
{
	log.push(entry);
	if (logFd !== null)
		fs.writeSync(logFd, csvLine(entry) + '\n');
}

function reply(res, status, body, delay)
{
	const send = () => {
		res.writeHead(status, {
			'Content-Type': 'application/json',
			'Content-Length': Buffer.byteLength(body),
		});
		res.end(body);
	};
	if (delay > 0)
		setTimeout(send, delay);
	else
		send();
}

function latency()
{
	if (!config.latency_ms && !config.jitter_ms)
		return 0;
	const j = config.jitter_ms || 0;
	return Math.max(0, config.latency_ms + (Math.random() * 2 - 1) * j);
}

function handleMessages(req, res, pnid, raw, t)
{
	const entry = { t: t, pnid: pnid, to: '', type: '', status: 0, code: '', wamid: '' };
	const num = config.numbers[pnid];
	const auth = req.headers['authorization'] || '';
	let body;

	seq++;
	if (!req.socket.wasendCounted)
	{
		/* count connections that carried API requests, not control calls */
		req.socket.wasendCounted = true;
		connections++;
	}
	try
	{
		body = JSON.parse(raw);
	}
	catch (e)
	{
		body = null;
	}
	if (body && typeof body.to === 'string')
		entry.to = body.to;
	if (body && typeof body.type === 'string')
		entry.type = body.type.replace(/[^a-z_]/g, '');

	const fail = (status, code) => {
		entry.status = status;
		entry.code = String(code);
		record(entry);
		reply(res, status, errorBody(code, messages[code] || 'Error'), latency());
	};

	if (config.strict_numbers && !num)
		return fail(400, 100);
	if (num && num.token && auth !== 'Bearer ' + num.token)
		return fail(401, 190);
	if (!auth.startsWith('Bearer '))
		return fail(401, 190);
	if (!body || typeof body !== 'object' || Array.isArray(body) ||
		body.messaging_product !== 'whatsapp' ||
		typeof body.to !== 'string' || !/^\+?[0-9]{7,15}$/.test(body.to) ||
		typeof body.type !== 'string' ||
		(body.type !== 'template' && body.type !== 'text' && body[body.type] === undefined))
		return fail(400, 100);

	for (const r of config.rules)
	{
		if (!r.re.test(body.to))
			continue;
		r.seen = (r.seen || 0) + 1;
		if (r.after !== undefined && r.seen <= r.after)
			continue;
		if (r.times !== undefined && r.hits >= r.times)
			continue;
		r.hits++;
		const action = r.action || 'error';
		if (action === 'drop')
		{
			entry.status = -1;
			entry.code = 'drop';
			record(entry);
			req.socket.destroy();
			return;
		}
		if (action === 'hold')
		{
			/* answered (200) only when the test posts /__mock/release */
			held.push(() => {
				entry.status = 200;
				entry.code = 'held';
				entry.wamid = 'wamid.MOCK' + pnid + '.held.' + seq.toString(36);
				record(entry);
				reply(res, 200, JSON.stringify({
					messaging_product: 'whatsapp',
					messages: [{ id: entry.wamid, message_status: 'accepted' }],
				}), 0);
			});
			return;
		}
		if (action === 'hang')
		{
			entry.status = -2;
			entry.code = 'hang';
			record(entry);
			return;		/* never answered; the client times out */
		}
		if (action === 'garbage')
		{
			entry.status = 200;
			entry.code = 'garbage';
			record(entry);
			reply(res, 200, '<html>not json</html>', latency());
			return;
		}
		if (action === 'nul' || action === 'bigcode' || action === 'echo_token')
		{
			const token = auth.replace(/^Bearer /, '');
			const err = action === 'nul' ?
				{ message: 'bad \u0000 byte', type: 'OAuthException', code: 100 } :
				action === 'bigcode' ?
				{ message: 'huge code', type: 'OAuthException', code: 3000000000 } :
				{ message: 'Invalid OAuth access token - Cannot parse access token: ' + token +
					' (app token EAAJforeignAppT0ken0123456789abc)',
				  type: 'OAuthException', code: 190 };
			entry.status = 400;
			entry.code = action;
			record(entry);
			/* JSON.stringify would escape the NUL as \u0000 too */
			reply(res, 400, JSON.stringify({ error: err }), latency());
			return;
		}
		if (action === 'deep')
		{
			entry.status = 200;
			entry.code = 'deep';
			record(entry);
			reply(res, 200, '['.repeat(200000) + ']'.repeat(200000), latency());
			return;
		}
		if (action === 'http500')
		{
			entry.status = 500;
			entry.code = 'http500';
			record(entry);
			reply(res, 500, 'Internal Server Error', latency());
			return;
		}
		return fail(r.http || 400, r.code);
	}

	const rate = (num && num.rate) || config.default_rate;
	if (!admit(pnid, rate, t))
		return fail(400, 130429);

	entry.status = 200;
	entry.wamid = 'wamid.MOCK' + pnid + '.' + seq.toString(36) + '.' +
		Math.floor(t * 1000).toString(36);
	record(entry);
	reply(res, 200, JSON.stringify({
		messaging_product: 'whatsapp',
		contacts: [{ input: body.to, wa_id: body.to.replace(/^\+/, '') }],
		messages: [{ id: entry.wamid, message_status: 'accepted' }],
	}), latency());
}

function logCsv()
{
	const lines = ['t_ms,phone_number_id,recipient,type,http_status,code,wamid'];
	for (const e of log)
		lines.push(csvLine(e));
	return lines.join('\n') + '\n';
}

function stats()
{
	const byStatus = {};
	const byCode = {};
	for (const e of log)
	{
		byStatus[e.status] = (byStatus[e.status] || 0) + 1;
		if (e.code)
			byCode[e.code] = (byCode[e.code] || 0) + 1;
	}
	return { requests: log.length, connections: connections, by_status: byStatus, by_code: byCode };
}

function handleControl(req, res, path, raw)
{
	if (path === '/__mock/log')
		return reply(res, 200, logCsv(), 0);
	if (path === '/__mock/stats')
		return reply(res, 200, JSON.stringify(stats()), 0);
	if (path === '/__mock/reset' && req.method === 'POST')
	{
		log = [];
		connections = 0;
		windows.clear();
		return reply(res, 200, '{"ok":true}', 0);
	}
	if (path === '/__mock/held')
		return reply(res, 200, JSON.stringify({ held: held.length }), 0);
	if (path === '/__mock/release' && req.method === 'POST')
	{
		const n = held.length;
		held.forEach(f => f());
		held = [];
		return reply(res, 200, JSON.stringify({ released: n }), 0);
	}
	if (path === '/__mock/config' && req.method === 'POST')
	{
		loadConfig(JSON.parse(raw));
		return reply(res, 200, '{"ok":true}', 0);
	}
	reply(res, 404, '{"error":"not found"}', 0);
}

const route = /^\/v[0-9.]+\/([^/]+)\/messages$/;

function onRequest(req, res)
{
	const t = nowMs();
	const chunks = [];
	req.on('data', c => chunks.push(c));
	req.on('end', () => {
		const raw = Buffer.concat(chunks).toString('utf8');
		const path = req.url.split('?')[0];
		if (path.startsWith('/__mock/'))
			return handleControl(req, res, path, raw);
		const m = route.exec(path);
		if (req.method !== 'POST' || !m)
		{
			seq++;
			return reply(res, 404, errorBody(100, 'Unknown path components'), 0);
		}
		handleMessages(req, res, m[1], raw, t);
	});
}

let server;
if (args['tls-cert'])
	server = https.createServer({
		cert: fs.readFileSync(args['tls-cert']),
		key: fs.readFileSync(args['tls-key']),
	}, onRequest);
else
	server = http.createServer(onRequest);
server.keepAliveTimeout = 60000;
server.headersTimeout = 65000;
server.maxRequestsPerSocket = 0;

server.listen(port, '127.0.0.1', () => {
	if (args['ready-file'])
		fs.writeFileSync(args['ready-file'], String(process.pid));
	process.stdout.write('mock graph api listening on ' + port + '\n');
});

process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
