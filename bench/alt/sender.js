#!/usr/bin/env node
/*
 * bench/alt/sender.js — the alternative wasend is measured against: the
 * usual way to write a Node.js sender.  Claim 100 rows with FOR
 * UPDATE SKIP LOCKED, send them with p-limit(10) through a keep-alive
 * agent, record the batch with one UPDATE ... FROM unnest, repeat.
 *
 * Usage: node sender.js --host SOCKETDIR --port PGPORT --api BASEURL
 * Prints {"sent": n, "seconds": s, "msg_per_sec": r}.
 */
'use strict';

const http = require('http');
const pLimit = require('p-limit');
const { Pool } = require('pg');

const args = {};
for (let i = 2; i < process.argv.length; i += 2)
	args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];

const pool = new Pool({ host: args.host, port: args.port, user: 'postgres', database: 'postgres', max: 2 });
const agent = new http.Agent({ keepAlive: true, maxSockets: 10 });
const limit = pLimit(10);
const api = new URL(args.api);

function send(row)
{
	const body = JSON.stringify(Object.assign({}, row.message,
		{ messaging_product: 'whatsapp', recipient_type: 'individual', to: row.recipient }));
	return new Promise((resolve) => {
		const req = http.request({
			host: api.hostname, port: api.port, method: 'POST', agent: agent,
			path: api.pathname + '/' + row.phone_number_id + '/messages',
			headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body),
					   Authorization: 'Bearer ' + row.access_token },
		}, (res) => {
			let data = '';
			res.on('data', (c) => data += c);
			res.on('end', () => {
				try
				{
					const j = JSON.parse(data);
					resolve({ id: row.id, wamid: j.messages ? j.messages[0].id : null,
							  error: j.error ? String(j.error.code) : null });
				}
				catch (e)
				{
					resolve({ id: row.id, wamid: null, error: 'bad response' });
				}
			});
		});
		req.on('error', (e) => resolve({ id: row.id, wamid: null, error: e.code }));
		req.end(body);
	});
}

(async () => {
	const t0 = process.hrtime.bigint();
	let sent = 0;
	for (;;)
	{
		const claim = await pool.query(`
			WITH picked AS (
			  SELECT q.id FROM wasend.send_queue q
			   WHERE q.status = 'ready' ORDER BY q.id LIMIT 100 FOR UPDATE SKIP LOCKED)
			UPDATE wasend.send_queue q SET status = 'sending', attempts = q.attempts + 1
			  FROM picked, wasend.campaigns c, wasend.whatsapp_numbers n
			 WHERE q.id = picked.id AND c.id = q.campaign_id AND n.id = c.number_id
			RETURNING q.id, q.recipient, coalesce(q.payload, c.message) AS message,
			          n.phone_number_id, n.access_token`);
		if (claim.rows.length === 0)
			break;
		const results = await Promise.all(claim.rows.map((r) => limit(() => send(r))));
		await pool.query(`
			UPDATE wasend.send_queue q
			   SET status = CASE WHEN r.wamid IS NOT NULL THEN 'sent' ELSE 'failed' END,
			       wa_message_id = r.wamid, last_error = r.error,
			       sent_at = CASE WHEN r.wamid IS NOT NULL THEN now() END
			  FROM unnest($1::bigint[], $2::text[], $3::text[]) AS r(id, wamid, error)
			 WHERE q.id = r.id`,
			[results.map((r) => r.id), results.map((r) => r.wamid), results.map((r) => r.error)]);
		sent += results.filter((r) => r.wamid).length;
	}
	const secs = Number(process.hrtime.bigint() - t0) / 1e9;
	console.log(JSON.stringify({ sent: sent, seconds: Number(secs.toFixed(2)),
								 msg_per_sec: Math.round(sent / secs) }));
	await pool.end();
	agent.destroy();
})();
