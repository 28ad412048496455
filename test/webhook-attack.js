#!/usr/bin/env node
/*
 * test/webhook-attack.js — denial-of-service clients against the wasend
 * webhook endpoint, for test/t/013_webhook_dos.pl (and its slow clients
 * against the metrics endpoint, for test/t/030_metrics.pl).  Raw TCP (node's net
 * module), so that every byte and every timestamp is the client's own.
 *
 * Usage:
 *   node webhook-attack.js probe --port P [--signature S] [--length N]
 *        [--wait-ms 5000]
 *     Sends the headers of a POST with Content-Length N (default
 *     3,000,000) and no body, and waits for an answer and for the server
 *     to close the connection.  Prints {"status": 401, "answer_ms": 3,
 *     "closed": "fin", "body_bytes_sent": 0, ...}: status null if no answer
 *     came, closed false if the connection was still open after wait-ms.
 *
 *   node webhook-attack.js attack --port P --duration-ms D --deadline-ms T
 *        [--slow 500] [--slow-addresses 20] [--junk 300]
 *        [--junk-addresses 10] [--junk-bytes 3000000]
 *        [--per-address N] [--interval-ms 1000] [--ready-file F]
 *        [--slow-kind headers|body]
 *     For D ms:
 *       slow clients (from 127.0.0.2 ...): half send a request line and
 *         then one header byte every interval, never finishing the
 *         headers; half send complete headers (a well-formed but wrong
 *         X-Hub-Signature-256, Content-Length 1000) and then one body byte
 *         every interval (--slow-kind: all of one kind).  When the
 *         server closes one, it reconnects.
 *       junk posts (from the next addresses): each loops on a POST of
 *         --junk-bytes, alternately unsigned and with a well-formed but
 *         wrong signature, written as fast as the server takes it.
 *       with --per-address N: N + 5 header-trickling connections from
 *         127.0.0.250, opened once, to see that 5 are refused at once.
 *     Writes the ready file once every slow connection is established and
 *     every junk client has sent its first headers.  A connection alive
 *     T + 15 s after it connected is given up ("survived").  Prints one
 *     JSON object: per group, how connections ended ("closed" by a FIN,
 *     "reset", "answered", "survived", "open_at_end") and, for those the
 *     server closed, when: ms from just before the client's connect() to
 *     when it saw the close, so never less than the server's own count
 *     from accept to close; and answer codes (a 503's Retry-After too).
 *
 * Linux routes all of 127.0.0.0/8 to lo, so localAddress 127.0.0.x needs
 * no setup.
 */
'use strict';

const fs = require('fs');
const net = require('net');

const mode = process.argv[2];
const args = {};
for (let i = 3; i < process.argv.length; i += 2)
	args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];

const port = parseInt(args.port, 10);
const now = () => Number(process.hrtime.bigint() / 1000000n);
const WRONG_SIG = 'sha256=' + '0'.repeat(64);

/* status code and headers of an HTTP answer, once its head has arrived */
function parseHead(buf)
{
	const end = buf.indexOf('\r\n\r\n');
	if (end < 0)
		return null;
	const lines = buf.slice(0, end).toString('latin1').split('\r\n');
	const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0]);
	const headers = {};
	for (const l of lines.slice(1))
	{
		const i = l.indexOf(':');
		if (i > 0)
			headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
	}
	return { status: m ? parseInt(m[1], 10) : 0, headers: headers };
}

function headersOf(length, signature)
{
	return 'POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\n' +
		'Content-Type: application/json\r\n' +
		'Content-Length: ' + length + '\r\n' +
		(signature ? 'X-Hub-Signature-256: ' + signature + '\r\n' : '') + '\r\n';
}

function stats(values)
{
	if (values.length === 0)
		return null;
	const v = values.slice().sort((a, b) => a - b);
	return { n: v.length, min: v[0], median: v[Math.floor(v.length / 2)],
			 max: v[v.length - 1] };
}

/* ---------------------------------------------------------------- probe */
function probe()
{
	const length = parseInt(args.length || '3000000', 10);
	const waitMs = parseInt(args['wait-ms'] || '5000', 10);
	const sock = net.connect({ port: port, host: '127.0.0.1' });
	let t0 = 0;
	let buf = Buffer.alloc(0);
	let done = false;
	const finish = (res) => {
		if (done)
			return;
		done = true;
		sock.destroy();
		console.log(JSON.stringify(Object.assign({ ms: now() - t0, body_bytes_sent: 0 }, res)));
	};
	sock.on('connect', () => {
		t0 = now();
		sock.write(headersOf(length, args.signature));
	});
	let answer = null;
	sock.on('data', (d) => {
		buf = Buffer.concat([buf, d]);
		const head = parseHead(buf);
		if (head && answer === null)
			answer = { status: head.status, headers: head.headers, answer_ms: now() - t0 };
	});
	/* after its answer, the server should close the connection */
	const closed = (how) => finish(answer ? Object.assign(answer, { closed: how }) :
		{ status: null, closed: how });
	sock.on('end', () => closed('fin'));
	sock.on('error', (e) => closed(e.code));
	sock.on('close', () => closed('close'));
	setTimeout(() => finish(answer ? Object.assign(answer, { closed: false }) :
		{ status: null, timeout: true }), waitMs);
}

/* --------------------------------------------------------------- attack */
function attack()
{
	const duration = parseInt(args['duration-ms'], 10);
	const deadline = parseInt(args['deadline-ms'], 10);
	const nSlow = parseInt(args.slow || '500', 10);
	const slowAddrs = parseInt(args['slow-addresses'] || '20', 10);
	const nJunk = parseInt(args.junk || '300', 10);
	const junkAddrs = parseInt(args['junk-addresses'] || '10', 10);
	const junkBytes = parseInt(args['junk-bytes'] || '3000000', 10);
	const perAddress = parseInt(args['per-address'] || '0', 10);
	const interval = parseInt(args['interval-ms'] || '1000', 10);
	const slowKind = args['slow-kind'] || null;
	const giveUp = deadline + 15000;
	const junkBody = Buffer.alloc(junkBytes, 'x');
	const t0 = now();
	let stopping = false;
	const sockets = new Set();

	/* one record per connection: group, kind, how and when it ended */
	const records = [];
	let pendingReady = nSlow + nJunk + (perAddress > 0 ? perAddress + 5 : 0);
	const readyOne = () => {
		if (--pendingReady === 0 && args['ready-file'])
			fs.writeFileSync(args['ready-file'], String(now() - t0));
	};

	/*
	 * A connection that trickles: the request line (and, for kind "body",
	 * complete headers) at once, then one byte every interval.  Returns a
	 * promise of its record.
	 */
	function trickle(group, kind, address, first)
	{
		return new Promise((resolve) => {
			const rec = { group: group, kind: kind, address: address, end: null,
						  ms: null, status: null };
			/*
			 * The clock starts before connect(), so it cannot start after the
			 * server's (at accept) however late this busy loop sees events.
			 */
			const startedAt = now();
			let connectedAt = 0;
			const sock = net.connect({ port: port, host: '127.0.0.1', localAddress: address });
			let timer = null;
			let giveUpTimer = null;
			let buf = Buffer.alloc(0);
			sockets.add(sock);
			const end = (how) => {
				if (rec.end !== null)
					return;
				rec.end = how;
				rec.ms = connectedAt ? now() - startedAt : null;
				clearInterval(timer);
				clearTimeout(giveUpTimer);
				sockets.delete(sock);
				sock.destroy();
				records.push(rec);
				resolve(rec);
			};
			sock.endAs = end;
			sock.on('connect', () => {
				connectedAt = now();
				if (first)
					readyOne();
				if (kind === 'body')
					sock.write(headersOf(1000, WRONG_SIG));
				else
					sock.write('POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: ');
				timer = setInterval(() => sock.write(kind === 'body' ? '{' : 'a'), interval);
				giveUpTimer = setTimeout(() => end('survived'), giveUp);
			});
			sock.on('data', (d) => {
				buf = Buffer.concat([buf, d]);
				const head = parseHead(buf);
				if (head && rec.status === null)
					rec.status = head.status;
			});
			sock.on('end', () => end(rec.status === null ? 'closed' : 'answered'));
			sock.on('close', () => end(rec.status === null ? 'closed' : 'answered'));
			sock.on('error', (e) => end(rec.status !== null ? 'answered' :
				(e.code === 'ECONNRESET' || e.code === 'EPIPE') ? 'reset' : 'error:' + e.code));
		});
	}

	async function slowClient(i)
	{
		const address = '127.0.0.' + (2 + (i % slowAddrs));
		const kind = slowKind || (i % 2 === 0 ? 'headers' : 'body');
		let first = true;
		while (!stopping)
		{
			await trickle('slow', kind, address, first);
			first = false;
		}
	}

	/* One junk POST; resolves with its record. */
	function junkPost(address, signed, first)
	{
		return new Promise((resolve) => {
			const rec = { group: 'junk', kind: signed ? 'wrong-signature' : 'unsigned',
						  status: null, retry_after: null, end: null };
			const sock = net.connect({ port: port, host: '127.0.0.1', localAddress: address });
			let buf = Buffer.alloc(0);
			sockets.add(sock);
			const end = (how) => {
				if (rec.end !== null)
					return;
				rec.end = how;
				sockets.delete(sock);
				sock.destroy();
				records.push(rec);
				resolve(rec);
			};
			sock.endAs = end;
			sock.on('connect', () => {
				sock.write(headersOf(junkBytes, signed ? WRONG_SIG : null));
				if (first)
					readyOne();
				/* the body goes out as fast as the server reads it */
				sock.write(junkBody);
			});
			sock.on('data', (d) => {
				buf = Buffer.concat([buf, d]);
				const head = parseHead(buf);
				if (head && rec.status === null)
				{
					rec.status = head.status;
					rec.retry_after = head.headers['retry-after'] || null;
					end('answered');
				}
			});
			sock.on('end', () => end('closed'));
			sock.on('close', () => end('closed'));
			sock.on('error', (e) => end((e.code === 'ECONNRESET' || e.code === 'EPIPE') ?
				'reset' : 'error:' + e.code));
		});
	}

	async function junkClient(i)
	{
		const address = '127.0.0.' + (2 + slowAddrs + (i % junkAddrs));
		let n = 0;
		while (!stopping)
		{
			await junkPost(address, (i + n) % 2 === 1, n === 0);
			n++;
		}
	}

	const all = [];
	for (let i = 0; i < nSlow; i++)
		all.push(slowClient(i));
	for (let i = 0; i < nJunk; i++)
		all.push(junkClient(i));
	if (perAddress > 0)
		for (let i = 0; i < perAddress + 5; i++)
			all.push(trickle('per_address', 'headers', '127.0.0.250', true));

	setTimeout(() => {
		stopping = true;
		/* whatever is still open was neither cut nor answered in time */
		for (const s of Array.from(sockets))
			s.endAs('open_at_end');
	}, duration);

	Promise.all(all).then(() => {
		const summary = {};
		for (const r of records)
		{
			const g = summary[r.group] || (summary[r.group] = {
				connections: 0, ends: {}, status: {}, by_kind: {} });
			g.connections++;
			g.ends[r.end] = (g.ends[r.end] || 0) + 1;
			if (r.status !== null)
				g.status[r.status] = (g.status[r.status] || 0) + 1;
			const k = g.by_kind[r.kind] || (g.by_kind[r.kind] = { connections: 0, ends: {}, status: {} });
			k.connections++;
			k.ends[r.end] = (k.ends[r.end] || 0) + 1;
			if (r.status !== null)
				k.status[r.status] = (k.status[r.status] || 0) + 1;
		}
		/* connections the server closed (FIN or RST) without an answer: when */
		for (const group of ['slow', 'per_address'])
		{
			if (!summary[group])
				continue;
			const closed = records.filter((r) => r.group === group && r.ms !== null &&
										  (r.end === 'closed' || r.end === 'reset'));
			summary[group].closed_ms = stats(closed.map((r) => r.ms));
			summary[group].closed_before_deadline =
				closed.filter((r) => r.ms < deadline).length;
			summary[group].closed_before_deadline_ms =
				stats(closed.filter((r) => r.ms < deadline).map((r) => r.ms));
			summary[group].closed_at_or_after_deadline =
				closed.filter((r) => r.ms >= deadline).length;
		}
		if (summary.junk)
		{
			const j = records.filter((r) => r.group === 'junk');
			summary.junk.status_503_without_retry_after =
				j.filter((r) => r.status === 503 && !r.retry_after).length;
		}
		summary.seconds = (now() - t0) / 1000;
		console.log(JSON.stringify(summary));
		process.exit(0);
	});
}

if (mode === 'probe')
	probe();
else if (mode === 'attack')
	attack();
else
{
	console.error('usage: webhook-attack.js probe|attack --port P ...');
	process.exit(2);
}
