-- recipients: one judge for every path that queues or sends
-- (wasend._recipient_verdict), the functions that check and normalise a
-- number before it is queued, wasend.invalid_recipients, the shapes of
-- messages, and wasend_send's if_suppressed
\set SHOW_CONTEXT never
CREATE EXTENSION wasend;
SELECT wasend.wasend_add_number('1301000001', 'tok', 80) AS nh \gset
SELECT wasend.wasend_create_campaign('rcpt', :nh, '{"type":"text","text":{"body":"x"}}') AS ch \gset
SELECT wasend.wasend_create_campaign('rcpt2', :nh, '{"type":"text","text":{"body":"x"}}') AS ch2 \gset
-- test sends stop at the paused number once the recipient passed
SELECT wasend.wasend_pause_number(:nh, 'regress: no test send leaves');
CREATE FUNCTION pg_temp.try(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN CASE WHEN SQLERRM LIKE 'invalid recipient%' OR SQLERRM LIKE 'recipient must not be null'
                THEN 'refused' ELSE 'passed (' || SQLERRM || ')' END;
END
$$;
CREATE TABLE inputs (i int, x text);
INSERT INTO inputs VALUES (1, '00491512345678'), (2, '01512345678'), (3, '+49 151 2345-678'),
  (4, '491512345678'), (5, '+491512345678'), (6, '123456'), (7, '1234567890123456'),
  (8, 'abc'), (9, '15551234567x'), (10, '999123456'), (11, 'US.13491208655302741918'),
  (12, 'ZZ.13491208655302741918'), (13, '+0491512345678'), (14, NULL);

-- every path judges each input the same way (wasend.invalid_recipients = error)
SELECT i, x AS input,
       (SELECT c.valid FROM wasend.wasend_check_recipient(x) c) AS check_valid,
       pg_temp.try(format('SELECT wasend.wasend_enqueue(%s, ARRAY[%L])', :ch, x)) AS enqueue,
       pg_temp.try(format('INSERT INTO wasend.send_queue (campaign_id, recipient) VALUES (%s, %L)', :ch2, x)) AS insert,
       pg_temp.try(format('SELECT wasend.wasend_send(%s, %L, ''{"type":"text","text":{"body":"x"}}'')', :nh, x)) AS send,
       pg_temp.try(format('SELECT wasend.wasend_test_send(%s, %L)', :ch, x)) AS test_send
  FROM inputs ORDER BY i;
-- what is queued is stored one way
SELECT DISTINCT recipient FROM wasend.send_queue ORDER BY 1;
-- the errors say what is wrong and which function fixes it
SELECT wasend.wasend_enqueue(:ch, ARRAY['15551234001', '00491512345678']);
SELECT wasend.wasend_enqueue(:ch, ARRAY['01512345678']);
INSERT INTO wasend.send_queue (campaign_id, recipient) VALUES (:ch, '+49 151 2345-678');
SELECT wasend.wasend_send(:nh, '999123456', '{"type":"text","text":{"body":"x"}}');
SELECT wasend.wasend_test_send(:ch, '01512345678');

-- wasend_dry_run counts a queued row invalid by the same judge: here a
-- country calling code taken out of wasend.country_zones after queueing
BEGIN;
DELETE FROM wasend.country_zones WHERE calling_code = '49';
SELECT invalid FROM wasend.wasend_dry_run(:ch);
SELECT x, (SELECT c.valid FROM wasend.wasend_check_recipient(x) c) FROM inputs WHERE i = 4;
ROLLBACK;
SELECT invalid FROM wasend.wasend_dry_run(:ch);

-- a calling code added to wasend.country_zones is known at once, and
-- gone again when its transaction rolls back
SELECT valid FROM wasend.wasend_check_recipient('999123456');
BEGIN;
INSERT INTO wasend.country_zones (calling_code, country, zone) VALUES ('999', 'XX', 'UTC');
SELECT valid FROM wasend.wasend_check_recipient('999123456');
SELECT wasend.wasend_enqueue(:ch2, ARRAY['999123456']);
ROLLBACK;
SELECT valid FROM wasend.wasend_check_recipient('999123456');

-- wasend.invalid_recipients = skip: invalid rows are left out and counted
SET wasend.invalid_recipients = skip;
SELECT wasend.wasend_create_campaign('skip', :nh, '{"type":"text","text":{"body":"x"}}') AS cs \gset
SELECT wasend.wasend_enqueue(:cs, ARRAY['15551235001', '00491512345678', '01512345678', 'abc', '+15551235002']);
-- a NULL recipient is always an error, never left out as invalid
INSERT INTO wasend.send_queue (campaign_id, recipient) VALUES (:cs, NULL);
SELECT wasend.wasend_enqueue(:cs, ARRAY['15551235004', NULL]);
-- (a recipient twice in one call is still an error)
SELECT wasend.wasend_enqueue(:cs, ARRAY['15551235003', '01512345678', '15551235003']);
INSERT INTO wasend.send_queue (campaign_id, recipient)
SELECT :cs, x FROM inputs WHERE i NOT IN (5, 14);
SELECT recipient FROM wasend.send_queue WHERE campaign_id = :cs ORDER BY id;
-- wasend_send ignores the setting: its caller expects an id or an error
SELECT wasend.wasend_send(:nh, '01512345678', '{"type":"text","text":{"body":"x"}}');
SELECT wasend.wasend_send(:nh, NULL, '{"type":"text","text":{"body":"x"}}');
SELECT wasend.wasend_send(:nh, '01512345678', '{"type":"text","text":{"body":"x"}}', if_suppressed => 'skip');
-- a test send is of one recipient: always an error
SELECT wasend.wasend_test_send(:cs, '01512345678');
-- an update that re-addresses a row to an invalid recipient is an error
UPDATE wasend.send_queue SET recipient = '01512345678' WHERE campaign_id = :cs AND recipient = '15551235002';
RESET wasend.invalid_recipients;
SET wasend.invalid_recipients = maybe;

-- checking and normalising a number before it is queued
SELECT x AS input, c.valid, c.normalized, c.reason
  FROM inputs, wasend.wasend_check_recipient(x) c ORDER BY i;
SELECT x AS input, c.valid, c.normalized, c.reason
  FROM unnest(ARRAY['01512345678', '0151 2345678', '(0151) 234-5678', '0151/2345678', '+49 (0)151 2345678',
                    '00491512345678', '491512345678', '0049 151 2345678', 'US.13491208655302741918', '0', '']) x,
       wasend.wasend_check_recipient(x, 'DE') c;
-- the default country: an ISO code or a calling code; the trunk-prefix exceptions
SELECT c AS country, x AS input, wasend.wasend_normalize_phone(x, c) AS normalized
  FROM (VALUES ('de', '01512345678'), ('49', '01512345678'), ('+49', '01512345678'),
               ('DE', '1512345678'), ('DE', '491512345678'), ('DE', '+15551234567'),
               ('GB', '07400 123456'), ('FR', '06 12 34 56 78'),
               ('IT', '06 1234 5678'), ('IT', '333 123 4567'), ('SM', '0549 123456'),
               ('HU', '06 30 123 4567'), ('US', '0212 555 1234'), ('US', '+1 212 555 1234'),
               ('CA', '(416) 555-1234'), ('RU', '0912 345 67 89'), ('KZ', '+7 701 123 4567'),
               ('AX', '018 12345'), ('DE', NULL)) v(c, x);
-- national numbers as people write them, made international by
-- libphonenumber with the default country (the 555 numbers are fictional:
-- their length is enough); a length the country's numbers never have,
-- or a local number without its area code, is refused
SELECT c AS country, x AS input, r.normalized, r.reason
  FROM (VALUES ('DE', '030 1234567'), ('DE', '0171 1234567'), ('DE', '030 12'),
               ('IT', '02 1234 5678'), ('IT', '347 123 4567'),
               ('GB', '020 7946 0958'), ('GB', '(01632) 960 001'), ('GB', '07700 900123 4'),
               ('US', '(555) 123-4567'), ('US', '1 555 123 4567'), ('US', '555-1234'),
               ('FR', '01 23 45 67 89'), ('FR', '6 12 34 56 78'),
               ('IN', '098765 43210'), ('IN', '98765 43210'),
               ('BR', '(11) 91234-5678'), ('BR', '011 91234 5678'), ('55', '(21) 2345-6789')) v(c, x),
       wasend.wasend_check_recipient(x, c) r;
SELECT wasend.wasend_normalize_phone('01512345678', 'XX');
SELECT wasend.wasend_normalize_phone('01512345678', 'Germany');
-- a national number without a default country is not guessed
SELECT wasend.wasend_normalize_phone('01512345678') IS NULL AS not_guessed;
-- and they are stable and read nothing of the caller's
SELECT p.proname, p.provolatile, p.proparallel
  FROM pg_proc p WHERE p.pronamespace = 'wasend_impl'::regnamespace
   AND p.proname IN ('wasend_check_recipient', 'wasend_normalize_phone') ORDER BY 1;

-- messages: the type must be one Meta documents, with the fields it needs
SELECT wasend.wasend_create_campaign('typo', :nh, '{"type":"templates","templates":{"name":"promo","language":{"code":"en"}}}');
SELECT wasend.wasend_create_campaign('no name', :nh, '{"type":"template","template":{"language":{"code":"en"}}}');
SELECT wasend.wasend_create_campaign('no language', :nh, '{"type":"template","template":{"name":"promo"}}');
SELECT wasend.wasend_create_campaign('no code', :nh, '{"type":"template","template":{"name":"promo","language":"en"}}');
SELECT wasend.wasend_create_campaign('no body', :nh, '{"type":"text","text":"hi"}');
SELECT wasend.wasend_create_campaign('no media', :nh, '{"type":"image","image":{"caption":"x"}}');
SELECT wasend.wasend_create_campaign('no object', :nh, '{"type":"video"}');
SELECT wasend.wasend_create_campaign('no itype', :nh, '{"type":"interactive","interactive":{"body":{"text":"x"}}}');
SELECT wasend.wasend_create_campaign('no lat', :nh, '{"type":"location","location":{"longitude":13.4}}');
SELECT wasend.wasend_create_campaign('no lon', :nh, '{"type":"location","location":{"latitude":52.5}}');
SELECT wasend.wasend_create_campaign('no emoji', :nh, '{"type":"reaction","reaction":{"message_id":"wamid.x"}}');
SELECT wasend.wasend_create_campaign('no wamid', :nh, '{"type":"reaction","reaction":{"emoji":"x"}}');
SELECT wasend.wasend_create_campaign('no contacts', :nh, '{"type":"contacts","contacts":[]}');
-- every documented type with its fields is taken; a template is marketing
CREATE TABLE made AS
SELECT m->>'type' AS type, wasend.wasend_create_campaign('t ' || (m->>'type'), :nh, m) AS id
  FROM unnest(ARRAY[
    '{"type":"text","text":{"body":"Hello"}}',
    '{"type":"template","template":{"name":"promo","language":{"code":"en_US"}}}',
    '{"type":"image","image":{"link":"https://example.com/a.png"}}',
    '{"type":"video","video":{"id":"1234"}}',
    '{"type":"document","document":{"link":"https://example.com/a.pdf","filename":"a.pdf"}}',
    '{"type":"audio","audio":{"id":"1"}}',
    '{"type":"sticker","sticker":{"id":"1"}}',
    '{"type":"interactive","interactive":{"type":"button","body":{"text":"x"},"action":{"buttons":[]}}}',
    '{"type":"location","location":{"latitude":52.52,"longitude":13.40}}',
    '{"type":"reaction","reaction":{"message_id":"wamid.x","emoji":"x"}}',
    '{"type":"contacts","contacts":[{"name":{"formatted_name":"Ana"}}]}']::jsonb[]) m;
SELECT m.type, c.category FROM made m JOIN wasend.campaigns c USING (id) ORDER BY m.id;
-- the same check where a message is written: a campaign row, a queue row's
-- payload (wasend_enqueue and INSERT), wasend_send
UPDATE wasend.campaigns SET message = '{"type":"templates","template":{"name":"promo","language":{"code":"en"}}}' WHERE id = :ch;
SELECT wasend.wasend_enqueue(:ch, ARRAY['15551236001'], ARRAY['{"type":"template","template":{"name":"promo"}}'::jsonb]);
INSERT INTO wasend.send_queue (campaign_id, recipient, payload) VALUES (:ch, '15551236002', '{"type":"txt","text":{"body":"x"}}');
SELECT wasend.wasend_send(:nh, '15551236003', '{"type":"text","text":{}}');

-- wasend_send to a suppressed recipient: an error by default (it rolls
-- back the caller's transaction), NULL and a NOTICE with if_suppressed => skip
CREATE TABLE orders (id int, note text);
INSERT INTO wasend.suppressions (recipient, reason) VALUES ('15551237009', 'asked to stop');
BEGIN;
INSERT INTO orders VALUES (1, 'kept');
SELECT wasend.wasend_send(:nh, '15551237009', '{"type":"text","text":{"body":"your order"}}', if_suppressed => 'skip') IS NULL AS skipped;
SELECT wasend.wasend_send(:nh, '+15551237009', '{"type":"text","text":{"body":"your order"}}', 5, 'skip') IS NULL AS skipped;
COMMIT;
BEGIN;
INSERT INTO orders VALUES (2, 'lost');
SELECT wasend.wasend_send(:nh, '15551237009', '{"type":"text","text":{"body":"your order"}}');
COMMIT;
SELECT * FROM orders ORDER BY id;
SELECT count(*) AS queued_for_suppressed FROM wasend.send_queue WHERE recipient = '15551237009';
SELECT wasend.wasend_send(:nh, '15551237009', '{"type":"text","text":{"body":"x"}}', if_suppressed => 'ignore');
SELECT wasend.wasend_send(:nh, '15551237008', '{"type":"text","text":{"body":"x"}}', if_suppressed => 'skip') > 0 AS sent_when_not_suppressed;

-- clean up: its suppressions go with it, confirmed
BEGIN;
SET LOCAL wasend.drop_suppressions = on;
DROP EXTENSION wasend;
COMMIT;
