#!/usr/bin/env node
/*
 * test/mock/graph-api.js — a mock of the WhatsApp Cloud API send endpoint
 * and of the phone number node's account state.
 *
 *   POST /{version}/{phone_number_id}/messages
 *   GET  /{version}/{phone_number_id}?fields=...
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
 *   - answers Meta's "held_for_quality_assessment" (template pacing) when
 *     a rule says so;
 *   - answers GETs of the phone number with its account state (messaging
 *     limit tier, quality rating, health), which a test can change at run
 *     time with POST /__mock/account;
 *   - logs every request so tests can assert on exactly what was sent
 *     (GETs too, with type "GET"; they do not count in the throughput
 *     window), with the body's biz_opaque_callback_data;
 *   - can post a signed status webhook for each accepted send (config
 *     "statuses"), with the echoed biz_opaque_callback_data, to a list of
 *     webhook URLs, retrying until one answers 200, as Meta does.
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
const net = require('net');
const crypto = require('crypto');

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
 *   "numbers": { "<phone_number_id>": { "token": "...", "rate": 80,
 *                  "account": { "tier": "TIER_250", "quality_rating": "GREEN",
 *                               "can_send_message": "AVAILABLE",
 *                               "display_phone_number": "15550001111",
 *                               "throughput": "STANDARD" },
 *                  "account_error": { "http": 400, "code": 80007 } } },
 *   "default_rate": 80,          // for numbers not listed (token not checked)
 *   "strict_numbers": false,     // true: unknown phone_number_id -> 100
 *   "latency_ms": 0, "jitter_ms": 0,
 *   "strict_rate": false,        // true: every send counts in the window
 *   "requests_per_connection": 0, // n: close a connection after n requests
 *   "version_warning": null,     // text: every API answer (sends, GETs)
 *                                // carries X-Ad-Api-Version-Warning: text
 *   "connect_delay_ms": 0, "connect_delay_count": 0,
 *                                // hold the next count new connections
 *   "rules": [ { "to": "regex", "code": 131026, "http": 400,
 *                "after": n (optional: let the first n matches through),
 *                "times": n (optional: then apply to n matches only),
 *                "action": "error" | "drop" | "hang" | "http500" | "garbage"
 *                          | "nul" | "bigcode" | "deep" | "echo_token" | "hold"
 *                          | "held_quality" | "decoy" | "big" | "lost",
 *                "bytes": n, "hold_ms": n (for "big"),
 *                "lost": "hang" | "drop" | "cut" | "garbage",
 *                "hold_statuses": bool (for "lost") } ]
 *
 * "lost" accepts the message as Meta would (a wamid, the throughput
 * window, the status webhooks of config "statuses"), then loses the
 * answer: the request is never answered ("lost": "hang", the default; the
 * client times out), its connection is closed ("drop"), or closed after
 * the head and a few bytes of the body ("cut": a client that read bytes
 * does not send the request again by itself), or it is answered 200 with
 * HTML ("garbage").  Logged as a 200 with code "lost_hang", "lost_drop",
 * "lost_cut" or "lost_garbage", and its wamid.  With
 * "hold_statuses": true its status webhooks wait until POST
 * /__mock/release_statuses (GET /__mock/held counts them as
 * "held_statuses").
 *
 * "hold" keeps the request unanswered until POST /__mock/release, which
 * answers every held request 200 (GET /__mock/held counts them).
 *
 * "held_quality" answers 200 with a wamid like an accepted send (and counts
 * in the throughput window like one; over the rate it is a 130429), but
 * with "message_status": "held_for_quality_assessment" instead of
 * "accepted", as Meta does for a template it is pacing.  Logged with code
 * "held_quality".
 *
 * "account" is what GET /{version}/{phone_number_id} answers; every key is
 * optional: tier (whatsapp_business_manager_messaging_limit, any string,
 * default TIER_UNLIMITED), quality_rating (GREEN), can_send_message
 * (health_status.can_send_message, AVAILABLE), display_phone_number
 * ("1555" + the last 7 digits of the phone_number_id, zero-padded),
 * throughput (throughput.level, STANDARD).
 * "account_error" makes that GET fail with an error body of this code
 * (default 100) and HTTP status (default 400); with "echo_token": true its
 * message repeats the request's bearer token.  POST /__mock/account
 * {"pnid": "...", "tier": ..., ...} merges into one number's "account" at
 * run time ("account_error": {...} or null sets or clears the error).
 *
 * "strict_rate" makes the throughput window count every send that
 * arrives, refused ones included: a send is answered 130429 when `rate`
 * sends of its number arrived in the second before it, so any window
 * (t - 1000 ms, t] with more than `rate` arrivals shows as 130429s (the
 * default window counts accepted sends only, and so never holds more
 * than `rate` of them, however many arrived).
 *
 * "connect_delay_ms" / "connect_delay_count": each of the next count new
 * connections (counted from when the config naming them is loaded) waits
 * that long before the server reads it: its TLS handshake, or its first
 * request, takes that much longer, as on a path whose connection set-ups
 * stall.  "requests_per_connection": n closes each connection after its
 * n-th answer (Connection: close), so that every n requests need a new one.
 *
 * The hostile answers: "nul" is an error whose message holds \u0000 (valid
 * JSON that PostgreSQL's jsonb refuses), "bigcode" an error.code above
 * 2^31, "deep" a 200 whose body is 30,000 nested arrays (60 kB), "echo_token" a
 * 190 whose message repeats the request's bearer token (as Meta's text for
 * a malformed token can).  "decoy" is an error of code r.code (default
 * 131026) that also says 130429: as an earlier duplicate "code" key (JSON
 * keeps the last one), in error_data.code and quoted in the message; it
 * is no 130429 and must not be sent again.  "big" answers 200 with a
 * wamid and a body padded to r.bytes (default 1,000,000): all but its last
 * 16 bytes at once, the rest after r.hold_ms (default 2000).
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

/* connections still to hold back (connect_delay_count), and those held */
let delayLeft = 0;
let delayedConnections = 0;

function loadConfig(obj)
{
	config = Object.assign({}, config, obj);
	if (obj.connect_delay_count !== undefined)
		delayLeft = obj.connect_delay_count;
	if (typeof server !== 'undefined')
		server.maxRequestsPerSocket = config.requests_per_connection || 0;
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
let heldStatuses = [];	/* status posts of "lost" rules, waiting for /__mock/release_statuses */
/* sends that named both "to" and "recipient" (wasend must name one) */
let bothAddressees = 0;
/* a business-scoped user ID, or a parent BSUID */
const BSUID_RE = /^[A-Z]{2}\.(ENT\.)?[A-Za-z0-9]{1,128}$/;

/* Wall-clock time in ms since the epoch, with sub-ms resolution. */
function nowMs()
{
	return performance.timeOrigin + performance.now();
}

/*
 * Sliding-window limiter: a request is accepted when fewer than `rate`
 * requests of this number were accepted in (now - 1000 ms, now].  With
 * strict_rate every request counts, refused ones too: a request is
 * accepted when fewer than `rate` requests of the number arrived in that
 * window before it.
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
	{
		if (config.strict_rate)
			w.times.push(t);
		return false;
	}
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
	4: 'Application request limit reached',
	80007: 'There have been too many calls to this WhatsApp Business account.',
	131009: 'Parameter value is not valid',
	131057: 'Account in maintenance mode',
	132000: 'Number of parameters does not match the expected number of params',
	132012: 'Parameter format does not match format in the created template',
	131062: 'Business-scoped user ID recipients are not supported for this message',
};

const logFd = args['log-file'] ? fs.openSync(args['log-file'], 'a') : null;

function csvLine(e)
{
	return [e.t.toFixed(3), e.pnid, e.to, e.type, e.status, e.code, e.wamid,
			e.opaque || ''].join(',');
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

/*
 * Answer now, or after `delay` ms (latency_ms / jitter_ms).  A delayed
 * answer says how long the mock held it in a Server-Timing header
 * ("app;dur=ms", measured, not planned), as a server that reports its own
 * time does: the sender tells its own latency from the server's with it.
 */
function reply(res, status, body, delay)
{
	const t0 = process.hrtime.bigint();
	const send = () => {
		const headers = {
			'Content-Type': 'application/json',
			'Content-Length': Buffer.byteLength(body),
		};
		if (typeof config.version_warning === 'string' && config.version_warning !== '')
			headers['X-Ad-Api-Version-Warning'] = config.version_warning;
		if (delay > 0)
			headers['Server-Timing'] = 'app;dur=' +
				(Number(process.hrtime.bigint() - t0) / 1e6).toFixed(3);
		res.writeHead(status, headers);
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

/* Count connections that carried API requests (sends or GETs), not control calls. */
function countConnection(req)
{
	if (!req.socket.wasendCounted)
	{
		req.socket.wasendCounted = true;
		connections++;
	}
}

/*
 * A 200 answer to a send: a new wamid, logged with `code` ('' for a plain
 * accepted message), and the given message_status.
 */
function accept(res, entry, pnid, to, t, code, status)
{
	entry.status = 200;
	entry.code = code;
	entry.wamid = 'wamid.MOCK' + pnid + '.' + seq.toString(36) + '.' +
		Math.floor(t * 1000).toString(36);
	record(entry);
	if (status === 'accepted')
		postStatuses(entry);
	reply(res, 200, JSON.stringify({
		messaging_product: 'whatsapp',
		/* a BSUID send is answered with user_id, a phone send with wa_id */
		contacts: [BSUID_RE.test(to) ? { input: to, user_id: to } :
				   { input: to, wa_id: to.replace(/^\+/, '') }],
		messages: [{ id: entry.wamid, message_status: status }],
	}), latency());
}

/* statuses posted and answered, for /__mock/stats */
let statusPosts = { posted: 0, tries: 0, answered_200: 0, given_up: 0 };

/*
 * The app secret of config.statuses: given, or read from its file (the
 * file wasend.app_secret_file names, so that the two agree).
 */
function statusSecret(sc)
{
	if (typeof sc.app_secret === 'string')
		return sc.app_secret;
	return fs.readFileSync(sc.app_secret_file, 'utf8').trim();
}

/*
 * POST one signed webhook body to the URLs in turn, from the next one on,
 * until one answers 200, as Meta retries a webhook its endpoint did not
 * take; each try after a failure waits retry_ms; after max_tries it gives
 * up.  A refused connection counts as a failed try.
 */
function postWebhook(sc, body, sig, tries, next)
{
	const urls = sc.urls || [];
	if (urls.length === 0)
		return;
	if (tries >= (sc.max_tries || 100))
	{
		statusPosts.given_up++;
		return;
	}
	statusPosts.tries++;
	const u = new URL(urls[next % urls.length]);
	const again = () => setTimeout(() => postWebhook(sc, body, sig, tries + 1, next + 1),
								   sc.retry_ms || 500);
	const lib = u.protocol === 'https:' ? https : http;
	const req = lib.request({
		method: 'POST', hostname: u.hostname, port: u.port, path: u.pathname + u.search,
		headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body),
				   'X-Hub-Signature-256': sig },
		timeout: 10000,
	}, res => {
		res.resume();
		res.on('end', () => {
			if (res.statusCode === 200)
				statusPosts.answered_200++;
			else
				again();
		});
	});
	req.on('timeout', () => req.destroy(new Error('timeout')));
	req.on('error', again);
	req.end(body);
}

/*
 * After an accepted send, with config.statuses: one status webhook per
 * kind (default ["sent"]), delay_ms after the answer, in Meta's shape:
 * the wamid, the recipient, the echoed biz_opaque_callback_data, and the
 * number's phone_number_id in the change's metadata.
 */
function postStatuses(entry)
{
	const sc = config.statuses;
	if (!sc || !Array.isArray(sc.urls) || sc.urls.length === 0)
		return;
	const kinds = sc.kinds || ['sent'];
	const ts = String(Math.floor(entry.t / 1000));
	const statuses = kinds.map(k => {
		const st = { id: entry.wamid, status: k, timestamp: ts };
		if (BSUID_RE.test(entry.to))
			st.recipient_user_id = entry.to;
		else
			st.recipient_id = entry.to.replace(/^\+/, '');
		if (entry.opaque)
			st.biz_opaque_callback_data = entry.opaque;
		return st;
	});
	const body = JSON.stringify({
		object: 'whatsapp_business_account',
		entry: [{ id: 'WABA1', changes: [{ field: 'messages', value: {
			messaging_product: 'whatsapp',
			metadata: { display_phone_number: '', phone_number_id: entry.pnid },
			statuses: statuses } }] }],
	});
	let sig;
	try
	{
		sig = 'sha256=' + crypto.createHmac('sha256', statusSecret(sc)).update(body).digest('hex');
	}
	catch (e)
	{
		process.stdout.write('statuses: no app secret: ' + e.message + '\n');
		return;
	}
	statusPosts.posted++;
	setTimeout(() => postWebhook(sc, body, sig, 0, 0), sc.delay_ms || 0);
}

function handleMessages(req, res, pnid, raw, t)
{
	const entry = { t: t, pnid: pnid, to: '', type: '', status: 0, code: '', wamid: '', opaque: '' };
	const num = config.numbers[pnid];
	const auth = req.headers['authorization'] || '';
	let body;

	seq++;
	countConnection(req);
	try
	{
		body = JSON.parse(raw);
	}
	catch (e)
	{
		body = null;
	}
	/* the addressee: "to" (a phone number) wins over "recipient" (a BSUID) */
	if (body && typeof body.to === 'string')
		entry.to = body.to;
	else if (body && typeof body.recipient === 'string')
		entry.to = body.recipient;
	if (body && typeof body.to === 'string' && typeof body.recipient === 'string')
		bothAddressees++;
	if (body && typeof body.type === 'string')
		entry.type = body.type.replace(/[^a-z_]/g, '');
	/* as logged: no comma, quote or line break can break the CSV */
	if (body && typeof body.biz_opaque_callback_data === 'string')
		entry.opaque = body.biz_opaque_callback_data.replace(/[^A-Za-z0-9:._-]/g, '_');

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
		(typeof body.to === 'string' ? !/^\+?[0-9]{7,15}$/.test(body.to) :
		 (typeof body.recipient !== 'string' || !BSUID_RE.test(body.recipient))) ||
		typeof body.type !== 'string' ||
		(body.type !== 'template' && body.type !== 'text' && body[body.type] === undefined))
		return fail(400, 100);

	for (const r of config.rules)
	{
		if (!r.re.test(entry.to))
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
			const wamid = typeof r.wamid === 'string' ? r.wamid :
				'wamid.MOCK' + pnid + '.held.' + seq.toString(36);
			held.push(() => {
				entry.status = 200;
				entry.code = 'held';
				entry.wamid = wamid;
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
		if (action === 'decoy')
		{
			/*
			 * an error whose code (r.code, default 131026) comes last: 130429
			 * appears only as an earlier duplicate "code" (JSON keeps the
			 * last), nested in error_data, and quoted in the message
			 */
			const code = r.code || 131026;
			entry.status = 400;
			entry.code = 'decoy';
			record(entry);
			reply(res, 400, '{"error":{"message":"not \\"code\\": 130429",' +
				'"type":"OAuthException","code":130429,"error_data":{"code":130429},' +
				'"code":' + code + '}}', latency());
			return;
		}
		if (action === 'deep')
		{
			entry.status = 200;
			entry.code = 'deep';
			record(entry);
			/* 60 kB: under the 64 kB a sender keeps of an answer */
			reply(res, 200, '['.repeat(30000) + ']'.repeat(30000), latency());
			return;
		}
		if (action === 'big')
		{
			/*
			 * 200 with a wamid, padded to r.bytes (default 1,000,000): all
			 * but its last bytes at once, the end after r.hold_ms (default
			 * 2000), so that a client holds the part it read meanwhile
			 */
			const bytes = r.bytes || 1000000;
			entry.status = 200;
			entry.code = 'big';
			entry.wamid = 'wamid.MOCK' + pnid + '.big.' + seq.toString(36);
			record(entry);
			const head = '{"messaging_product":"whatsapp","messages":[{"id":"' + entry.wamid +
				'","message_status":"accepted"}],"padding":"';
			const tail = '"}';
			const body = head + 'x'.repeat(Math.max(0, bytes - head.length - tail.length)) + tail;
			res.on('error', () => {});
			req.socket.on('error', () => {});
			res.writeHead(200, { 'Content-Type': 'application/json',
								 'Content-Length': Buffer.byteLength(body) });
			res.write(body.slice(0, body.length - 16));
			setTimeout(() => { if (!res.destroyed) res.end(body.slice(body.length - 16)); },
				r.hold_ms !== undefined ? r.hold_ms : 2000);
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
		if (action === 'lost')
		{
			/* accepted by "Meta", the answer lost on the way back */
			if (!admit(pnid, (num && num.rate) || config.default_rate, t))
				return fail(400, 130429);
			const how = ['drop', 'cut', 'garbage'].includes(r.lost) ? r.lost : 'hang';
			entry.status = 200;
			entry.code = 'lost_' + how;
			entry.wamid = 'wamid.MOCK' + pnid + '.lost.' + seq.toString(36);
			record(entry);
			if (r.hold_statuses)
				heldStatuses.push(() => postStatuses(entry));
			else
				postStatuses(entry);
			if (how === 'drop')
				req.socket.destroy();
			else if (how === 'garbage')
				reply(res, 200, '<html>not json</html>', latency());
			else if (how === 'cut')
			{
				/* the head and a few bytes of the body, then the connection closes */
				req.socket.on('error', () => {});
				req.socket.end('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n' +
					'Content-Length: 120\r\n\r\n{"messaging_product":', () => req.socket.destroy());
			}
			return;
		}
		if (action === 'held_quality')
		{
			/* accepted but held by Meta's template pacing: counts in the window */
			if (!admit(pnid, (num && num.rate) || config.default_rate, t))
				return fail(400, 130429);
			return accept(res, entry, pnid, entry.to, t, 'held_quality',
				'held_for_quality_assessment');
		}
		return fail(r.http || 400, r.code);
	}

	const rate = (num && num.rate) || config.default_rate;
	if (!admit(pnid, rate, t))
		return fail(400, 130429);

	accept(res, entry, pnid, entry.to, t, '', 'accepted');
}

/*
 * The account state of a number as GET /{phone_number_id} shows it: the
 * defaults, overridden by config numbers[pnid].account.
 */
function accountState(pnid)
{
	const num = config.numbers[pnid];
	const a = (num && num.account) || {};
	const digits = pnid.replace(/[^0-9]/g, '');
	return {
		tier: a.tier !== undefined ? a.tier : 'TIER_UNLIMITED',
		quality_rating: a.quality_rating !== undefined ? a.quality_rating : 'GREEN',
		can_send_message: a.can_send_message !== undefined ? a.can_send_message : 'AVAILABLE',
		display_phone_number: a.display_phone_number !== undefined ? a.display_phone_number :
			'1555' + digits.slice(-7).padStart(7, '0'),
		throughput: a.throughput !== undefined ? a.throughput : 'STANDARD',
	};
}

/*
 * The fields of the phone number node the mock knows, computed from the
 * account state.  health_status has Meta's shape: the overall verdict
 * and one entity per checked object (here only the phone number).
 */
const accountFields = {
	id: (pnid, a) => pnid,
	display_phone_number: (pnid, a) => a.display_phone_number,
	verified_name: (pnid, a) => 'Mock Business ' + pnid,
	quality_rating: (pnid, a) => a.quality_rating,
	whatsapp_business_manager_messaging_limit: (pnid, a) => a.tier,
	messaging_limit_tier: (pnid, a) => a.tier,		/* deprecated by Meta */
	throughput: (pnid, a) => ({ level: a.throughput }),
	health_status: (pnid, a) => {
		const entity = { entity_type: 'PHONE_NUMBER', id: pnid, can_send_message: a.can_send_message };
		if (a.can_send_message !== 'AVAILABLE')
			entity.errors = [{
				error_code: 141010,
				error_description: 'The phone number cannot send messages (mock: ' + a.can_send_message + ').',
				possible_solution: 'Check the number in WhatsApp Manager.',
			}];
		return { can_send_message: a.can_send_message, entities: [entity] };
	},
};

/* Meta's fields when the request names none. */
const defaultFields = ['verified_name', 'display_phone_number', 'quality_rating'];

/*
 * The field names of a `fields` parameter: comma-separated, where a field
 * may carry a {sub,fields} selection (ignored: the whole field is answered).
 */
function parseFields(param)
{
	if (param === null || param === '')
		return defaultFields;
	let depth = 0;
	let cur = '';
	const out = [];
	for (const c of param)
	{
		if (c === '{')
			depth++;
		else if (c === '}')
			depth--;
		else if (c === ',' && depth === 0)
		{
			out.push(cur.trim());
			cur = '';
		}
		else if (depth === 0)
			cur += c;
	}
	out.push(cur.trim());
	return out.filter(f => f !== '');
}

/*
 * GET /{version}/{phone_number_id}: the number's account state, only the
 * fields asked for (plus id).  Tokens are checked like for a send; the
 * request is logged with type "GET" and never counts in the throughput
 * window.
 */
function handleAccount(req, res, pnid, query, t)
{
	const entry = { t: t, pnid: pnid, to: '', type: 'GET', status: 0, code: '', wamid: '' };
	const num = config.numbers[pnid];
	const auth = req.headers['authorization'] || '';

	seq++;
	countConnection(req);

	const fail = (status, code, message, type) => {
		entry.status = status;
		entry.code = String(code);
		record(entry);
		reply(res, status, errorBody(code, message || messages[code] || 'Error', type), latency());
	};

	if (config.strict_numbers && !num)
		return fail(400, 100, 'Unsupported get request. Object with ID \'' + pnid +
			'\' does not exist, cannot be loaded due to missing permissions, or does not support this operation.',
			'GraphMethodException');
	if (num && num.token && auth !== 'Bearer ' + num.token)
		return fail(401, 190);
	if (!auth.startsWith('Bearer '))
		return fail(401, 190);
	if (num && num.account_error)
		return fail(num.account_error.http || 400, num.account_error.code || 100,
			num.account_error.echo_token ?
			'Invalid OAuth access token - Cannot parse access token: ' + auth.replace(/^Bearer /, '') :
			undefined);

	const fields = parseFields(query.get('fields'));
	for (const f of fields)
		if (!accountFields[f])
			return fail(400, 100, 'Tried accessing nonexisting field (' + f +
				') on node type (WhatsAppBusinessPhoneNumber)');

	const a = accountState(pnid);
	const out = {};
	for (const f of fields)
		out[f] = accountFields[f](pnid, a);
	out.id = pnid;
	entry.status = 200;
	record(entry);
	reply(res, 200, JSON.stringify(out), latency());
}

function logCsv()
{
	const lines = ['t_ms,phone_number_id,recipient,type,http_status,code,wamid,opaque'];
	for (const e of log)
		lines.push(csvLine(e));
	return lines.join('\n') + '\n';
}

/*
 * Counts of the log.  requests, by_status and by_code count sends only;
 * GETs of the account state are counted apart (gets, gets_by_status), so
 * that a sender reading its limits does not change the send counts.
 */
function stats()
{
	const byStatus = {};
	const byCode = {};
	const getsByStatus = {};
	let requests = 0;
	let gets = 0;
	for (const e of log)
	{
		if (e.type === 'GET')
		{
			gets++;
			getsByStatus[e.status] = (getsByStatus[e.status] || 0) + 1;
			continue;
		}
		requests++;
		byStatus[e.status] = (byStatus[e.status] || 0) + 1;
		if (e.code)
			byCode[e.code] = (byCode[e.code] || 0) + 1;
	}
	return { requests: requests, connections: connections, by_status: byStatus, by_code: byCode,
		both_to_and_recipient: bothAddressees,
		gets: gets, gets_by_status: getsByStatus, delayed_connections: delayedConnections,
		status_webhooks: statusPosts };
}

/*
 * POST /__mock/account: merge the body's account keys into one number's
 * config (created if not listed); "account_error": {...} sets the GET's
 * error, null clears it.  The rest of the config is untouched.
 */
function setAccount(body)
{
	if (!body || typeof body.pnid !== 'string' || body.pnid === '')
		return false;
	const num = config.numbers[body.pnid] || (config.numbers[body.pnid] = {});
	num.account = Object.assign({}, num.account || {});
	for (const k of ['tier', 'quality_rating', 'can_send_message', 'display_phone_number', 'throughput'])
		if (body[k] !== undefined)
			num.account[k] = body[k];
	if (body.account_error === null)
		delete num.account_error;
	else if (body.account_error !== undefined)
		num.account_error = body.account_error;
	return true;
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
		bothAddressees = 0;
		connections = 0;
		delayedConnections = 0;
		windows.clear();
		return reply(res, 200, '{"ok":true}', 0);
	}
	if (path === '/__mock/held')
		return reply(res, 200, JSON.stringify({ held: held.length,
												held_statuses: heldStatuses.length }), 0);
	if (path === '/__mock/release_statuses' && req.method === 'POST')
	{
		const n = heldStatuses.length;
		heldStatuses.forEach(f => f());
		heldStatuses = [];
		return reply(res, 200, JSON.stringify({ released: n }), 0);
	}
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
	if (path === '/__mock/account' && req.method === 'POST')
	{
		let body;
		try
		{
			body = JSON.parse(raw);
		}
		catch (e)
		{
			body = null;
		}
		if (!setAccount(body))
			return reply(res, 400, '{"error":"body must be {\\"pnid\\": \\"...\\", ...}"}', 0);
		return reply(res, 200, JSON.stringify({ ok: true, account: accountState(body.pnid) }), 0);
	}
	reply(res, 404, '{"error":"not found"}', 0);
}

const route = /^\/v[0-9.]+\/([^/]+)\/messages$/;
const nodeRoute = /^\/v[0-9.]+\/([^/]+)$/;

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
		const n = nodeRoute.exec(path);
		if (req.method === 'GET' && n)
			return handleAccount(req, res, n[1],
				new URL(req.url, 'http://mock').searchParams, t);
		const m = route.exec(path);
		if (req.method !== 'POST' || !m)
		{
			seq++;
			return reply(res, 404, errorBody(100, 'Unknown path components'), 0);
		}
		handleMessages(req, res, m[1], raw, t);
	});
}

var server;
if (args['tls-cert'])
	server = https.createServer({
		cert: fs.readFileSync(args['tls-cert']),
		key: fs.readFileSync(args['tls-key']),
	}, onRequest);
else
	server = http.createServer(onRequest);
server.keepAliveTimeout = 60000;
server.headersTimeout = 65000;
server.maxRequestsPerSocket = config.requests_per_connection || 0;

/*
 * The port is a plain TCP listener that hands each connection to the
 * server, at once or, for the next connect_delay_count connections, after
 * connect_delay_ms: until then nothing of it is read, so the client's TLS
 * handshake (or first request) waits.
 */
const front = net.createServer({ pauseOnConnect: true }, sock => {
	const go = () => {
		server.emit('connection', sock);
		sock.resume();
	};
	if (delayLeft > 0 && config.connect_delay_ms > 0)
	{
		delayLeft--;
		delayedConnections++;
		setTimeout(go, config.connect_delay_ms);
	}
	else
		go();
});

front.listen(port, '127.0.0.1', () => {
	if (args['ready-file'])
		fs.writeFileSync(args['ready-file'], String(process.pid));
	process.stdout.write('mock graph api listening on ' + port + '\n');
});

process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
