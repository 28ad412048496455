-- identities: recipients named by business-scoped user ID (BSUID), the
-- pairs webhooks teach (wasend.identities), and the rules that look at
-- every name of a person (the TAP test 042 sends through the senders)
\set SHOW_CONTEXT never
CREATE EXTENSION wasend;
SELECT wasend.wasend_add_number('1291000001', 'tok', 80, business_id => '9100') AS nh \gset
SELECT wasend.wasend_create_campaign('ids', :nh, '{"type":"text","text":{"body":"x"}}') AS ch \gset

-- a recipient is a phone number or a BSUID, kept exactly as given
SELECT wasend.wasend_enqueue(:ch, ARRAY['US.13491208655302741918', 'US.ENT.11815799212886844830',
                                       'BR.1502576394655843', 'DE.aB3' || repeat('x', 125), '+15552910001']);
SELECT recipient FROM wasend.send_queue WHERE campaign_id = :ch ORDER BY id;
-- anything else is refused, and the whole call adds nothing
SELECT wasend.wasend_enqueue(:ch, ARRAY['15552910002', 'us.13491208655302741918']);
SELECT wasend.wasend_enqueue(:ch, ARRAY['US.']);
SELECT wasend.wasend_enqueue(:ch, ARRAY['DE.' || repeat('1', 129)]);
SELECT wasend.wasend_enqueue(:ch, ARRAY['USA.1349120865']);
SELECT wasend.wasend_enqueue(:ch, ARRAY['US.1349-1208']);
SELECT wasend.wasend_enqueue(:ch, ARRAY['+US.13491208655302741918']);
SELECT wasend.wasend_enqueue(:ch, ARRAY['US.ENT.ENT.1']);
SELECT wasend.wasend_enqueue(:ch, ARRAY['US.1 ']);
SELECT count(*) FROM wasend.send_queue WHERE campaign_id = :ch;
-- the same BSUID twice in one call is one recipient twice
SELECT wasend.wasend_enqueue(:ch, ARRAY['FR.77', 'FR.77']);

-- a BSUID's send-window zone is its country's
SELECT r, wasend._recipient_zone(r) FROM unnest(ARRAY['DE.1', 'CA.1', 'US.ENT.1', 'BR.1', 'RU.1', 'ZZ.1', '4915112345678']) r;

-- pairs an administrator adds are checked
INSERT INTO wasend.identities (user_id, phone) VALUES ('us.1', '15552910003');
INSERT INTO wasend.identities (user_id, phone) VALUES ('US.1', '555-0003');
INSERT INTO wasend.identities (user_id, parent_user_id) VALUES ('US.1', 'US.2');
INSERT INTO wasend.identities (user_id, previous_user_id) VALUES ('US.1', 'nobody');
INSERT INTO wasend.identities (user_id, username) VALUES ('US.1', repeat('u', 65));
INSERT INTO wasend.identities (user_id, phone) VALUES ('US.ENT.1', '15552910003');
INSERT INTO wasend.identities (user_id, phone, parent_user_id) VALUES ('US.1', '+15552910003', 'US.ENT.9');
SELECT user_id, phone, parent_user_id FROM wasend.identities;

-- an administrator (not a superuser) adds and deletes pairs; the names
-- follow, though the administrator cannot write them itself
CREATE ROLE regress_id_admin;
SELECT wasend.wasend_grant_access('regress_id_admin', 'admin');
SET ROLE regress_id_admin;
INSERT INTO wasend.identities (user_id, phone) VALUES ('NL.1', '31600000001');
SELECT wasend._recipient_names('31600000001');
INSERT INTO wasend.identity_names VALUES ('31600000002', 'NL.1');
DELETE FROM wasend.identities WHERE user_id = 'NL.1';
SELECT wasend._recipient_names('31600000001');
RESET ROLE;
SELECT wasend.wasend_revoke_access('regress_id_admin');
DROP ROLE regress_id_admin;

-- a person's names, through the pairs: the phone number reaches the BSUID of
-- another portfolio through the parent BSUID, and back
INSERT INTO wasend.identities (user_id, parent_user_id) VALUES ('US.2', 'US.ENT.9');
SELECT wasend._recipient_names('15552910003'), wasend._recipient_names('US.2'),
       wasend._recipient_names('US.ENT.9'), wasend._recipient_names('15552910004');

-- suppressing any name suppresses the person: enqueue skips the others
INSERT INTO wasend.suppressions (recipient, reason) VALUES ('US.2', 'asked by phone');
SELECT wasend.wasend_enqueue(:ch, ARRAY['15552910003', 'US.1', 'US.ENT.9', '15552910004']);
SELECT recipient FROM wasend.send_queue WHERE campaign_id = :ch AND recipient LIKE '1555291000%' ORDER BY 1;
SELECT wasend.wasend_send(:nh, 'US.1', '{"type":"text","text":{"body":"hi"}}');

-- the dry run counts a row suppressed by another name, and a person once
-- against the messaging limit (portfolio 9100: TIER_250, 249 in its
-- window: one slot left, which the two rows of one person share)
SELECT wasend._apply_number_limits(:nh, 200, '{"whatsapp_business_manager_messaging_limit":"TIER_250","quality_rating":"GREEN","health_status":{"can_send_message":"AVAILABLE"},"display_phone_number":"1","id":"1291000001"}');
INSERT INTO wasend.recipient_window (portfolio, recipient, last_at)
SELECT '9100', (15550000000 + g)::text, now() FROM generate_series(1, 249) g;
SELECT wasend.wasend_create_campaign('dry', :nh, '{"type":"text","text":{"body":"x"}}') AS cd \gset
INSERT INTO wasend.identities (user_id, phone) VALUES ('GB.5', '447700900005');
SELECT wasend.wasend_enqueue(:cd, ARRAY['447700900005', 'GB.5', '447700900006', '447700900007']);
INSERT INTO wasend.identities (user_id, phone) VALUES ('GB.7', '447700900007');
INSERT INTO wasend.suppressions (recipient, reason) VALUES ('GB.7', 'asked by mail');
SELECT would_send_now, waiting_messaging_limit, suppressed FROM wasend.wasend_dry_run(:cd);

-- webhooks: a message without a phone number is stored under the BSUID;
-- a STOP suppresses each name it gives; names not of Meta's form are not
-- learned and cost nothing else
SELECT wasend._ingest_verified('{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"phone_number_id":"1291000001"},
 "contacts":[{"profile":{"name":"A","username":"@a"},"user_id":"IT.700"},
             {"profile":{"name":"B"},"user_id":"IT.701","wa_id":"393400000701"},
             {"user_id":"it.702","wa_id":"393400000702"},
             {"user_id":["IT.703"],"wa_id":"393400000703"},
             {"user_id":"IT.704","wa_id":"3934-0000704","parent_user_id":"IT.704"},
             "IT.705"],
 "messages":[
  {"from_user_id":"IT.700","id":"wamid.id-1","timestamp":"1700000000","type":"text","text":{"body":"stop"}},
  {"from":"393400000701","from_user_id":"IT.701","id":"wamid.id-2","timestamp":"1700000000","type":"text","text":{"body":" STOP "}},
  {"from_user_id":"it.706","id":"wamid.id-3","timestamp":"1700000000","type":"text","text":{"body":"STOP"}},
  {"from_user_id":17,"id":"wamid.id-4","timestamp":"1700000000","type":"text","text":{"body":"STOP"}}]}}]}]}');
SELECT wa_message_id, from_number, from_user_id, body FROM wasend.inbound_messages ORDER BY 1;
SELECT recipient, reason FROM wasend.suppressions WHERE recipient LIKE 'IT.%' OR recipient LIKE '39%' ORDER BY 1;
SELECT user_id, phone, parent_user_id, username FROM wasend.identities WHERE user_id LIKE 'IT.%' ORDER BY 1;
-- the same payload again learns nothing and writes nothing
SELECT xmin AS before FROM wasend.identities WHERE user_id = 'IT.701' \gset
SELECT wasend._ingest_verified('{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"phone_number_id":"1291000001"},
 "contacts":[{"profile":{"name":"B"},"user_id":"IT.701","wa_id":"393400000701"}]}}]}]}') ->> 'identities_learned' AS learned;
SELECT xmin = :'before'::xid AS untouched FROM wasend.identities WHERE user_id = 'IT.701';

-- user_preferences: a stop with only a user_id stops marketing to the
-- paired phone number; a resume lifts the opt-outs of the names it gives
-- only (a wrong pair never lifts another user's opt-out)
SELECT wasend._ingest_verified('{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"user_preferences","value":{"messaging_product":"whatsapp","metadata":{"phone_number_id":"1291000001"},
 "contacts":[{"profile":{"name":"C"},"user_id":"IT.710","wa_id":"393400000710"}],
 "user_preferences":[{"user_id":"IT.710","detail":"x","category":"marketing_messages","value":"stop","timestamp":1700000000}]}}]}]}') ->> 'preferences_applied' AS applied;
SELECT recipient, scope FROM wasend.suppressions WHERE recipient = ANY (wasend._recipient_names('393400000710'));
SELECT wasend._ingest_verified('{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"user_preferences","value":{"messaging_product":"whatsapp","metadata":{"phone_number_id":"1291000001"},
 "user_preferences":[{"wa_id":"393400000710","detail":"x","category":"marketing_messages","value":"resume","timestamp":1700000001}]}}]}]}') ->> 'preferences_applied' AS applied;
SELECT count(*) FROM wasend.suppressions WHERE recipient = ANY (wasend._recipient_names('393400000710'));
SELECT wasend._ingest_verified('{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"user_preferences","value":{"messaging_product":"whatsapp","metadata":{"phone_number_id":"1291000001"},
 "user_preferences":[{"wa_id":"393400000710","user_id":"IT.710","detail":"x","category":"marketing_messages","value":"resume","timestamp":1700000002}]}}]}]}') ->> 'preferences_applied' AS applied;
SELECT count(*) FROM wasend.suppressions WHERE recipient = ANY (wasend._recipient_names('393400000710'));

-- a number change: a STOP the user gave under their old phone number
-- holds for the new BSUID and the new number; two changes in one payload
-- leave only the last number; a late status naming the old BSUID with
-- the old number does not give it back
INSERT INTO wasend.identities (user_id, phone) VALUES ('ES.1', '34600000001');
INSERT INTO wasend.suppressions (recipient, reason) VALUES ('34600000001', 'replied STOP');
SELECT wasend._ingest_verified('{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"user_id_update","value":{"messaging_product":"whatsapp","metadata":{"phone_number_id":"1291000001"},
 "user_id_update":[{"wa_id":"34600000002","detail":"x","user_id":{"previous":"ES.1","current":"ES.2"},"timestamp":"1700000000"},
                   {"wa_id":"34600000003","detail":"x","user_id":{"previous":"ES.2","current":"ES.3"},"timestamp":"1700000001"}]}}]}]}') ->> 'identities_learned' AS learned;
SELECT user_id, phone, previous_user_id FROM wasend.identities WHERE user_id LIKE 'ES.%' ORDER BY 1;
SELECT r, EXISTS (SELECT 1 FROM wasend.suppressions s WHERE s.recipient = ANY (wasend._recipient_names(r))) AS suppressed
  FROM unnest(ARRAY['ES.3', '34600000003', '34600000001', '34600000002']) r;
SELECT wasend._ingest_verified('{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"phone_number_id":"1291000001"},
 "statuses":[{"id":"wamid.late","status":"delivered","timestamp":"1700000000","recipient_id":"34600000001","recipient_user_id":"ES.1"}]}}]}]}') ->> 'identities_learned' AS learned;
SELECT wasend._recipient_names('ES.3');

-- one phone number paired with more than 20 BSUIDs is not Meta's data:
-- the 21st is refused, so that no import makes one person of many
INSERT INTO wasend.identities (user_id, phone) SELECT 'PT.' || g, '351900000000' FROM generate_series(1, 20) g;
INSERT INTO wasend.identities (user_id, phone) VALUES ('PT.21', '351900000000');
SELECT count(*) FROM wasend.identities WHERE phone = '351900000000';
DELETE FROM wasend.identities WHERE phone = '351900000000';

-- a status for a BSUID row: applied by wamid, the BSUID kept on the row
UPDATE wasend.send_queue SET status = 'sent', sent_at = now(), attempts = 1, wa_message_id = 'wamid.bs-1'
 WHERE campaign_id = :ch AND recipient = 'BR.1502576394655843';
SELECT wasend._ingest_verified('{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"phone_number_id":"1291000001"},
 "statuses":[{"id":"wamid.bs-1","status":"read","timestamp":"1700000000","recipient_user_id":"BR.1502576394655843"},
             {"id":"wamid.bs-unknown","status":"delivered","timestamp":"1700000000","recipient_user_id":"BR.9"}]}}]}]}') ->> 'statuses_applied' AS applied;
SELECT recipient, status, user_id FROM wasend.send_queue WHERE wa_message_id = 'wamid.bs-1';
SELECT wa_message_id, recipient, user_id FROM wasend.pending_statuses;

-- a system message of a number change (May 2026 form: the new BSUID and
-- phone number, no old BSUID) pairs the new names; it is stored as an
-- inbound message of the old phone number
SELECT wasend._ingest_verified('{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"phone_number_id":"1291000001"},
 "messages":[{"from":"393400000719","id":"wamid.sys-1","timestamp":"1700000000","type":"system",
   "system":{"body":"User A changed from 393400000719 to 393400000720","wa_id":"393400000720","user_id":"IT.720","type":"user_changed_user_id"}}]}}]}]}') ->> 'identities_learned' AS learned;
SELECT user_id, phone, previous_user_id FROM wasend.identities WHERE user_id = 'IT.720';

-- prices: a BSUID is priced by its paired phone number, else its country
INSERT INTO wasend.prices (category, country_prefix, price) VALUES ('marketing', '49', 0.10), ('marketing', '1', 0.02);
INSERT INTO wasend.identities (user_id, phone) VALUES ('DE.7', '4915112345678');
SELECT r, wasend._price_digits(r) FROM unnest(ARRAY['DE.7', 'DE.8', 'US.ENT.8', 'ZZ.8']) r;

-- a TRUNCATE of the pairs leaves no names behind
TRUNCATE wasend.identities;
SELECT count(*) FROM wasend.identity_names;

-- clean up
-- its suppressions go with it: confirmed
BEGIN;
SET LOCAL wasend.drop_suppressions = on;
DROP EXTENSION wasend;
COMMIT;
